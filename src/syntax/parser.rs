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

/// Parse a whole file. A syntax error yields one `E0001` diagnostic pointing at the offending text.
pub fn parse(text: &str) -> Result<File, Diagnostic> {
    // Record the tokens tried at the furthest position, for "expected `)` or `,`" (cheap on these small files).
    pest::set_error_detail(true);
    if let Some(d) = too_deep(text) {
        return Err(d);
    }
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

/// The deepest list nesting accepted. Shapes need one level; the limit keeps every recursion over lists
/// (building, printing, dropping) far from the stack's end.
const MAX_LIST_DEPTH: usize = 16;

/// A syntax error for lists nested deeper than [`MAX_LIST_DEPTH`], found before parsing.
fn too_deep(text: &str) -> Option<Diagnostic> {
    let (mut depth, mut comment) = (0usize, false);
    for (i, c) in text.char_indices() {
        match c {
            '\n' => comment = false,
            '#' => comment = true,
            '[' if !comment => {
                depth += 1;
                if depth > MAX_LIST_DEPTH {
                    return Some(
                        Diagnostic::new(Code::Syntax, format!("lists are nested more than {MAX_LIST_DEPTH} deep"))
                            .label(Span::new(i, i + 1), "too deep")
                            .help("a shape is one list of numbers, e.g. `[1, 28, 28]`"),
                    );
                }
            }
            ']' if !comment => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

const SYNTAX_HELP: &str = "statements are `input NAME: [C, H, W]`, `NAME = op(SRC, arg=value, ...)`, `NAME = a + b` and `output NAME`, inside `network NAME { ... }`";

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first byte at or after `pos` that is not whitespace or inside a comment.
fn skip_trivia(text: &str, mut pos: usize) -> usize {
    loop {
        let rest = text.get(pos..).unwrap_or("");
        let trimmed = rest.trim_start_matches([' ', '\t', '\r', '\n']);
        pos += rest.len() - trimmed.len();
        if trimmed.starts_with('#') {
            pos += trimmed.find('\n').unwrap_or(trimmed.len());
        } else {
            return pos;
        }
    }
}

/// The end of the token that starts at `start`: a name, a number, or one character.
fn token_end(text: &str, start: usize) -> usize {
    let rest = text.get(start..).unwrap_or("");
    let mut chars = rest.char_indices();
    let Some((_, first)) = chars.next() else { return start };
    let len = if is_name_char(first) || first == '-' {
        rest.char_indices().skip(1).find(|&(_, c)| !(is_name_char(c) || c == '.')).map(|(i, _)| i).unwrap_or(rest.len())
    } else {
        first.len_utf8()
    };
    start + len
}

/// What the parser expected at the error position, in words: punctuation and keywords in backticks, then
/// "a name", "a number" and "end of file".
fn expected_words(text: &str, pos: usize, e: &pest::error::Error<Rule>, pest_pos: usize) -> Vec<String> {
    use pest::error::ErrorVariant;
    let mut tokens: Vec<String> = Vec::new();
    let (mut name, mut number, mut eof) = (false, false, false);
    // Right after a name or number, with the offending character glued to it, "more of it" is not worth saying.
    let glued = skip_trivia(text, pos) == pos && pos < text.len();
    let mid_word =
        glued && text.get(..pos).and_then(|b| b.chars().next_back()).is_some_and(|c| is_name_char(c) || c == '.');
    if let Some(attempts) = e.parse_attempts() {
        // The token type is not exported by pest; its display is the token itself, `a..z` for a range.
        for t in attempts.expected_tokens() {
            let t = t.to_string();
            let range: Vec<char> = t.chars().collect();
            if let [a, '.', '.', _] = range.as_slice() {
                if !mid_word {
                    if a.is_ascii_digit() {
                        number = true;
                    } else {
                        name = true;
                    }
                }
                continue;
            }
            if t.trim().is_empty() || t == "#" || t == "BUILTIN_RULE" {
                continue;
            }
            if t.chars().all(is_name_char) && t.chars().count() == 1 {
                name |= !mid_word;
            } else if !(mid_word && (t == "." || t.eq_ignore_ascii_case("e"))) {
                tokens.push(format!("`{t}`"));
            }
        }
    }
    if pos == pest_pos {
        if let ErrorVariant::ParsingError { positives, .. } = &e.variant {
            for r in positives {
                match r {
                    Rule::ident => name |= !mid_word,
                    Rule::number => number |= !mid_word,
                    Rule::EOI => eof = true,
                    Rule::network => tokens.push("`network`".into()),
                    Rule::block_def => tokens.push("`block`".into()),
                    Rule::input_stmt => tokens.push("`input`".into()),
                    Rule::output_stmt => tokens.push("`output`".into()),
                    Rule::list => tokens.push("`[`".into()),
                    _ => {}
                }
            }
        }
    }
    tokens.sort_by_key(|t| (t.chars().nth(1).is_some_and(|c| c.is_ascii_alphabetic()), t.clone()));
    tokens.dedup();
    if name {
        tokens.push("a name".into());
    }
    if number {
        tokens.push("a number".into());
    }
    if eof {
        tokens.push("end of file".into());
    }
    tokens
}

/// The start of the last token of the text (comments and whitespace are not tokens).
fn last_token(text: &str) -> Option<usize> {
    let (mut pos, mut last) = (0, None);
    loop {
        pos = skip_trivia(text, pos);
        if pos >= text.len() {
            return last;
        }
        last = Some(pos);
        pos = token_end(text, pos).max(pos + 1);
        while !text.is_char_boundary(pos.min(text.len())) {
            pos += 1;
        }
    }
}

fn one_of(words: &[String]) -> String {
    match words {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn syntax_error(text: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let pest_pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    }
    .min(text.len());
    if let ErrorVariant::CustomError { message } = &e.variant {
        // pest's own limits (deep nesting): not a token problem.
        return Diagnostic::new(
            Code::Syntax,
            format!("the text is nested too deeply to parse ({})", message.trim_end_matches('.')),
        )
        .label(Span::new(pest_pos, token_end(text, pest_pos)), "here")
        .help("nest lists only as deep as a shape needs, e.g. `[1, 28, 28]`");
    }
    // The furthest position any alternative reached is where the text went wrong; skip the whitespace and
    // comments there to find the offending token.
    let reached = e.parse_attempts().map(|a| a.max_position).unwrap_or(0).clamp(pest_pos, text.len());
    let expected = expected_words(text, reached, &e, pest_pos);
    let start = skip_trivia(text, reached);
    let label =
        if expected.is_empty() { "not expected here".to_string() } else { format!("expected {}", one_of(&expected)) };
    let mut help = SYNTAX_HELP.to_string();
    if start >= text.len() {
        // End of file: point at the last token, which is where something is missing.
        let last = last_token(text);
        let d = Diagnostic::new(Code::Syntax, "unexpected end of file");
        return match last {
            Some(i) => d.label(Span::new(i, token_end(text, i)), format!("the file ends after this; {label}")),
            None => d.label(Span::new(0, 0), label),
        }
        .help(help);
    }
    let end = token_end(text, start);
    let found = text.get(start..end).unwrap_or("");
    if !found.is_ascii() {
        help = "names and numbers are ASCII (letters, digits and `_`); other characters may appear only in comments, after `#`".into();
    }
    let before = text.get(..start).unwrap_or("").trim_end();
    if let Some(kw) = ["network", "block", "input", "output"].into_iter().find(|k| before.ends_with(k)) {
        let at_word_start = before.len() == kw.len() || !before[..before.len() - kw.len()].ends_with(is_name_char);
        if found == "=" && at_word_start {
            help = format!("`{kw}` is a keyword and cannot name a node; choose another name");
        }
    }
    Diagnostic::new(Code::Syntax, format!("unexpected `{}`", found.chars().take(40).collect::<String>()))
        .label(Span::new(start, end), label)
        .help(help)
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
        let f = parse(
            "# c\nnetwork n {\n input x: [1, 28, 28]\n c = conv2d(x, out=4, kernel=3)\n s = c + c\n output s\n}\n",
        )
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
