//! The binary as a user meets it: bad input of every kind gets a coded diagnostic naming the file or node, a
//! non-zero exit (1 for input errors, 2 for usage/I-O), and never a panic or a stack trace.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dualnet"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn run(args: &[&str]) -> (i32, String) {
    let out = bin().args(args).current_dir(root()).output().expect("runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("panicked") && !text.contains("RUST_BACKTRACE"), "panic for {args:?}:\n{text}");
    (out.status.code().unwrap_or(-1), text)
}

const MLP: &str = "tests/fixtures/reference/mlp/model.net";
const MLP_W: &str = "tests/fixtures/reference/mlp/weights.safetensors";
const MLP_X: &str = "tests/fixtures/reference/mlp/inputs.safetensors";

fn tweak_weights(dir: &Path, f: impl FnOnce(&mut HashMap<String, Tensor>)) -> String {
    let mut map = candle_core::safetensors::load(root().join(MLP_W), &Device::Cpu).expect("weights");
    f(&mut map);
    let p = dir.join("w.safetensors");
    candle_core::safetensors::save(&map, &p).expect("save");
    p.display().to_string()
}

fn bounds(weights: &str, inputs: &str, extra: &[&str]) -> (i32, String) {
    let mut a = vec!["bounds", "--spec", MLP, "--weights", weights, "--inputs", inputs, "--eps", "0.1", "--json", "-"];
    a.extend_from_slice(extra);
    run(&a)
}

#[test]
fn good_run_succeeds() {
    let (code, out) = bounds(MLP_W, MLP_X, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"margin_lb\""));
}

#[test]
fn weights_problems_are_diagnosed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = tweak_weights(tmp.path(), |m| {
        m.remove("l2.bias");
    });
    let (code, out) = bounds(&p, MLP_X, &[]);
    assert_eq!(code, 1);
    assert!(out.contains("E0101") && out.contains("l2.bias"), "{out}");

    let p = tweak_weights(tmp.path(), |m| {
        m.insert("l1.weight".into(), Tensor::zeros((100, 783), DType::F32, &Device::Cpu).expect("t"));
    });
    let (code, out) = bounds(&p, MLP_X, &[]);
    assert_eq!(code, 1);
    assert!(out.contains("E0102") && out.contains("l1.weight") && out.contains("[100, 784]"), "{out}");

    let p = tweak_weights(tmp.path(), |m| {
        m.insert("l9.weight".into(), Tensor::zeros(3, DType::F32, &Device::Cpu).expect("t"));
    });
    let (code, out) = bounds(&p, MLP_X, &[]);
    assert_eq!(code, 1);
    assert!(out.contains("E0103") && out.contains("l9.weight"), "{out}");

    let p = tweak_weights(tmp.path(), |m| {
        let t = m["l1.bias"].to_dtype(DType::I64).expect("t");
        m.insert("l1.bias".into(), t);
    });
    let (code, out) = bounds(&p, MLP_X, &[]);
    assert_eq!(code, 1);
    assert!(out.contains("E0102") && out.contains("l1.bias"), "{out}");

    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file").expect("write");
    let (code, out) = bounds(&junk.display().to_string(), MLP_X, &[]);
    assert_eq!(code, 1);
    assert!(out.contains("E0104"), "{out}");

    let (code, out) = bounds("no/such/file.safetensors", MLP_X, &[]);
    assert_eq!(code, 2);
    assert!(out.contains("no/such/file.safetensors"), "{out}");
}

#[test]
fn inputs_problems_are_diagnosed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let save = |x: Tensor, y: Tensor| {
        let p = tmp.path().join(format!("in{}.safetensors", x.dims()[0]));
        let m: HashMap<String, Tensor> = [("x".to_string(), x), ("y".to_string(), y)].into_iter().collect();
        candle_core::safetensors::save(&m, &p).expect("save");
        p.display().to_string()
    };
    let p = save(
        Tensor::zeros((2, 1, 27, 28), DType::F32, &Device::Cpu).expect("x"),
        Tensor::zeros(2, DType::I64, &Device::Cpu).expect("y"),
    );
    let (code, out) = bounds(MLP_W, &p, &[]);
    assert_eq!(code, 1);
    assert!(out.contains("E0105") && out.contains("[B, 1, 28, 28]"), "{out}");

    let p = save(
        Tensor::zeros((3, 1, 28, 28), DType::F32, &Device::Cpu).expect("x"),
        Tensor::new(&[0i64, 10, 1], &Device::Cpu).expect("y"),
    );
    let (code, out) = bounds(MLP_W, &p, &[]);
    assert_eq!(code, 1);
    assert!(out.contains("label 10") && out.contains("out of range"), "{out}");
}

#[test]
fn bad_epsilon_is_refused() {
    for eps in ["-0.1", "NaN", "inf"] {
        let (code, out) =
            run(&["bounds", "--spec", MLP, "--weights", MLP_W, "--inputs", MLP_X, "--eps", eps, "--json", "-"]);
        assert_ne!(code, 0, "eps {eps}: {out}");
        assert!(out.contains("eps") || out.contains("ε"), "{out}");
    }
}

#[test]
fn spec_errors_stop_every_command() {
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = tmp.path().join("bad.net");
    std::fs::write(
        &spec,
        "network b { input x: [1, 28, 28]  f = flatten(x)  l = linear(f, out=10)  r = relux(l)  output l }",
    )
    .expect("w");
    let s = spec.display().to_string();
    for args in [
        vec!["check", s.as_str()],
        vec!["compile", s.as_str(), "--emit", "dual"],
        vec!["bounds", "--spec", s.as_str(), "--weights", MLP_W, "--inputs", MLP_X, "--eps", "0.1", "--json", "-"],
    ] {
        let (code, out) = run(&args);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert!(out.contains("E0002") && out.contains("relu"), "{out}");
    }
    let (code, _) = run(&["check", "no/such.net"]);
    assert_eq!(code, 2);
    let bin_file = tmp.path().join("bin.net");
    std::fs::write(&bin_file, [0xffu8, 0xfe, 0x00, 0x41]).expect("w");
    let (code, out) = run(&["check", bin_file.to_str().expect("p")]);
    assert_eq!(code, 2);
    assert!(out.contains("UTF-8"), "{out}");
}

#[test]
fn corrupt_data_is_diagnosed() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(
        tmp.path().join("t10k-images-idx3-ubyte"),
        [0u8, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2, 3],
    )
    .expect("w");
    std::fs::write(tmp.path().join("t10k-labels-idx1-ubyte"), [0u8, 0, 8, 1, 0, 0, 0, 5, 1, 2, 3, 4, 5]).expect("w");
    let d = tmp.path().display().to_string();
    let (code, out) = run(&["certify", "--spec", MLP, "--weights", MLP_W, "--data-dir", &d, "--eps", "0.1", "--quiet"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("E0107") && out.contains("t10k-images-idx3-ubyte"), "{out}");
    let (code, out) =
        run(&["certify", "--spec", MLP, "--weights", MLP_W, "--data-dir", "no/such/dir", "--eps", "0.1", "--quiet"]);
    assert_ne!(code, 0);
    assert!(out.contains("no/such/dir"), "{out}");
}

#[test]
fn certify_and_attack_agree_with_each_other() {
    let dir = "data/mnist";
    let w = "tests/fixtures/reference/mnist_small_trained/weights.safetensors";
    let spec = "specs/mnist_small.net";
    let tmp = tempfile::tempdir().expect("tmp");
    let j = tmp.path().join("c.json");
    let (code, out) = run(&[
        "certify",
        "--spec",
        spec,
        "--weights",
        w,
        "--data-dir",
        dir,
        "--limit",
        "20",
        "--eps",
        "0.1",
        "--bounded",
        "--attack",
        "--quiet",
        "--json",
        j.to_str().expect("p"),
    ]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&j).expect("json")).expect("json");
    let cert = v["summary"]["certified_robust_err"].as_f64().expect("cert");
    let pgd = v["summary"]["pgd_err"].as_f64().expect("pgd");
    assert!(cert >= pgd, "certified error {cert} below PGD error {pgd}: a certificate is wrong");
    for e in v["examples"].as_array().expect("examples") {
        if e["certified"].as_bool() == Some(true) {
            assert_eq!(e["pgd_fooled"].as_bool(), Some(false), "PGD broke a certified example: {e}");
        }
    }
}

/// `--device cpu` is the default and gives the same results; a bad device name is a usage error (exit 2).
#[test]
fn device_cpu_works_and_bad_names_are_usage_errors() {
    let (code, default) = bounds(MLP_W, MLP_X, &[]);
    assert_eq!(code, 0, "{default}");
    let (code, cpu) = bounds(MLP_W, MLP_X, &["--device", "cpu"]);
    assert_eq!(code, 0, "{cpu}");
    assert_eq!(cpu, default);
    let (code, out) = bounds(MLP_W, MLP_X, &["--device", "tpu"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("cuda:N"), "{out}");
}

/// Without the `cuda` feature, every command that takes `--device` refuses CUDA with E0108 and help on how to
/// rebuild, before doing any work (a training run folder is not even created).
#[cfg(not(feature = "cuda"))]
#[test]
fn device_cuda_without_the_feature_is_a_coded_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out_dir = tmp.path().join("run");
    let run_dir = out_dir.to_str().expect("p");
    let data = ["--data-dir", "data/mnist", "--limit", "2"];
    let model = ["--spec", MLP, "--weights", MLP_W];
    let mut cases: Vec<Vec<&str>> = vec![
        [&["bounds"][..], &model, &["--inputs", MLP_X, "--eps", "0.1", "--json", "-", "--device", "cuda"]].concat(),
        [&["certify"][..], &model, &data, &["--eps", "0.1", "--quiet", "--device", "cuda:1"]].concat(),
        [&["attack"][..], &model, &data, &["--eps", "0.1", "--quiet", "--device", "cuda"]].concat(),
        [&["train", "--spec", MLP, "--out", run_dir, "--quiet", "--device", "cuda"][..], &data].concat(),
        [&["cascade", "train", "--spec", MLP, "--out", run_dir, "--stages", "1", "--quiet"][..], &data].concat(),
        vec!["bench", "--only", "step_proj50", "--device", "cuda"],
    ];
    cases[4].extend(["--device", "cuda"]);
    cases.push([&["cascade", "certify", run_dir, "--eps", "0.1", "--quiet", "--device", "cuda"][..], &data].concat());
    for args in &cases {
        let (code, out) = run(args);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert!(out.contains("E0108") && out.contains("--features cuda"), "{args:?}: {out}");
        assert!(out.contains("built without it"), "{args:?}: {out}");
    }
    assert!(!out_dir.exists(), "a refused run must not leave a run folder");
}

/// `certify --proj K --delta D`: projected bounds with the high-probability estimator; the summary says so, no
/// example it certifies is broken by PGD, and `--proj` without `--delta` (or a δ outside (0, 1)) is refused.
#[test]
fn projected_certification_needs_delta_and_is_labelled() {
    let w = "tests/fixtures/reference/mnist_small_trained/weights.safetensors";
    let base = ["certify", "--spec", "specs/mnist_small.net", "--weights", w, "--data-dir", "data/mnist"];
    let tmp = tempfile::tempdir().expect("tmp");
    let j = tmp.path().join("p.json");
    let args = [&base[..], &["--limit", "20", "--eps", "0.02", "--bounded", "--attack", "--quiet"][..]].concat();
    let (code, out) =
        run(&[&args[..], &["--proj", "50", "--delta", "0.01", "--json", j.to_str().expect("p")][..]].concat());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("projected, k = 50"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&j).expect("json")).expect("json");
    assert!(v["summary"]["bounds"].as_str().expect("bounds").starts_with("projected"));
    for e in v["examples"].as_array().expect("examples") {
        if e["certified"].as_bool() == Some(true) {
            assert_eq!(e["pgd_fooled"].as_bool(), Some(false), "PGD broke a certified example: {e}");
        }
    }
    let (code, out) = run(&[&args[..], &["--proj", "50"][..]].concat());
    assert_eq!(code, 2, "{out}");
    let (code, out) = run(&[&args[..], &["--proj", "50", "--delta", "1.5"][..]].concat());
    assert_eq!(code, 2, "{out}");
}

/// The README's main job: the shipped model certifies on the shipped test images with the default `--data-dir`,
/// printing the clean, certified and PGD errors and the time; certified error is never below PGD error.
#[test]
fn quick_start_certifies_the_shipped_model() {
    let (code, out) = run(&[
        "certify",
        "--spec",
        "specs/mnist_small.net",
        "--weights",
        "models/mnist_small_eps0.1.safetensors",
        "--limit",
        "30",
        "--eps",
        "0.1",
        "--bounded",
        "--attack",
    ]);
    assert_eq!(code, 0, "{out}");
    let pct = |label: &str| -> f64 {
        let line = out.lines().find(|l| l.trim_start().starts_with(label)).unwrap_or_else(|| panic!("{label}: {out}"));
        let v = line.trim_start()[label.len()..].split_whitespace().next().unwrap_or("");
        v.trim_end_matches('%').parse().unwrap_or_else(|_| panic!("{label}: {line}"))
    };
    let (clean, cert, pgd) = (pct("clean error"), pct("certified robust error"), pct("PGD robust error"));
    assert!(cert >= pgd && pgd >= clean, "clean {clean}% <= PGD {pgd}% <= certified {cert}% must hold: {out}");
    assert!(cert < 100.0, "the shipped model certifies nothing: {out}");
    assert!(out.contains("time "), "{out}");
}

/// A command that needs the training split, run with the default `--data-dir` (which holds the test split
/// only), stops with E0109 naming the missing files, where they come from and `--data-dir`.
#[test]
fn training_without_the_training_split_is_e0109() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out_dir = tmp.path().join("run");
    let (code, out) = run(&[
        "train",
        "--config",
        "specs/recipes/mnist_small_10k.yaml",
        "--out",
        out_dir.to_str().expect("p"),
        "--quiet",
    ]);
    assert_eq!(code, 1, "{out}");
    // The renderer wraps long lines: compare without whitespace and the wrap marks.
    let flat: String = out.chars().filter(|c| !c.is_whitespace() && *c != '│').collect();
    for want in ["E0109", "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "data/mnist", "--data-dir", "mnist"] {
        assert!(flat.contains(want), "`{want}` missing from:\n{out}");
    }
    assert!(flat.contains("yann.lecun.com"), "where the files come from:\n{out}");
}

/// `certify --branching relu --timeout S`: the open examples (correct, not certified by the bound, not broken by
/// PGD) get branch and bound. The summary's counts add up (each example is settled one way), the JSON says which
/// way for each, the bound alone certifies the same examples as without branching, and branching only lowers the
/// certified error, never below the examples that PGD or the search broke.
#[test]
fn certify_with_branching_settles_open_examples() {
    let tmp = tempfile::tempdir().expect("tmp");
    let w = "models/mnist_small_eps0.1.safetensors";
    let base = ["certify", "--spec", "specs/mnist_small.net", "--weights", w, "--data-dir", "data/mnist"];
    let go = |extra: &[&str], name: &str| {
        let j = tmp.path().join(name);
        let args = [
            &base[..],
            &["--limit", "6", "--eps", "0.25", "--bounded", "--attack", "--quiet", "--json", j.to_str().expect("p")],
            extra,
        ]
        .concat();
        let (code, out) = run(&args);
        assert_eq!(code, 0, "{out}");
        (out, serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&j).expect("json")).expect("json"))
    };
    let (_, plain) = go(&[], "plain.json");
    let (out, bab) = go(&["--branching", "relu", "--timeout", "1"], "bab.json");
    assert!(out.contains("certified by the bound") && out.contains("by branching"), "{out}");
    let s = &bab["summary"];
    let n = s["examples"].as_u64().expect("n") as usize;
    let get = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}")) as usize;
    let examples = bab["examples"].as_array().expect("examples");
    let how = |w: &str| examples.iter().filter(|e| e["how"] == w).count();
    assert_eq!(how("bound"), get("certified_by_bound"));
    assert_eq!(how("branching"), get("certified_by_branching"));
    assert_eq!(how("pgd"), get("broken_by_pgd"));
    assert_eq!(how("search"), get("broken_by_search"));
    assert_eq!(how("unknown"), get("unknown"));
    assert_eq!(how("misclassified") + how("bound") + how("branching") + how("pgd") + how("search") + how("unknown"), n);
    let cert = |v: &serde_json::Value| v["summary"]["certified_robust_err"].as_f64().expect("cert");
    let certified = get("certified_by_bound") + get("certified_by_branching");
    assert!((cert(&bab) - (n - certified) as f64 / n as f64).abs() < 1e-12);
    let plain_bound = plain["examples"].as_array().expect("ex").iter().filter(|e| e["how"] == "bound").count();
    assert_eq!(plain_bound, get("certified_by_bound"));
    assert!(cert(&bab) <= cert(&plain));
    let broken = (how("misclassified") + how("pgd") + how("search")) as f64 / n as f64;
    assert!(cert(&bab) >= broken - 1e-12, "certified error below the examples shown broken");
    for e in examples {
        if e["how"] == "branching" || e["how"] == "search" || e["how"] == "unknown" {
            assert!(e["search_seconds"].as_f64().is_some(), "{e}");
        }
        if e["how"] == "branching" {
            assert_eq!(e["certified"].as_bool(), Some(true), "{e}");
            assert_eq!(e["pgd_fooled"].as_bool(), Some(false), "{e}");
        }
    }
    // Branching needs the ℓ∞ box.
    let (code, out) =
        run(&[&base[..], &["--limit", "2", "--eps", "0.1", "--norm", "l2", "--branching", "relu", "--quiet"]].concat());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ℓ∞"), "{out}");
}
