//! Lowering: AST -> petgraph DAG, expanding blocks, resolving names and arguments, inferring shapes.
//! Every problem becomes a [`Diagnostic`]; lowering goes on after an error (a failed node is bound to a
//! "poisoned" marker so that its uses do not cascade), so one run reports all independent errors.

use std::collections::{HashMap, HashSet};

use petgraph::graph::{DiGraph, NodeIndex};

use super::graph::{Node, NodeKind};
use crate::diagnostics::{did_you_mean, Code, Diagnostic};
use crate::ops::{
    self, shape::fmt as fmt_shape, Arity, Attrs, Default as PDefault, Min, Op, ParamKind, ShapeError, Value,
};
use crate::syntax::ast::*;

/// The result of lowering: the (possibly partial) DAG and every diagnostic found.
pub struct Lowered {
    pub name: String,
    pub dag: DiGraph<Node, usize>,
    pub input: Option<NodeIndex>,
    pub output: Option<(NodeIndex, Span)>,
    pub diagnostics: Vec<Diagnostic>,
    /// A node's defining span per node, and whether it was defined inside a block.
    pub network_span: Span,
}

#[derive(Clone, Copy, Debug)]
enum Binding {
    Node(NodeIndex),
    /// The definition failed; uses are silently skipped (the failure was reported).
    Poisoned,
}

#[derive(Clone, Debug)]
enum ParamVal {
    Val(Value),
    Poisoned,
}

struct Scope {
    prefix: String,
    env: HashMap<String, (Binding, Span)>,
    params: HashMap<String, (ParamVal, Span)>,
    /// Every name assigned in this body, with the spans of its first definition's name and statement (to tell
    /// "used before definition" from "undefined").
    defined: HashMap<String, (Span, Span)>,
    in_block: Option<String>,
}

struct Lowerer<'a> {
    blocks: HashMap<&'a str, &'a BlockDef>,
    dag: DiGraph<Node, usize>,
    diags: Vec<Diagnostic>,
    seen: HashSet<(Code, usize, usize)>,
    stack: Vec<String>,
    input: Option<(NodeIndex, Span)>,
    /// The first `input` statement, even when its shape was invalid (so that it is not also reported missing).
    declared_input: Option<Span>,
    /// Whether the network body has an `input` statement at all (for the help of undefined names).
    network_has_input: bool,
}

/// The largest value of an integer argument (`out`, `kernel`, `stride`, `padding`) and of an input dimension.
/// Far above any real network; it keeps every size computation of the shape rules within `usize`.
pub const MAX_INT_ARG: i64 = 1 << 20;

/// The largest number of values of one node for one example (2^32, 16 GiB of f32).
pub const MAX_NODE_VALUES: usize = 1 << 32;

/// A literal as written, cut to 40 characters for a message.
fn short(lit: &Literal) -> String {
    let s = lit.to_string();
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// The number of values of a shape, if it fits in `usize`.
fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

pub fn lower(file: &File) -> Lowered {
    let mut lw = Lowerer {
        blocks: HashMap::new(),
        dag: DiGraph::new(),
        diags: Vec::new(),
        seen: HashSet::new(),
        stack: Vec::new(),
        input: None,
        declared_input: None,
        network_has_input: false,
    };
    for b in &file.blocks {
        if let Some(prev) = lw.blocks.get(b.name.node.as_str()) {
            lw.report(
                Diagnostic::new(Code::DuplicateBlock, format!("block `{}` is defined twice", b.name.node))
                    .label(b.name.span, "defined again here")
                    .label(prev.name.span, "first defined here")
                    .help("rename one of the blocks"),
            );
            continue;
        }
        if let Some(op) = ops::lookup(&b.name.node) {
            lw.report(
                Diagnostic::new(
                    Code::ShadowedOp,
                    format!("block `{}` shadows the built-in op `{}`", b.name.node, op.name()),
                )
                .label(b.name.span, "this block is used instead of the op")
                .help("rename the block to keep the built-in op reachable"),
            );
        }
        let mut names: HashMap<&str, Span> = HashMap::new();
        for n in b.inputs.iter().chain(b.params.iter().map(|p| &p.name)) {
            if let Some(prev) = names.insert(n.node.as_str(), n.span) {
                lw.report(
                    Diagnostic::new(
                        Code::DuplicateBlock,
                        format!("`{}` is declared twice in block `{}`", n.node, b.name.node),
                    )
                    .label(n.span, "declared again here")
                    .label(prev, "first declared here")
                    .help("give every block input and parameter its own name"),
                );
            }
        }
        lw.blocks.insert(b.name.node.as_str(), b);
    }

    let mut out = Lowered {
        name: String::new(),
        dag: DiGraph::new(),
        input: None,
        output: None,
        diagnostics: Vec::new(),
        network_span: Span::default(),
    };
    let Some(net) = file.networks.first() else {
        let help = if file.blocks.is_empty() {
            "a spec holds exactly one `network NAME { input x: [C, H, W]  ...  output NAME }`"
        } else {
            "a spec holds exactly one `network NAME { input ...  output ... }`; blocks alone are not a network"
        };
        lw.report(
            Diagnostic::new(Code::NoNetwork, "no network in this file")
                .label(Span::new(0, 0), "expected `network NAME { ... }`")
                .help(help),
        );
        out.diagnostics = lw.diags;
        return out;
    };
    for extra in &file.networks[1..] {
        lw.report(
            Diagnostic::new(
                Code::NoNetwork,
                format!("more than one network in this file (`{}` and `{}`)", net.name.node, extra.name.node),
            )
            .label(extra.name.span, "second network")
            .label(net.name.span, "first network")
            .help("put each network in its own file; share layers between them with blocks"),
        );
    }
    let mut scope = Scope {
        prefix: String::new(),
        env: HashMap::new(),
        params: HashMap::new(),
        defined: defined_names(&net.body),
        in_block: None,
    };
    lw.network_has_input = net.body.iter().any(|s| matches!(s, Stmt::Input { .. }));
    let output = lw.body(&net.body, &mut scope);
    if lw.declared_input.is_none() {
        lw.report(
            Diagnostic::new(Code::MissingInput, format!("network `{}` has no input", net.name.node))
                .label(net.name.span, "this network declares no `input`")
                .help("declare the input shape first, e.g. `input x: [1, 28, 28]`"),
        );
    }
    match output {
        None => lw.report(
            Diagnostic::new(Code::MissingOutput, format!("network `{}` has no output", net.name.node))
                .label(net.name.span, "this network declares no `output`")
                .help("name the node holding the class scores, e.g. `output l2`"),
        ),
        Some((Binding::Node(i), span)) => {
            let shape = lw.dag[i].shape.clone();
            if shape.len() != 1 || shape[0] < 2 {
                lw.report(
                    Diagnostic::new(
                        Code::OutputNotScores,
                        format!("the output `{}` has shape {}, not a vector of class scores", lw.dag[i].name, fmt_shape(&shape)),
                    )
                    .label(span, format!("shape {}", fmt_shape(&shape)))
                    .help("end the network with `flatten` (for images) and `linear(..., out=NUM_CLASSES)` with at least 2 classes"),
                );
            }
            out.output = Some((i, span));
        }
        Some((Binding::Poisoned, _)) => {}
    }
    out.name = net.name.node.clone();
    out.network_span = net.span;
    out.input = lw.input.map(|(i, _)| i);
    out.dag = lw.dag;
    out.diagnostics = lw.diags;
    out
}

fn defined_names(body: &[Stmt]) -> HashMap<String, (Span, Span)> {
    let mut m = HashMap::new();
    for s in body {
        match s {
            Stmt::Assign { name, span, .. } | Stmt::Input { name, span, .. } => {
                m.entry(name.node.clone()).or_insert((name.span, *span));
            }
            Stmt::Output { .. } => {}
        }
    }
    m
}

impl<'a> Lowerer<'a> {
    fn report(&mut self, d: Diagnostic) {
        let key = d.labels.first().map(|l| (d.code, l.span.start, l.span.end)).unwrap_or((d.code, 0, 0));
        if self.seen.insert(key) {
            self.diags.push(d);
        }
    }

    /// Lower a body; returns the binding named by its `output` statement.
    fn body(&mut self, body: &'a [Stmt], scope: &mut Scope) -> Option<(Binding, Span)> {
        let mut output: Option<(Binding, Span)> = None;
        for stmt in body {
            match stmt {
                Stmt::Input { name, shape, span } => self.input_stmt(name, shape, *span, scope),
                Stmt::Output { name, span } => {
                    if let Some((_, prev)) = output {
                        self.report(
                            Diagnostic::new(Code::RepeatedOutput, "more than one `output`")
                                .label(*span, "second output")
                                .label(prev, "first output")
                                .help("a network (or block) has exactly one output; keep one `output` statement"),
                        );
                        continue;
                    }
                    let b = self.resolve(name, scope).unwrap_or(Binding::Poisoned);
                    output = Some((b, *span));
                }
                Stmt::Assign { name, expr, span } => self.assign(name, expr, *span, scope),
            }
        }
        output
    }

    fn input_stmt(&mut self, name: &Ident, shape: &Spanned<Literal>, span: Span, scope: &mut Scope) {
        if let Some(block) = &scope.in_block {
            self.report(
                Diagnostic::new(Code::RepeatedInput, format!("`input` inside block `{block}`"))
                    .label(span, "not allowed in a block")
                    .help("a block receives its inputs through its signature, e.g. `block res(x; out) { ... }`"),
            );
            return;
        }
        if let Some(prev) = self.declared_input {
            self.report(
                Diagnostic::new(Code::RepeatedInput, "more than one `input`")
                    .label(span, "second input")
                    .label(prev, "first input")
                    .help("a network has exactly one input tensor; keep one `input` statement"),
            );
            return;
        }
        self.declared_input = Some(span);
        if self.duplicate(name, scope) {
            return;
        }
        let dims = match &shape.node {
            Literal::List(items) if items.len() == 1 || items.len() == 3 => {
                let v: Vec<Option<usize>> = items
                    .iter()
                    .map(|i| if let Literal::Int(k) = i.node { (k > 0).then_some(k as usize) } else { None })
                    .collect();
                v.into_iter().collect::<Option<Vec<usize>>>()
            }
            _ => None,
        };
        let too_large = dims.as_ref().is_some_and(|d| {
            d.iter().any(|&k| k as u64 > MAX_INT_ARG as u64) || numel(d).is_none_or(|n| n > MAX_NODE_VALUES)
        });
        if too_large {
            self.report(
                Diagnostic::new(Code::InputShape, format!("input shape `{}` is too large", short(&shape.node)))
                    .label(
                        shape.span,
                        format!("at most {MAX_INT_ARG} per dimension and {MAX_NODE_VALUES} values in all"),
                    )
                    .help("write the shape of one example without the batch, e.g. `[3, 32, 32]` for CIFAR-10"),
            );
            scope.env.insert(name.node.clone(), (Binding::Poisoned, name.span));
            return;
        }
        let Some(dims) = dims else {
            self.report(
                Diagnostic::new(Code::InputShape, format!("invalid input shape `{}`", short(&shape.node)))
                    .label(shape.span, "expected [C, H, W] or [N] with positive integers")
                    .help("write the shape of one example without the batch, e.g. `[1, 28, 28]` for MNIST or `[784]`"),
            );
            scope.env.insert(name.node.clone(), (Binding::Poisoned, name.span));
            return;
        };
        let idx = self.dag.add_node(Node {
            name: name.node.clone(),
            kind: NodeKind::Input,
            attrs: Attrs::default(),
            shape: dims,
            inputs: vec![],
            span,
            weights: vec![],
        });
        self.input = Some((idx, span));
        scope.env.insert(name.node.clone(), (Binding::Node(idx), name.span));
    }

    /// Report (and return true) if `name` is already bound in this scope.
    fn duplicate(&mut self, name: &Ident, scope: &Scope) -> bool {
        let prev = scope.env.get(&name.node).map(|(_, s)| *s).or_else(|| scope.params.get(&name.node).map(|(_, s)| *s));
        if let Some(prev) = prev {
            self.report(
                Diagnostic::new(Code::DuplicateNode, format!("`{}` is defined twice", name.node))
                    .label(name.span, "defined again here")
                    .label(prev, "first defined here")
                    .help("give every node its own name"),
            );
            return true;
        }
        false
    }

    fn resolve(&mut self, name: &Ident, scope: &Scope) -> Option<Binding> {
        if let Some((b, _)) = scope.env.get(&name.node) {
            return Some(*b);
        }
        if let Some(&(def, stmt)) = scope.defined.get(&name.node) {
            if stmt.start <= name.span.start && name.span.end <= stmt.end {
                self.report(
                    Diagnostic::new(
                        Code::UsedBeforeDefinition,
                        format!("`{}` is used in its own definition", name.node),
                    )
                    .label(name.span, "used here")
                    .label(def, "defined here")
                    .help("a node can only use nodes defined before it, so the graph has no cycles"),
                );
                return None;
            }
            if def.start > name.span.start {
                self.report(
                    Diagnostic::new(Code::UsedBeforeDefinition, format!("`{}` is used before its definition", name.node))
                        .label(name.span, "used here")
                        .label(def, "defined later here")
                        .help("move the definition above its first use; nodes are evaluated in order, so the graph has no cycles"),
                );
                return None;
            }
            // Defined earlier but its definition failed and left no binding (e.g. a duplicate): stay quiet.
            return None;
        }
        if scope.params.contains_key(&name.node) {
            self.report(
                Diagnostic::new(Code::ArgumentType, format!("`{}` is a block parameter, not a node", name.node))
                    .label(name.span, "a value, not a tensor")
                    .help("pass tensors as block inputs (before the `;` in the block signature)"),
            );
            return None;
        }
        let candidates: Vec<&str> = scope.env.keys().map(|s| s.as_str()).collect();
        let mut d = Diagnostic::new(Code::UndefinedNode, format!("undefined node `{}`", name.node))
            .label(name.span, "not defined");
        d = match did_you_mean(&name.node, candidates) {
            Some(c) => d.help(format!("did you mean `{c}`?")),
            None if scope.in_block.is_none() && !self.network_has_input => d.help(format!(
                "the network declares no `input`; if `{0}` is meant to be it, declare it first: `input {0}: [C, H, W]`",
                name.node
            )),
            None => d.help("define the node before using it, e.g. `NAME = op(...)`"),
        };
        self.report(d);
        None
    }

    fn assign(&mut self, name: &Ident, expr: &'a Expr, span: Span, scope: &mut Scope) {
        if self.duplicate(name, scope) {
            return;
        }
        let binding = match expr {
            Expr::Sum(terms) => {
                let inputs: Vec<(Option<Binding>, Span)> =
                    terms.iter().map(|t| (self.resolve(t, scope), t.span)).collect();
                self.op_node(name, &ops::add::Add, Attrs::default(), inputs, span, None, scope)
            }
            Expr::Call { callee, args } => {
                if let Some(block) = self.blocks.get(callee.node.as_str()).copied() {
                    self.instantiate(name, block, callee, args, scope)
                } else if let Some(op) = ops::lookup(&callee.node) {
                    self.call_op(name, op, callee, args, span, scope)
                } else {
                    let names: Vec<&str> =
                        ops::REGISTRY.iter().map(|o| o.name()).chain(self.blocks.keys().copied()).collect();
                    let mut d = Diagnostic::new(Code::UnknownOp, format!("unknown op `{}`", callee.node))
                        .label(callee.span, "no op or block has this name");
                    d = match did_you_mean(&callee.node, names.iter().copied()) {
                        Some(c) => d.help(format!("did you mean `{c}`?")),
                        None => d.help(format!("ops with dual rules: {}", ops::supported_names().join(", "))),
                    };
                    self.report(d);
                    Binding::Poisoned
                }
            }
        };
        scope.env.insert(name.node.clone(), (binding, name.span));
    }

    /// Evaluate an argument literal against a parameter kind.
    fn value(&mut self, lit: &Spanned<Literal>, pname: &str, kind: ParamKind, scope: &Scope) -> Option<Value> {
        let v = match &lit.node {
            Literal::Int(i) => Value::Int(*i),
            Literal::Float(x) => Value::Float(*x),
            Literal::Name(n) => match scope.params.get(n) {
                Some((ParamVal::Val(v), _)) => v.clone(),
                Some((ParamVal::Poisoned, _)) => return None,
                None => {
                    if let Some(block) = &scope.in_block {
                        let cands: Vec<&str> = scope.params.keys().map(|s| s.as_str()).collect();
                        let mut d = Diagnostic::new(
                            Code::UnknownParameter,
                            format!("unknown parameter `{n}` in block `{block}`"),
                        )
                        .label(lit.span, "not a parameter of this block");
                        d = match did_you_mean(n, cands) {
                            Some(c) => d.help(format!("did you mean `{c}`?")),
                            None => d.help(format!("declare it in the block signature, e.g. `block {block}(x; {n})`")),
                        };
                        self.report(d);
                    } else {
                        let what =
                            if scope.env.contains_key(n) { format!("node `{n}`") } else { format!("name `{n}`") };
                        self.report(
                            Diagnostic::new(Code::ArgumentType, format!("`{pname}` expects {}, found {what}", kind.describe()))
                                .label(lit.span, format!("expected {}", kind.describe()))
                                .help("named arguments take numbers; names stand for values only inside blocks, as block parameters"),
                        );
                    }
                    return None;
                }
            },
            Literal::List(_) => {
                self.report(
                    Diagnostic::new(Code::ArgumentType, format!("`{pname}` expects {}, found a list", kind.describe()))
                        .label(lit.span, format!("expected {}", kind.describe()))
                        .help("kernels are square: give one integer, e.g. `kernel=3`"),
                );
                return None;
            }
        };
        match (kind, v) {
            (ParamKind::Int, Value::Int(i)) => Some(Value::Int(i)),
            (ParamKind::Float, v) => {
                if v.as_f64().is_finite() {
                    Some(Value::Float(v.as_f64()))
                } else {
                    self.report(
                        Diagnostic::new(Code::ArgumentValue, format!("`{pname}` must be finite"))
                            .label(lit.span, "not a finite number")
                            .help("give a finite number"),
                    );
                    None
                }
            }
            (ParamKind::Int, Value::Float(x)) => {
                self.report(
                    Diagnostic::new(Code::ArgumentType, format!("`{pname}` expects an integer, found `{x}`"))
                        .label(lit.span, "expected an integer")
                        .help(format!("write a whole number, e.g. `{pname}={}`", x.round().max(1.0) as i64)),
                );
                None
            }
        }
    }

    fn call_op(
        &mut self,
        name: &Ident,
        op: &'static dyn Op,
        callee: &Ident,
        args: &'a [Arg],
        span: Span,
        scope: &mut Scope,
    ) -> Binding {
        let positional: Vec<&Arg> = args.iter().filter(|a| a.name.is_none()).collect();
        let n_nodes = match op.arity() {
            Arity::Exactly(k) => k.min(positional.len()),
            Arity::AtLeast(_) => positional.len(),
        };
        let (node_args, extra) = positional.split_at(n_nodes);
        let mut ok = true;
        // Node operands.
        let mut inputs = Vec::new();
        for a in node_args {
            match &a.value.node {
                Literal::Name(n) => {
                    let id = Spanned::new(n.clone(), a.value.span);
                    inputs.push((self.resolve(&id, scope), a.value.span));
                }
                other => {
                    self.report(
                        Diagnostic::new(
                            Code::ArgumentType,
                            format!("`{}` expects a node as input, found `{other}`", op.name()),
                        )
                        .label(a.value.span, "expected a node name")
                        .help(format!(
                            "the inputs of `{}` come first, e.g. `{}(x, ...)`",
                            op.name(),
                            op.name()
                        )),
                    );
                    inputs.push((None, a.value.span));
                    ok = false;
                }
            }
        }
        if !op.arity().accepts(inputs.len()) {
            self.report(
                Diagnostic::new(
                    Code::Arity,
                    format!("`{}` takes {}, got {}", op.name(), op.arity().describe(), inputs.len()),
                )
                .label(callee.span, format!("called with {} input(s)", inputs.len()))
                .help(format!("write `{}(SRC, ...)`", op.name())),
            );
            return Binding::Poisoned;
        }
        // Named arguments (and extra positional values, taken in parameter order).
        let specs = op.params();
        let mut given: HashMap<&str, (&Arg, Span)> = HashMap::new();
        let mut free = specs
            .iter()
            .map(|p| p.name)
            .filter(|n| !args.iter().any(|a| a.name.as_ref().map(|x| x.node.as_str()) == Some(*n)));
        for a in extra {
            match free.next() {
                Some(p) => {
                    given.insert(p, (a, a.span));
                }
                None => {
                    self.report(
                        Diagnostic::new(Code::Arity, format!("too many arguments for `{}`", op.name()))
                            .label(a.span, "extra argument")
                            .help(if specs.is_empty() {
                                format!(
                                    "`{}` takes {} and no other arguments; to combine nodes, sum them first: `s = a + b`",
                                    op.name(),
                                    op.arity().describe()
                                )
                            } else {
                                param_help(op)
                            }),
                    );
                    ok = false;
                }
            }
        }
        for a in args.iter().filter(|a| a.name.is_some()) {
            let Some(an) = &a.name else { continue };
            let Some(spec) = specs.iter().find(|p| p.name == an.node) else {
                let mut d =
                    Diagnostic::new(Code::UnknownArgument, format!("`{}` has no argument `{}`", op.name(), an.node))
                        .label(an.span, "unknown argument");
                d = match did_you_mean(&an.node, specs.iter().map(|p| p.name)) {
                    Some(c) => d.help(format!("did you mean `{c}`? {}", param_help(op))),
                    None => d.help(param_help(op)),
                };
                self.report(d);
                ok = false;
                continue;
            };
            if let Some((_, prev)) = given.get(spec.name) {
                self.report(
                    Diagnostic::new(Code::DuplicateArgument, format!("argument `{}` is given twice", spec.name))
                        .label(a.span, "given again here")
                        .label(*prev, "first given here")
                        .help("keep one value for each argument"),
                );
                ok = false;
                continue;
            }
            given.insert(spec.name, (a, a.span));
        }
        let mut attrs = Attrs::default();
        for spec in specs {
            if let Some((a, _)) = given.get(spec.name) {
                let Some(v) = self.value(&a.value, spec.name, spec.kind, scope) else {
                    ok = false;
                    continue;
                };
                let low = match spec.min {
                    Min::Any => None,
                    Min::NonNegative => Some(0),
                    Min::Positive => Some(1),
                };
                if let Value::Int(i) = &v {
                    if *i > MAX_INT_ARG {
                        self.report(
                            Diagnostic::new(Code::ArgumentValue, format!("`{}` is too large, found {i}", spec.name))
                                .label(a.value.span, format!("at most {MAX_INT_ARG}"))
                                .help(format!("integer arguments are at most {MAX_INT_ARG}; no layer of a real network comes near it")),
                        );
                        ok = false;
                        continue;
                    }
                }
                if let (Some(low), Value::Int(i)) = (low, &v) {
                    if *i < low {
                        let what = if low == 0 { "must not be negative" } else { "must be at least 1" };
                        self.report(
                            Diagnostic::new(Code::ArgumentValue, format!("`{}` {what}, found {i}", spec.name))
                                .label(a.value.span, format!("`{}` {what}", spec.name))
                                .help(value_help(spec.name)),
                        );
                        ok = false;
                        continue;
                    }
                }
                attrs.0.insert(spec.name.to_string(), v);
            }
        }
        for spec in specs {
            if attrs.0.contains_key(spec.name) || given.contains_key(spec.name) {
                continue;
            }
            match spec.default {
                PDefault::Required => {
                    self.report(
                        Diagnostic::new(
                            Code::MissingArgument,
                            format!("`{}` needs the argument `{}`", op.name(), spec.name),
                        )
                        .label(callee.span, format!("missing `{}`", spec.name))
                        .help(format!("add `{}=...`; {}", spec.name, param_help(op))),
                    );
                    ok = false;
                }
                PDefault::Int(i) => {
                    attrs.0.insert(spec.name.to_string(), Value::Int(i));
                }
                PDefault::Float(x) => {
                    attrs.0.insert(spec.name.to_string(), Value::Float(x));
                }
                PDefault::SameAs(other) => {
                    if let Some(v) = attrs.0.get(other).cloned() {
                        attrs.0.insert(spec.name.to_string(), v);
                    }
                }
            }
        }
        if !ok {
            if !op.has_dual() {
                self.no_dual(op, callee);
            }
            return Binding::Poisoned;
        }
        self.op_node(name, op, attrs, inputs, span, Some(callee), scope)
    }

    fn no_dual(&mut self, op: &'static dyn Op, callee: &Ident) {
        let alt = op.alternatives();
        self.report(
            Diagnostic::new(Code::NoDualRule, format!("`{}` has no dual rule", op.name()))
                .label(callee.span, "cannot be certified yet")
                .help(format!("{alt}; ops with dual rules: {}", ops::supported_names().join(", "))),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn op_node(
        &mut self,
        name: &Ident,
        op: &'static dyn Op,
        attrs: Attrs,
        inputs: Vec<(Option<Binding>, Span)>,
        span: Span,
        callee: Option<&Ident>,
        scope: &Scope,
    ) -> Binding {
        if !op.has_dual() {
            if let Some(c) = callee {
                self.no_dual(op, c);
            }
        }
        let mut idx = Vec::new();
        for (b, _) in &inputs {
            match b {
                Some(Binding::Node(i)) => idx.push(*i),
                _ => return Binding::Poisoned,
            }
        }
        let shapes: Vec<&ops::Shape> = idx.iter().map(|i| &self.dag[*i].shape).collect();
        let out = match op.parse_args(&attrs).and_then(|()| op.infer_shape(&attrs, &shapes)) {
            Ok(s) => s,
            Err(e) => {
                let d = self.shape_error(e, op, &idx, &inputs, span, callee);
                self.report(d);
                return Binding::Poisoned;
            }
        };
        if numel(&out).is_none_or(|n| n > MAX_NODE_VALUES) {
            let at = callee.map(|c| c.span).unwrap_or(span);
            let from: Vec<String> =
                idx.iter().map(|i| format!("`{}` {}", self.dag[*i].name, fmt_shape(&self.dag[*i].shape))).collect();
            let values = out.iter().map(|&d| d as u128).product::<u128>();
            self.report(
                Diagnostic::new(
                    Code::ShapeMismatch,
                    format!(
                        "`{}` would have shape {}, too large for one node (`{}` of {})",
                        name.node,
                        fmt_shape(&out),
                        op.name(),
                        from.join(", ")
                    ),
                )
                .label(at, format!("{values} values per example, more than {MAX_NODE_VALUES}"))
                .help("reduce the size: fewer output channels or features, a stride, pooling, or less padding"),
            );
            return Binding::Poisoned;
        }
        if out.contains(&0) {
            self.report(
                Diagnostic::new(Code::EmptyOutput, format!("`{}` would have shape {}", name.node, fmt_shape(&out)))
                    .label(span, "an empty tensor")
                    .help("check the sizes: every dimension must be at least 1"),
            );
            return Binding::Poisoned;
        }
        if let Some(steps) = op.expand(&attrs, &shapes) {
            return self.expansion(name, op, steps, &idx, span, scope);
        }
        let weights = op.weights(&attrs, &shapes, &out);
        let node = Node {
            name: format!("{}{}", scope.prefix, name.node),
            kind: NodeKind::Op(op),
            attrs,
            shape: out,
            inputs: idx.clone(),
            span,
            weights,
        };
        let n = self.dag.add_node(node);
        for (pos, i) in idx.iter().enumerate() {
            self.dag.add_edge(*i, n, pos);
        }
        Binding::Node(n)
    }

    /// The nodes of an op's expansion ([`ops::Op::expand`]), named `<name>.<suffix>` but the last, `<name>`.
    fn expansion(
        &mut self,
        name: &Ident,
        op: &'static dyn Op,
        steps: Vec<ops::Step>,
        idx: &[NodeIndex],
        span: Span,
        scope: &Scope,
    ) -> Binding {
        let mut made: Vec<NodeIndex> = Vec::new();
        let last = steps.len().saturating_sub(1);
        for (k, step) in steps.into_iter().enumerate() {
            let ins: Vec<NodeIndex> = step
                .inputs
                .iter()
                .filter_map(|r| match *r {
                    ops::StepInput::Call(i) => idx.get(i).copied(),
                    ops::StepInput::Step(j) => made.get(j).copied(),
                })
                .collect();
            let shapes: Vec<&ops::Shape> = ins.iter().map(|i| &self.dag[*i].shape).collect();
            let shape = match step.op.parse_args(&step.attrs).and_then(|()| step.op.infer_shape(&step.attrs, &shapes)) {
                Ok(s) if ins.len() == step.inputs.len() => s,
                other => {
                    self.report(
                        Diagnostic::new(
                            Code::ShapeMismatch,
                            format!("internal: step `{}` of `{}`'s expansion: {other:?}", step.suffix, op.name()),
                        )
                        .label(span, "in this call"),
                    );
                    return Binding::Poisoned;
                }
            };
            let weights = step.op.weights(&step.attrs, &shapes, &shape);
            let node_name = match k == last {
                true => format!("{}{}", scope.prefix, name.node),
                false => format!("{}{}.{}", scope.prefix, name.node, step.suffix),
            };
            let node = Node {
                name: node_name,
                kind: NodeKind::Op(step.op),
                attrs: step.attrs,
                shape,
                inputs: ins.clone(),
                span,
                weights,
            };
            let n = self.dag.add_node(node);
            for (pos, i) in ins.iter().enumerate() {
                self.dag.add_edge(*i, n, pos);
            }
            made.push(n);
        }
        made.last().map(|&n| Binding::Node(n)).unwrap_or(Binding::Poisoned)
    }

    fn shape_error(
        &self,
        e: ShapeError,
        op: &'static dyn Op,
        idx: &[NodeIndex],
        inputs: &[(Option<Binding>, Span)],
        span: Span,
        callee: Option<&Ident>,
    ) -> Diagnostic {
        let at = callee.map(|c| c.span).unwrap_or(span);
        let src = |k: usize| (self.dag[idx[k]].name.clone(), inputs[k].1);
        match e {
            ShapeError::NeedsVector { got } => {
                let (n, s) = src(0);
                Diagnostic::new(
                    Code::LinearOnImage,
                    format!("`{}` needs a vector, but `{n}` has shape {}", op.name(), fmt_shape(&got)),
                )
                .label(s, format!("shape {}", fmt_shape(&got)))
                .label(at, "expects [N]")
                .help(format!("insert `flatten` first: `f = flatten({n})`, then apply `{}` to `f`", op.name()))
            }
            ShapeError::NeedsImage { got } => {
                let (n, s) = src(0);
                Diagnostic::new(
                    Code::ConvOnVector,
                    format!("`{}` needs an image [C, H, W], but `{n}` has shape {}", op.name(), fmt_shape(&got)),
                )
                .label(s, format!("shape {}", fmt_shape(&got)))
                .label(at, "expects [C, H, W]")
                .help(format!("apply `{}` before `flatten`, or declare the input as `[C, H, W]`", op.name()))
            }
            ShapeError::EmptyOutput { detail } => Diagnostic::new(
                Code::EmptyOutput,
                format!("`{}` would produce an empty output", op.name()),
            )
            .label(at, detail)
            .help("use a smaller kernel or stride, or more padding, or apply it earlier where the image is larger"),
            ShapeError::Mismatch { shapes } => {
                let mut d = Diagnostic::new(
                    Code::SumShapeMismatch,
                    format!(
                        "shapes of the summands differ: {}",
                        shapes.iter().map(fmt_shape).collect::<Vec<_>>().join(" vs ")
                    ),
                );
                for (k, s) in shapes.iter().enumerate() {
                    let (n, sp) = src(k);
                    d = d.label(sp, format!("`{n}` has shape {}", fmt_shape(s)));
                }
                d.help("a sum adds nodes of equal shape; project the skip with a `conv2d` (e.g. 1x1, or 2x2 stride 2 to halve the size) to match")
            }
            ShapeError::BadValue { param, detail } => Diagnostic::new(Code::ArgumentValue, detail.clone())
                .label(at, detail)
                .help(format!("fix the value of `{param}`")),
            ShapeError::Other { detail } => Diagnostic::new(Code::ShapeMismatch, format!("`{}`: {detail}", op.name()))
                .label(at, detail)
                .help("check the shape of the input"),
        }
    }

    fn instantiate(
        &mut self,
        name: &Ident,
        block: &'a BlockDef,
        callee: &Ident,
        args: &'a [Arg],
        scope: &mut Scope,
    ) -> Binding {
        let bname = block.name.node.clone();
        if self.stack.contains(&bname) {
            self.report(
                Diagnostic::new(Code::BlockRecursion, format!("block `{bname}` instantiates itself"))
                    .label(callee.span, "recursive use")
                    .label(block.name.span, "in this block")
                    .help("blocks are expanded at compile time, so they cannot be recursive; unroll the repetition by hand"),
            );
            return Binding::Poisoned;
        }
        let mut ok = true;
        let positional: Vec<&Arg> = args.iter().filter(|a| a.name.is_none()).collect();
        if positional.len() != block.inputs.len() {
            self.report(
                Diagnostic::new(
                    Code::Arity,
                    format!("block `{bname}` takes {} input(s), got {}", block.inputs.len(), positional.len()),
                )
                .label(callee.span, format!("called with {} input(s)", positional.len()))
                .help(format!(
                    "pass the inputs {} before the named parameters",
                    block.inputs.iter().map(|i| format!("`{}`", i.node)).collect::<Vec<_>>().join(", ")
                )),
            );
            return Binding::Poisoned;
        }
        let mut env = HashMap::new();
        for (inp, a) in block.inputs.iter().zip(&positional) {
            let b = match &a.value.node {
                Literal::Name(n) => self.resolve(&Spanned::new(n.clone(), a.value.span), scope),
                other => {
                    self.report(
                        Diagnostic::new(
                            Code::ArgumentType,
                            format!("block input `{}` expects a node, found `{other}`", inp.node),
                        )
                        .label(a.value.span, "expected a node name")
                        .help("block inputs are tensors; parameters are passed by name after them"),
                    );
                    None
                }
            };
            env.insert(inp.node.clone(), (b.unwrap_or(Binding::Poisoned), inp.span));
        }
        let mut params: HashMap<String, (ParamVal, Span)> = HashMap::new();
        for a in args.iter().filter(|a| a.name.is_some()) {
            let Some(an) = &a.name else { continue };
            let Some(decl) = block.params.iter().find(|p| p.name.node == an.node) else {
                let mut d =
                    Diagnostic::new(Code::UnknownParameter, format!("block `{bname}` has no parameter `{}`", an.node))
                        .label(an.span, "unknown parameter");
                d = match did_you_mean(&an.node, block.params.iter().map(|p| p.name.node.as_str())) {
                    Some(c) => d.help(format!("did you mean `{c}`?")),
                    None => d.help(format!(
                        "its parameters are: {}",
                        block.params.iter().map(|p| format!("`{}`", p.name.node)).collect::<Vec<_>>().join(", ")
                    )),
                };
                self.report(d);
                ok = false;
                continue;
            };
            if let Some((_, prev)) = params.get(&an.node) {
                self.report(
                    Diagnostic::new(Code::DuplicateArgument, format!("parameter `{}` is given twice", an.node))
                        .label(a.span, "given again here")
                        .label(*prev, "first given here")
                        .help("keep one value for each parameter"),
                );
                ok = false;
                continue;
            }
            let v = match &a.value.node {
                Literal::Int(i) => ParamVal::Val(Value::Int(*i)),
                Literal::Float(x) => ParamVal::Val(Value::Float(*x)),
                Literal::Name(n) => match scope.params.get(n) {
                    Some((v, _)) => v.clone(),
                    None => {
                        self.report(
                            Diagnostic::new(Code::UnknownParameter, format!("`{n}` is not a parameter here"))
                                .label(a.value.span, "unknown value")
                                .help("block parameters take numbers, or the parameters of an enclosing block"),
                        );
                        ParamVal::Poisoned
                    }
                },
                Literal::List(_) => {
                    self.report(
                        Diagnostic::new(
                            Code::ArgumentType,
                            format!("parameter `{}` expects a number, found a list", an.node),
                        )
                        .label(a.value.span, "expected a number")
                        .help("block parameters are numbers"),
                    );
                    ParamVal::Poisoned
                }
            };
            params.insert(decl.name.node.clone(), (v, a.span));
        }
        for decl in &block.params {
            if params.contains_key(&decl.name.node) {
                continue;
            }
            match &decl.default {
                Some(lit) => {
                    let v = match &lit.node {
                        Literal::Int(i) => ParamVal::Val(Value::Int(*i)),
                        Literal::Float(x) => ParamVal::Val(Value::Float(*x)),
                        _ => {
                            self.report(
                                Diagnostic::new(
                                    Code::ArgumentType,
                                    format!("default of `{}` must be a number", decl.name.node),
                                )
                                .label(lit.span, "expected a number")
                                .help("parameter defaults are numbers, e.g. `stride = 1`"),
                            );
                            ParamVal::Poisoned
                        }
                    };
                    params.insert(decl.name.node.clone(), (v, decl.name.span));
                }
                None => {
                    self.report(
                        Diagnostic::new(
                            Code::MissingArgument,
                            format!("block `{bname}` needs the parameter `{}`", decl.name.node),
                        )
                        .label(callee.span, format!("missing `{}`", decl.name.node))
                        .help(format!("add `{}=...` to the call", decl.name.node)),
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return Binding::Poisoned;
        }
        let mut inner = Scope {
            prefix: format!("{}{}.", scope.prefix, name.node),
            env,
            params,
            defined: defined_names(&block.body),
            in_block: Some(bname.clone()),
        };
        self.stack.push(bname.clone());
        let out = self.body(&block.body, &mut inner);
        self.stack.pop();
        match out {
            Some((b, _)) => b,
            None => {
                self.report(
                    Diagnostic::new(Code::MissingOutput, format!("block `{bname}` has no output"))
                        .label(block.name.span, "this block declares no `output`")
                        .help("end the block with `output NAME` naming its result"),
                );
                Binding::Poisoned
            }
        }
    }
}

fn param_help(op: &dyn Op) -> String {
    let ps = op.params();
    if ps.is_empty() {
        return format!("`{}` takes no arguments", op.name());
    }
    let list: Vec<String> = ps
        .iter()
        .map(|p| match p.default {
            PDefault::Required => format!("`{}`", p.name),
            PDefault::Int(i) => format!("`{}` (default {i})", p.name),
            PDefault::Float(x) => format!("`{}` (default {x})", p.name),
            PDefault::SameAs(o) => format!("`{}` (default: same as `{o}`)", p.name),
        })
        .collect();
    format!("`{}` takes {}", op.name(), list.join(", "))
}

fn value_help(param: &str) -> String {
    match param {
        "padding" => "padding counts zero rows and columns added on each side; use 0 for none".into(),
        "out" => "the number of output features or channels must be at least 1".into(),
        "kernel" => "kernels are square and at least 1x1".into(),
        "stride" => "a stride of 1 moves the window one pixel; it must be at least 1".into(),
        other => format!("choose a valid value for `{other}`"),
    }
}
