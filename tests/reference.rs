//! The reference vectors (`../shared/reference/*/expected.json`, computed by the paper's implementation in float64):
//! every case and setting must match — clean logits, margin lower bounds, every layer's bounds, robust CE and
//! robust error — within `abs(a - ref) <= tol * max(1, max |ref|)` per array; tol 1e-9 in f64, 1e-5 in f32.
//! Every case runs in CI (about 20 s in the test profile).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use dualnet::check::check_source;
use dualnet::cli::bounds::{compute, load_inputs, BoundsJson, SetArgs};
use dualnet::cli::DTypeArg;
use dualnet::dual::{Model, Norm};
use dualnet::weights::Weights;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference")
}

fn flat(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flat(x, out)),
        Value::Number(n) => out.push(n.as_f64().unwrap_or(f64::NAN)),
        Value::Bool(b) => out.push(*b as u8 as f64),
        _ => {}
    }
}

/// Largest `|a - ref| / max(1, max|ref|)` over an array.
fn scaled_err(ours: &Value, reference: &Value) -> f64 {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flat(ours, &mut a);
    flat(reference, &mut b);
    assert_eq!(a.len(), b.len(), "array sizes differ");
    let scale = b.iter().fold(1f64, |m, x| m.max(x.abs()));
    a.iter().zip(&b).map(|(x, y)| (x - y).abs() / scale).fold(0.0, f64::max)
}

fn run_case(case: &str, dtype: DType) {
    let dir = root().join(case);
    let text = std::fs::read_to_string(dir.join("model.net")).expect("model.net");
    let checked = check_source("model.net", &text);
    let graph = checked.graph.expect("reference model checks clean");
    let wfile = if dtype == DType::F64 { "weights_f64.safetensors" } else { "weights.safetensors" };
    let weights = Weights::load(&graph, &dir.join(wfile), dtype, &Device::Cpu).expect("weights load");
    let model = Model::new(graph, weights, dtype, Device::Cpu);
    let (x, labels) = load_inputs(&model, &dir.join("inputs.safetensors")).expect("inputs load");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).expect("expected.json"))
            .expect("json");
    let tol = if dtype == DType::F64 { 1e-9 } else { 1e-5 };
    let settings = expected["settings"].as_array().expect("settings");
    assert!(!settings.is_empty());
    for s in settings {
        let name = s["name"].as_str().unwrap_or("?");
        let set = SetArgs {
            eps: s["epsilon"].as_f64().expect("epsilon"),
            norm: if s["norm"] == "l2" { Norm::L2 } else { Norm::Linf },
            bounded: s["bounded_input"].as_bool().unwrap_or(false),
            box_lo: 0.0,
            box_hi: 1.0,
            dtype: if dtype == DType::F64 { DTypeArg::F64 } else { DTypeArg::F32 },
        };
        let out: BoundsJson = compute(&model, &x, &labels, &set).expect("bounds compute");
        let ours = serde_json::to_value(&out).expect("to json");
        let mut report = Vec::new();
        let mut check = |what: String, e: f64| {
            report.push(format!("{what}: {e:.2e}"));
            assert!(e <= tol, "{case}/{name} ({dtype:?}): {what} differs by {e:.3e} (scaled), tolerance {tol:e}");
        };
        check("clean_logits".into(), scaled_err(&ours["clean_logits"], &expected["clean_logits"]));
        check("margin_lb".into(), scaled_err(&ours["margin_lb"], &s["margin_lb"]));
        let nodes = expected["relu_input_nodes"].as_array().expect("relu_input_nodes");
        for n in nodes {
            let n = n.as_str().expect("node name");
            for side in ["lower", "upper"] {
                check(format!("{n}.{side}"), scaled_err(&ours["layer_bounds"][n][side], &s["layer_bounds"][n][side]));
            }
        }
        assert_eq!(
            ours["layer_bounds"].as_object().map(|o| o.len()),
            Some(nodes.len()),
            "{case}/{name}: layer set differs"
        );
        check("robust_ce".into(), scaled_err(&ours["robust_ce"], &s["robust_ce"]));
        assert_eq!(out.robust_err, s["robust_err"].as_f64().expect("robust_err"), "{case}/{name}: robust_err");
        let unc: Vec<bool> =
            s["uncertified"].as_array().expect("uncertified").iter().map(|v| v.as_bool().unwrap_or(false)).collect();
        assert_eq!(out.uncertified, unc, "{case}/{name}: certification flags");
        eprintln!("{case}/{name} {dtype:?}: {}", report.join(", "));
    }
}

#[test]
fn mlp_f64() {
    run_case("mlp", DType::F64);
}
#[test]
fn mlp_f32() {
    run_case("mlp", DType::F32);
}
#[test]
fn resnet_tiny_f64() {
    run_case("resnet_tiny", DType::F64);
}
#[test]
fn resnet_tiny_f32() {
    run_case("resnet_tiny", DType::F32);
}
#[test]
fn batchnorm_f64() {
    run_case("batchnorm", DType::F64);
}
#[test]
fn batchnorm_f32() {
    run_case("batchnorm", DType::F32);
}
#[test]
fn mnist_small_f32() {
    run_case("mnist_small", DType::F32);
}
#[test]
fn mnist_small_trained_f32() {
    run_case("mnist_small_trained", DType::F32);
}
#[test]
fn mnist_small_f64() {
    run_case("mnist_small", DType::F64);
}
#[test]
fn mnist_small_trained_f64() {
    run_case("mnist_small_trained", DType::F64);
}
