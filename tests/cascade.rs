//! Cascades end to end on a small MNIST subset (made from the shipped test split): stages train on what earlier stages left uncertified, the state
//! survives an interruption between stages (a second `cascade train` continues at the next stage without touching
//! the finished ones), and `cascade certify` reports per-stage counts that add up.

mod common;

use dualnet::check::check_source;
use dualnet::data::{self, Split};
use dualnet::dual::Norm;
use dualnet::run::cascade::{cascade_certify, cascade_train};
use dualnet::run::train::config::TrainConfig;

const SPEC: &str = "network tiny { input x: [1, 28, 28]  c1 = conv2d(x, out=4, kernel=4, stride=4, padding=0)  r1 = relu(c1)  f = flatten(r1)  l1 = linear(f, out=20)  r2 = relu(l1)  l2 = linear(r2, out=10)  output l2 }";

#[test]
fn cascade_trains_resumes_between_stages_and_certifies() {
    let tmp = tempfile::tempdir().expect("tmp");
    // 200 training and 60 test images made from the shipped MNIST test split.
    let data_dir = tmp.path().join("mnist");
    common::write_mnist_subset(&data_dir, 0..200, 9000..9060);
    let cfg = TrainConfig {
        spec: Some("tiny.net".into()),
        data_dir: Some(data_dir.clone()),
        limit: Some(200),
        test_limit: 0,
        epochs: 2,
        eps: 0.02,
        eps_start: 0.01,
        eps_schedule_epochs: 1,
        proj: Some(10),
        ..TrainConfig::default()
    };
    let graph = check_source("tiny.net", SPEC).graph.expect("spec");
    let out = tmp.path().join("casc");
    let s = cascade_train(&cfg, &graph, SPEC, &out, 1, false).expect("stage 1");
    assert_eq!(s.stages_done, 1);
    let w1 = std::fs::read(out.join("stage1/weights.safetensors")).expect("stage 1 weights");
    assert_eq!(s.stages[0].trained_on, 200);
    assert_eq!(s.remaining.len(), 200 - s.stages[0].certified_train);

    // "Interrupted" after stage 1: running again with more stages continues at stage 2.
    let s = cascade_train(&cfg, &graph, SPEC, &out, 2, false).expect("stage 2");
    assert!(s.stages_done == 2 || s.stopped_early);
    assert_eq!(std::fs::read(out.join("stage1/weights.safetensors")).expect("w"), w1, "stage 1 was retrained");
    if s.stages_done == 2 {
        assert_eq!(s.stages[1].trained_on, s.stages[0].trained_on - s.stages[0].certified_train);
    }

    let test = data::load("mnist", &data_dir, Split::Test).expect("test").limit(60);
    let cpu = candle_core::Device::Cpu;
    let (records, summary) = cascade_certify(
        &out,
        &test,
        0.02,
        Norm::Linf,
        Some((0.0, 1.0)),
        candle_core::DType::F32,
        &cpu,
        30,
        false,
        Some(&dualnet::run::attack::PgdConfig { steps: 10, ..Default::default() }),
        dualnet::ops::Family::Wk,
        Some(candle_core::DType::F32),
    )
    .expect("certify");
    assert_eq!(records.len(), 60);
    let certified = records.iter().filter(|r| r.certified).count();
    assert_eq!(summary.certified_per_stage.iter().sum::<usize>(), certified);
    assert!(records.iter().all(|r| r.certified == r.stage.is_some()));
    assert!(out.join("cascade.png").is_file());
}
