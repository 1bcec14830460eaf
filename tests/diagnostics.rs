//! Snapshot tests of rendered diagnostics (diagnostics are data, rendered apart): every spec under
//! `specs/err/` and a few malformed inputs of our own, rendered as text without colour, one test per input,
//! named after it. Review changes with `cargo insta review`, or `INSTA_UPDATE=always cargo test --test
//! diagnostics` and `git diff tests/snapshots/`.

use dualnet::check::check_source;

/// Every diagnostic of one input, rendered without colour, separated by blank lines, after a summary line of
/// the codes (so that a snapshot diff shows a change of code at a glance).
fn render(name: &str, text: &str) -> String {
    let checked = check_source(name, text);
    let codes: Vec<&str> = checked.diagnostics.iter().map(|d| d.code.as_str()).collect();
    let mut out = format!("codes: {}\n\n", if codes.is_empty() { "none".to_string() } else { codes.join(" ") });
    for d in &checked.diagnostics {
        out.push_str(&redact_memory(d.render(false).trim_end()));
        out.push_str("\n\n");
    }
    out
}

/// W0003 states this machine's available memory; the snapshot shows `[available]` in its place, and the help
/// (whose wrapping depends on the figure's length) on one line.
fn redact_memory(text: &str) -> String {
    const AT: &str = "this machine has ";
    match text.find(AT) {
        Some(i) => {
            let start = i + AT.len();
            let end = text[start..].find(" available").map(|e| start + e).unwrap_or(start);
            let help = text[end..].replace("\n        ", " ");
            format!("{}[available]{help}", &text[..start])
        }
        None => text.to_string(),
    }
}

fn snapshot(snapshot_name: &str, name: &str, text: &str) {
    let rendered = render(name, text);
    insta::with_settings!({ omit_expression => true }, {
        insta::assert_snapshot!(snapshot_name, rendered);
    });
}

/// One test per spec under `specs/err/`; the list is checked against the folder by `every_err_spec_is_listed`.
macro_rules! err_specs {
    ($($test:ident => $stem:literal,)*) => {
        const ERR_SPECS: &[&str] = &[$($stem),*];
        $(
            #[test]
            fn $test() {
                let path = concat!("specs/err/", $stem, ".net");
                let text = include_str!(concat!("../specs/err/", $stem, ".net"));
                snapshot($stem, path, text);
            }
        )*
    };
}

err_specs! {
    e0001_syntax_error => "E0001_syntax_error",
    e0002_unknown_op => "E0002_unknown_op",
    e0003_no_dual_rule => "E0003_no_dual_rule",
    e0004_unknown_argument => "E0004_unknown_argument",
    e0005_missing_argument => "E0005_missing_argument",
    e0006_duplicate_argument => "E0006_duplicate_argument",
    e0007_argument_type => "E0007_argument_type",
    e0008_argument_value => "E0008_argument_value",
    e0009_undefined_node => "E0009_undefined_node",
    e0010_used_before_definition => "E0010_used_before_definition",
    e0011_duplicate_node => "E0011_duplicate_node",
    e0012_sum_shape_mismatch => "E0012_sum_shape_mismatch",
    e0013_linear_on_image => "E0013_linear_on_image",
    e0014_conv_on_vector => "E0014_conv_on_vector",
    e0015_empty_output => "E0015_empty_output",
    e0016_missing_input => "E0016_missing_input",
    e0017_repeated_input => "E0017_repeated_input",
    e0018_missing_output => "E0018_missing_output",
    e0019_repeated_output => "E0019_repeated_output",
    e0020_output_not_scores => "E0020_output_not_scores",
    e0021_block_recursion => "E0021_block_recursion",
    e0022_unknown_parameter => "E0022_unknown_parameter",
    e0023_arity => "E0023_arity",
    e0024_input_shape => "E0024_input_shape",
    e0025_no_network => "E0025_no_network",
    e0026_duplicate_block => "E0026_duplicate_block",
    e0027_shape_mismatch => "E0027_shape_mismatch",
    w0001_unused_node => "W0001_unused_node",
    w0002_shadowed_op => "W0002_shadowed_op",
    w0003_large_model => "W0003_large_model",
}

#[test]
fn every_err_spec_is_listed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/err");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().and_then(|x| x.to_str()) == Some("net"))
                .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    on_disk.sort();
    let mut listed: Vec<String> = ERR_SPECS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(listed, on_disk, "add every spec under specs/err/ to `err_specs!` in tests/diagnostics.rs");
}

/// Malformed inputs of our own, as inline text; the snapshot is named after the test.
macro_rules! inputs {
    ($($test:ident => $text:expr,)*) => {
        $(
            #[test]
            fn $test() {
                snapshot(stringify!($test), concat!(stringify!($test), ".net"), $text);
            }
        )*
    };
}

inputs! {
    // A node that uses itself is E0010 (found by tests/fuzz.rs: it used to check clean yet give no graph).
    self_reference => "\
network selfref {
    input x: [784]
    l1 = linear(x, out=100)
    r1 = relu(r1)
    l2 = linear(r1, out=10)
    output l2
}
",
    // Independent errors in one file are all reported in one run, in source order.
    several_errors => "\
network several {
    input x: [1, 28, 28]
    c1 = conv2d(x, out=0, kernel=3)
    c2 = conv2d(x, out=8, kernal=3)
    r2 = rleu(c2)
    f = flatten(x)
    l1 = linear(x, out=100)
    s = f + l9
    l2 = linear(f, out=10)
    output l2
}
",
    // A failed node does not cascade: its uses are skipped, so only the root cause is reported.
    poisoned_node_does_not_cascade => "\
network cascade {
    input x: [784]
    l1 = linear(x, out=1.5)
    r1 = relu(l1)
    l2 = linear(r1, out=10)
    output l2
}
",
    empty_file => "",
    only_comments => "# nothing but a comment\n# and another\n",
    blocks_without_network => "\
block dense(x; out) {
    l = linear(x, out=out)
    output l
}
",
    // Non-ASCII in comments must not shift columns; in a name it is a syntax error.
    non_ascii_comment => "\
# Größe 28×28, ε = 0.1 — ünïcödé
network unicode {   # réseau
    input x: [784]  # 784 = 28·28
    l1 = linear(x, out=10, größe=3)
    output l1
}
",
    non_ascii_name => "\
network réseau {
    input x: [784]
    output x
}
",
    non_ascii_node_name => "\
network n {
    input x: [784]
    l1 = linear(x, out=10)
    ŕ = relu(l1)
    output l1
}
",
    unbalanced_open_brace => "\
network n {
    input x: [784]
    l1 = linear(x, out=10)
    output l1
",
    unbalanced_close_brace => "\
network n {
    input x: [784]
    l1 = linear(x, out=10)
    output l1
}
}
",
    unbalanced_parenthesis => "\
network n {
    input x: [784]
    l1 = linear(x, out=10
    output l1
}
",
    missing_comma => "\
network n {
    input x: [1, 28, 28]
    c1 = conv2d(x, out=8 kernel=3)
    output c1
}
",
    keyword_as_name => "\
network n {
    input x: [784]
    output = linear(x, out=10)
    output output
}
",
    block_unknown_parameter => "\
block dense(x; out) {
    l = linear(x, out=out)
    output l
}

network n {
    input x: [784]
    d = dense(x, out=10, width=3, activation=1)
    output d
}
",
    block_body_uses_undeclared_parameter => "\
block dense(x; out) {
    l = linear(x, out=width)
    output l
}

network n {
    input x: [784]
    d = dense(x, out=10)
    output d
}
",
    block_missing_parameter => "\
block dense(x; out, extra) {
    l = linear(x, out=out)
    output l
}

network n {
    input x: [784]
    d = dense(x, extra=1)
    output d
}
",
    block_wrong_number_of_inputs => "\
block pair(a, b) {
    s = a + b
    output s
}

network n {
    input x: [784]
    l1 = linear(x, out=10)
    p = pair(l1, out=3)
    output p
}
",
    block_without_output => "\
block dense(x; out) {
    l = linear(x, out=out)
}

network n {
    input x: [784]
    d = dense(x, out=10)
    output d
}
",
    block_with_input_statement => "\
block dense(x; out) {
    input y: [784]
    l = linear(x, out=out)
    output l
}

network n {
    input x: [784]
    d = dense(x, out=10)
    output d
}
",
    block_parameter_declared_twice => "\
block dense(x; out, out = 3) {
    l = linear(x, out=out)
    output l
}

network n {
    input x: [784]
    d = dense(x, out=10)
    output d
}
",
    // An error inside a block is reported once, not once per instance.
    block_error_reported_once => "\
block dense(x; out) {
    l = linear(x, out=out)
    r = rleu(l)
    output r
}

network n {
    input x: [784]
    d1 = dense(x, out=100)
    d2 = dense(d1, out=100)
    l = linear(d2, out=10)
    output l
}
",
    // Two blocks that instantiate each other.
    mutual_recursion => "\
block ping(x; out) {
    l = linear(x, out=out)
    p = pong(l, out=out)
    output p
}

block pong(x; out) {
    r = relu(x)
    p = ping(r, out=out)
    output p
}

network n {
    input x: [784]
    b = ping(x, out=100)
    l = linear(b, out=10)
    output l
}
",
    unknown_op_without_suggestion => "\
network n {
    input x: [784]
    l1 = linear(x, out=100)
    g = gelu_approximate_quantised(l1)
    l2 = linear(g, out=10)
    output l2
}
",
    softmax_is_not_a_hidden_activation => "\
network n {
    input x: [784]
    l1 = linear(x, out=100)
    t = softmax(l1)
    l2 = linear(t, out=10)
    output l2
}
",
    name_as_argument_outside_block => "\
network n {
    input x: [784]
    width = linear(x, out=100)
    l2 = linear(width, out=width)
    output l2
}
",
    list_as_kernel => "\
network n {
    input x: [1, 28, 28]
    c = conv2d(x, out=8, kernel=[3, 3])
    f = flatten(c)
    l = linear(f, out=10)
    output l
}
",
    number_as_input => "\
network n {
    input x: [784]
    l1 = linear(3, out=10)
    output l1
}
",
    huge_and_negative_numbers => "\
network n {
    input x: [1, 28, 28]
    c1 = conv2d(x, out=8, kernel=3, padding=-1)
    c2 = conv2d(x, out=8, kernel=99999999999999999999)
    c3 = conv2d(x, out=8, kernel=3, padding=9223372036854775807)
    c4 = conv2d(x, out=8, kernel=3, stride=1e400)
    l = linear(x, out=10)
    output l
}
",
    input_shape_too_large => "\
network n {
    input x: [1000000, 1000000, 1000000]
    f = flatten(x)
    l = linear(f, out=10)
    output l
}
",
    input_shape_not_integers => "\
network n {
    input x: [1, 28.5, -28]
    f = flatten(x)
    l = linear(f, out=10)
    output l
}
",
    // Lists nest one level in a shape; deeper nesting is refused before parsing (it would only recurse).
    lists_nested_too_deep => "\
network n {
    input x: [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]
    output x
}
",
    long_input_shape => "\
network n {
    input x: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
    output x
}
",
    hardtanh_bounds_reversed => "\
network n {
    input x: [784]
    l1 = linear(x, out=100)
    h = hardtanh(l1, min_val=1, max_val=-1)
    l2 = linear(h, out=10)
    output l2
}
",
    avgpool_padding_too_large => "\
network n {
    input x: [1, 28, 28]
    p = avgpool2d(x, kernel=2, padding=2)
    f = flatten(p)
    l = linear(f, out=10)
    output l
}
",
    output_single_score => "\
network n {
    input x: [784]
    l1 = linear(x, out=1)
    output l1
}
",
    output_undefined => "\
network n {
    input x: [784]
    l1 = linear(x, out=10)
    output l2
}
",
    unused_nodes_in_block_instances => "\
block two(x; out) {
    a = linear(x, out=out)
    b = linear(x, out=out)
    output a
}

network n {
    input x: [784]
    t1 = two(x, out=100)
    t2 = two(t1, out=10)
    output t2
}
",
    extra_positional_arguments => "\
network n {
    input x: [1, 28, 28]
    c = conv2d(x, 8, 3, 1, 1, 7)
    f = flatten(c)
    l = linear(f, out=10)
    output l
}
",
}
