//! VNN-LIB properties (the SMT-LIB subset of the verification competition, VNN-COMP 2021–2024).
//!
//! A property declares inputs `X_i` and outputs `Y_j` (`(declare-const X_0 Real)`) and asserts constraints; it
//! is *violated* (the answer `sat`) when some input satisfies every assertion. Supported: bounds on single
//! inputs, linear constraints on outputs (`<=`, `>=`, `<`, `>`, `=` over sums, differences and constant
//! multiples), nested `and`/`or` (and `not` of one comparison), including a disjunction over several input
//! boxes. Every assertion is brought into disjunctive normal form; the result is a list of [`Region`]s, each an
//! input box with the disjunction of output conditions that would violate the property on it.
//!
//! Malformed files are diagnostics with spans into the text (E0122 syntax, E0123 unsupported constraint,
//! E0124 undeclared or out-of-range variable).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::diagnostics::{Code, Diagnostic, SourceFile};
use crate::error::{Error, Result};
use crate::syntax::ast::Span;

/// `Σ coef_j · Y_j + offset >= 0` (`> 0` when `strict`).
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    pub coef: Vec<(usize, f64)>,
    pub offset: f64,
    pub strict: bool,
}

impl Constraint {
    /// The value `Σ coef_j y_j + offset` at outputs `y`.
    pub fn value(&self, y: &[f64]) -> f64 {
        self.coef.iter().map(|&(j, c)| c * y.get(j).copied().unwrap_or(f64::NAN)).sum::<f64>() + self.offset
    }
    /// Whether `y` satisfies the constraint.
    pub fn holds(&self, y: &[f64]) -> bool {
        let v = self.value(y);
        if self.strict {
            v > 0.0
        } else {
            v >= 0.0
        }
    }
    /// Whether the constraint holds, in real arithmetic, for every output in the box `[lo, hi]` and for the
    /// decimals the file wrote (each coefficient and the offset within half an f64 ulp of the value parsed):
    /// the smallest value over the box, computed in f64, less a bound on every rounding of that computation
    /// and on the decimals' parsing (`γ_{n+4} (Σ |c_j| m_j + |d|)` with `m_j = max(|lo_j|, |hi_j|)`, plus `η`).
    pub fn holds_surely(&self, lo: &[f64], hi: &[f64]) -> bool {
        let mut s = 0.0;
        let mut mag = self.offset.abs();
        for &(j, c) in &self.coef {
            let (Some(&a), Some(&b)) = (lo.get(j), hi.get(j)) else { return false };
            if !(a.is_finite() && b.is_finite() && a <= b) {
                return false;
            }
            s += (c * a).min(c * b);
            mag += c.abs() * a.abs().max(b.abs());
        }
        let n = self.coef.len() + 4;
        let u = f64::EPSILON / 2.0;
        let g = n as f64 * u / (1.0 - n as f64 * u);
        // The parsing of the decimals (half an ulp each, relative `u`) and the roundings of the sum (`γ_n`),
        // the bound itself made an upper bound by a factor 2.
        let err = 2.0 * (g + u) * mag + f64::MIN_POSITIVE;
        let v = s + self.offset - err;
        v.is_finite() && if self.strict { v > 0.0 } else { v >= 0.0 }
    }
}

/// An input box and the output conditions that violate the property on it: the property is violated on the
/// box iff some input of it satisfies every constraint of some disjunct.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
    /// A disjunction of conjunctions. An empty conjunction is `true` (any input of the box violates).
    pub disjuncts: Vec<Vec<Constraint>>,
}

#[derive(Debug, Clone)]
pub struct Property {
    pub n_inputs: usize,
    pub n_outputs: usize,
    pub regions: Vec<Region>,
    pub source: Arc<SourceFile>,
    /// Where the highest input and output variables are declared (for range diagnostics against a network).
    pub input_decl: Option<Span>,
    pub output_decl: Option<Span>,
}

impl Property {
    /// Refuse a property whose variables do not match a network's input and output sizes (E0124).
    pub fn check_sizes(&self, inputs: usize, outputs: usize) -> Result<()> {
        let mut d = Vec::new();
        for (what, have, want, span, var) in [
            ("inputs", self.n_inputs, inputs, self.input_decl, "X"),
            ("outputs", self.n_outputs, outputs, self.output_decl, "Y"),
        ] {
            if have != want {
                let mut diag = Diagnostic::new(
                    Code::VnnlibVariable,
                    format!("the property has {have} {what} ({var}_0..{var}_{}), the network {want}", have.saturating_sub(1)),
                )
                .help(format!(
                    "declare exactly {} (the network's {what}, flattened row-major); is this the property of another network?",
                    if want == 1 { format!("`{var}_0`") } else { format!("`{var}_0` … `{var}_{}`", want.saturating_sub(1)) }
                ))
                .with_source(self.source.clone());
                if let Some(s) = span {
                    diag = diag.label(s, if have > want { "out of range" } else { "the last one declared" });
                }
                d.push(diag);
            }
        }
        if d.is_empty() {
            Ok(())
        } else {
            Err(Error::Input(d))
        }
    }
}

#[derive(Debug, Clone)]
enum Sexp {
    Atom(String, Span),
    List(Vec<Sexp>, Span),
}

impl Sexp {
    fn span(&self) -> Span {
        match self {
            Sexp::Atom(_, s) | Sexp::List(_, s) => *s,
        }
    }
}

struct Ctx {
    src: Arc<SourceFile>,
}

impl Ctx {
    fn err(&self, code: Code, span: Span, msg: impl Into<String>, label: &str, help: impl Into<String>) -> Error {
        Error::input(
            Diagnostic::new(code, msg.into())
                .label(span, label.to_string())
                .help(help.into())
                .with_source(self.src.clone()),
        )
    }
}

fn tokenize_and_parse(ctx: &Ctx) -> Result<Vec<Sexp>> {
    let text = &ctx.src.text;
    let bytes = text.as_bytes();
    let mut stack: Vec<(Vec<Sexp>, usize)> = Vec::new();
    let mut top = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b';' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' => {
                stack.push((Vec::new(), i));
                i += 1;
            }
            b')' => {
                let Some((items, start)) = stack.pop() else {
                    return Err(ctx.err(
                        Code::VnnlibSyntax,
                        Span::new(i, i + 1),
                        "unbalanced `)`",
                        "no `(` opens this",
                        "remove the extra `)`",
                    ));
                };
                let e = Sexp::List(items, Span::new(start, i + 1));
                match stack.last_mut() {
                    Some((parent, _)) => parent.push(e),
                    None => top.push(e),
                }
                i += 1;
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                let start = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() && !matches!(bytes[i], b'(' | b')' | b';') {
                    i += 1;
                }
                // Split on a char boundary (non-ASCII bytes stay inside the atom).
                let s = text.get(start..i).unwrap_or("").to_string();
                let e = Sexp::Atom(s, Span::new(start, i));
                match stack.last_mut() {
                    Some((parent, _)) => parent.push(e),
                    None => {
                        return Err(ctx.err(
                            Code::VnnlibSyntax,
                            e.span(),
                            "text outside a command",
                            "expected `(`",
                            "every command is a parenthesised form such as `(assert ...)`",
                        ))
                    }
                }
            }
        }
    }
    if let Some((_, start)) = stack.pop() {
        return Err(ctx.err(
            Code::VnnlibSyntax,
            Span::new(start, (start + 1).min(text.len())),
            "unclosed `(`: the file ends inside a form",
            "this `(` is never closed",
            "the file is truncated or a `)` is missing",
        ));
    }
    Ok(top)
}

/// A linear expression over inputs and outputs.
#[derive(Debug, Clone, Default, PartialEq)]
struct Lin {
    x: BTreeMap<usize, f64>,
    y: BTreeMap<usize, f64>,
    c: f64,
}

impl Lin {
    fn scale(mut self, k: f64) -> Lin {
        self.x.values_mut().for_each(|v| *v *= k);
        self.y.values_mut().for_each(|v| *v *= k);
        self.c *= k;
        self
    }
    fn add(mut self, o: &Lin, k: f64) -> Lin {
        for (i, v) in &o.x {
            *self.x.entry(*i).or_insert(0.0) += k * v;
        }
        for (i, v) in &o.y {
            *self.y.entry(*i).or_insert(0.0) += k * v;
        }
        self.c += k * o.c;
        self
    }
    fn is_const(&self) -> bool {
        self.x.values().all(|v| *v == 0.0) && self.y.values().all(|v| *v == 0.0)
    }
}

/// `lin >= 0` (or `> 0`).
#[derive(Debug, Clone)]
struct Atom {
    lin: Lin,
    strict: bool,
    span: Span,
}

type Dnf = Vec<Vec<Atom>>;

const MAX_TERMS: usize = 100_000;

struct Parser {
    ctx: Ctx,
    declared: BTreeMap<(char, usize), Span>,
}

impl Parser {
    fn var(&self, name: &str, span: Span) -> Result<Option<(char, usize)>> {
        let Some((kind, idx)) = parse_var(name) else { return Ok(None) };
        if !self.declared.contains_key(&(kind, idx)) {
            return Err(self.ctx.err(
                Code::VnnlibVariable,
                span,
                format!("variable `{name}` is not declared"),
                "used here",
                format!("declare it first: `(declare-const {name} Real)`"),
            ));
        }
        Ok(Some((kind, idx)))
    }

    fn term(&self, e: &Sexp) -> Result<Lin> {
        match e {
            Sexp::Atom(s, span) => {
                if let Some((k, i)) = self.var(s, *span)? {
                    let mut l = Lin::default();
                    if k == 'X' {
                        l.x.insert(i, 1.0);
                    } else {
                        l.y.insert(i, 1.0);
                    }
                    return Ok(l);
                }
                match s.parse::<f64>() {
                    Ok(v) if v.is_finite() => Ok(Lin { c: v, ..Default::default() }),
                    _ => Err(self.ctx.err(
                        Code::VnnlibSyntax,
                        *span,
                        format!("`{s}` is neither a number nor a declared variable"),
                        "expected a number, `X_i` or `Y_j`",
                        "write numbers as decimals (`0.5`, `-1e-3`) and variables as `X_0`, `Y_3`",
                    )),
                }
            }
            Sexp::List(items, span) => {
                let (head, args) = match items.split_first() {
                    Some((Sexp::Atom(h, _), a)) => (h.as_str(), a),
                    _ => {
                        return Err(self.ctx.err(
                            Code::VnnlibSyntax,
                            *span,
                            "expected an arithmetic expression",
                            "here",
                            "write `(+ a b)`, `(- a b)`, `(* 2.0 Y_0)` or `(/ a 2.0)`",
                        ))
                    }
                };
                let terms: Vec<Lin> = args.iter().map(|a| self.term(a)).collect::<Result<_>>()?;
                if terms.is_empty() {
                    return Err(self.ctx.err(
                        Code::VnnlibSyntax,
                        *span,
                        format!("`{head}` without operands"),
                        "here",
                        "give it operands",
                    ));
                }
                match head {
                    "+" => Ok(terms.iter().fold(Lin::default(), |acc, t| acc.add(t, 1.0))),
                    "-" if terms.len() == 1 => Ok(terms[0].clone().scale(-1.0)),
                    "-" => Ok(terms[1..].iter().fold(terms[0].clone(), |acc, t| acc.add(t, -1.0))),
                    "*" => {
                        let mut k = 1.0;
                        let mut var: Option<Lin> = None;
                        for t in terms {
                            if t.is_const() {
                                k *= t.c;
                            } else if var.is_none() {
                                var = Some(t);
                            } else {
                                return Err(self.ctx.err(
                                    Code::VnnlibUnsupported,
                                    *span,
                                    "product of two variables",
                                    "not linear",
                                    "only linear constraints are supported: multiply variables by constants",
                                ));
                            }
                        }
                        Ok(match var {
                            Some(v) => v.scale(k),
                            None => Lin { c: k, ..Default::default() },
                        })
                    }
                    "/" if terms.len() == 2 && terms[1].is_const() && terms[1].c != 0.0 => {
                        Ok(terms[0].clone().scale(1.0 / terms[1].c))
                    }
                    _ => Err(self.ctx.err(
                        Code::VnnlibUnsupported,
                        *span,
                        format!("`{head}` is not a supported arithmetic operator here"),
                        "here",
                        "use `+`, `-`, `*` by a constant, or `/` by a non-zero constant",
                    )),
                }
            }
        }
    }

    fn formula(&self, e: &Sexp) -> Result<Dnf> {
        let Sexp::List(items, span) = e else {
            return match e {
                Sexp::Atom(s, _) if s == "true" => Ok(vec![vec![]]),
                Sexp::Atom(s, _) if s == "false" => Ok(vec![]),
                _ => Err(self.ctx.err(
                    Code::VnnlibSyntax,
                    e.span(),
                    "expected a constraint",
                    "here",
                    "write a comparison such as `(<= X_0 0.5)`, or `and`/`or` of them",
                )),
            };
        };
        let span = *span;
        let Some((Sexp::Atom(head, hspan), args)) = items.split_first() else {
            return Err(self.ctx.err(
                Code::VnnlibSyntax,
                span,
                "expected a constraint",
                "here",
                "write `(<= a b)`, `(and ...)` or `(or ...)`",
            ));
        };
        match head.as_str() {
            "and" => {
                let mut acc: Dnf = vec![vec![]];
                for a in args {
                    let d = self.formula(a)?;
                    acc = self.product(acc, d, span)?;
                }
                Ok(acc)
            }
            "or" => {
                let mut acc = Vec::new();
                for a in args {
                    acc.extend(self.formula(a)?);
                    if acc.len() > MAX_TERMS {
                        return Err(self.too_many(span));
                    }
                }
                Ok(acc)
            }
            "not" => {
                let [inner] = args else {
                    return Err(self.ctx.err(
                        Code::VnnlibSyntax,
                        span,
                        "`not` takes one operand",
                        "here",
                        "write `(not (<= a b))`",
                    ));
                };
                let d = self.formula(inner)?;
                match d.as_slice() {
                    [t] if t.len() == 1 && matches!(inner, Sexp::List(..)) && !is_eq(inner) => {
                        let a = &t[0];
                        Ok(vec![vec![Atom { lin: a.lin.clone().scale(-1.0), strict: !a.strict, span: a.span }]])
                    }
                    _ => Err(self.ctx.err(
                        Code::VnnlibUnsupported,
                        span,
                        "`not` of a compound constraint",
                        "here",
                        "negate single comparisons only, e.g. write `(> a b)` for `(not (<= a b))`",
                    )),
                }
            }
            op @ ("<=" | ">=" | "<" | ">" | "=") => {
                if args.len() < 2 {
                    return Err(self.ctx.err(
                        Code::VnnlibSyntax,
                        span,
                        format!("`{op}` needs two operands"),
                        "here",
                        format!("write `({op} a b)`"),
                    ));
                }
                let terms: Vec<Lin> = args.iter().map(|a| self.term(a)).collect::<Result<_>>()?;
                let mut conj = Vec::new();
                for w in terms.windows(2) {
                    let (a, b) = (&w[0], &w[1]);
                    let strict = matches!(op, "<" | ">");
                    match op {
                        "<=" | "<" => conj.push(Atom { lin: b.clone().add(a, -1.0), strict, span }),
                        ">=" | ">" => conj.push(Atom { lin: a.clone().add(b, -1.0), strict, span }),
                        _ => {
                            conj.push(Atom { lin: b.clone().add(a, -1.0), strict: false, span });
                            conj.push(Atom { lin: a.clone().add(b, -1.0), strict: false, span });
                        }
                    }
                }
                Ok(vec![conj])
            }
            other => Err(self.ctx.err(
                Code::VnnlibUnsupported,
                *hspan,
                format!("`{other}` is not a supported connective"),
                "here",
                "use `and`, `or`, `not` and the comparisons `<=`, `>=`, `<`, `>`, `=`",
            )),
        }
    }

    fn too_many(&self, span: Span) -> Error {
        self.ctx.err(
            Code::VnnlibUnsupported,
            span,
            format!("the constraints expand to more than {MAX_TERMS} cases"),
            "this expands too far",
            "write the property as a disjunction of conjunctions (one `or` of `and`s), as the competition's files do",
        )
    }

    fn product(&self, a: Dnf, b: Dnf, span: Span) -> Result<Dnf> {
        if a.len().saturating_mul(b.len()) > MAX_TERMS {
            return Err(self.too_many(span));
        }
        if a.len() == 1 {
            let base = &a[0];
            return Ok(b
                .into_iter()
                .map(|t| {
                    let mut v = base.clone();
                    v.extend(t);
                    v
                })
                .collect());
        }
        let mut out = Vec::with_capacity(a.len() * b.len());
        for x in &a {
            for y in &b {
                let mut v = x.clone();
                v.extend(y.iter().cloned());
                out.push(v);
            }
        }
        Ok(out)
    }
}

fn is_eq(e: &Sexp) -> bool {
    matches!(e, Sexp::List(items, _) if matches!(items.first(), Some(Sexp::Atom(h, _)) if h == "="))
}

/// `X_12` → `('X', 12)`.
fn parse_var(s: &str) -> Option<(char, usize)> {
    let (k, rest) = if let Some(r) = s.strip_prefix("X_") {
        ('X', r)
    } else if let Some(r) = s.strip_prefix("Y_") {
        ('Y', r)
    } else {
        return None;
    };
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok().map(|i| (k, i))
}

/// Read and parse a VNN-LIB file.
pub fn parse_file(path: &std::path::Path) -> Result<Property> {
    let bytes = crate::gz::read(path, "cannot read property")?;
    let text = String::from_utf8_lossy(&bytes).to_string();
    parse(&path.display().to_string(), &text)
}

/// Parse VNN-LIB text; `name` is the file name shown in diagnostics.
pub fn parse(name: &str, text: &str) -> Result<Property> {
    let src = SourceFile::new(name, text);
    let mut p = Parser { ctx: Ctx { src: src.clone() }, declared: BTreeMap::new() };
    let forms = tokenize_and_parse(&p.ctx)?;
    let mut always: Vec<Atom> = Vec::new();
    let mut multi: Vec<(Dnf, Span)> = Vec::new();
    let mut any_assert = false;
    for f in &forms {
        let Sexp::List(items, span) = f else { continue };
        let Some((Sexp::Atom(head, hspan), args)) = items.split_first() else {
            return Err(p.ctx.err(
                Code::VnnlibSyntax,
                *span,
                "expected a command",
                "here",
                "commands are `(declare-const ...)` and `(assert ...)`",
            ));
        };
        match head.as_str() {
            "declare-const" => {
                let [Sexp::Atom(v, vspan), Sexp::Atom(ty, tspan)] = args else {
                    return Err(p.ctx.err(
                        Code::VnnlibSyntax,
                        *span,
                        "malformed declaration",
                        "here",
                        "write `(declare-const X_0 Real)`",
                    ));
                };
                if ty != "Real" {
                    return Err(p.ctx.err(
                        Code::VnnlibUnsupported,
                        *tspan,
                        format!("variables of sort `{ty}` are not supported"),
                        "here",
                        "declare inputs and outputs as `Real`",
                    ));
                }
                let Some(key) = parse_var(v) else {
                    return Err(p.ctx.err(
                        Code::VnnlibVariable,
                        *vspan,
                        format!("`{v}` is not an input `X_i` or an output `Y_j`"),
                        "declared here",
                        "name inputs `X_0`, `X_1`, … and outputs `Y_0`, `Y_1`, …",
                    ));
                };
                if p.declared.insert(key, *vspan).is_some() {
                    return Err(p.ctx.err(
                        Code::VnnlibVariable,
                        *vspan,
                        format!("`{v}` is declared twice"),
                        "again here",
                        "declare each variable once",
                    ));
                }
            }
            "assert" => {
                let [body] = args else {
                    return Err(p.ctx.err(
                        Code::VnnlibSyntax,
                        *span,
                        "`assert` takes one constraint",
                        "here",
                        "write `(assert (<= X_0 0.5))`",
                    ));
                };
                any_assert = true;
                let d = p.formula(body)?;
                match d.len() {
                    1 => always.extend(d.into_iter().flatten()),
                    _ => multi.push((d, *span)),
                }
            }
            "set-logic" | "set-info" | "set-option" | "check-sat" | "get-model" | "exit" => {}
            other => {
                return Err(p.ctx.err(
                    Code::VnnlibUnsupported,
                    *hspan,
                    format!("command `{other}` is not supported"),
                    "here",
                    "a property consists of `declare-const` and `assert` commands",
                ))
            }
        }
    }
    let count = |k: char| p.declared.keys().filter(|(c, _)| *c == k).map(|(_, i)| i + 1).max().unwrap_or(0);
    let (n_in, n_out) = (count('X'), count('Y'));
    for (k, n) in [('X', n_in), ('Y', n_out)] {
        if n == 0 {
            return Err(Error::input(
                Diagnostic::new(
                    Code::VnnlibVariable,
                    format!("the property declares no {} variables", if k == 'X' { "input" } else { "output" }),
                )
                .help(format!("declare `({} {k}_0 Real)` and the rest", "declare-const"))
                .with_source(src.clone()),
            ));
        }
        if let Some(missing) = (0..n).find(|i| !p.declared.contains_key(&(k, *i))) {
            let last = p.declared.get(&(k, n - 1)).copied().unwrap_or_default();
            return Err(p.ctx.err(
                Code::VnnlibVariable,
                last,
                format!("`{k}_{missing}` is not declared, but `{k}_{}` is", n - 1),
                "declared here",
                "declare every variable from index 0 on",
            ));
        }
    }
    if !any_assert {
        return Err(Error::input(
            Diagnostic::new(Code::VnnlibSyntax, "the property has no `assert`")
                .help("a property bounds the inputs and states the output condition with `(assert ...)`")
                .with_source(src.clone()),
        ));
    }
    let mut terms: Dnf = vec![always];
    let whole = Span::new(0, text.len());
    for (d, span) in multi {
        terms = p.product(terms, d, span)?;
    }
    let _ = whole;
    let declared = std::mem::take(&mut p.declared);
    let mut regions: Vec<Region> = Vec::new();
    for term in terms {
        let mut lo = vec![f64::NEG_INFINITY; n_in];
        let mut hi = vec![f64::INFINITY; n_in];
        let mut outs = Vec::new();
        let mut feasible = true;
        for a in &term {
            let xs: Vec<(usize, f64)> = a.lin.x.iter().filter(|(_, v)| **v != 0.0).map(|(i, v)| (*i, *v)).collect();
            let ys: Vec<(usize, f64)> = a.lin.y.iter().filter(|(_, v)| **v != 0.0).map(|(i, v)| (*i, *v)).collect();
            match (xs.as_slice(), ys.is_empty()) {
                ([], true) => {
                    let ok = if a.strict { a.lin.c > 0.0 } else { a.lin.c >= 0.0 };
                    feasible &= ok;
                }
                ([], false) => outs.push(Constraint { coef: ys, offset: a.lin.c, strict: a.strict }),
                ([(i, k)], true) => {
                    // k x + c >= 0
                    let b = -a.lin.c / k;
                    if *k > 0.0 {
                        lo[*i] = lo[*i].max(b);
                    } else {
                        hi[*i] = hi[*i].min(b);
                    }
                }
                (_, true) => {
                    return Err(p.ctx.err(
                        Code::VnnlibUnsupported,
                        a.span,
                        "a constraint on several inputs",
                        "couples inputs",
                        "only bounds on single inputs (`(<= X_i c)`, `(>= X_i c)`) are supported",
                    ))
                }
                (_, false) => {
                    return Err(p.ctx.err(
                        Code::VnnlibUnsupported,
                        a.span,
                        "a constraint on inputs and outputs together",
                        "mixes X and Y",
                        "constrain the inputs with bounds and the outputs separately",
                    ))
                }
            }
        }
        if !feasible || lo.iter().zip(&hi).any(|(l, h)| l > h) {
            continue;
        }
        if let Some(i) = (0..n_in).find(|&i| !lo[i].is_finite() || !hi[i].is_finite()) {
            let span = declared.get(&('X', i)).copied().unwrap_or_default();
            return Err(p.ctx.err(
                Code::VnnlibUnsupported,
                span,
                format!("input `X_{i}` has no {} bound", if lo[i].is_finite() { "upper" } else { "lower" }),
                "declared here",
                format!(
                    "bound every input on both sides, e.g. `(assert (>= X_{i} 0.0))` and `(assert (<= X_{i} 1.0))`"
                ),
            ));
        }
        match regions.iter_mut().find(|r| r.lo == lo && r.hi == hi) {
            Some(r) => r.disjuncts.push(outs),
            None => regions.push(Region { lo, hi, disjuncts: vec![outs] }),
        }
    }
    Ok(Property {
        n_inputs: n_in,
        n_outputs: n_out,
        regions,
        source: src,
        input_decl: declared.get(&('X', n_in.saturating_sub(1))).copied(),
        output_decl: declared.get(&('Y', n_out.saturating_sub(1))).copied(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "; a comment\n(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n(assert (<= X_0 1.0))\n(assert (>= X_0 -1.0))\n(assert (<= X_1 0.5))\n(assert (>= X_1 0))\n(assert (or (and (>= Y_0 Y_1)) (and (<= Y_1 (- 3.0)) (> (+ Y_0 (* 2 Y_1)) 0.5))))\n";

    #[test]
    fn parses_boxes_and_disjunctions() {
        let p = parse("small.vnnlib", SMALL).unwrap();
        assert_eq!((p.n_inputs, p.n_outputs), (2, 2));
        assert_eq!(p.regions.len(), 1);
        let r = &p.regions[0];
        assert_eq!(r.lo, vec![-1.0, 0.0]);
        assert_eq!(r.hi, vec![1.0, 0.5]);
        assert_eq!(r.disjuncts.len(), 2);
        assert!(r.disjuncts[0][0].holds(&[2.0, 1.0]));
        assert!(!r.disjuncts[0][0].holds(&[0.0, 1.0]));
        let d = &r.disjuncts[1];
        assert_eq!(d.len(), 2);
        assert!(d[0].holds(&[0.0, -3.0]) && !d[0].holds(&[0.0, -2.9]));
        assert!(d[1].strict && d[1].holds(&[10.0, -3.0]));
    }

    #[test]
    fn several_input_boxes() {
        let t = "(declare-const X_0 Real)(declare-const Y_0 Real)(declare-const Y_1 Real)\n(assert (or (and (>= X_0 0) (<= X_0 1) (>= Y_0 Y_1)) (and (>= X_0 2) (<= X_0 3) (<= Y_0 0.0))))";
        let p = parse("boxes.vnnlib", t).unwrap();
        assert_eq!(p.regions.len(), 2);
        assert_eq!(p.regions[1].lo, vec![2.0]);
    }

    fn code(r: Result<Property>) -> Code {
        match r {
            Err(Error::Input(d)) => d[0].code,
            Err(e) => panic!("not a diagnostic: {e}"),
            Ok(_) => panic!("parsed"),
        }
    }

    #[test]
    fn malformed_files_are_diagnostics() {
        assert_eq!(code(parse("t", &SMALL[..SMALL.len() - 10])), Code::VnnlibSyntax);
        assert_eq!(code(parse("t", "(declare-const X_0 Real)(assert (<= X_3 1))")), Code::VnnlibVariable);
        assert_eq!(
            code(parse("t", "(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))")),
            Code::VnnlibUnsupported
        );
        assert_eq!(
            code(parse("t", "(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= (* X_0 Y_0) 1))")),
            Code::VnnlibUnsupported
        );
        assert_eq!(code(parse("t", ")")), Code::VnnlibSyntax);
        assert_eq!(
            code(parse("t", "(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 abc))")),
            Code::VnnlibSyntax
        );
        assert_eq!(code(parse("t", "")), Code::VnnlibVariable);
    }
}
