//! The dual rules themselves: every affine op's dual rule is the adjoint of its forward map,
//! `<A x, ν> = <x, Aᵀ ν>`, and conv2d's restores every input size. The bounds' soundness (sampled points,
//! corners and PGD against every family's bounds, ε = 0) is in `tests/families.rs`.

use candle_core::{DType, Device, Tensor};
use dualnet::ops::Role;
use rand::{Rng, SeedableRng};

mod common;
use common::nets::{model, SPECS};

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
