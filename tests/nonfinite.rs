//! Bad numbers never certify. A NaN or ±∞ in a weight, an input or an intermediate bound, a negative safety
//! margin, or an input outside its box once made `certify` report certificates that PGD breaks. Here:
//! - the command line refuses each of them with its code (E0110, E0106, E0111), in f32 and f64 (regression
//!   tests of the reproduction: `mnist_small` with one NaN / +∞ in `c2.weight`);
//! - a property test injects one NaN or ±∞ at a random position of the weights (bypassing the loader), of the
//!   inputs, or of one layer's bounds (through the test hook [`Poison`]) and checks that no certificate comes
//!   out for any affected example, while the same model without the injection does certify;
//! - weights that a loader would read are refused with the tensor and the first bad index.
//!
//! Everything here is made by the tests themselves (random weights, MNIST-format files), so it needs no data
//! outside the repository.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use dualnet::check::check_source;
use dualnet::dual::bounds::{Options, Poison};
use dualnet::dual::robust::certify_batch_with;
use dualnet::dual::{InputSet, Model, Norm};
use dualnet::error::Error;
use dualnet::weights::Weights;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dualnet")).args(args).current_dir(root()).output().expect("runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("panicked") && !text.contains("RUST_BACKTRACE"), "panic for {args:?}:\n{text}");
    (out.status.code().unwrap_or(-1), text)
}

fn graph(spec: &str) -> dualnet::ir::Graph {
    let checked = check_source("t.net", spec);
    checked.graph.unwrap_or_else(|| panic!("{:?}", checked.diagnostics.iter().map(|d| &d.message).collect::<Vec<_>>()))
}

/// `n` MNIST-format test images (random strokes on black) and labels, written as idx files into `dir`.
fn write_mnist(dir: &Path, n: usize, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut img = vec![0u8, 0, 8, 3];
    img.extend_from_slice(&(n as u32).to_be_bytes());
    img.extend_from_slice(&28u32.to_be_bytes());
    img.extend_from_slice(&28u32.to_be_bytes());
    for _ in 0..n * 784 {
        img.push(if rng.random_bool(0.2) { rng.random_range(100..=255) } else { 0 });
    }
    let mut lab = vec![0u8, 0, 8, 1];
    lab.extend_from_slice(&(n as u32).to_be_bytes());
    lab.extend((0..n).map(|_| rng.random_range(0..10u8)));
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), img).expect("write images");
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), lab).expect("write labels");
}

/// `mnist_small` weights (PyTorch-default init, seed 3) saved in `dtype`, after `edit`.
fn small_weights(dir: &Path, name: &str, dtype: DType, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> String {
    let text = std::fs::read_to_string(root().join("specs/mnist_small.net")).expect("spec");
    let g = graph(&text);
    let w = Weights::init(&g, 3, dtype, &Device::Cpu).expect("init");
    let mut map = w.to_map(&g);
    edit(&mut map);
    let p = dir.join(name);
    candle_core::safetensors::save(&map, &p).expect("save");
    p.display().to_string()
}

/// Set element `flat` of tensor `key` to `v`.
fn set_elem(map: &mut HashMap<String, Tensor>, key: &str, flat: usize, v: f64) {
    let t = &map[key];
    let mut data: Vec<f64> = t.to_dtype(DType::F64).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).expect("v");
    data[flat] = v;
    let nt = Tensor::from_vec(data, t.shape(), &Device::Cpu).and_then(|n| n.to_dtype(t.dtype())).expect("t");
    map.insert(key.to_string(), nt);
}

/// The reproduction: one NaN (or +∞) in `c2.weight` must not certify anything; it is refused with
/// E0110 naming the tensor and the index. `c2.weight` is `[32, 16, 4, 4]`; flat 3·256 + 0·16 + 1·4 + 2 = 774 is
/// index [3, 0, 1, 2].
#[test]
fn nan_or_infinite_weight_is_refused_in_f32_and_f64() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_mnist(tmp.path(), 20, 1);
    let data = tmp.path().display().to_string();
    for (dtype, flag) in [(DType::F32, "f32"), (DType::F64, "f64")] {
        for (v, shown) in [(f64::NAN, "NaN"), (f64::INFINITY, "+inf"), (f64::NEG_INFINITY, "-inf")] {
            let w = small_weights(tmp.path(), "w.safetensors", dtype, |m| set_elem(m, "c2.weight", 774, v));
            let json = tmp.path().join("out.json");
            let (code, out) = run(&[
                "certify",
                "--spec",
                "specs/mnist_small.net",
                "--weights",
                &w,
                "--data",
                "mnist",
                "--data-dir",
                &data,
                "--limit",
                "20",
                "--eps",
                "0.1",
                "--bounded",
                "--attack",
                "--quiet",
                "--dtype",
                flag,
                "--json",
                &json.display().to_string(),
            ]);
            assert_eq!(code, 1, "{flag} {shown}: {out}");
            assert!(out.contains("E0110"), "{out}");
            assert!(out.contains(&format!("`c2.weight` in `{w}` holds {shown} at index [3, 0, 1, 2]")), "{out}");
            assert!(!out.contains("certified robust error"), "{out}");
            assert!(!json.exists(), "no results may be written");
        }
    }
}

#[test]
fn nan_pixel_negative_margin_and_out_of_box_inputs_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_mnist(tmp.path(), 4, 2);
    let data = tmp.path().display().to_string();
    let w = small_weights(tmp.path(), "w.safetensors", DType::F32, |_| {});
    let inputs = |name: &str, f: &dyn Fn(usize) -> f32| -> String {
        let x: Vec<f32> = (0..2 * 784).map(f).collect();
        let map = HashMap::from([
            ("x".to_string(), Tensor::from_vec(x, (2, 1, 28, 28), &Device::Cpu).expect("x")),
            ("y".to_string(), Tensor::from_vec(vec![1i64, 7], 2, &Device::Cpu).expect("y")),
        ]);
        let p = tmp.path().join(name);
        candle_core::safetensors::save(&map, &p).expect("save");
        p.display().to_string()
    };
    let bounds = |x: &str, extra: &[&str]| {
        let mut a = vec!["bounds", "--spec", "specs/mnist_small.net", "--weights", &w, "--inputs", x, "--eps", "0.1"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--json", "-"]);
        run(&a)
    };
    // A NaN pixel: example 1, element [0, 3, 4] (flat 784 + 3·28 + 4 = 872).
    let x = inputs("nan.safetensors", &|i| if i == 872 { f32::NAN } else { 0.5 });
    let (code, out) = bounds(&x, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("E0110") && out.contains("example 1 holds NaN at element [0, 3, 4]"), "{out}");
    // Pixels in [-1, 2] certified in the box [0, 1]: example 0, element [0, 0, 1] is -1.
    let x = inputs("out.safetensors", &|i| {
        if i % 3 == 1 {
            -1.0
        } else if i % 3 == 2 {
            2.0
        } else {
            0.5
        }
    });
    let (code, out) = bounds(&x, &["--bounded"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("E0111") && out.contains("example 0 element [0, 0, 1] is -1, outside the box [0, 1]"),
        "{out}"
    );
    // The same inputs without `--bounded` are a valid (unboxed) question.
    let (code, out) = bounds(&x, &[]);
    assert_eq!(code, 0, "{out}");
    // A pixel one f32 ulp above 1 is rounding, not an error.
    let x = inputs("ulp.safetensors", &|i| if i == 5 { 1.0 + f32::EPSILON } else { 0.5 });
    let (code, out) = bounds(&x, &["--bounded"]);
    assert_eq!(code, 0, "{out}");
    // A negative (or NaN) safety margin would certify what an attack breaks.
    let base = ["certify", "--spec", "specs/mnist_small.net", "--weights", &w, "--data-dir", &data, "--eps", "0.1"];
    for m in ["--safety-margin=-5", "--safety-margin=NaN"] {
        let mut a = base.to_vec();
        a.push(m);
        let (code, out) = run(&a);
        assert_eq!(code, 1, "{m}: {out}");
        assert!(out.contains("E0106") || out.contains("E0110"), "{m}: {out}");
        assert!(out.contains("--safety-margin"), "{out}");
    }
    // Non-finite options.
    for extra in [&["--box-lo=NaN", "--bounded"][..], &["--mean", "NaN", "--std", "1"][..]] {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        let (code, out) = run(&a);
        assert_eq!(code, 1, "{extra:?}: {out}");
        assert!(out.contains("E0110"), "{extra:?}: {out}");
    }
}

/// A batchnorm running variance below zero would make `sqrt(var + eps)` NaN from finite numbers.
#[test]
fn negative_running_variance_is_refused() {
    let g = graph(
        "network m { input x: [1, 4, 4]  c = conv2d(x, out=2, kernel=3, padding=1)  b = batchnorm2d(c)  r = relu(b)  f = flatten(r)  l = linear(f, out=3)  output l }",
    );
    let w = Weights::init(&g, 0, DType::F32, &Device::Cpu).expect("init");
    let mut map = w.to_map(&g);
    set_elem(&mut map, "b.running_var", 1, -2.0);
    match Weights::from_map(&g, map, "w.safetensors", DType::F32) {
        Err(Error::Input(d)) => {
            assert!(d[0].message.contains("`b.running_var` in `w.safetensors` is negative"), "{}", d[0].message)
        }
        Ok(_) => panic!("a negative variance was accepted"),
        Err(e) => panic!("{e}"),
    }
}

const SPECS: &[&str] = &[
    "network m { input x: [1, 6, 6]  f = flatten(x)  l1 = linear(f, out=12)  r1 = relu(l1)  l2 = linear(r1, out=8)  r2 = relu(l2)  l3 = linear(r2, out=4)  output l3 }",
    "network m { input x: [2, 8, 8]  c1 = conv2d(x, out=4, kernel=3, stride=2, padding=1)  r1 = relu(c1)  c2 = conv2d(r1, out=4, kernel=2, stride=1, padding=0)  r2 = relu(c2)  f = flatten(r2)  l = linear(f, out=3)  output l }",
    "network m { input x: [1, 8, 8]  c0 = conv2d(x, out=3, kernel=3, padding=1)  r0 = relu(c0)  c1 = conv2d(r0, out=3, kernel=3, padding=1)  r1 = relu(c1)  s = r1 + c0  r2 = relu(s)  f = flatten(r2)  l = linear(f, out=5)  output l }",
    "network m { input x: [1, 8, 8]  c1 = conv2d(x, out=4, kernel=3, stride=1, padding=1)  b1 = batchnorm2d(c1)  r1 = relu(b1)  p = avgpool2d(r1, kernel=2)  f = flatten(p)  l = linear(f, out=4)  output l }",
    "network m { input x: [6]  l1 = linear(x, out=10)  h1 = hardtanh(l1)  l2 = linear(h1, out=8)  h2 = hardtanh(l2)  l3 = linear(h2, out=3)  output l3 }",
];

/// A model with random weights and `b` random inputs labelled with the model's own predictions, so that at a
/// small ε the clean model certifies them (the control that makes the injections below meaningful).
fn case(spec: &str, seed: u64, dtype: DType, b: usize) -> (Model, Tensor, Vec<u32>) {
    let g = graph(spec);
    let w = Weights::init(&g, seed, dtype, &Device::Cpu).expect("init");
    let m = Model::new(g, w, dtype, Device::Cpu);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xfeed);
    let mut shape = vec![b];
    shape.extend(m.graph.input_shape().iter().copied());
    let n: usize = shape.iter().product();
    let x: Vec<f64> = (0..n).map(|_| rng.random_range(0.0..1.0)).collect();
    let x = Tensor::from_vec(x, shape, &Device::Cpu).and_then(|t| t.to_dtype(dtype)).expect("x");
    let logits = m.forward(&x).expect("forward");
    let labels: Vec<u32> = logits.argmax(1).and_then(|l| l.to_vec1()).expect("preds");
    (m, x, labels)
}

fn certified(m: &Model, set: &InputSet, labels: &[u32], opts: &Options) -> Vec<bool> {
    let cert = certify_batch_with(m, set, labels, opts).expect("bounds");
    let rows = cert.margin_rows().expect("rows");
    cert.certified(&rows, labels, dualnet::run::certify::default_safety_margin(m.dtype))
}

const EPS: f64 = 1e-4;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// One NaN or ±∞ anywhere in the weights: the loader refuses it (E0110), and a model built around the
    /// loader still certifies nothing.
    #[test]
    fn a_bad_weight_never_certifies(
        spec in 0..SPECS.len(), seed in 0u64..1000, pick in 0usize..1 << 20, kind in 0usize..3, f64_ in any::<bool>(),
        proj in any::<bool>()
    ) {
        let dtype = if f64_ { DType::F64 } else { DType::F32 };
        let (m, x, labels) = case(SPECS[spec], seed, dtype, 3);
        let set = InputSet::new(&x, &[EPS; 3], Norm::Linf, Some((0.0, 1.0))).expect("set");
        let opts = Options { proj: proj.then_some(4), seed, ..Default::default() };
        prop_assert!(certified(&m, &set, &labels, &opts).iter().any(|c| *c), "control: the clean model certifies");
        let bad = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY][kind];
        let mut map = m.weights.to_map(&m.graph);
        let mut keys: Vec<String> = map.keys().cloned().collect();
        keys.sort();
        let key = &keys[pick % keys.len()];
        let at = (pick / keys.len()) % map[key].elem_count();
        set_elem(&mut map, key, at, bad);
        prop_assert!(matches!(
            Weights::from_map(&m.graph, map.clone(), "w", dtype),
            Err(Error::Input(ref d)) if d[0].code == dualnet::diagnostics::Code::NonFinite && d[0].message.contains(key.as_str())
        ));
        // Behind the loader's back: the bounds must not certify any example.
        let mut w = m.weights.clone();
        for (i, node) in w.per_node.iter_mut().enumerate() {
            let name = &m.graph.dag[petgraph::graph::NodeIndex::new(i)].name;
            for (suffix, t) in node.iter_mut() {
                if &format!("{name}.{suffix}") == key {
                    *t = map[key].to_dtype(dtype).expect("dtype");
                }
            }
        }
        // (A running variance of +∞ is the one injection that leaves a finite network: batchnorm's scale
        // `w / sqrt(∞)` is exactly 0, so the channel outputs its bias, and a certificate of that network is
        // right. Everything else must make some bound non-finite.)
        if !(key.ends_with("running_var") && bad == f64::INFINITY) {
            let bad_model = Model::new(m.graph.clone(), w, dtype, Device::Cpu);
            let got = certified(&bad_model, &set, &labels, &opts);
            prop_assert!(got.iter().all(|c| !*c), "{key}[{at}] = {bad}: certified {got:?}");
        }
    }

    /// One NaN or ±∞ in one layer's bounds (the test hook), at a random example and unit: that example is never
    /// certified; the other examples are unaffected (their bounds are computed independently).
    #[test]
    fn a_bad_layer_bound_never_certifies(
        spec in 0..SPECS.len(), seed in 0u64..1000, layer in 0usize..4, element in 0usize..1 << 20,
        kind in 0usize..3, upper in any::<bool>(), proj in any::<bool>(), family in 0usize..4
    ) {
        use dualnet::ops::Family;
        let family = [Family::Wk, Family::Crown, Family::Ibp, Family::Alpha][family];
        let (m, x, labels) = case(SPECS[spec], seed, DType::F64, 3);
        let set = InputSet::new(&x, &[EPS; 3], Norm::Linf, Some((0.0, 1.0))).expect("set");
        let layers = m.graph.activation_inputs();
        let layer = layer % layers.len();
        let n: usize = m.graph.node(layers[layer]).shape.iter().product();
        let element = element % (3 * n);
        let example = element / n;
        let base = Options { proj: proj.then_some(4), seed, family, ..Default::default() };
        prop_assume!(certified(&m, &set, &labels, &base)[example], "control: the example certifies without the injection");
        let value = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY][kind];
        let opts = Options { poison: Some(Poison { layer, element, upper, value }), ..base };
        let got = certified(&m, &set, &labels, &opts);
        prop_assert!(!got[example], "layer {layer} element {element} = {value}: example {example} certified");
    }

    /// One NaN or ±∞ in the inputs is refused before any bound is computed, naming the example.
    #[test]
    fn a_bad_input_is_refused(spec in 0..SPECS.len(), seed in 0u64..1000, at in 0usize..1 << 20, kind in 0usize..3) {
        let (_, x, _) = case(SPECS[spec], seed, DType::F32, 3);
        let mut v: Vec<f32> = x.flatten_all().and_then(|t| t.to_vec1()).expect("x");
        let at = at % v.len();
        v[at] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][kind];
        let x = Tensor::from_vec(v, x.shape(), &Device::Cpu).expect("x");
        let n = x.elem_count() / 3;
        for bounded in [None, Some((0.0, 1.0))] {
            match InputSet::new(&x, &[0.1; 3], Norm::Linf, bounded) {
                Err(Error::Input(d)) => {
                    prop_assert_eq!(d[0].code, dualnet::diagnostics::Code::NonFinite);
                    let want = format!("example {}", at / n);
                    prop_assert!(d[0].message.contains(&want), "{}", d[0].message);
                }
                _ => prop_assert!(false, "accepted a non-finite input"),
            }
        }
    }
}

/// Writes `n` training images and labels (idx) into `dir`, beside the test split of [`write_mnist`].
fn write_mnist_train(dir: &Path, n: usize, seed: u64) {
    write_mnist(dir, n, seed);
    for (from, to) in
        [("t10k-images-idx3-ubyte", "train-images-idx3-ubyte"), ("t10k-labels-idx1-ubyte", "train-labels-idx1-ubyte")]
    {
        std::fs::copy(dir.join(from), dir.join(to)).expect("copy");
    }
}

/// A run whose learning rate makes the weights overflow (SGD, lr 1e38 in f32: the first steps reach ±∞, or the
/// loss turns NaN) stops with the NaN stop, and the last good checkpoint (from the epoch before) is kept,
/// finite, and loads. Both the robust (projected bounds) and the plain mode are covered.
#[test]
fn training_that_turns_non_finite_stops_and_keeps_the_last_good_checkpoint() {
    use dualnet::run::train::config::{Mode, Optimizer, TrainConfig};
    use dualnet::run::train::trainer::train;
    const SPEC: &str = "network tiny { input x: [1, 28, 28]  c1 = conv2d(x, out=4, kernel=4, stride=4, padding=0)  r1 = relu(c1)  f = flatten(r1)  l1 = linear(f, out=20)  r2 = relu(l1)  l2 = linear(r2, out=10)  output l2 }";
    let tmp = tempfile::tempdir().expect("tmp");
    write_mnist_train(tmp.path(), 40, 5);
    for mode in [Mode::Robust, Mode::Plain] {
        let cfg = |epochs: usize, lr: f64| TrainConfig {
            spec: Some("tiny.net".into()),
            data_dir: Some(tmp.path().to_path_buf()),
            limit: Some(40),
            test_limit: 0,
            epochs,
            batch: 10,
            proj: Some(5),
            optimizer: Optimizer::Sgd,
            momentum: 0.0,
            lr,
            mode,
            ..TrainConfig::default()
        };
        let out = tmp.path().join(format!("run_{mode:?}"));
        train(&cfg(1, 1e-3), graph(SPEC), &out, false, false).expect("a good first epoch");
        let good = std::fs::read(out.join("last.safetensors")).expect("checkpoint");
        match train(&cfg(2, 1e38), graph(SPEC), &out, true, false) {
            Err(Error::Stopped(msg)) => {
                assert!(msg.contains("last good checkpoint"), "{msg}");
                assert!(msg.contains("non-finite") || msg.contains("NaN") || msg.contains("inf"), "{msg}");
            }
            Err(e) => panic!("{mode:?}: wrong error: {e}"),
            Ok(_) => panic!("{mode:?}: a run with lr 1e38 finished"),
        }
        assert_eq!(
            std::fs::read(out.join("last.safetensors")).expect("checkpoint"),
            good,
            "the good checkpoint changed"
        );
        let map = candle_core::safetensors::load(out.join("last.safetensors"), &Device::Cpu).expect("load");
        assert!(Weights::from_map(&graph(SPEC), map, "last", DType::F32).is_ok(), "the kept checkpoint is finite");
    }
}
