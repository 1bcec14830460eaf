//! Random projections (paper Theorem 2, Algorithm 1): the median of `|Cauchy combinations|` estimates each ℓ1
//! term, so projected layer bounds scatter around the exact ones and tighten as `k` grows; they are used for
//! training only (exact bounds certify). Gradients flow through the median entries.

use candle_core::{DType, Device, Tensor, Var};
use dualnet::check::check_source;
use dualnet::dual::bounds::{compute, compute_with, median_abs, Options};
use dualnet::dual::robust::{certify_batch_with, robust_ce_per_example};
use dualnet::dual::{InputSet, Model, Norm};
use dualnet::weights::Weights;
use rand::{Rng, SeedableRng};

const SPEC: &str = "network m { input x: [1, 12, 12]  c1 = conv2d(x, out=4, kernel=4, stride=2, padding=1)  r1 = relu(c1)  f = flatten(r1)  l1 = linear(f, out=40)  r2 = relu(l1)  l2 = linear(r2, out=10)  output l2 }";

fn setup(norm: Norm) -> (Model, InputSet) {
    let g = check_source("t.net", SPEC).graph.expect("spec");
    let w = Weights::init(&g, 3, DType::F64, &Device::Cpu).expect("init");
    let m = Model::new(g, w, DType::F64, Device::Cpu);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let x: Vec<f64> = (0..4 * 144).map(|_| rng.random_range(0.0..1.0)).collect();
    let x = Tensor::from_vec(x, (4, 1, 12, 12), &Device::Cpu).expect("x");
    let eps = if norm == Norm::L2 { 1.0 } else { 0.1 };
    let set = InputSet::new(&x, &[eps; 4], norm, None).expect("set");
    (m, set)
}

/// Mean relative deviation of projected radii `u - l` from the exact ones, per layer.
fn deviation(m: &Model, set: &InputSet, k: usize, seed: u64) -> Vec<f64> {
    let exact = compute(m, set).expect("exact");
    let proj = compute_with(m, set, &Options { proj: Some(k), seed, ..Default::default() }).expect("proj");
    exact
        .layers
        .iter()
        .zip(&proj.layers)
        .map(|((_, l, u), (_, pl, pu))| {
            let r: Vec<f64> = (u - l).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).expect("r");
            let p: Vec<f64> = (pu - pl).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).expect("p");
            r.iter().zip(&p).map(|(a, b)| (a - b).abs() / a.abs().max(1e-9)).sum::<f64>() / r.len() as f64
        })
        .collect()
}

#[test]
fn projected_bounds_approach_exact_as_k_grows() {
    for norm in [Norm::Linf, Norm::L2] {
        let (m, set) = setup(norm);
        let d10: f64 = deviation(&m, &set, 10, 0).iter().sum();
        let d200: f64 = deviation(&m, &set, 200, 0).iter().sum();
        assert!(d200 < d10, "{norm}: k=200 deviation {d200} not below k=10 deviation {d10}");
        assert!(d200 < 0.25, "{norm}: k=200 mean relative deviation {d200} too large");
    }
}

#[test]
fn median_is_the_middle_order_statistic() {
    // rows: |[3, -1, 2]| -> 2 ; |[-5, 4, 0]| -> 4
    let a = Tensor::from_vec(vec![3f64, -5., -1., 4., 2., 0.], (1, 3, 2), &Device::Cpu).expect("a");
    let m: Vec<f64> = median_abs(&a).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).expect("m");
    assert_eq!(m, vec![2.0, 4.0]);
}

#[test]
fn gradients_reach_every_parameter_through_projections() {
    let (mut m, set) = setup(Norm::Linf);
    let mut vars = Vec::new();
    for node in m.weights.per_node.iter_mut() {
        for t in node.values_mut() {
            let v = Var::from_tensor(t).expect("var");
            *t = v.as_tensor().clone();
            vars.push(v);
        }
    }
    let cert = certify_batch_with(&m, &set, &[0, 1, 2, 3], &Options { proj: Some(5), seed: 1, ..Default::default() })
        .expect("cert");
    let loss = robust_ce_per_example(&cert.margin_lb).expect("ce").mean_all().expect("loss");
    let grads = loss.backward().expect("backward");
    for v in &vars {
        let g = grads.get(v.as_tensor()).expect("gradient reaches the parameter");
        let n: f64 = g.abs().and_then(|t| t.sum_all()).and_then(|t| t.to_scalar()).expect("norm");
        assert!(n.is_finite() && n > 0.0, "zero or non-finite gradient");
    }
}

/// The high-probability variant (Appendix E.1: corrected geometric mean, `Options::high_prob`): each projected
/// norm is an upper bound with probability ≥ 1 − δ, so with δ = 1e-4 every layer's bounds contain the exact ones
/// (exact bounds use the tightest relaxations; looser earlier bounds only widen later ones).
#[test]
fn high_probability_bounds_contain_the_exact_bounds() {
    for norm in [Norm::Linf, Norm::L2] {
        let (m, set) = setup(norm);
        let exact = compute(&m, &set).expect("exact");
        for seed in 0..3 {
            let opts = Options { proj: Some(50), seed, high_prob: Some(1e-4), ..Default::default() };
            let hp = compute_with(&m, &set, &opts).expect("high-probability bounds");
            for ((_, l, u), (_, hl, hu)) in exact.layers.iter().zip(&hp.layers) {
                let below: Vec<f64> = (l - hl).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).expect("l");
                let above: Vec<f64> = (hu - u).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).expect("u");
                assert!(below.iter().chain(&above).all(|d| *d >= -1e-9), "{norm}, seed {seed}: not contained");
            }
        }
    }
}
