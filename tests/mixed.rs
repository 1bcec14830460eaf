//! A conv net mixing `relu`, `maxpool2d`, `tanh` and `sigmoid`, trained with PyTorch
//! (`tests/fixtures/mixed/make.py`; 2 epochs on 10,000 MNIST images), as a `.net` with its safetensors weights.
//! - It checks clean.
//! - Its bounds (the default family `wk` and `crown`, f64, ε = 0.01, box) are never above the margin PyTorch
//!   computes in float64 at any of 1000 sampled points per image (500 interior points, 500 corners of the box):
//!   an independent forward pass, stored in `sampled.safetensors`.
//! - At ε = 1e-5 they are within 1e-3 of the clean margin (PyTorch's, float64).

use candle_core::{DType, Device, Tensor};
use dualnet::check::check_source;
use dualnet::dual::bounds::Options;
use dualnet::dual::robust::certify_batch_with;
use dualnet::dual::{InputSet, Model, Norm};
use dualnet::ops::Family;
use dualnet::weights::Weights;

mod common;

fn fixture() -> (Model, Tensor, Vec<u32>, Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let dir = common::repo().join("tests/fixtures/mixed");
    let src = std::fs::read_to_string(dir.join("model.net")).expect("model.net");
    let checked = check_source("model.net", &src);
    assert!(
        checked.diagnostics.is_empty(),
        "the mixed net does not check clean: {:?}",
        checked.diagnostics.iter().map(|d| &d.message).collect::<Vec<_>>()
    );
    let g = checked.graph.expect("graph");
    let w = Weights::load(&g, &dir.join("weights.safetensors"), DType::F64, &Device::Cpu).expect("weights");
    let m = Model::new(g, w, DType::F64, Device::Cpu);
    let ins = candle_core::safetensors::load(dir.join("inputs.safetensors"), &Device::Cpu).expect("inputs");
    let x = ins["x"].to_dtype(DType::F64).expect("x");
    let y: Vec<u32> = ins["y"].to_dtype(DType::U32).and_then(|t| t.to_vec1()).expect("y");
    // The first 4 of the 8 stored images keep the test near half a minute in the test profile.
    let (x, y) = (x.narrow(0, 0, 4).expect("x"), y[..4].to_vec());
    let s = candle_core::safetensors::load(dir.join("sampled.safetensors"), &Device::Cpu).expect("sampled");
    let clean: Vec<Vec<f64>> = s["clean"].to_vec2().expect("clean");
    let sampled: Vec<Vec<f64>> = s["sampled_min"].to_vec2().expect("sampled");
    (m, x, y, clean, sampled)
}

#[test]
fn pytorch_trained_mixed_net_bounds_are_below_sampled_margins() {
    let (m, x, y, clean, sampled) = fixture();
    for family in [Family::Wk, Family::Crown] {
        let set = InputSet::new(&x, &vec![0.01; y.len()], Norm::Linf, Some((0.0, 1.0))).expect("set");
        let cert = certify_batch_with(&m, &set, &y, &Options { family, ..Default::default() }).expect("bounds");
        let lb: Vec<Vec<f64>> = cert.margin_lb.to_vec2().expect("lb");
        let mut gap = 0.0f64;
        for b in 0..y.len() {
            for j in 0..10 {
                assert!(
                    lb[b][j] <= sampled[b][j] + 1e-9,
                    "{family}: example {b} class {j}: bound {} above a sampled margin {}",
                    lb[b][j],
                    sampled[b][j]
                );
                assert!(lb[b][j].is_finite());
                gap = gap.max(sampled[b][j] - lb[b][j]);
            }
        }
        eprintln!("{family}: largest gap between the bound and the smallest sampled margin: {gap:.4} (clean margins up to {:.1})", clean.iter().flatten().fold(0.0f64, |a, v| a.max(*v)));
        let tiny = InputSet::new(&x, &vec![1e-5; y.len()], Norm::Linf, Some((0.0, 1.0))).expect("set");
        let cert = certify_batch_with(&m, &tiny, &y, &Options { family, ..Default::default() }).expect("bounds");
        let lb: Vec<Vec<f64>> = cert.margin_lb.to_vec2().expect("lb");
        for b in 0..y.len() {
            for j in 0..10 {
                assert!(
                    (lb[b][j] - clean[b][j]).abs() <= 1e-3,
                    "{family} at ε 1e-5: example {b} class {j}: bound {} vs clean {}",
                    lb[b][j],
                    clean[b][j]
                );
            }
        }
    }
}
