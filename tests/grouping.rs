//! Grouped input directions (src/dual/grouping.rs) give exactly the bounds of pushing every input direction
//! separately: `Σ_i |A[i, j]| r_i = Σ_g |Y[g, j]| r_owner(g, j)` when the directions of a group reach disjoint
//! units. Checked on conv nets where the grouping applies (strided convs, a residual sum with a 1×1 skip, a
//! batchnorm + avgpool net), for every input-set kind, and on the trained reference `mnist_small` weights
//! (`tests/fixtures/reference/mnist_small_trained`) with MNIST test images (`data/mnist`).

mod common;

use candle_core::{DType, Device, Tensor};
use dualnet::check::check_source;
use dualnet::dual::bounds::{compute_with, Options};
use dualnet::dual::grouping::plan;
use dualnet::dual::{InputSet, Model, Norm};
use dualnet::weights::Weights;
use rand::{Rng, SeedableRng};

const SPECS: &[&str] = &[
    "network m { input x: [1, 16, 16]  c1 = conv2d(x, out=4, kernel=4, stride=2, padding=1)  r1 = relu(c1)  c2 = conv2d(r1, out=6, kernel=4, stride=2, padding=1)  r2 = relu(c2)  f = flatten(r2)  l1 = linear(f, out=20)  r3 = relu(l1)  l2 = linear(r3, out=10)  output l2 }",
    "network m { input x: [2, 14, 14]  c0 = conv2d(x, out=3, kernel=3, padding=1)  r0 = relu(c0)  c1 = conv2d(r0, out=3, kernel=3, padding=1)  k = conv2d(r0, out=3, kernel=1)  s = c1 + k  r1 = relu(s)  c2 = conv2d(r1, out=4, kernel=4, stride=2, padding=1)  r2 = relu(c2)  f = flatten(r2)  l = linear(f, out=5)  output l }",
    "network m { input x: [1, 16, 16]  c1 = conv2d(x, out=4, kernel=3, stride=1, padding=1)  b1 = batchnorm2d(c1)  r1 = relu(b1)  p = avgpool2d(r1, kernel=2)  c2 = conv2d(p, out=4, kernel=3, stride=1, padding=1)  r2 = relu(c2)  f = flatten(r2)  l = linear(f, out=4)  output l }",
];

fn model(spec: &str, seed: u64) -> Model {
    let checked = check_source("t.net", spec);
    let g = checked.graph.expect("spec checks");
    let mut w = Weights::init(&g, seed, DType::F64, &Device::Cpu).expect("init");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for node in w.per_node.iter_mut() {
        for (k, t) in node.iter_mut() {
            if k == "running_var" {
                let v: Vec<f64> = (0..t.elem_count()).map(|_| rng.random_range(0.2..2.0)).collect();
                *t = Tensor::from_vec(v, t.shape(), &Device::Cpu).expect("var");
            } else {
                *t = (t.clone() * 2.0).expect("scale");
            }
        }
    }
    Model::new(g, w, DType::F64, Device::Cpu)
}

fn input(m: &Model, b: usize, seed: u64) -> Tensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut shape = vec![b];
    shape.extend(m.graph.input_shape().iter().copied());
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|_| rng.random_range(0.0..1.0)).collect::<Vec<f64>>(), shape, &Device::Cpu).expect("x")
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar())
        .expect("diff")
}

fn same_bounds(m: &Model, set: &InputSet) {
    let grouped = compute_with(m, set, &Options::default()).expect("grouped");
    let plain = compute_with(m, set, &Options { ungrouped: true, ..Default::default() }).expect("plain");
    assert_eq!(grouped.layers.len(), plain.layers.len());
    for ((z, l1, u1), (_, l2, u2)) in grouped.layers.iter().zip(&plain.layers) {
        let scale =
            1.0 + max_abs_diff(l2, &l2.zeros_like().expect("z")).max(max_abs_diff(u2, &u2.zeros_like().expect("z")));
        assert!(max_abs_diff(l1, l2) <= 1e-10 * scale, "lower bounds of node {z:?} differ");
        assert!(max_abs_diff(u1, u2) <= 1e-10 * scale, "upper bounds of node {z:?} differ");
    }
}

#[test]
fn grouping_applies_to_strided_conv_nets() {
    let m = model(SPECS[0], 1);
    let targets: Vec<_> = m.graph.activation_inputs().into_iter().take(2).collect();
    let p = plan(&m, &targets).expect("plan").expect("a grouping for a strided conv net");
    // Input pixel (r, c) reaches c1 rows within 1 of r/2 and c2 rows within 1 of r/4: a period-12 colouring
    // would do; the greedy one must not need more than 144 of the 256 directions.
    assert!(p.groups <= 144, "{} groups", p.groups);
    // The owner tables cover every group × unit of each target (equality with the ungrouped bounds is checked
    // below).
    for (z, own) in &p.owners {
        let n_z: usize = m.graph.node(*z).shape.iter().product();
        assert_eq!(own.len(), p.groups * n_z);
    }
}

#[test]
fn grouped_bounds_equal_ungrouped_bounds() {
    for (k, spec) in SPECS.iter().enumerate() {
        let m = model(spec, 7 + k as u64);
        let x = input(&m, 3, k as u64);
        for (norm, bounded) in [(Norm::Linf, true), (Norm::Linf, false), (Norm::L2, false)] {
            let eps = if norm == Norm::L2 { vec![0.5, 0.2, 1.0] } else { vec![0.05, 0.1, 0.02] };
            let set = InputSet::new(&x, &eps, norm, bounded.then_some((0.0, 1.0))).expect("set");
            same_bounds(&m, &set);
        }
    }
}

#[test]
fn mnist_small_reference_weights_group() {
    let dir = common::reference_fixtures().join("mnist_small_trained");
    let m = dualnet::cli::bounds::load_model(
        &dir.join("model.net"),
        &dir.join("weights.safetensors"),
        DType::F64,
        &Device::Cpu,
    )
    .expect("model");
    let targets: Vec<_> = m.graph.activation_inputs().into_iter().take(2).collect();
    let p = plan(&m, &targets).expect("plan").expect("grouping");
    eprintln!("mnist_small: {} groups of the 784 input directions", p.groups);
    // The figure the README and src/dual/grouping.rs quote; it depends only on the graph, not the weights.
    assert_eq!(p.groups, 100, "groups for mnist_small");
    let data = dualnet::data::load("mnist", &common::embedded_mnist(), dualnet::data::Split::Test).expect("mnist");
    let (x, _) = data.batch(&[0, 1, 2], &Device::Cpu, DType::F64).expect("batch");
    let set = InputSet::new(&x, &[0.1; 3], Norm::Linf, Some((0.0, 1.0))).expect("set");
    same_bounds(&m, &set);
}
