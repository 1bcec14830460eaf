//! Soundness: on random small networks of every supported kind, no point of the perturbation set may have a
//! margin below its certified lower bound, and every layer's value must lie within its bounds. Points are
//! random samples, random corners and targeted PGD (the strongest first-order attack on each margin).
//! Also: at ε = 0 the bounds collapse to the clean values, and every affine op's dual rule is the adjoint
//! of its forward map, `<A x, ν> = <x, Aᵀ ν>`.

use candle_core::{DType, Device, Tensor};
use dualnet::check::check_source;
use dualnet::dual::robust::certify_batch;
use dualnet::dual::{InputSet, Model, Norm};
use dualnet::ops::Role;
use dualnet::run::attack::{pgd, Goal, PgdConfig};
use dualnet::weights::Weights;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

const SPECS: &[(&str, &str)] = &[
    ("mlp", "network m { input x: [1, 6, 6]  f = flatten(x)  l1 = linear(f, out=12)  r1 = relu(l1)  l2 = linear(r1, out=10)  r2 = relu(l2)  l3 = linear(r2, out=4)  output l3 }"),
    ("conv", "network m { input x: [2, 8, 8]  c1 = conv2d(x, out=4, kernel=3, stride=2, padding=1)  r1 = relu(c1)  c2 = conv2d(r1, out=4, kernel=2, stride=1, padding=0)  r2 = relu(c2)  f = flatten(r2)  l = linear(f, out=3)  output l }"),
    ("residual", "network m { input x: [1, 8, 8]  c0 = conv2d(x, out=3, kernel=3, padding=1)  r0 = relu(c0)  c1 = conv2d(r0, out=3, kernel=3, padding=1)  r1 = relu(c1)  k = conv2d(r0, out=3, kernel=1)  s = r1 + k + c0  r2 = relu(s)  c3 = conv2d(r2, out=4, kernel=4, stride=2, padding=1)  k3 = conv2d(r2, out=4, kernel=2, stride=2)  s3 = c3 + k3  r3 = relu(s3)  f = flatten(r3)  l = linear(f, out=5)  output l }"),
    ("batchnorm", "network m { input x: [1, 8, 8]  c1 = conv2d(x, out=4, kernel=3, stride=1, padding=1)  b1 = batchnorm2d(c1)  r1 = relu(b1)  p = avgpool2d(r1, kernel=2)  f = flatten(p)  l = linear(f, out=4)  output l }"),
    ("hardtanh", "network m { input x: [6]  l1 = linear(x, out=10)  h1 = hardtanh(l1)  l2 = linear(h1, out=8)  h2 = hardtanh(l2, min_val=-0.5, max_val=0.7)  l3 = linear(h2, out=3)  output l3 }"),
];

fn model(spec: &str, seed: u64, scale: f64) -> Model {
    let checked = check_source("t.net", spec);
    let g = checked.graph.unwrap_or_else(|| {
        panic!("spec checks: {:?}", checked.diagnostics.iter().map(|d| d.message.clone()).collect::<Vec<_>>())
    });
    let mut w = Weights::init(&g, seed, DType::F64, &Device::Cpu).expect("init");
    // Non-trivial batchnorm statistics and larger weights, so that every ReLU regime occurs.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    for node in w.per_node.iter_mut() {
        for (k, t) in node.iter_mut() {
            let n = t.elem_count();
            let v: Vec<f64> = match k.as_str() {
                "running_var" => (0..n).map(|_| rng.random_range(0.2..2.0)).collect(),
                "running_mean" | "bias" => (0..n).map(|_| rng.random_range(-0.3..0.3)).collect(),
                "weight" if t.rank() == 1 => {
                    (0..n).map(|_| rng.random_range(0.5..1.5) * if rng.random_bool(0.3) { -1.0 } else { 1.0 }).collect()
                }
                _ => {
                    let v: Vec<f64> = t.flatten_all().and_then(|t| t.to_vec1()).expect("weights");
                    v.into_iter().map(|x| x * scale).collect()
                }
            };
            *t = Tensor::from_vec(v, t.shape(), &Device::Cpu).expect("tensor");
        }
    }
    Model::new(g, w, DType::F64, Device::Cpu)
}

fn inputs(m: &Model, b: usize, seed: u64) -> (Tensor, Vec<u32>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let shape = m.graph.input_shape().clone();
    let n: usize = shape.iter().product();
    let x: Vec<f64> = (0..b * n).map(|_| rng.random_range(0.0..1.0)).collect();
    let mut s = vec![b];
    s.extend(shape);
    let k = m.graph.num_classes() as u32;
    (Tensor::from_vec(x, s, &Device::Cpu).expect("x"), (0..b).map(|_| rng.random_range(0..k)).collect())
}

fn margins(m: &Model, x: &Tensor, labels: &[u32]) -> Vec<Vec<f64>> {
    let logits: Vec<Vec<f64>> = m.forward(x).expect("forward").to_vec2().expect("logits");
    logits.iter().zip(labels).map(|(row, &y)| row.iter().map(|v| row[y as usize] - v).collect()).collect()
}

/// Assert that at points `x'` every margin is >= its bound and every activation input lies in its bounds.
fn assert_sound(
    m: &Model,
    set: &InputSet,
    labels: &[u32],
    xp: &Tensor,
    lb: &[Vec<f64>],
    bounds: &dualnet::dual::bounds::Bounds,
    what: &str,
) {
    let tol = 1e-9;
    let got = margins(m, xp, labels);
    for (b, (row, lrow)) in got.iter().zip(lb).enumerate() {
        for (j, (v, l)) in row.iter().zip(lrow).enumerate() {
            assert!(*v >= l - tol, "{what}: example {b} class {j}: margin {v} below its lower bound {l}");
        }
    }
    let vals = m.forward_all(xp).expect("forward_all");
    for (z, l, u) in &bounds.layers {
        let v: Vec<f64> = vals[z.index()].as_ref().expect("value").flatten_all().and_then(|t| t.to_vec1()).expect("v");
        let l: Vec<f64> = l.flatten_all().and_then(|t| t.to_vec1()).expect("l");
        let u: Vec<f64> = u.flatten_all().and_then(|t| t.to_vec1()).expect("u");
        for i in 0..v.len() {
            assert!(
                v[i] >= l[i] - tol && v[i] <= u[i] + tol,
                "{what}: node {} unit {i}: {} outside [{}, {}]",
                m.graph.node(*z).name,
                v[i],
                l[i],
                u[i]
            );
        }
    }
    let _ = set;
}

fn check_network(idx: usize, seed: u64, eps: f64, norm: Norm, bounded: bool) {
    let (name, spec) = SPECS[idx];
    let m = model(spec, seed, 1.5);
    let (x, labels) = inputs(&m, 3, seed + 7);
    let set = InputSet::new(&x, &[eps, eps * 0.5, eps * 2.0], norm, if bounded { Some((0.0, 1.0)) } else { None })
        .expect("set");
    let cert = certify_batch(&m, &set, &labels).expect("certify");
    let lb: Vec<Vec<f64>> = cert.margin_lb.to_vec2().expect("lb");
    let what = format!("{name} seed {seed} eps {eps} {norm} bounded {bounded}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..16 {
        let p = set.random_point(&mut rng).expect("sample");
        assert_sound(&m, &set, &labels, &p, &lb, &cert.bounds, &format!("{what} (random point)"));
        let c = set.random_corner(&mut rng).expect("corner");
        assert_sound(&m, &set, &labels, &c, &lb, &cert.bounds, &format!("{what} (corner)"));
    }
    let cfg = PgdConfig { steps: 20, step_size: None, restarts: 1, seed };
    for j in 0..m.graph.num_classes() {
        let (p, _) = pgd(&m, &set, &labels, eps * 2.0, Goal::Target(j), &cfg).expect("pgd");
        assert_sound(&m, &set, &labels, &p, &lb, &cert.bounds, &format!("{what} (PGD towards class {j})"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    #[test]
    fn bounds_are_sound(idx in 0..SPECS.len(), seed in 0u64..1000, eps in 0.001f64..0.3, l2 in any::<bool>(), bounded in any::<bool>()) {
        let norm = if l2 { Norm::L2 } else { Norm::Linf };
        check_network(idx, seed, if l2 { eps * 4.0 } else { eps }, norm, bounded && !l2);
    }
}

#[test]
fn every_network_kind_is_sound() {
    for idx in 0..SPECS.len() {
        check_network(idx, 1, 0.05, Norm::Linf, false);
        check_network(idx, 2, 0.1, Norm::Linf, true);
        check_network(idx, 3, 0.5, Norm::L2, false);
    }
}

#[test]
fn zero_epsilon_gives_the_clean_margin() {
    for (idx, (name, spec)) in SPECS.iter().enumerate() {
        let m = model(spec, idx as u64, 1.0);
        let (x, labels) = inputs(&m, 2, 3);
        let set = InputSet::new(&x, &[0.0, 0.0], Norm::Linf, None).expect("set");
        let cert = certify_batch(&m, &set, &labels).expect("certify");
        let lb: Vec<Vec<f64>> = cert.margin_lb.to_vec2().expect("lb");
        let clean = margins(&m, &x, &labels);
        for (a, b) in lb.iter().flatten().zip(clean.iter().flatten()) {
            assert!((a - b).abs() < 1e-9, "{name}: bound {a} != clean margin {b} at eps 0");
        }
    }
}

/// `<A x, ν> = <x, Aᵀ ν>` for every affine op in the test networks (the dual rules are adjoints).
#[test]
fn dual_rules_are_adjoint() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut checked = 0;
    for (name, spec) in SPECS {
        let m = model(spec, 5, 1.0);
        let g = &m.graph;
        for i in g.order() {
            let Some(op) = g.node(i).kind.op() else { continue };
            if op.role() != Role::Affine {
                continue;
            }
            let ctx = m.ctx(i);
            let rand_t = |shape: &[usize], rng: &mut rand::rngs::StdRng| {
                let mut s = vec![2];
                s.extend_from_slice(shape);
                let n: usize = s.iter().product();
                Tensor::from_vec((0..n).map(|_| rng.random_range(-1.0..1.0)).collect::<Vec<f64>>(), s, &Device::Cpu)
                    .expect("t")
            };
            let xs: Vec<Tensor> = g.node(i).inputs.iter().map(|j| rand_t(&g.node(*j).shape, &mut rng)).collect();
            let nu = rand_t(&g.node(i).shape, &mut rng);
            let ax = op.linear(&ctx, &xs).expect("linear");
            let lhs: f64 = (ax * &nu).and_then(|t| t.sum_all()).and_then(|t| t.to_scalar()).expect("lhs");
            let at = op.transpose(&ctx, &nu).expect("transpose");
            let mut rhs = 0.0;
            for (x, t) in xs.iter().zip(&at) {
                assert_eq!(x.dims(), t.dims(), "{name}/{}: dual rule shape", g.node(i).name);
                rhs += (x * t).and_then(|t| t.sum_all()).and_then(|t| t.to_scalar::<f64>()).expect("rhs");
            }
            assert!(
                (lhs - rhs).abs() <= 1e-10 * (1.0 + lhs.abs()),
                "{name}/{} ({}): <Ax,ν> = {lhs} but <x,Aᵀν> = {rhs}",
                g.node(i).name,
                op.name()
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} affine nodes checked");
}

/// conv2d's dual rule restores the input size for every stride/padding/size combination.
#[test]
fn conv_transpose_restores_every_size() {
    for n in 3..10usize {
        for k in 1..=4usize.min(n) {
            for s in 1..=3usize {
                for p in 0..=(k / 2) {
                    let spec = format!("network m {{ input x: [2, {n}, {n}]  c = conv2d(x, out=3, kernel={k}, stride={s}, padding={p})  f = flatten(c)  l = linear(f, out=2)  output l }}");
                    let m = model(&spec, 1, 1.0);
                    let c = m.graph.find("c").expect("c");
                    let shape = m.graph.node(c).shape.clone();
                    let mut dims = vec![1];
                    dims.extend(shape);
                    let nu = Tensor::ones(dims, DType::F64, &Device::Cpu).expect("nu");
                    let op = m.graph.node(c).kind.op().expect("op");
                    let back = op.transpose(&m.ctx(c), &nu).expect("transpose");
                    assert_eq!(back[0].dims(), &[1, 2, n, n], "n={n} k={k} s={s} p={p}");
                }
            }
        }
    }
}
