//! pest parser for `grammar/net.pest`, producing the spanned AST of [`super::ast`].

use pest::iterators::Pair;
use pest::Parser;
use pest_derive::Parser;

use super::ast::*;
use crate::diagnostics::{Code, Diagnostic};

#[derive(Parser)]
#[grammar = "../grammar/net.pest"]
struct NetParser;

fn span_of(p: &Pair<'_, Rule>) -> Span {
    let s = p.as_span();
    Span::new(s.start(), s.end())
}

fn rule_name(r: &Rule) -> &'static str {
    match r {
        Rule::EOI => "end of file",
        Rule::file => "a file",
        Rule::network => "`network NAME { ... }`",
        Rule::block_def => "`block NAME(inputs; params) { ... }`",
        Rule::block_inputs => "block input names",
        Rule::block_params => "block parameters",
        Rule::param_decl => "a parameter",
        Rule::input_stmt => "`input NAME: [C, H, W]`",
        Rule::output_stmt => "`output NAME`",
        Rule::assign => "`NAME = op(...)`",
        Rule::sum => "a sum `a + b`",
        Rule::call => "a call `op(...)`",
        Rule::named_arg => "a named argument `name=value`",
        Rule::positional => "an argument",
        Rule::list => "a list `[...]`",
        Rule::number => "a number",
        Rule::ident => "a name",
        Rule::keyword => "a keyword",
        Rule::item => "`network` or `block`",
        Rule::stmt => "a statement",
        Rule::expr => "an expression",
        Rule::arg => "an argument",
        Rule::value => "a value",
        Rule::WHITESPACE | Rule::COMMENT => "whitespace",
    }
}

/// Parse a whole file. A syntax error yields one `E0001` diagnostic pointing at the offending text.
pub fn parse(text: &str) -> Result<File, Diagnostic> {
    let mut pairs = NetParser::parse(Rule::file, text).map_err(|e| syntax_error(text, e))?;
    let mut file = File::default();
    let Some(root) = pairs.next() else { return Ok(file) };
    for item in root.into_inner() {
        match item.as_rule() {
            Rule::network => file.networks.push(network(item)),
            Rule::block_def => file.blocks.push(block_def(item)),
            _ => {}
        }
    }
    Ok(file)
}

fn syntax_error(text: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let (start, end) = match e.location {
        InputLocation::Pos(p) => (p, p),
        InputLocation::Span((s, e)) => (s, e),
    };
    // Widen an empty span to the token that starts there, so the label points at something visible.
    let end = if end > start {
        end
    } else {
        let rest = &text[start.min(text.len())..];
        let tok = rest.chars().take_while(|c| !c.is_whitespace()).map(|c| c.len_utf8()).sum::<usize>();
        start + tok.max(rest.chars().next().map(|c| c.len_utf8()).unwrap_or(0))
    };
    let found = text.get(start..end).filter(|s| !s.is_empty());
    let expected = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut names: Vec<&str> = positives.iter().map(rule_name).collect();
            names.sort();
            names.dedup();
            names.join(", ")
        }
        ErrorVariant::CustomError { message } => message.clone(),
    };
    let message = match found {
        Some(f) => format!("unexpected `{}`", f.chars().take(40).collect::<String>()),
        None => "unexpected end of file".to_string(),
    };
    let label = if expected.is_empty() { "not expected here".to_string() } else { format!("expected {expected}") };
    Diagnostic::new(Code::Syntax, message)
        .label(Span::new(start, end), label)
        .help("statements are `input NAME: [C, H, W]`, `NAME = op(SRC, arg=value, ...)`, `NAME = a + b` and `output NAME`, inside `network NAME { ... }`")
}

fn ident(p: Pair<'_, Rule>) -> Ident {
    Spanned::new(p.as_str().to_string(), span_of(&p))
}

fn network(p: Pair<'_, Rule>) -> Network {
    let span = span_of(&p);
    let mut inner = p.into_inner();
    let name = inner.next().map(ident).unwrap_or_else(|| Spanned::new(String::new(), span));
    Network { name, body: inner.map(stmt).collect(), span }
}

fn block_def(p: Pair<'_, Rule>) -> BlockDef {
    let span = span_of(&p);
    let mut name = Spanned::new(String::new(), span);
    let mut inputs = Vec::new();
    let mut params = Vec::new();
    let mut body = Vec::new();
    for (i, c) in p.into_inner().enumerate() {
        match c.as_rule() {
            Rule::ident if i == 0 => name = ident(c),
            Rule::block_inputs => inputs = c.into_inner().map(ident).collect(),
            Rule::block_params => {
                for d in c.into_inner() {
                    let mut di = d.into_inner();
                    if let Some(n) = di.next() {
                        params.push(ParamDecl { name: ident(n), default: di.next().map(literal) });
                    }
                }
            }
            _ => body.push(stmt(c)),
        }
    }
    BlockDef { name, inputs, params, body, span }
}

fn stmt(p: Pair<'_, Rule>) -> Stmt {
    let span = span_of(&p);
    let rule = p.as_rule();
    let mut inner = p.into_inner();
    let first = inner.next();
    let name = first.map(ident).unwrap_or_else(|| Spanned::new(String::new(), span));
    match rule {
        Rule::input_stmt => {
            let shape = inner.next().map(literal).unwrap_or_else(|| Spanned::new(Literal::List(vec![]), span));
            Stmt::Input { name, shape, span }
        }
        Rule::output_stmt => Stmt::Output { name, span },
        _ => {
            let expr = match inner.next() {
                Some(e) if e.as_rule() == Rule::sum => Expr::Sum(e.into_inner().map(ident).collect()),
                Some(e) => {
                    let mut ci = e.into_inner();
                    let callee = ci.next().map(ident).unwrap_or_else(|| Spanned::new(String::new(), span));
                    let args = ci.map(arg).collect();
                    Expr::Call { callee, args }
                }
                None => Expr::Sum(vec![]),
            };
            Stmt::Assign { name, expr, span }
        }
    }
}

fn arg(p: Pair<'_, Rule>) -> Arg {
    let span = span_of(&p);
    match p.as_rule() {
        Rule::named_arg => {
            let mut inner = p.into_inner();
            let name = inner.next().map(ident);
            let value = inner.next().map(literal).unwrap_or_else(|| Spanned::new(Literal::List(vec![]), span));
            Arg { name, value, span }
        }
        _ => {
            let value = p.into_inner().next().map(literal).unwrap_or_else(|| Spanned::new(Literal::List(vec![]), span));
            Arg { name: None, value, span }
        }
    }
}

fn literal(p: Pair<'_, Rule>) -> Spanned<Literal> {
    let span = span_of(&p);
    let lit = match p.as_rule() {
        Rule::list => Literal::List(p.into_inner().map(literal).collect()),
        Rule::number => {
            let s = p.as_str();
            if s.contains(['.', 'e', 'E']) {
                Literal::Float(s.parse().unwrap_or(f64::NAN))
            } else {
                match s.parse::<i64>() {
                    Ok(i) => Literal::Int(i),
                    // Too large for i64: keep it as a float so the checker reports a value error.
                    Err(_) => Literal::Float(s.parse().unwrap_or(f64::INFINITY)),
                }
            }
        }
        _ => Literal::Name(p.as_str().to_string()),
    };
    Spanned::new(lit, span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_core_form() {
        let f = parse("# c\nnetwork n {\n input x: [1, 28, 28]\n c = conv2d(x, out=4, kernel=3)\n s = c + c\n output s\n}\n")
            .expect("parses");
        assert_eq!(f.networks.len(), 1);
        assert_eq!(f.networks[0].body.len(), 4);
    }

    #[test]
    fn parses_block() {
        let f = parse("block res(x; out, stride = 1) { a = relu(x) output a }").expect("parses");
        assert_eq!(f.blocks[0].params.len(), 2);
        assert_eq!(f.blocks[0].inputs[0].node, "x");
    }

    #[test]
    fn syntax_error_points_at_token() {
        let text = "network n {\n input x: [1]\n y = = relu(x)\n}";
        let d = parse(text).expect_err("must fail");
        assert_eq!(d.code, Code::Syntax);
        assert_eq!(&text[d.labels[0].span.start..d.labels[0].span.end], "=");
    }
}
