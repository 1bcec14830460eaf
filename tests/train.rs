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
