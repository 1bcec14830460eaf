//! Snapshots of the checked primal graph and the emitted dual graph of every spec under `specs/` (the paper's
//! models and the examples; `specs/err/` is covered by tests/diagnostics.rs), that every reference model in
//! `tests/fixtures/reference/*/model.net` checks clean, and that the dual graph reverses every primal edge, skip
//! connections included.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dualnet::check::check_source;
use dualnet::ir::{dual, Graph};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Check a spec that must be clean: no errors and no warnings.
fn checked(name: &str, text: &str) -> Graph {
    let c = check_source(name, text);
    let rendered: Vec<String> = c.diagnostics.iter().map(|d| d.render(false)).collect();
    assert!(c.diagnostics.is_empty(), "{name} must check clean:\n{}", rendered.join("\n"));
    match c.graph {
        Some(g) => g,
        None => panic!("{name}: no graph although there are no diagnostics"),
    }
}

fn snapshot_graphs(stem: &str, path: &str, text: &str) {
    let g = checked(path, text);
    let d = dual::build(&g);
    insta::with_settings!({ omit_expression => true, description => path }, {
        insta::assert_snapshot!(format!("{stem}__primal"), dualnet::emit::primal(&g));
        insta::assert_snapshot!(format!("{stem}__dual"), dualnet::emit::dual(&g, &d));
    });
}

macro_rules! specs {
    ($($test:ident => $path:literal,)*) => {
        const SPECS: &[&str] = &[$($path),*];
        $(
            #[test]
            fn $test() {
                snapshot_graphs(stringify!($test), $path, include_str!(concat!("../", $path)));
            }
        )*
    };
}

specs! {
    mnist_small => "specs/mnist_small.net",
    mnist_large => "specs/mnist_large.net",
    cifar_small => "specs/cifar_small.net",
    cifar_large => "specs/cifar_large.net",
    cifar_resnet => "specs/cifar_resnet.net",
    cifar_resnet_small => "specs/cifar_resnet_small.net",
    examples_dense_skip => "specs/examples/dense_skip.net",
    examples_hardtanh_mlp => "specs/examples/hardtanh_mlp.net",
    examples_maxpool_smooth => "specs/examples/maxpool_smooth.net",
    examples_batchnorm_conv => "specs/examples/batchnorm_conv.net",
    examples_avgpool => "specs/examples/avgpool.net",
    examples_blocks_nested => "specs/examples/blocks_nested.net",
    examples_resnet_tiny => "specs/examples/resnet_tiny.net",
}

fn net_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().and_then(|x| x.to_str()) == Some("net"))
                .filter_map(|p| p.strip_prefix(root()).ok().and_then(|p| p.to_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn every_spec_is_listed() {
    let mut on_disk = net_files(&root().join("specs"));
    on_disk.extend(net_files(&root().join("specs/examples")));
    on_disk.sort();
    let mut listed: Vec<String> = SPECS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(listed, on_disk, "add every spec under specs/ and specs/examples/ to `specs!` in tests/graphs.rs");
}

/// The reference models: `(case, text)` of every case in `tests/fixtures/reference`, all of them present.
fn reference_models() -> Vec<(String, String)> {
    let v: Vec<(String, String)> = common::REFERENCE_CASES
        .iter()
        .map(|case| {
            let path = common::reference_fixtures().join(case).join("model.net");
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (case.to_string(), text)
        })
        .collect();
    assert_eq!(v.len(), 5, "the five reference models");
    v
}

#[test]
fn reference_models_check_clean() {
    let models = reference_models();
    assert!(!models.is_empty());
    for (case, text) in &models {
        let g = checked(&format!("tests/fixtures/reference/{case}/model.net"), text);
        assert!(g.num_classes() >= 2, "{case}");
    }
}

/// The paper's models use the reference's node names, so its weights load without renaming.
#[test]
fn paper_models_match_the_reference_names() {
    let mut compared = 0;
    for (case, text) in reference_models() {
        let spec = match case.as_str() {
            "mnist_small" | "mnist_small_trained" => "specs/mnist_small.net",
            "batchnorm" => "specs/examples/batchnorm_conv.net",
            "resnet_tiny" => "specs/examples/resnet_tiny.net",
            _ => continue,
        };
        let reference = checked(&case, &text);
        let ours = checked(spec, &std::fs::read_to_string(root().join(spec)).unwrap_or_default());
        let keys = |g: &Graph| -> Vec<(String, Vec<usize>)> {
            g.weight_specs().into_iter().map(|(k, w)| (k, w.shape.clone())).collect()
        };
        assert_eq!(keys(&ours), keys(&reference), "{spec} and the reference `{case}` differ in weight keys or shapes");
        compared += 1;
    }
    assert_eq!(compared, 4, "mnist_small, mnist_small_trained, batchnorm and resnet_tiny");
}

fn names(g: &Graph, d: &dual::DualGraph, node: &str) -> BTreeSet<String> {
    let Some(i) = g.find(node) else { panic!("no node `{node}`") };
    let Some(dn) = d.dag.node_indices().find(|&k| d.dag[k].primal == i) else { panic!("no dual node for `{node}`") };
    d.dag[dn].terms.iter().map(|t| g.node(t.from).name.clone()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Every primal edge `a -> b` appears reversed in the dual graph as `ν_b -> ν_a`, with one term per edge, and
/// the dual runs output first, input last.
fn assert_edges_reversed(g: &Graph, d: &dual::DualGraph) {
    let mut primal = BTreeSet::new();
    for e in g.dag.edge_indices() {
        if let Some((a, b)) = g.dag.edge_endpoints(e) {
            primal.insert((g.node(b).name.clone(), g.node(a).name.clone(), g.dag[e]));
        }
    }
    let mut reversed = BTreeSet::new();
    for e in d.dag.edge_indices() {
        if let Some((a, b)) = d.dag.edge_endpoints(e) {
            reversed.insert((g.node(d.dag[a].primal).name.clone(), g.node(d.dag[b].primal).name.clone(), d.dag[e]));
        }
    }
    assert_eq!(primal, reversed, "the dual graph must hold exactly the primal edges, reversed");
    let terms: usize = d.dag.node_indices().map(|k| d.dag[k].terms.len()).sum();
    assert_eq!(terms, g.dag.edge_count(), "one dual term per primal edge");
    assert_eq!(d.order.len(), g.dag.node_count());
    assert_eq!(d.order.first().map(|&k| d.dag[k].primal), Some(g.output), "the dual starts at the output");
    assert_eq!(d.order.last().map(|&k| d.dag[k].primal), Some(g.input), "the dual ends at the input");
}

#[test]
fn resnet_tiny_dual_reverses_the_skips() {
    let mut cases = vec![(
        "specs/examples/resnet_tiny.net".to_string(),
        include_str!("../specs/examples/resnet_tiny.net").to_string(),
    )];
    cases.extend(
        reference_models()
            .into_iter()
            .filter(|(c, _)| c == "resnet_tiny")
            .map(|(c, text)| (format!("tests/fixtures/reference/{c}/model.net"), text)),
    );
    assert_eq!(cases.len(), 2, "the example and the reference resnet_tiny");
    for (path, text) in cases {
        assert_resnet_tiny_dual(&checked(&path, &text));
    }
}

fn assert_resnet_tiny_dual(g: &Graph) {
    let d = dual::build(g);
    // r0 feeds c1 (main path) and s2 (identity skip): ν_r0 = conv_transpose2d(ν_c1) + ν_s2.
    assert_eq!(names(g, &d, "r0"), set(&["c1", "s2"]));
    // r2 feeds c3 (main path) and k4 (projected skip).
    assert_eq!(names(g, &d, "r2"), set(&["c3", "k4"]));
    // The sums fan out: ν_c2 and ν_c4, ν_k4 each get one term from their sum.
    assert_eq!(names(g, &d, "c2"), set(&["s2"]));
    assert_eq!(names(g, &d, "k4"), set(&["s4"]));
    assert_edges_reversed(g, &d);
    let text = dualnet::emit::dual(g, &d);
    let line = text.lines().find(|l| l.trim_start().starts_with("ν_r0 ")).unwrap_or("");
    assert!(line.contains("ν_c1") && line.contains("ν_s2") && line.contains(" + "), "ν_r0 line: {line}");
}

#[test]
fn dense_skip_dual_sums_every_consumer() {
    let path = "specs/examples/dense_skip.net";
    let g = checked(path, include_str!("../specs/examples/dense_skip.net"));
    let d = dual::build(&g);
    assert_eq!(names(&g, &d, "r1"), set(&["c2", "s3"]));
    assert_eq!(names(&g, &d, "r2"), set(&["c3", "s3"]));
    assert_eq!(names(&g, &d, "c3"), set(&["s3"]));
    assert_edges_reversed(&g, &d);
}

#[test]
fn residual_blocks_dual_reverses_the_skips() {
    let g = checked("specs/cifar_resnet.net", include_str!("../specs/cifar_resnet.net"));
    let d = dual::build(&g);
    // Each block input feeds the block's first conv and its skip conv.
    assert_eq!(names(&g, &d, "r0"), set(&["b1.conv_a", "b1.skip"]));
    assert_eq!(names(&g, &d, "b1.r"), set(&["b2.conv_a", "b2.skip"]));
    assert_eq!(names(&g, &d, "b4.r"), set(&["f"]));
    assert_edges_reversed(&g, &d);
}

#[test]
fn every_spec_dual_reverses_its_edges() {
    for path in SPECS {
        let text = std::fs::read_to_string(root().join(path)).unwrap_or_default();
        let g = checked(path, &text);
        assert_edges_reversed(&g, &dual::build(&g));
    }
    for (case, text) in reference_models() {
        let g = checked(&case, &text);
        assert_edges_reversed(&g, &dual::build(&g));
    }
}
