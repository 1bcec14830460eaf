//! The reference vectors, computed by the paper's implementation (`convex_adversarial`) in float64: every case and
//! setting must match — clean logits, margin lower bounds, every layer's bounds, robust CE and robust error —
//! within `abs(a - ref) <= tol * max(1, max |ref|)` per array; tol 1e-9 in f64. In f32 every bound pays for
//! the f32 rounding of its computation (a worst-case charge, [`dualnet::dual::rounding`]), so it is checked one
//! sided: never tighter than the reference by more than 1e-5, never looser by more than `F32_CHARGE`, and it
//! certifies a subset of what the reference certifies.
//!
//! The vectors live in the repository as `tests/fixtures/reference/<case>/` (`model.net`, `weights.safetensors`,
//! `inputs.safetensors`, `expected.safetensors`, `settings.json`): every setting's clean logits, margins, robust CE
//! and certification flags for all 16 images, and the layer bounds of the first `layer_bound_examples` images
//! (all 16 for `mlp`, 2 for the conv nets, whose layer bounds would take 18 MB in full). The f64 runs widen the
//! float32 weights, which is exactly what the reference's `weights_f64` holds (checked when regenerating).
//!
//! With the original JSON present (`$DUALNET_SHARED/reference/<case>/expected.json`, see `tests/common`),
//! `full_json_vectors` also checks every layer bound of all 16 images, and `fixtures_are_the_json_values` that the
//! fixtures hold exactly the JSON's numbers. `cargo test --test reference -- --ignored regenerate_fixtures`
//! rewrites the fixtures from that JSON.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use dualnet::check::check_source;
use dualnet::cli::bounds::{compute, load_inputs, BoundsJson, SetArgs};
use dualnet::cli::DTypeArg;
use dualnet::dual::{Model, Norm};
use dualnet::weights::Weights;
use serde_json::{json, Value};

/// Layer bounds kept in the fixtures: the first N images of each case.
fn layer_bound_examples(case: &str) -> usize {
    if case == "mlp" {
        16
    } else {
        2
    }
}

/// One perturbation set and its expected values.
#[derive(Debug, Clone, PartialEq)]
struct Setting {
    name: String,
    norm: String,
    epsilon: f64,
    bounded: bool,
    /// `[batch * classes]`, row-major.
    margin_lb: Vec<f64>,
    robust_ce: f64,
    robust_err: f64,
    uncertified: Vec<bool>,
    /// node -> (lower, upper), each `[rows * n]` row-major over the first `rows` images.
    layers: BTreeMap<String, (Vec<f64>, Vec<f64>)>,
}

/// The expected values of one case.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    batch: usize,
    classes: usize,
    nodes: Vec<String>,
    clean_logits: Vec<f64>,
    /// Images whose layer bounds are held.
    rows: usize,
    settings: Vec<Setting>,
}

fn flat(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flat(x, out)),
        Value::Number(n) => out.push(n.as_f64().unwrap_or(f64::NAN)),
        Value::Bool(b) => out.push(*b as u8 as f64),
        _ => {}
    }
}

fn flat_of(v: &Value) -> Vec<f64> {
    let mut out = Vec::new();
    flat(v, &mut out);
    out
}

impl Expected {
    /// From the reference's `expected.json`, keeping the layer bounds of the first `rows` images.
    fn from_json(v: &Value, rows: usize) -> Expected {
        let batch = v["batch"].as_u64().expect("batch") as usize;
        let classes = v["num_classes"].as_u64().expect("num_classes") as usize;
        let nodes: Vec<String> = v["relu_input_nodes"]
            .as_array()
            .expect("relu_input_nodes")
            .iter()
            .map(|n| n.as_str().expect("node").to_string())
            .collect();
        let settings = v["settings"]
            .as_array()
            .expect("settings")
            .iter()
            .map(|s| {
                let layers = nodes
                    .iter()
                    .map(|n| {
                        let side = |k: &str| {
                            let rows_v = s["layer_bounds"][n][k].as_array().expect("layer rows");
                            rows_v.iter().take(rows).flat_map(flat_of).collect::<Vec<f64>>()
                        };
                        (n.clone(), (side("lower"), side("upper")))
                    })
                    .collect();
                Setting {
                    name: s["name"].as_str().expect("name").to_string(),
                    norm: s["norm"].as_str().expect("norm").to_string(),
                    epsilon: s["epsilon"].as_f64().expect("epsilon"),
                    bounded: s["bounded_input"].as_bool().expect("bounded_input"),
                    margin_lb: flat_of(&s["margin_lb"]),
                    robust_ce: s["robust_ce"].as_f64().expect("robust_ce"),
                    robust_err: s["robust_err"].as_f64().expect("robust_err"),
                    uncertified: s["uncertified"].as_array().expect("uncertified").iter().map(|b| b == true).collect(),
                    layers,
                }
            })
            .collect();
        Expected { batch, classes, nodes, clean_logits: flat_of(&v["clean_logits"]), rows, settings }
    }

    /// From a fixture folder (`settings.json` + `expected.safetensors`).
    fn from_fixture(dir: &Path) -> Expected {
        let meta: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("settings.json")).expect("settings.json"))
                .expect("settings.json parses");
        let t = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu)
            .expect("expected.safetensors");
        let get = |k: &str| -> Vec<f64> {
            t.get(k)
                .unwrap_or_else(|| panic!("expected.safetensors has no `{k}`"))
                .flatten_all()
                .and_then(|x| x.to_dtype(DType::F64))
                .and_then(|x| x.to_vec1::<f64>())
                .expect("tensor")
        };
        let nodes: Vec<String> = meta["relu_input_nodes"]
            .as_array()
            .expect("relu_input_nodes")
            .iter()
            .map(|n| n.as_str().expect("node").to_string())
            .collect();
        let settings = meta["settings"]
            .as_array()
            .expect("settings")
            .iter()
            .map(|s| {
                let name = s["name"].as_str().expect("name").to_string();
                let layers = nodes
                    .iter()
                    .map(|n| (n.clone(), (get(&format!("{name}/{n}.lower")), get(&format!("{name}/{n}.upper")))))
                    .collect();
                Setting {
                    norm: s["norm"].as_str().expect("norm").to_string(),
                    epsilon: s["epsilon"].as_f64().expect("epsilon"),
                    bounded: s["bounded_input"].as_bool().expect("bounded_input"),
                    margin_lb: get(&format!("{name}/margin_lb")),
                    robust_ce: get(&format!("{name}/robust_ce"))[0],
                    robust_err: get(&format!("{name}/robust_err"))[0],
                    uncertified: get(&format!("{name}/uncertified")).iter().map(|&b| b != 0.0).collect(),
                    layers,
                    name,
                }
            })
            .collect();
        Expected {
            batch: meta["batch"].as_u64().expect("batch") as usize,
            classes: meta["num_classes"].as_u64().expect("num_classes") as usize,
            nodes,
            clean_logits: get("clean_logits"),
            rows: meta["layer_bound_examples"].as_u64().expect("layer_bound_examples") as usize,
            settings,
        }
    }

    /// Write as a fixture folder (`settings.json` + `expected.safetensors`).
    fn write_fixture(&self, dir: &Path, source: &str) {
        let cpu = Device::Cpu;
        let f64s = |v: &[f64], shape: &[usize]| Tensor::from_vec(v.to_vec(), shape, &cpu).expect("tensor");
        let mut t = std::collections::HashMap::new();
        t.insert("clean_logits".to_string(), f64s(&self.clean_logits, &[self.batch, self.classes]));
        for s in &self.settings {
            let n = &s.name;
            t.insert(format!("{n}/margin_lb"), f64s(&s.margin_lb, &[self.batch, self.classes]));
            t.insert(format!("{n}/robust_ce"), f64s(&[s.robust_ce], &[1]));
            t.insert(format!("{n}/robust_err"), f64s(&[s.robust_err], &[1]));
            let flags: Vec<u8> = s.uncertified.iter().map(|&b| b as u8).collect();
            t.insert(format!("{n}/uncertified"), Tensor::from_vec(flags, self.batch, &cpu).expect("flags"));
            for (node, (lo, up)) in &s.layers {
                let width = lo.len() / self.rows;
                t.insert(format!("{n}/{node}.lower"), f64s(lo, &[self.rows, width]));
                t.insert(format!("{n}/{node}.upper"), f64s(up, &[self.rows, width]));
            }
        }
        candle_core::safetensors::save(&t, dir.join("expected.safetensors")).expect("save expected.safetensors");
        let meta = json!({
            "source": source,
            "batch": self.batch,
            "num_classes": self.classes,
            "layer_bound_examples": self.rows,
            "relu_input_nodes": self.nodes,
            "settings": self.settings.iter().map(|s| json!({
                "name": s.name, "norm": s.norm, "epsilon": s.epsilon, "bounded_input": s.bounded,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(dir.join("settings.json"), serde_json::to_string_pretty(&meta).expect("json") + "\n")
            .expect("write settings.json");
    }
}

/// Largest `|a - ref| / max(1, max|ref|)` over an array.
fn scaled_err(ours: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(ours.len(), reference.len(), "array sizes differ");
    let scale = reference.iter().fold(1f64, |m, x| m.max(x.abs()));
    ours.iter().zip(reference).map(|(x, y)| (x - y).abs() / scale).fold(0.0, f64::max)
}

fn load_model(dir: &Path, dtype: DType) -> Model {
    let text = std::fs::read_to_string(dir.join("model.net")).expect("model.net");
    let graph = check_source("model.net", &text).graph.expect("reference model checks clean");
    // The f64 runs widen the float32 weights: exactly the reference's `weights_f64`.
    let weights = Weights::load(&graph, &dir.join("weights.safetensors"), dtype, &Device::Cpu).expect("weights load");
    Model::new(graph, weights, dtype, Device::Cpu)
}

/// How much looser (scaled by the array's largest reference value) an f32 bound may be than the reference's f64
/// value: the worst-case charge for f32 rounding on these untrained networks reaches 1.5e-2 (mnist_small at
/// ε = 0.1 with the box), and loses none of the reference's certificates; in f64 it is below 3e-11.
const F32_CHARGE: f64 = 2e-2;

/// Compute every setting of `exp` with the model and inputs in `dir` and compare.
fn check_case(case: &str, dir: &Path, exp: &Expected, dtype: DType) {
    let model = load_model(dir, dtype);
    let (x, labels) = load_inputs(&model, &dir.join("inputs.safetensors")).expect("inputs load");
    assert_eq!(labels.len(), exp.batch, "{case}: batch");
    let tol = if dtype == DType::F64 { 1e-9 } else { 1e-5 };
    assert!(!exp.settings.is_empty(), "{case}: no settings");
    assert!(exp.rows >= 1 && !exp.nodes.is_empty(), "{case}: no layer bounds");
    for s in &exp.settings {
        let set = SetArgs {
            eps: s.epsilon,
            norm: if s.norm == "l2" { Norm::L2 } else { Norm::Linf },
            bounded: s.bounded,
            box_lo: 0.0,
            box_hi: 1.0,
            dtype: if dtype == DType::F64 { DTypeArg::F64 } else { DTypeArg::F32 },
            // The paper's relaxation (the default of `bounds`), as the reference computes it.
            bound: None,
            alpha_iters: dualnet::dual::bounds::DEFAULT_ALPHA_ITERS,
            alpha_lr: dualnet::dual::bounds::DEFAULT_ALPHA_LR,
            // The reference computes the network in real arithmetic (f64).
            deployed: None,
        };
        let out: BoundsJson = compute(&model, &x, &labels, &set).expect("bounds compute");
        let ours = serde_json::to_value(&out).expect("to json");
        let name = &s.name;
        let mut report = Vec::new();
        // f64: both sides within `tol` of the reference. f32: the bounds pay for every f32 rounding (a worst-case
        // charge, `γ_n` of the magnitudes of the terms), so they are looser than the reference's f64 values by
        // that charge but never tighter than its float noise allows: a lower bound at most `tol` above the
        // reference and at most `F32_CHARGE` below it (scaled), an upper bound the other way round.
        let f32 = dtype != DType::F64;
        let mut check = |what: String, ours: &[f64], reference: &[f64], lower: Option<bool>| {
            let e = scaled_err(ours, reference);
            report.push(format!("{what}: {e:.2e}"));
            match (f32, lower) {
                (true, Some(lower)) => {
                    let scale = reference.iter().fold(1f64, |m, x| m.max(x.abs()));
                    let sign = if lower { 1.0 } else { -1.0 };
                    let above =
                        ours.iter().zip(reference).map(|(x, y)| sign * (x - y) / scale).fold(f64::MIN, f64::max);
                    assert!(above <= tol, "{case}/{name} ({dtype:?}): {what} is tighter than the reference by {above:.3e} (scaled): unsound");
                    assert!(e <= F32_CHARGE, "{case}/{name} ({dtype:?}): {what} is looser than the reference by {e:.3e} (scaled), more than {F32_CHARGE:e}");
                }
                _ => assert!(
                    e <= tol,
                    "{case}/{name} ({dtype:?}): {what} differs by {e:.3e} (scaled), tolerance {tol:e}"
                ),
            }
        };
        check("clean_logits".into(), &flat_of(&ours["clean_logits"]), &exp.clean_logits, None);
        check("margin_lb".into(), &flat_of(&ours["margin_lb"]), &s.margin_lb, Some(true));
        for n in &exp.nodes {
            let (lo, up) = &s.layers[n];
            for (side, reference) in [("lower", lo), ("upper", up)] {
                let all = flat_of(&ours["layer_bounds"][n][side]);
                assert_eq!(all.len() % exp.batch, 0, "{case}/{name}: {n}.{side} size");
                let kept = &all[..exp.rows * (all.len() / exp.batch)];
                check(format!("{n}.{side}"), kept, reference, Some(side == "lower"));
            }
        }
        assert_eq!(
            ours["layer_bounds"].as_object().map(|o| o.len()),
            Some(exp.nodes.len()),
            "{case}/{name}: layer set differs"
        );
        // The robust loss grows as the margins' bounds fall.
        check("robust_ce".into(), &[out.robust_ce], &[s.robust_ce], Some(false));
        if f32 {
            // Looser bounds certify a subset of what the reference certifies.
            assert!(
                out.robust_err >= s.robust_err,
                "{case}/{name}: robust_err {} below the reference's {}",
                out.robust_err,
                s.robust_err
            );
            for (b, (o, r)) in out.uncertified.iter().zip(&s.uncertified).enumerate() {
                assert!(*o || !*r, "{case}/{name}: example {b} certified, the reference does not certify it");
            }
            let flips = out.uncertified.iter().zip(&s.uncertified).filter(|(o, r)| o != r).count();
            report.push(format!("certification flags lost to rounding charges: {flips}"));
        } else {
            assert_eq!(out.robust_err, s.robust_err, "{case}/{name}: robust_err");
            assert_eq!(out.uncertified, s.uncertified, "{case}/{name}: certification flags");
        }
        eprintln!("{case}/{name} {dtype:?}: {}", report.join(", "));
    }
}

fn run_fixture(case: &str, dtype: DType) {
    let dir = common::reference_fixtures().join(case);
    let exp = Expected::from_fixture(&dir);
    check_case(case, &dir, &exp, dtype);
}

#[test]
fn mlp_f64() {
    run_fixture("mlp", DType::F64);
}
#[test]
fn mlp_f32() {
    run_fixture("mlp", DType::F32);
}
#[test]
fn resnet_tiny_f64() {
    run_fixture("resnet_tiny", DType::F64);
}
#[test]
fn resnet_tiny_f32() {
    run_fixture("resnet_tiny", DType::F32);
}
#[test]
fn batchnorm_f64() {
    run_fixture("batchnorm", DType::F64);
}
#[test]
fn batchnorm_f32() {
    run_fixture("batchnorm", DType::F32);
}
#[test]
fn mnist_small_f32() {
    run_fixture("mnist_small", DType::F32);
}
#[test]
fn mnist_small_trained_f32() {
    run_fixture("mnist_small_trained", DType::F32);
}
#[test]
fn mnist_small_f64() {
    run_fixture("mnist_small", DType::F64);
}
#[test]
fn mnist_small_trained_f64() {
    run_fixture("mnist_small_trained", DType::F64);
}

#[test]
fn every_fixture_case_is_tested() {
    let mut on_disk: Vec<String> = std::fs::read_dir(common::reference_fixtures())
        .expect("tests/fixtures/reference")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, common::REFERENCE_CASES, "a fixture case without a test, or a test without its fixture");
}

/// The original JSON of `case`, when the shared data is there.
fn shared_json(case: &str) -> Option<(std::path::PathBuf, Value)> {
    let dir = common::shared("reference", "the checks against the full reference JSON")?.join(case);
    let text = std::fs::read_to_string(dir.join("expected.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join("expected.json").display()));
    Some((dir, serde_json::from_str(&text).expect("expected.json parses")))
}

/// Every layer bound of all 16 images, in f64 and f32, against the full JSON.
#[test]
fn full_json_vectors() {
    for case in common::REFERENCE_CASES {
        let Some((_, v)) = shared_json(case) else { return };
        let exp = Expected::from_json(&v, v["batch"].as_u64().expect("batch") as usize);
        let dir = common::reference_fixtures().join(case);
        for dtype in [DType::F64, DType::F32] {
            check_case(case, &dir, &exp, dtype);
        }
    }
}

/// The fixtures hold exactly the JSON's values, and its model, weights and inputs.
#[test]
fn fixtures_are_the_json_values() {
    for case in common::REFERENCE_CASES {
        let Some((src, v)) = shared_json(case) else { return };
        let fixture = common::reference_fixtures().join(case);
        assert_eq!(
            Expected::from_fixture(&fixture),
            Expected::from_json(&v, layer_bound_examples(case)),
            "{case}: the fixture is out of date; run `cargo test --test reference -- --ignored regenerate_fixtures`"
        );
        for f in ["model.net", "weights.safetensors", "inputs.safetensors"] {
            assert_eq!(std::fs::read(fixture.join(f)).ok(), std::fs::read(src.join(f)).ok(), "{case}/{f} differs");
        }
    }
}

/// Rewrite `tests/fixtures/reference` from `$DUALNET_SHARED/reference` (run with `--ignored`).
#[test]
#[ignore]
fn regenerate_fixtures() {
    for case in common::REFERENCE_CASES {
        let (src, v) = shared_json(case).expect("the shared reference data is needed to regenerate the fixtures");
        let dst = common::reference_fixtures().join(case);
        std::fs::create_dir_all(&dst).expect("mkdir");
        for f in ["model.net", "weights.safetensors", "inputs.safetensors"] {
            std::fs::copy(src.join(f), dst.join(f)).expect("copy");
        }
        // Dropping `weights_f64` is sound only if it is the exact widening of the float32 weights.
        let text = std::fs::read_to_string(src.join("model.net")).expect("model.net");
        let graph = check_source("model.net", &text).graph.expect("checks");
        let widened = Weights::load(&graph, &src.join("weights.safetensors"), DType::F64, &Device::Cpu).expect("w");
        let f64w = Weights::load(&graph, &src.join("weights_f64.safetensors"), DType::F64, &Device::Cpu).expect("w");
        for (a, b) in widened.per_node.iter().zip(&f64w.per_node) {
            for (k, t) in a {
                let (x, y) = (t.flatten_all().expect("t"), b[k].flatten_all().expect("t"));
                assert_eq!(x.to_vec1::<f64>().expect("v"), y.to_vec1::<f64>().expect("v"), "{case}: {k}");
            }
        }
        let source = format!(
            "convex_adversarial commit {}, reference/{case}/expected.json",
            v["reference_commit"].as_str().unwrap_or("?")
        );
        Expected::from_json(&v, layer_bound_examples(case)).write_fixture(&dst, &source);
        eprintln!("wrote {}", dst.display());
    }
}
