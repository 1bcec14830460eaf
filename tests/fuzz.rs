//! Property tests: the checker never panics, whatever the text (no panics on user data paths).
//! Arbitrary strings, strings over the `.net` alphabet, and valid specs mutated line by line, character by
//! character and number by number. Whatever checks clean must also build and print its dual graph, and every
//! diagnostic must render.

use proptest::prelude::*;

use dualnet::check::check_source;

/// Valid specs to mutate.
const SEEDS: &[&str] = &[
    include_str!("../specs/mnist_small.net"),
    include_str!("../specs/cifar_resnet.net"),
    include_str!("../specs/examples/dense_skip.net"),
    include_str!("../specs/examples/hardtanh_mlp.net"),
    include_str!("../specs/examples/batchnorm_conv.net"),
    include_str!("../specs/examples/avgpool.net"),
    include_str!("../specs/examples/blocks_nested.net"),
    include_str!("../specs/examples/resnet_tiny.net"),
];

/// Run everything a command would run on the text; a panic anywhere fails the property.
fn exercise(text: &str) {
    let checked = check_source("fuzz.net", text);
    for d in &checked.diagnostics {
        let _ = d.render(false);
        let _ = d.to_json();
        assert!(!d.message.is_empty());
        assert!(!d.message.ends_with('.'), "message ends with a period: {}", d.message);
    }
    assert_eq!(checked.graph.is_some(), !checked.has_errors(), "a graph exactly when there are no errors");
    if let Some(g) = &checked.graph {
        let d = dualnet::ir::dual::build(g);
        let _ = dualnet::emit::primal(g);
        let _ = dualnet::emit::dual(g, &d);
        let _ = dualnet::emit::dot(g, &d);
        let _ = g.weight_specs();
        let _ = g.activation_inputs();
    }
}

/// Numbers that stress the argument checks.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("1".to_string()),
        Just("-1".to_string()),
        Just("2".to_string()),
        Just("1048576".to_string()),
        Just("1048577".to_string()),
        Just("4294967296".to_string()),
        Just("9223372036854775807".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("99999999999999999999999".to_string()),
        Just("1e400".to_string()),
        Just("-1e400".to_string()),
        Just("0.5".to_string()),
        Just("3.".to_string()),
        Just("1e-9".to_string()),
        (0i64..64).prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| n.to_string()),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    DeleteChar(usize),
    DuplicateChar(usize),
    SwapChars(usize, usize),
    InsertChar(usize, char),
    /// Replace the `k`-th number of the text.
    Number(usize, String),
    /// Replace the `k`-th argument value (a number after `=`).
    Argument(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let ix = any::<usize>;
    prop_oneof![
        ix().prop_map(Mutation::DeleteLine),
        ix().prop_map(Mutation::DuplicateLine),
        (ix(), ix()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        ix().prop_map(Mutation::DeleteChar),
        ix().prop_map(Mutation::DuplicateChar),
        (ix(), ix()).prop_map(|(a, b)| Mutation::SwapChars(a, b)),
        (
            ix(),
            prop_oneof![
                Just('{'),
                Just('}'),
                Just('('),
                Just(')'),
                Just('['),
                Just(']'),
                Just(','),
                Just('='),
                Just('+'),
                Just(';'),
                Just('#'),
                Just('\n'),
                Just('é'),
                Just('x'),
                Just('0'),
                any::<char>()
            ]
        )
            .prop_map(|(i, c)| Mutation::InsertChar(i, c)),
        (ix(), number()).prop_map(|(i, n)| Mutation::Number(i, n)),
        (ix(), number()).prop_map(|(i, n)| Mutation::Argument(i, n)),
        (ix(), number()).prop_map(|(i, n)| Mutation::Argument(i, n)),
    ]
}

/// Byte ranges of the numbers in `text` (digits with an optional leading `-` and fraction).
fn numbers(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut v = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) {
            let start = if i > 0 && b[i - 1] == b'-' { i - 1 } else { i };
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
                j += 1;
            }
            v.push((start, j));
            i = j;
        } else {
            i += 1;
        }
    }
    v
}

/// Byte ranges of the argument values that are numbers: `out=16`, `padding=-1`.
fn arguments(text: &str) -> Vec<(usize, usize)> {
    numbers(text).into_iter().filter(|&(s, _)| text[..s].trim_end_matches(' ').ends_with('=')).collect()
}

fn replace(text: &str, ranges: &[(usize, usize)], k: usize, n: &str) -> String {
    match ranges.get(k % ranges.len().max(1)) {
        Some(&(s, e)) => format!("{}{n}{}", &text[..s], &text[e..]),
        None => text.to_string(),
    }
}

fn apply(text: &str, m: &Mutation) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut chars: Vec<char> = text.chars().collect();
    let nl = lines.len().max(1);
    let nc = chars.len().max(1);
    match m {
        Mutation::DeleteLine(i) => {
            let i = i % nl;
            lines.iter().enumerate().filter(|(k, _)| *k != i).map(|(_, l)| *l).collect()
        }
        Mutation::DuplicateLine(i) => {
            let i = i % nl;
            let mut v: Vec<&str> = lines.clone();
            if let Some(l) = lines.get(i) {
                v.insert(i, l);
            }
            v.concat()
        }
        Mutation::SwapLines(a, b) => {
            let mut v = lines.clone();
            if !v.is_empty() {
                v.swap(a % nl, b % nl);
            }
            v.concat()
        }
        Mutation::DeleteChar(i) => {
            if !chars.is_empty() {
                chars.remove(i % nc);
            }
            chars.into_iter().collect()
        }
        Mutation::DuplicateChar(i) => {
            if let Some(&c) = chars.get(i % nc) {
                chars.insert(i % nc, c);
            }
            chars.into_iter().collect()
        }
        Mutation::SwapChars(a, b) => {
            if !chars.is_empty() {
                chars.swap(a % nc, b % nc);
            }
            chars.into_iter().collect()
        }
        Mutation::InsertChar(i, c) => {
            chars.insert(i % (chars.len() + 1), *c);
            chars.into_iter().collect()
        }
        Mutation::Number(k, n) => replace(text, &numbers(text), *k, n),
        Mutation::Argument(k, n) => replace(text, &arguments(text), *k, n),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        exercise(&text);
    }

    #[test]
    fn net_alphabet_strings_never_panic(
        text in "(network|block|input|output|conv2d|linear|relu|flatten|x|[a-z_]{1,3}|[0-9]{1,4}|-|[ \n]|[{}()\\[\\],=+:;#.]){0,80}"
    ) {
        exercise(&text);
    }

    #[test]
    fn mutated_specs_never_panic(
        seed in 0..SEEDS.len(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut text = SEEDS[seed].to_string();
        for m in &mutations {
            text = apply(&text, m);
        }
        exercise(&text);
    }

    /// Random numbers in argument positions of a valid spec, several at once (`kernel=0`, `padding=-1`,
    /// `out=9223372036854775807`, `stride=1e400`, ...), and now and then in any position (input shapes, block
    /// defaults, comments).
    #[test]
    fn random_numbers_in_argument_positions_never_panic(
        seed in 0..SEEDS.len(),
        values in prop::collection::vec(prop::option::weighted(0.3, number()), 64),
        anywhere in prop::option::weighted(0.2, (any::<usize>(), number())),
    ) {
        let text = SEEDS[seed];
        let mut out = String::new();
        let mut last = 0;
        for (k, (s, e)) in arguments(text).into_iter().enumerate() {
            out.push_str(&text[last..s]);
            out.push_str(values[k % values.len()].as_deref().unwrap_or(&text[s..e]));
            last = e;
        }
        out.push_str(&text[last..]);
        if let Some((k, n)) = anywhere {
            out = replace(&out, &numbers(&out), k, &n);
        }
        exercise(&out);
    }
}

#[test]
fn mutations_change_the_text() {
    let text = SEEDS[0];
    assert_ne!(apply(text, &Mutation::DeleteLine(3)), text);
    assert_ne!(apply(text, &Mutation::Number(0, "-7".into())), text);
    assert!(apply(text, &Mutation::Number(0, "-7".into())).contains("-7"));
    assert_eq!(numbers("a1 = conv2d(x, out=16, kernel=-4) [1, 28]"), vec![(19, 21), (30, 32), (35, 36), (38, 40)]);
    assert_eq!(arguments("a1 = conv2d(x, out=16, kernel=-4) [1, 28]"), vec![(19, 21), (30, 32)]);
    assert!(apply(text, &Mutation::Argument(0, "0".into())).contains("out=0"));
}

/// Deep nesting and long inputs stay within the stack and finish.
#[test]
fn deep_nesting_and_long_inputs() {
    for depth in [16, 17, 5000, 100_000] {
        let deep = format!("network n {{ input x: {}1{} output x }}", "[".repeat(depth), "]".repeat(depth));
        exercise(&deep);
        let c = check_source("deep.net", &deep);
        let want = if depth <= 16 { "E0024" } else { "E0001" };
        assert_eq!(c.diagnostics.first().map(|d| d.code.as_str()), Some(want), "depth {depth}");
    }
    // Unbalanced and in comments: still no panic, and brackets in comments do not count.
    exercise(&"[".repeat(100_000));
    exercise(&format!("# {}\nnetwork n {{ input x: [784] l = linear(x, out=10) output l }}", "[".repeat(100)));
    assert!(!check_source(
        "c.net",
        &format!("# {}\nnetwork n {{ input x: [784] l = linear(x, out=10) output l }}", "[".repeat(100))
    )
    .has_errors());
    let mut long = String::from("network n {\n input x: [784]\n l0 = linear(x, out=4)\n");
    for i in 1..2000 {
        long.push_str(&format!(" l{i} = linear(l{}, out=4)\n", i - 1));
    }
    long.push_str(" l = linear(l1999, out=10)\n output l\n}\n");
    let c = check_source("long.net", &long);
    assert!(!c.has_errors());
    exercise(&long);
}
