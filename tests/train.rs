//! End-to-end training on a small MNIST subset: the run folder is complete, metrics are recorded, the weights
//! certify with the same code as `dualnet certify`, and a resumed run continues exactly (same weights as an
//! uninterrupted one). The data: 150 training and 30 test images made from the shipped MNIST test split.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use dualnet::check::check_source;
use dualnet::run::train::config::TrainConfig;
use dualnet::run::train::runfolder::RunFolder;
use dualnet::run::train::trainer::train;

const SPEC: &str = "network tiny { input x: [1, 28, 28]  c1 = conv2d(x, out=4, kernel=4, stride=4, padding=0)  r1 = relu(c1)  f = flatten(r1)  l1 = linear(f, out=20)  r2 = relu(l1)  l2 = linear(r2, out=10)  output l2 }";

fn config(epochs: usize, data_dir: &Path) -> TrainConfig {
    TrainConfig {
        spec: Some("tiny.net".into()),
        data_dir: Some(PathBuf::from(data_dir)),
        limit: Some(150),
        test_limit: 30,
        epochs,
        batch: 50,
        proj: Some(10),
        eps_schedule_epochs: 2,
        ..TrainConfig::default()
    }
}

fn weights(dir: &Path, name: &str) -> Vec<f32> {
    let map = candle_core::safetensors::load(dir.join(name), &Device::Cpu).expect("weights");
    let mut keys: Vec<_> = map.keys().cloned().collect();
    keys.sort();
    keys.iter()
        .flat_map(|k| {
            map[k].flatten_all().and_then(|t| t.to_dtype(DType::F32)).and_then(|t| t.to_vec1::<f32>()).expect("t")
        })
        .collect()
}

#[test]
fn trains_records_and_resumes_exactly() {
    let graph = || check_source("tiny.net", SPEC).graph.expect("spec");
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("mnist");
    common::write_mnist_subset(&data, 0..150, 9000..9030);
    let config = |epochs| config(epochs, &data);
    let straight = tmp.path().join("straight");
    let s = train(&config(3), graph(), &straight, false, false).expect("train");
    for f in [
        "config.yaml",
        "metrics.jsonl",
        "metrics.png",
        "last.safetensors",
        "best.safetensors",
        "weights.safetensors",
        "last.state.json",
    ] {
        assert!(straight.join(f).is_file(), "{f} missing");
    }
    let metrics = RunFolder::create(&straight, true).and_then(|r| r.read_metrics()).expect("metrics");
    assert_eq!(metrics.len(), 3);
    assert!(metrics.iter().all(|m| m.test_certified_err.is_some() && m.train_robust_loss.is_finite()));
    assert_eq!(metrics[0].eps, 0.01);
    assert!(s.last.is_some());

    // Two epochs, then resume for the third: identical weights.
    let split = tmp.path().join("split");
    train(&config(2), graph(), &split, false, false).expect("first part");
    train(&config(3), graph(), &split, true, false).expect("resumed part");
    assert_eq!(
        weights(&straight, "weights.safetensors"),
        weights(&split, "weights.safetensors"),
        "resume is not exact"
    );
    let m2 = RunFolder::create(&split, true).and_then(|r| r.read_metrics()).expect("metrics");
    assert_eq!(m2.len(), 3);

    // A new run refuses a non-empty folder.
    assert!(train(&config(1), graph(), &straight, false, false).is_err());
}

/// `batchnorm: batch`: a step normalises with the clean batch's statistics (per channel the normalised values
/// have mean `bias` and variance `weight² · σ²/(σ² + eps)`, here with weight 1, bias 0: mean 0, variance ≈ 1), and
/// the running statistics move by `m · (batch − running)` (unbiased variance). A run on a batchnorm net trains,
/// certifies with the running statistics, and leaves them away from their initial 0 / 1.
#[test]
fn batchnorm_trains_with_batch_statistics() {
    use dualnet::dual::Model;
    use dualnet::run::train::batchnorm;
    use dualnet::run::train::config::{Init, Method};
    const BN: &str = "network bn { input x: [1, 28, 28]  c1 = conv2d(x, out=4, kernel=4, stride=4, padding=0)  b1 = batchnorm2d(c1)  r1 = relu(b1)  f = flatten(r1)  l1 = linear(f, out=10)  output l1 }";
    let graph = || check_source("bn.net", BN).graph.expect("spec");
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("mnist");
    common::write_mnist_subset(&data, 0..150, 9000..9030);

    let g = graph();
    let w = dualnet::weights::Weights::init(&g, 3, DType::F64, &Device::Cpu).expect("init");
    let mut m = Model::new(g, w, DType::F64, Device::Cpu);
    let ds = dualnet::data::load("mnist", &data, dualnet::data::Split::Train).expect("data");
    let (x, _) = ds.batch(&(0..50).collect::<Vec<_>>(), &Device::Cpu, DType::F64).expect("batch");
    let bn = batchnorm::nodes(&m);
    assert_eq!(bn.len(), 1);
    let saved = batchnorm::use_batch_stats(&mut m, &x, &bn).expect("stats");
    let vals = m.forward_all(&x).expect("forward");
    let out = vals[bn[0].index()].as_ref().expect("bn output");
    let per_channel: Vec<Vec<f64>> =
        out.transpose(0, 1).and_then(|t| t.reshape((4, ()))).and_then(|t| t.to_vec2()).expect("values");
    for v in &per_channel {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 1e-9, "normalised mean {mean}");
        assert!(var > 0.9 && var <= 1.0 + 1e-9, "normalised variance {var}");
    }
    let batch_mean: Vec<f64> = m.weights.per_node[bn[0].index()]["running_mean"].to_vec1().expect("mean");
    batchnorm::update_running(&mut m, &bn, saved, 0.1).expect("update");
    let running: Vec<f64> = m.weights.per_node[bn[0].index()]["running_mean"].to_vec1().expect("running");
    for (r, b) in running.iter().zip(&batch_mean) {
        assert!((r - 0.1 * b).abs() < 1e-12, "running mean {r}, batch mean {b}");
    }

    let cfg = TrainConfig {
        spec: Some("bn.net".into()),
        data_dir: Some(data.clone()),
        limit: Some(150),
        test_limit: 30,
        epochs: 2,
        batch: 50,
        method: Method::Ibp,
        init: Init::Ibp,
        proj: None,
        eps_schedule_epochs: 1,
        ..TrainConfig::default()
    };
    let out = tmp.path().join("run");
    train(&cfg, graph(), &out, false, false).expect("train");
    let w = candle_core::safetensors::load(out.join("weights.safetensors"), &Device::Cpu).expect("weights");
    let rm: Vec<f32> = w["b1.running_mean"].to_vec1().expect("rm");
    let rv: Vec<f32> = w["b1.running_var"].to_vec1().expect("rv");
    assert!(rm.iter().any(|v| v.abs() > 1e-3), "running mean never moved: {rm:?}");
    assert!(rv.iter().all(|v| *v > 0.0) && rv.iter().any(|v| (v - 1.0).abs() > 1e-3), "{rv:?}");
    let metrics = RunFolder::create(&out, true).and_then(|r| r.read_metrics()).expect("metrics");
    assert!(metrics.iter().all(|m| m.test_certified_err.is_some()));
}
