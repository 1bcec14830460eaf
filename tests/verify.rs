//! `dualnet verify`: unsat answers are sound against sampling, sat counterexamples are valid (checked here again
//! by a float64 forward pass), the general specification bounds agree with the label margins, the result files
//! and the batch mode (shards, merge) have the competition's format. The fixture network is
//! tests/fixtures/onnx/tiny_fc.onnx; the mnistfc benchmark runs where `../shared` has it (the whole benchmark is
//! an ignored test: `cargo test --release --test verify -- --ignored`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use dualnet::dual::bounds::Options;
use dualnet::dual::robust::{certify_batch_with, lower_bounds_with};
use dualnet::dual::InputSet;
use dualnet::ops::Family;
use dualnet::run::verify::{verify, Answer, Network, VerifyConfig};
use rand::{Rng, SeedableRng};

fn fc() -> PathBuf {
    common::repo().join("tests/fixtures/onnx/tiny_fc.onnx")
}

fn eval(net: &Network, x: &[f64]) -> Vec<f64> {
    net.eval_f64(&[x.to_vec()]).expect("eval").remove(0)
}

fn argmax(y: &[f64]) -> usize {
    (0..y.len()).fold(0, |b, j| if y[j] > y[b] { j } else { b })
}

/// A point of the box `[lo, hi]`: uniform inside, or a random corner.
fn box_point(rng: &mut rand::rngs::StdRng, lo: &[f64], hi: &[f64], corner: bool) -> Vec<f64> {
    lo.iter()
        .zip(hi)
        .map(|(&l, &h)| match corner {
            false => rng.random_range(l..=h),
            true if rng.random_bool(0.5) => l,
            true => h,
        })
        .collect()
}

#[test]
fn answers_are_sound_and_counterexamples_valid() {
    let net = Network::load(&fc(), DType::F32).expect("load");
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let (mut unsat, mut sat) = (0, 0);
    for case in 0..24 {
        let center: Vec<f64> = (0..6).map(|_| rng.random_range(-1.0..1.0)).collect();
        let eps = [0.002, 0.02, 0.1, 0.4][case % 4];
        let lo: Vec<f64> = center.iter().map(|c| c - eps).collect();
        let hi: Vec<f64> = center.iter().map(|c| c + eps).collect();
        let label = argmax(&eval(&net, &center));
        let prop = dualnet::vnnlib::parse("case.vnnlib", &common::property(&lo, &hi, label, 3)).expect("parse");
        for family in [Family::Crown, Family::Wk, Family::Ibp, Family::Alpha] {
            let cfg = VerifyConfig { family, timeout: 30.0, ..VerifyConfig::default() };
            let (answer, _) = verify(&net, &prop, &cfg).expect("verify");
            match &answer {
                Answer::Unsat => {
                    unsat += 1;
                    for s in 0..400 {
                        let x = box_point(&mut rng, &lo, &hi, s % 2 == 1);
                        let y = eval(&net, &x);
                        assert!(
                            (0..3).filter(|j| *j != label).all(|j| y[j] < y[label]),
                            "{family}: unsat, but {x:?} gives {y:?} (label {label})"
                        );
                    }
                }
                Answer::Sat { x, y } => {
                    sat += 1;
                    assert!(x.iter().zip(&lo).zip(&hi).all(|((v, l), h)| l <= v && v <= h), "{x:?} outside the box");
                    let again = eval(&net, x);
                    assert_eq!(&again, y);
                    assert!((0..3).any(|j| j != label && y[j] >= y[label]), "not a counterexample: {y:?}");
                }
                Answer::Unknown => {}
                other => panic!("{family}: unexpected {other:?}"),
            }
        }
    }
    assert!(unsat >= 8 && sat >= 8, "{unsat} unsat, {sat} sat");
}

/// The conv fixture: per-channel normalisation (as `scale_shift`), padding, batchnorm, a residual sum, average
/// pooling and a stride-2 convolution. Boxes in pixel units; every answer checked as above.
#[test]
fn conv_networks_with_normalisation_answer_soundly() {
    let net = Network::load(&common::repo().join("tests/fixtures/onnx/tiny_conv.onnx"), DType::F32).expect("load");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut unsat, mut sat) = (0, 0);
    for case in 0..8 {
        let center: Vec<f64> = (0..192).map(|_| rng.random_range(0.1..0.9)).collect();
        let eps = [0.0005, 0.004, 0.05, 0.3][case % 4];
        let lo: Vec<f64> = center.iter().map(|c| (c - eps).max(0.0)).collect();
        let hi: Vec<f64> = center.iter().map(|c| (c + eps).min(1.0)).collect();
        let label = argmax(&eval(&net, &center));
        let prop = dualnet::vnnlib::parse("conv.vnnlib", &common::property(&lo, &hi, label, 5)).expect("parse");
        let (answer, _) =
            verify(&net, &prop, &VerifyConfig { timeout: 30.0, ..VerifyConfig::default() }).expect("verify");
        match &answer {
            Answer::Unsat => {
                unsat += 1;
                for s in 0..200 {
                    let x = box_point(&mut rng, &lo, &hi, s % 2 == 1);
                    let y = eval(&net, &x);
                    assert!(
                        (0..5).filter(|j| *j != label).all(|j| y[j] < y[label]),
                        "unsat, but {y:?} (label {label})"
                    );
                }
            }
            Answer::Sat { x, y } => {
                sat += 1;
                assert!(x.iter().zip(&lo).zip(&hi).all(|((v, l), h)| l <= v && v <= h));
                assert_eq!(&eval(&net, x), y);
                assert!((0..5).any(|j| j != label && y[j] >= y[label]));
            }
            Answer::Unknown => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(unsat >= 2 && sat >= 1, "{unsat} unsat, {sat} sat");
}

#[test]
fn general_specifications_agree_with_label_margins() {
    let net = Network::load(&fc(), DType::F64).expect("load");
    let m = &net.model;
    let x =
        Tensor::new(&[[0.1f64, -0.2, 0.3, 0.0, 0.5, -0.4], [0.3, 0.3, -0.1, 0.2, -0.5, 0.1]], &Device::Cpu).expect("x");
    let set = InputSet::new(&x, &[0.05, 0.05], dualnet::dual::Norm::Linf, None).expect("set");
    let labels = [0u32, 2];
    for family in [Family::Wk, Family::Crown, Family::Alpha, Family::Ibp] {
        let opts = Options { family, ..Default::default() };
        let cert = certify_batch_with(m, &set, &labels, &opts).expect("certify");
        let c = dualnet::dual::objective::margin_objectives(&labels, 3, set.center()).expect("c");
        let (_, lb) = lower_bounds_with(m, &set, &c, &opts).expect("general");
        let a: Vec<Vec<f64>> = cert.margin_lb.to_vec2().expect("a");
        let b: Vec<Vec<f64>> = lb.to_vec2().expect("b");
        for (ra, rb) in a.iter().zip(&b) {
            for (p, q) in ra.iter().zip(rb) {
                assert!((p - q).abs() <= 1e-9 * p.abs().max(1.0), "{family}: {p} vs {q}");
            }
        }
        // Arbitrary rows (with CROWN layer bounds too) stay below sampled values of c · f(x).
        let rows =
            Tensor::new(&[[[1.0f64, -2.0, 0.5], [0.0, 0.0, 1.0]], [[-1.0, 0.0, 0.0], [0.3, 0.3, 0.3]]], &Device::Cpu)
                .expect("rows");
        for crown_layers in [false, true] {
            let (_, lb) = lower_bounds_with(m, &set, &rows, &Options { family, crown_layers, ..Default::default() })
                .expect("bounds");
            let lb: Vec<Vec<f64>> = lb.to_vec2().expect("lb");
            let mut rng = rand::rngs::StdRng::seed_from_u64(3);
            let xs: Vec<Vec<f64>> = x.to_vec2().expect("xs");
            let cs: Vec<Vec<Vec<f64>>> = rows.to_vec3().expect("cs");
            for _ in 0..300 {
                for e in 0..2 {
                    let p: Vec<f64> = xs[e].iter().map(|v| v + rng.random_range(-0.05..=0.05)).collect();
                    let y = eval(&net, &p);
                    for (k, c) in cs[e].iter().enumerate() {
                        let v: f64 = c.iter().zip(&y).map(|(a, b)| a * b).sum();
                        assert!(v >= lb[e][k] - 1e-9, "{family}: bound {} above the value {v}", lb[e][k]);
                    }
                }
            }
        }
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dualnet"))
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run dualnet");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A small benchmark of the fixture: one property that the bound proves, one that an attack breaks.
fn bench(dir: &Path) -> PathBuf {
    let net = Network::load(&fc(), DType::F64).expect("load");
    let c = [0.2, -0.1, 0.4, 0.0, 0.3, -0.3];
    let label = argmax(&eval(&net, &c));
    let tight = common::property(&c.map(|v| v - 0.001), &c.map(|v| v + 0.001), label, 3);
    let wide = common::property(&[-1.0; 6], &[1.0; 6], label, 3);
    std::fs::write(dir.join("tight.vnnlib"), tight).expect("write");
    std::fs::write(dir.join("wide.vnnlib"), wide).expect("write");
    std::fs::copy(fc(), dir.join("tiny_fc.onnx")).expect("copy");
    let csv = dir.join("instances.csv");
    std::fs::write(&csv, "tiny_fc.onnx,tight.vnnlib,60\ntiny_fc.onnx,wide.vnnlib,60\n").expect("write");
    csv
}

#[test]
fn one_instance_writes_the_result_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    bench(dir.path());
    let result = dir.path().join("r.txt");
    let (code, out, err) = run(bin()
        .args(["verify", "--onnx"])
        .arg(dir.path().join("tiny_fc.onnx"))
        .arg("--vnnlib")
        .arg(dir.path().join("tight.vnnlib"))
        .arg("--result")
        .arg(&result));
    assert_eq!((code, out.trim()), (0, "unsat"), "{err}");
    assert_eq!(std::fs::read_to_string(&result).expect("result"), "unsat\n");
    let (code, out, err) = run(bin()
        .args(["verify", "--onnx"])
        .arg(dir.path().join("tiny_fc.onnx"))
        .arg("--vnnlib")
        .arg(dir.path().join("wide.vnnlib"))
        .arg("--result")
        .arg(&result));
    assert_eq!((code, out.trim()), (0, "sat"), "{err}");
    let text = std::fs::read_to_string(&result).expect("result");
    assert!(text.starts_with("sat\n((X_0 ") && text.contains("\n (Y_2 ") && text.ends_with("))\n"), "{text}");
    // The counterexample, read back from the file, violates the property in float64.
    let vals: Vec<f64> = text
        .split('(')
        .filter_map(|p| p.split_whitespace().nth(1).map(|v| v.trim_end_matches(')').parse::<f64>().expect("number")))
        .collect();
    assert_eq!(vals.len(), 9);
    let net = Network::load(&fc(), DType::F64).expect("load");
    let y = eval(&net, &vals[..6]);
    assert_eq!(&y[..], &vals[6..]);
    let prop = dualnet::vnnlib::parse_file(&dir.path().join("wide.vnnlib")).expect("parse");
    assert!(prop.regions[0].disjuncts.iter().any(|d| d.iter().all(|c| c.holds(&y))));
}

#[test]
fn bad_inputs_answer_error_with_a_diagnostic() {
    let dir = tempfile::tempdir().expect("tempdir");
    bench(dir.path());
    let bad = dir.path().join("bad.vnnlib");
    std::fs::write(&bad, "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1.0)\n").expect("write");
    let result = dir.path().join("r.txt");
    let (code, out, err) = run(bin()
        .args(["verify", "--onnx"])
        .arg(dir.path().join("tiny_fc.onnx"))
        .arg("--vnnlib")
        .arg(&bad)
        .arg("--result")
        .arg(&result));
    assert_eq!((code, out.trim()), (1, "error"));
    assert!(err.contains("E0122"), "{err}");
    assert_eq!(std::fs::read_to_string(&result).expect("result"), "error\n");
    // A property of another network: its inputs are out of range.
    let other = dir.path().join("other.vnnlib");
    std::fs::write(&other, common::property(&[0.0; 8], &[1.0; 8], 0, 3)).expect("write");
    let (code, _, err) =
        run(bin().args(["verify", "--onnx"]).arg(dir.path().join("tiny_fc.onnx")).arg("--vnnlib").arg(&other));
    assert_eq!(code, 1);
    assert!(err.contains("E0124") && err.contains("8 inputs"), "{err}");
    // A truncated network.
    let onnx = std::fs::read(fc()).expect("read");
    let cut = dir.path().join("cut.onnx");
    std::fs::write(&cut, &onnx[..onnx.len() / 3]).expect("write");
    let (code, _, err) =
        run(bin().args(["verify", "--onnx"]).arg(&cut).arg("--vnnlib").arg(dir.path().join("tight.vnnlib")));
    assert_eq!(code, 1);
    assert!(err.contains("E0120"), "{err}");
    // Branch and bound answers; a memory cap that is not a size is refused.
    let (code, out, err) = run(bin()
        .args(["verify", "--branching", "relu", "--timeout", "20", "--onnx"])
        .arg(fc())
        .arg("--vnnlib")
        .arg(dir.path().join("tight.vnnlib")));
    assert_eq!(code, 0, "{err}");
    assert!(["unsat", "sat", "unknown", "timeout"].contains(&out.trim()), "{out}");
    let (code, _, err) = run(bin()
        .args(["verify", "--max-memory", "8X", "--onnx"])
        .arg(fc())
        .arg("--vnnlib")
        .arg(dir.path().join("tight.vnnlib")));
    assert_eq!(code, 1);
    assert!(err.contains("--max-memory 8X"), "{err}");
}

#[test]
fn batch_mode_shards_and_merge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = bench(dir.path());
    let d = dir.path();
    let mut parts = Vec::new();
    for k in 0..2 {
        let out = d.join(format!("results_{k}.csv"));
        let (code, stdout, err) = run(bin()
            .args(["verify", "--quiet", "--instances"])
            .arg(&csv)
            .arg("--out")
            .arg(&out)
            .arg("--out-dir")
            .arg(d.join("res"))
            .arg("--shard")
            .arg(format!("{k}/2")));
        assert_eq!(code, 0, "{err}");
        assert!(stdout.contains("1 instances"), "{stdout}");
        parts.push(out);
    }
    let all = d.join("all.csv");
    let (code, _, err) = run(bin().args(["verify", "--merge"]).args(&parts).arg("--out").arg(&all));
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&all).expect("merged");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "onnx,vnnlib,result,seconds");
    assert!(lines[1].starts_with("tiny_fc.onnx,tight.vnnlib,unsat,"), "{text}");
    assert!(lines[2].starts_with("tiny_fc.onnx,wide.vnnlib,sat,"), "{text}");
    assert_eq!(std::fs::read_to_string(d.join("res/tiny_fc__tight.txt")).expect("file"), "unsat\n");
    assert!(std::fs::read_to_string(d.join("res/tiny_fc__wide.txt")).expect("file").starts_with("sat\n(("));
    let (code, _, err) = run(bin()
        .args(["verify", "--instances"])
        .arg(&csv)
        .arg("--out")
        .arg(d.join("x.csv"))
        .arg("--out-dir")
        .arg(d)
        .arg("--shard")
        .arg("2/2"));
    assert_eq!(code, 1);
    assert!(err.contains("--shard 2/2"), "{err}");
}

#[test]
fn onnx_models_run_through_bounds_and_certify_flags() {
    // `--onnx` replaces `--spec`/`--weights`: the imported mnistfc-style network is bounded like a spec.
    let dir = tempfile::tempdir().expect("tempdir");
    let net = Network::load(&fc(), DType::F32).expect("load");
    let x = Tensor::new(&[[0.1f32, -0.2, 0.3, 0.0, 0.5, -0.4]], &Device::Cpu).expect("x");
    let y = Tensor::new(&[argmax(&eval(&net, &[0.1, -0.2, 0.3, 0.0, 0.5, -0.4])) as i64], &Device::Cpu).expect("y");
    let inputs = dir.path().join("in.safetensors");
    candle_core::safetensors::save(
        &[("x", x), ("y", y)].into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        &inputs,
    )
    .expect("save");
    let out = dir.path().join("b.json");
    let (code, _, err) = run(bin()
        .args(["bounds", "--onnx"])
        .arg(fc())
        .arg("--inputs")
        .arg(&inputs)
        .args(["--eps", "0.01", "--bound", "crown", "--json"])
        .arg(&out));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).expect("json")).expect("parse");
    assert_eq!(v["network"], "tiny_fc");
    let (code, _, err) = run(bin()
        .args(["bounds", "--onnx"])
        .arg(fc())
        .arg("--spec")
        .arg("x.net")
        .arg("--inputs")
        .arg(&inputs)
        .args(["--eps", "0.01", "--json"])
        .arg(&out));
    assert_eq!(code, 2, "{err}");
}

fn mnistfc_config() -> VerifyConfig {
    VerifyConfig { family: Family::Crown, timeout: 120.0, ..VerifyConfig::default() }
}

#[test]
fn mnistfc_instances_answer_as_the_competition_found() {
    let Some(dir) = common::shared("vnncomp/mnistfc", "the mnistfc verify test") else { return };
    let net = Network::load(&dir.join("mnist-net_256x2.onnx"), DType::F32).expect("load");
    // holds for every tool in 2021; CROWN proves it without branching.
    let p = dualnet::vnnlib::parse_file(&dir.join("prop_2_0.03.vnnlib")).expect("parse");
    assert_eq!(verify(&net, &p, &mnistfc_config()).expect("verify").0, Answer::Unsat);
    // violated for every tool in 2021.
    let p = dualnet::vnnlib::parse_file(&dir.join("prop_1_0.05.vnnlib")).expect("parse");
    let (a, _) = verify(&net, &p, &mnistfc_config()).expect("verify");
    let Answer::Sat { x, y } = a else { panic!("{a:?}") };
    let r = &p.regions[0];
    assert!(x.iter().zip(&r.lo).zip(&r.hi).all(|((v, l), h)| l <= v && v <= h));
    assert!(r.disjuncts.iter().any(|d| d.iter().all(|c| c.holds(&y))));
}

/// The whole mnistfc benchmark (90 instances, about 30 s in release): every instance answers, at least 25 unsat
/// and 15 sat, and no unsat where a 2021 tool found a counterexample.
#[test]
#[ignore]
fn mnistfc_benchmark() {
    let Some(dir) = common::shared("vnncomp/mnistfc", "the mnistfc benchmark") else { return };
    let instances = dualnet::run::verify::read_instances(&dir.join("mnistfc_instances.csv")).expect("instances");
    let out = tempfile::tempdir().expect("tempdir");
    let (rows, summary) = dualnet::run::verify::run_batch(
        &instances,
        (0, 1),
        &out.path().join("results.csv"),
        &out.path().join("res"),
        &mnistfc_config(),
        false,
        None,
    )
    .expect("batch");
    eprintln!("{summary}");
    let violated: std::collections::HashSet<(String, String)> = std::fs::read_to_string(dir.join("results_2021.csv"))
        .expect("results_2021")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() >= 4 && f[3] == "violated").then(|| (f[0].to_string(), f[1].to_string()))
        })
        .collect();
    assert_eq!(rows.len(), 90);
    for r in &rows {
        assert!(r.result != "error" && r.result != "timeout", "{r:?}");
        assert!(!(r.result == "unsat" && violated.contains(&(r.onnx.clone(), r.vnnlib.clone()))), "unsound: {r:?}");
    }
    let count = |w: &str| rows.iter().filter(|r| r.result == w).count();
    assert!(count("unsat") >= 25 && count("sat") >= 15, "{summary}");
}
