//! Registry-driven checks: every op with a dual rule is held to them without anyone listing it here.
//! - Every such op occurs in one of the test networks of `tests/common/nets.rs`, so the adjoint identity
//!   (`tests/soundness.rs`), the interval rules and every family's soundness and ε = 0 checks
//!   (`tests/families.rs`) run on it.
//! - Every activation's relaxation, in every family, encloses the function on its interval: for `z ∈ [l, u]`,
//!   `a_l·z + (mid − rad) <= σ(z) <= slope·z + (mid + rad)` and also `slope·z + (mid − rad) <= σ(z)` (the single
//!   slope form forward propagation uses); its interval rule encloses `σ(z)`; a free lower slope `a` anywhere
//!   in the declared range keeps `a·z <= σ(z)`; two lines of their own (`lines`) enclose it too, and a free
//!   tangent point anywhere in its declared range gives lines that still enclose it (and its initial point
//!   gives CROWN's lines).

use candle_core::{Device, Tensor};
use dualnet::ops::{Family, Role, REGISTRY};
use rand::{Rng, SeedableRng};

mod common;
use common::nets::{model, SPECS};

#[test]
fn every_op_with_a_dual_rule_is_in_a_test_network() {
    // An op that lowering expands into others (maxpool2d) is seen in the spec text; the rest in the graphs.
    let mut seen = std::collections::BTreeSet::new();
    for (_, spec) in SPECS {
        let m = model(spec, 1, 1.0);
        for i in m.graph.order() {
            if let Some(op) = m.graph.node(i).kind.op() {
                seen.insert(op.name());
            }
        }
        for op in REGISTRY {
            if spec.contains(&format!("{}(", op.name())) {
                seen.insert(op.name());
            }
        }
    }
    let missing: Vec<&str> =
        REGISTRY.iter().filter(|op| op.has_dual() && !seen.contains(op.name())).map(|op| op.name()).collect();
    assert!(
        missing.is_empty(),
        "ops with a dual rule that no test network uses: {missing:?} (add one to tests/common/nets.rs)"
    );
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all().and_then(|t| t.to_vec1()).expect("values")
}

#[test]
fn every_activation_relaxation_encloses_its_function() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut checked = 0;
    for op in REGISTRY.iter().filter(|op| op.has_dual() && op.role() == Role::Activation) {
        let spec = format!(
            "network m {{ input x: [6]  l = linear(x, out=8)  a = {}(l)  o = linear(a, out=3)  output o }}",
            op.name()
        );
        let m = model(&spec, 2, 1.0);
        let a = m.graph.find("a").expect("node a");
        let ctx = m.ctx(a);
        let n = 8 * 64;
        // Bounds of every kind: both negative, both positive, crossing, wide, narrow, a point.
        let (mut lv, mut uv) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for k in 0..n {
            let c: f64 = rng.random_range(-4.0..4.0);
            let w: f64 = match k % 4 {
                0 => 0.0,
                1 => rng.random_range(0.0..0.1),
                _ => rng.random_range(0.0..6.0),
            };
            lv.push(c - w * rng.random_range(0.0..1.0));
            uv.push(c + w * rng.random_range(0.0..1.0));
        }
        let l = Tensor::from_vec(lv.clone(), (64, 8), &Device::Cpu).expect("l");
        let u = Tensor::from_vec(uv.clone(), (64, 8), &Device::Cpu).expect("u");
        let (ilo, ihi) = op.interval(&ctx, &l, &u).expect("interval");
        let (ilo, ihi) = (flat(&ilo), flat(&ihi));
        for family in [Family::Wk, Family::Crown, Family::Alpha, Family::Ibp] {
            let r = op.relax_family(&ctx, &l, &u, family).expect("relax");
            let (slope, mid, rad) = (flat(&r.slope), flat(&r.mid), flat(&r.rad));
            let lower = r.lower.as_ref().map(flat).unwrap_or_else(|| slope.clone());
            // Two lines with their own offsets (S-shaped ops under `crown` / `alpha`), else the band twice.
            let lines = r.lines.as_ref().map(|ln| [&ln.lo_slope, &ln.lo_off, &ln.up_slope, &ln.up_off].map(flat));
            for _ in 0..8 {
                let t: Vec<f64> = (0..n).map(|_| rng.random_range(0.0..=1.0)).collect();
                let zs: Vec<f64> = (0..n).map(|k| lv[k] + t[k] * (uv[k] - lv[k])).collect();
                let z = Tensor::from_vec(zs.clone(), (64, 8), &Device::Cpu).expect("z");
                let s = flat(&op.activate(&ctx, &z).expect("activate"));
                for k in 0..n {
                    let tol = 1e-9 * (1.0 + zs[k].abs());
                    let what = format!("{} ({family}) at z = {} in [{}, {}]", op.name(), zs[k], lv[k], uv[k]);
                    assert!(
                        lower[k] * zs[k] + mid[k] - rad[k] <= s[k] + tol,
                        "{what}: lower line above σ(z) = {}",
                        s[k]
                    );
                    assert!(
                        slope[k] * zs[k] + mid[k] - rad[k] <= s[k] + tol,
                        "{what}: single-slope lower line above σ(z)"
                    );
                    assert!(
                        slope[k] * zs[k] + mid[k] + rad[k] >= s[k] - tol,
                        "{what}: upper line below σ(z) = {}",
                        s[k]
                    );
                    if let Some([ls, lo, us, uo]) = &lines {
                        assert!(ls[k] * zs[k] + lo[k] <= s[k] + tol, "{what}: own lower line above σ(z) = {}", s[k]);
                        assert!(us[k] * zs[k] + uo[k] >= s[k] - tol, "{what}: own upper line below σ(z) = {}", s[k]);
                    }
                    assert!(
                        ilo[k] <= s[k] + tol && s[k] <= ihi[k] + tol,
                        "{what}: σ(z) = {} outside the interval",
                        s[k]
                    );
                }
            }
        }
        if let Some(tg) = op.tangents(&ctx, &l, &u).expect("tangents") {
            // Free tangent points (alpha): at θ = init they give CROWN's own lines; at any θ ∈ [0, 1] the tangent
            // at `from + θ · width` (widened) is a lower / upper line of σ on [l, u] wherever the unit is free.
            let crown = op.relax_family(&ctx, &l, &u, Family::Crown).expect("relax");
            let own = crown.lines.as_ref().expect("an op with tangent points has two lines");
            let own = [&own.lo_slope, &own.lo_off, &own.up_slope, &own.up_off].map(flat);
            let lines_at = |from: &Tensor, width: &Tensor, theta: &Tensor| {
                let t = (theta * width).and_then(|x| x + from).expect("t");
                let (d, off, w) = op.tangent_line(&ctx, &t).expect("tangent line");
                [d, off, w].map(|x| flat(&x))
            };
            let (lf, uf) = (flat(&tg.lo_free), flat(&tg.up_free));
            let mut free = 0;
            for (side, from, width, init, fr) in
                [(0, &tg.lo_from, &tg.lo_width, &tg.lo_init, &lf), (1, &tg.up_from, &tg.up_width, &tg.up_init, &uf)]
            {
                let [d, off, w] = lines_at(from, width, init);
                for k in (0..n).filter(|&k| fr[k] == 1.0) {
                    let (s0, o0) = (own[2 * side][k], own[2 * side + 1][k]);
                    let o = if side == 0 { off[k] - w[k] } else { off[k] + w[k] };
                    assert!(
                        (d[k] - s0).abs() <= 1e-9 && (o - o0).abs() <= 1e-9,
                        "{}: the initial tangent point of unit {k} is not CROWN's",
                        op.name()
                    );
                    free += 1;
                }
                for rep in 0..6 {
                    let th: Vec<f64> = (0..n)
                        .map(|_| match rep {
                            0 => 0.0,
                            1 => 1.0,
                            _ => rng.random_range(0.0..=1.0),
                        })
                        .collect();
                    let th = Tensor::from_vec(th, (64, 8), &Device::Cpu).expect("θ");
                    let [d, off, w] = lines_at(from, width, &th);
                    for j in 0..=16 {
                        let zs: Vec<f64> = (0..n).map(|k| lv[k] + j as f64 / 16.0 * (uv[k] - lv[k])).collect();
                        let z = Tensor::from_vec(zs.clone(), (64, 8), &Device::Cpu).expect("z");
                        let s = flat(&op.activate(&ctx, &z).expect("activate"));
                        for k in (0..n).filter(|&k| fr[k] == 1.0) {
                            let tol = 1e-12 * (1.0 + zs[k].abs());
                            let at = d[k] * zs[k] + off[k];
                            let what = format!("{} at z = {} in [{}, {}]", op.name(), zs[k], lv[k], uv[k]);
                            match side {
                                0 => assert!(at - w[k] <= s[k] + tol, "{what}: free lower tangent above σ(z)"),
                                _ => assert!(at + w[k] >= s[k] - tol, "{what}: free upper tangent below σ(z)"),
                            }
                        }
                    }
                }
            }
            assert!(free > n / 4, "{}: only {free} free tangent points", op.name());
        }
        if let Some((lo, hi)) = op.lower_slope_range(&ctx) {
            let zs: Vec<f64> = (0..n).map(|_| rng.random_range(-6.0..6.0)).collect();
            let z = Tensor::from_vec(zs.clone(), (64, 8), &Device::Cpu).expect("z");
            let s = flat(&op.activate(&ctx, &z).expect("activate"));
            for a in [lo, hi, 0.5 * (lo + hi)] {
                for k in 0..n {
                    assert!(
                        a * zs[k] <= s[k] + 1e-12,
                        "{}: slope {a} in its range gives a·z above σ(z) at {}",
                        op.name(),
                        zs[k]
                    );
                }
            }
        }
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} activations checked");
}

/// Tightness on small random nets (every test network, `crown`, ℓ∞ ball ε = 0.01): the gap between the margin
/// bound and the smallest margin PGD finds is at most `GAP` times the drop PGD achieves from the clean margin (a
/// scale-free figure). Measured worst ratio (2026-12-02): 0.81 on the max-pooling net (two pooling chains and a
/// tanh), 0.099 on every other net; `GAP` leaves room above that.
#[test]
fn bounds_are_tight_near_pgd_on_small_nets() {
    use common::nets::{inputs, margins};
    use dualnet::dual::bounds::Options;
    use dualnet::dual::robust::certify_batch_with;
    use dualnet::dual::{InputSet, Norm};
    use dualnet::run::attack::{pgd, Goal, PgdConfig};
    const GAP: f64 = 2.0;
    let mut worst: f64 = 0.0;
    for (name, spec) in SPECS {
        let m = model(spec, 9, 1.0);
        let (x, labels) = inputs(&m, 2, 21);
        let eps = 0.01;
        let set = InputSet::new(&x, &[eps, eps], Norm::Linf, None).expect("set");
        let cert = certify_batch_with(&m, &set, &labels, &Options { family: Family::Crown, ..Default::default() })
            .expect("bounds");
        let lb: Vec<Vec<f64>> = cert.margin_lb.to_vec2().expect("lb");
        let clean = margins(&m, &x, &labels);
        let pc = PgdConfig { steps: 40, step_size: None, restarts: 2, seed: 1 };
        for j in 0..m.graph.num_classes() {
            let (p, _) = pgd(&m, &set, &labels, eps, Goal::Target(j), &pc).expect("pgd");
            let adv = margins(&m, &p, &labels);
            for b in 0..labels.len() {
                if labels[b] as usize == j {
                    continue;
                }
                let spread = (clean[b][j] - adv[b][j]).abs().max(1e-6);
                let gap = adv[b][j] - lb[b][j];
                assert!(gap >= -1e-9, "{name}: bound above a PGD margin");
                worst = worst.max(gap / spread);
                assert!(
                    gap <= GAP * spread,
                    "{name} example {b} class {j}: gap {gap} is {} times the PGD drop {spread}",
                    gap / spread
                );
            }
        }
    }
    eprintln!("worst gap / PGD drop: {worst:.3}");
}

/// `maxpool2d`'s expansion computes max pooling: the network's output equals an independent computation of the
/// windows' maxima (here with stride 2, with overlapping windows, stride 1, and with padding, where the padded
/// positions take no part in the max: PyTorch's `−∞` padding).
#[test]
fn maxpool_expansion_is_max_pooling() {
    let spec = "network m { input x: [2, 5, 5]  a = maxpool2d(x, kernel=2)  b = maxpool2d(x, kernel=3, stride=1)  c = maxpool2d(x, kernel=3, stride=2, padding=1)  fa = flatten(a)  fb = flatten(b)  fc = flatten(c)  la = linear(fa, out=2)  lb = linear(fb, out=2)  lc = linear(fc, out=2)  s = la + lb + lc  output s }";
    let m = model(spec, 1, 1.0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let xs: Vec<f64> = (0..3 * 2 * 5 * 5).map(|_| rng.random_range(-1.0..1.0)).collect();
    let x = Tensor::from_vec(xs.clone(), (3, 2, 5, 5), &Device::Cpu).expect("x");
    let vals = m.forward_all(&x).expect("forward");
    for (name, k, s, p) in [("a", 2usize, 2usize, 0usize), ("b", 3, 1, 0), ("c", 3, 2, 1)] {
        let got = flat(vals[m.graph.find(name).expect("node").index()].as_ref().expect("value"));
        let o = (5 + 2 * p - k) / s + 1;
        let mut want = Vec::new();
        for b in 0..3 {
            for c in 0..2 {
                for i in 0..o {
                    for j in 0..o {
                        let mut best = f64::NEG_INFINITY;
                        for dy in 0..k {
                            for dx in 0..k {
                                let (r, q) = ((i * s + dy) as i64 - p as i64, (j * s + dx) as i64 - p as i64);
                                if (0..5).contains(&r) && (0..5).contains(&q) {
                                    best = best.max(xs[((b * 2 + c) * 5 + r as usize) * 5 + q as usize]);
                                }
                            }
                        }
                        want.push(best);
                    }
                }
            }
        }
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12, "maxpool `{name}`: {g} != {w}");
        }
    }
}
