//! Branch and bound against exact answers: on small random ReLU networks (2 to 6 inputs, 12 ReLUs in two layers,
//! boxes of three sizes), the search ([`dualnet::run::search`]) with ReLU splitting (α-CROWN root or not, layers recomputed or
//! not) and with input splitting must
//! agree with the exact answer on every robustness property it answers, and answer nearly all of them.
//!
//! The exact answer enumerates the activation patterns that some point of the box realises: a depth-first search
//! over the units in order, each unit fixed active (`z ≥ 0`) or inactive (`z ≤ 0`) where a linear program says
//! the pattern so far stays feasible (every pre-activation is affine in `x` once the earlier units are fixed).
//! On each feasible full pattern the margins `f_y − f_j` are affine, and a linear program gives their minimum
//! over the pattern's polytope; the exact minimum over the box is the smallest of those. The linear programs
//! are solved in floating point (`microlp`, tolerance about 1e-7), so properties whose exact minimum is within
//! 1e-4 of 0 are left out: their sign is not certain.

mod common;

use candle_core::DType;
use common::nets::{mlp_model, mlp_spec, Layers};
use dualnet::run::search::{search, Branching, Problem, SearchOptions, Verdict};
use dualnet::vnnlib::Constraint;
use microlp::{ComparisonOp, OptimizationDirection};
use rand::{Rng, SeedableRng};

/// An affine function of the input: `a · x + b`.
#[derive(Clone)]
struct Affine {
    a: Vec<f64>,
    b: f64,
}

impl Affine {
    fn combine(terms: &[(f64, &Affine)], bias: f64, n: usize) -> Affine {
        let mut a = vec![0.0; n];
        let mut b = bias;
        for (w, t) in terms {
            for (ai, ti) in a.iter_mut().zip(&t.a) {
                *ai += w * ti;
            }
            b += w * t.b;
        }
        Affine { a, b }
    }
}

/// `min f(x)` over the box with the constraints `g(x) ≥ 0` (each `g` affine); `None` when infeasible.
fn lp_min(f: &Affine, cons: &[Affine], lo: &[f64], hi: &[f64]) -> Option<f64> {
    let mut p = microlp::Problem::new(OptimizationDirection::Minimize);
    let vars: Vec<_> = f.a.iter().zip(lo.iter().zip(hi)).map(|(c, (a, b))| p.add_var(*c, (*a, *b))).collect();
    for g in cons {
        let row: Vec<_> = vars.iter().copied().zip(g.a.iter().copied()).collect();
        p.add_constraint(&row, ComparisonOp::Ge, -g.b);
    }
    match p.solve().map(|o| o.into_solution()) {
        Ok(Ok(s)) => Some(s.objective() + f.b),
        Ok(Err(_)) => panic!("the linear program was interrupted"),
        Err(microlp::Error::Infeasible) => None,
        Err(e) => panic!("the linear program failed: {e:?}"),
    }
}

/// Every feasible activation pattern of the network on the box: `visit(out, cons)` gets the outputs as affine
/// functions of the input on the pattern's region and the region's constraints (`g(x) ≥ 0`); the enumeration
/// stops once `visit` returns true. A pattern is entered only when its region so far is feasible (one linear
/// program per branch).
fn for_each_pattern(layers: &Layers, lo: &[f64], hi: &[f64], visit: &mut dyn FnMut(&[Affine], &[Affine]) -> bool) {
    let n = lo.len();
    let inputs: Vec<Affine> = (0..n)
        .map(|i| {
            let mut a = vec![0.0; n];
            a[i] = 1.0;
            Affine { a, b: 0.0 }
        })
        .collect();
    #[allow(clippy::too_many_arguments)]
    fn go(
        layers: &Layers,
        li: usize,
        prev: &[Affine],
        cur: &mut Vec<Affine>,
        cons: &mut Vec<Affine>,
        lo: &[f64],
        hi: &[f64],
        visit: &mut dyn FnMut(&[Affine], &[Affine]) -> bool,
    ) -> bool {
        let n = lo.len();
        let (w, b) = &layers[li];
        let zero = Affine { a: vec![0.0; n], b: 0.0 };
        if li + 1 == layers.len() {
            let out: Vec<Affine> = w
                .iter()
                .zip(b)
                .map(|(row, bj)| {
                    let terms: Vec<(f64, &Affine)> = row.iter().copied().zip(prev.iter()).collect();
                    Affine::combine(&terms, *bj, n)
                })
                .collect();
            return visit(&out, cons);
        }
        let j = cur.len();
        if j == w.len() {
            let next = std::mem::take(cur);
            let stop = go(layers, li + 1, &next, &mut Vec::new(), cons, lo, hi, visit);
            *cur = next;
            return stop;
        }
        let terms: Vec<(f64, &Affine)> = w[j].iter().copied().zip(prev.iter()).collect();
        let z = Affine::combine(&terms, b[j], n);
        let neg = Affine { a: z.a.iter().map(|v| -v).collect(), b: -z.b };
        for (constraint, post) in [(z.clone(), z.clone()), (neg, zero.clone())] {
            cons.push(constraint);
            let mut stop = false;
            if lp_min(&zero, cons, lo, hi).is_some() {
                cur.push(post);
                stop = go(layers, li, prev, cur, cons, lo, hi, visit);
                cur.pop();
            }
            cons.pop();
            if stop {
                return true;
            }
        }
        false
    }
    go(layers, 0, &inputs, &mut Vec::new(), &mut Vec::new(), lo, hi, visit);
}

/// The exact minimum over the box of every margin `f_y − f_j` (index `j`; `+∞` at `y`), by enumerating the
/// feasible activation patterns.
fn exact_min_margins(layers: &Layers, lo: &[f64], hi: &[f64], y: usize) -> Vec<f64> {
    let n = lo.len();
    let k = layers.last().expect("layers").1.len();
    let mut best = vec![f64::INFINITY; k];
    for_each_pattern(layers, lo, hi, &mut |out, cons| {
        for j in (0..out.len()).filter(|j| *j != y) {
            let m = Affine::combine(&[(1.0, &out[y]), (-1.0, &out[j])], 0.0, n);
            if let Some(v) = lp_min(&m, cons, lo, hi) {
                best[j] = best[j].min(v);
            }
        }
        false
    });
    best
}

/// A random MLP `n → 6 → 6 → 3` with values exact in f32 (weights in [−1, 1], biases in [−0.5, 0.5]).
fn random_layers(n: usize, rng: &mut impl Rng) -> Layers {
    let widths = [n, 6, 6, 3];
    widths
        .windows(2)
        .map(|w| {
            let m: Vec<Vec<f64>> =
                (0..w[1]).map(|_| (0..w[0]).map(|_| rng.random_range(-1.0f32..1.0) as f64).collect()).collect();
            let b: Vec<f64> = (0..w[1]).map(|_| rng.random_range(-0.5f32..0.5) as f64).collect();
            (m, b)
        })
        .collect()
}

/// The float64 forward pass (to pick the label at the centre).
fn forward(layers: &Layers, x: &[f64]) -> Vec<f64> {
    let mut h = x.to_vec();
    for (k, (w, b)) in layers.iter().enumerate() {
        h = w.iter().zip(b).map(|(r, bj)| r.iter().zip(&h).map(|(a, v)| a * v).sum::<f64>() + bj).collect();
        if k + 1 < layers.len() {
            h.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
    h
}

/// A random `[n, 6, 6, 3]` ReLU network (f32-exact weights, as an f32 and an f64 model), a box of the given
/// radius around a random centre, and the label the network gives the centre.
struct Case {
    layers: Layers,
    model: dualnet::dual::Model,
    exact: dualnet::dual::Model,
    lo: Vec<f64>,
    hi: Vec<f64>,
    y: usize,
}

fn random_case(n: usize, radius: f64, rng: &mut impl Rng) -> Case {
    let layers = random_layers(n, rng);
    let spec = mlp_spec(&[n, 6, 6, 3]);
    let model = mlp_model(&spec, &["l0", "l1", "l2"], &layers, DType::F32);
    let exact = mlp_model(&spec, &["l0", "l1", "l2"], &layers, DType::F64);
    let center: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0f32..1.0) as f64).collect();
    let lo: Vec<f64> = center.iter().map(|c| c - radius).collect();
    let hi: Vec<f64> = center.iter().map(|c| c + radius).collect();
    let f = forward(&layers, &center);
    let y = (0..3).max_by(|a, b| f[*a].total_cmp(&f[*b])).expect("label");
    Case { layers, model, exact, lo, hi, y }
}

#[test]
fn branch_and_bound_agrees_with_the_exact_answer() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut cases = 0;
    // ReLU splitting as by default (α-CROWN root, warm-started children, layers recomputed), input splitting,
    // ReLU splitting with a plain CROWN root, and with every layer kept from the parent.
    let configs = [
        ("relu", SearchOptions { branching: Branching::Relu, ..Default::default() }),
        ("input", SearchOptions { branching: Branching::Input, ..Default::default() }),
        ("relu, crown root", SearchOptions { branching: Branching::Relu, alpha_root: false, ..Default::default() }),
        ("relu, no recompute", SearchOptions { branching: Branching::Relu, recompute: false, ..Default::default() }),
    ];
    let mut answered = [0usize; 4];
    let mut proved = [0usize; 4];
    let mut violated = 0;
    for case in 0..72 {
        let n = 2 + case % 5;
        let Case { layers, model, exact, lo, hi, y } = random_case(n, [0.05, 0.2, 0.5][case % 3], &mut rng);
        let mins = exact_min_margins(&layers, &lo, &hi, y);
        let exact_min = mins.iter().copied().fold(f64::INFINITY, f64::min);
        if exact_min.abs() < 1e-4 {
            continue;
        }
        cases += 1;
        violated += usize::from(exact_min < 0.0);
        // Violated when some other class reaches the label's score: `y_j − y_y ≥ 0`.
        let disjuncts: Vec<Vec<Constraint>> = (0..3)
            .filter(|j| *j != y)
            .map(|j| vec![Constraint { coef: vec![(j, 1.0), (y, -1.0)], offset: 0.0, strict: false }])
            .collect();
        for (mi, (name, opts)) in configs.iter().enumerate() {
            let p = Problem { model: &model, exact: &exact, lo: &lo, hi: &hi, disjuncts: &disjuncts };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let (v, stats) = search(&p, opts, deadline, None).expect("search");
            match v {
                Verdict::Proved => {
                    assert!(
                        exact_min > 0.0,
                        "case {case} ({name}): proved, but the exact minimum margin is {exact_min} ({stats:?})"
                    );
                    answered[mi] += 1;
                    proved[mi] += 1;
                }
                Verdict::Counterexample { x, y: out } => {
                    assert!(exact_min < 0.0, "case {case} ({name}): a counterexample, exact minimum {exact_min}");
                    // The point is in the box and its outputs violate the property.
                    assert!(x.iter().zip(&lo).zip(&hi).all(|((v, a), b)| a <= v && v <= b));
                    assert!((0..3).any(|j| j != y && out[j] >= out[y]));
                    answered[mi] += 1;
                }
                Verdict::Unknown { .. } | Verdict::Timeout { .. } => {}
            }
        }
    }
    println!("{cases} properties ({violated} violated); answered {answered:?}; proved {proved:?}");
    assert!(cases >= 50, "too few properties away from 0: {cases}");
    assert!(
        violated >= 3 && cases - violated >= 3,
        "the cases should mix both answers: {violated} of {cases} violated"
    );
    for (mi, (name, _)) in configs.iter().enumerate() {
        assert!(answered[mi] * 10 >= cases * 9, "{name} splitting answered {} of {cases}", answered[mi]);
    }
}

/// Layer bounds given a parent's (as branch and bound passes them): a ReLU unit the parent leaves stable keeps
/// the parent's bounds without its rows being run. On the parent's own box the result is the parent's bounds
/// exactly (the rows run give the same values, the others are the parent's); on a sub-box every bound still
/// contains the pre-activations of sampled points (computed in f64 from the f32-exact weights) and lies within
/// the parent's.
#[test]
fn layer_bounds_given_a_parent_keep_its_stable_units_and_hold() {
    use dualnet::dual::bounds::{compute_given, Given, Options};
    use dualnet::dual::InputSet;
    use dualnet::ops::Family;
    let mut rng = rand::rngs::StdRng::seed_from_u64(77);
    let dev = candle_core::Device::Cpu;
    let host = |t: &candle_core::Tensor| -> Vec<f64> {
        t.to_dtype(DType::F64).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).expect("host")
    };
    let mut skipped = 0usize;
    for case in 0..12 {
        let n = 2 + case % 4;
        let layers = random_layers(n, &mut rng);
        let spec = mlp_spec(&[n, 6, 6, 3]);
        let model = mlp_model(&spec, &["l0", "l1", "l2"], &layers, DType::F32);
        let opts = Options { family: Family::Crown, crown_layers: true, ..Default::default() };
        let center: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0f32..1.0) as f64).collect();
        let lo: Vec<f64> = center.iter().map(|c| c - 0.4).collect();
        let hi: Vec<f64> = center.iter().map(|c| c + 0.4).collect();
        let set =
            |lo: &[f64], hi: &[f64]| InputSet::from_host_box(lo, hi, &[1, n], DType::F32, &dev, false).expect("set");
        let parent = compute_given(&model, &set(&lo, &hi), &opts, &Given::default()).expect("parent");
        let zs = model.graph.activation_inputs();
        let mut given = Given::default();
        for z in &zs {
            let (l, u) = parent.of(*z).expect("layer");
            given.layers.insert(*z, (l.clone(), u.clone()));
            skipped += host(l).iter().zip(host(u)).filter(|(a, b)| **a >= 0.0 || *b <= 0.0).count();
        }
        // Same box: the parent's bounds (within the parent's, as intersected; as tight up to the order of the
        // sums, the rows run being fewer).
        let again = compute_given(&model, &set(&lo, &hi), &opts, &given).expect("again");
        for z in &zs {
            let ((pl, pu), (al, au)) = (parent.of(*z).expect("p"), again.of(*z).expect("a"));
            let (pl, pu, al, au) = (host(pl), host(pu), host(al), host(au));
            for j in 0..pl.len() {
                assert!(pl[j] <= al[j] && au[j] <= pu[j], "case {case}: {z:?} unit {j} wider than the parent's");
                let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
                assert!(close(al[j], pl[j]) && close(au[j], pu[j]), "case {case}: {z:?} unit {j} changed");
            }
        }
        // A sub-box (the lower-left quarter of each side): sound and within the parent's.
        let mid: Vec<f64> = lo.iter().zip(&hi).map(|(a, b)| 0.5 * (a + b)).collect();
        let child = compute_given(&model, &set(&lo, &mid), &opts, &given).expect("child");
        for _ in 0..200 {
            let x: Vec<f64> = lo.iter().zip(&mid).map(|(a, b)| rng.random_range(*a..=*b)).collect();
            let mut h = x.clone();
            for (k, (w, b)) in layers.iter().enumerate().take(2) {
                let z: Vec<f64> =
                    w.iter().zip(b).map(|(r, bj)| r.iter().zip(&h).map(|(a, v)| a * v).sum::<f64>() + bj).collect();
                let (cl, cu) = child.of(zs[k]).expect("child layer");
                let (pl, pu) = parent.of(zs[k]).expect("parent layer");
                let (cl, cu, pl, pu) = (host(cl), host(cu), host(pl), host(pu));
                for j in 0..z.len() {
                    assert!(
                        cl[j] <= z[j] && z[j] <= cu[j],
                        "case {case}: layer {k} unit {j}: {} not in [{}, {}]",
                        z[j],
                        cl[j],
                        cu[j]
                    );
                    assert!(
                        pl[j] <= cl[j] && cu[j] <= pu[j],
                        "case {case}: layer {k} unit {j} wider than the parent's"
                    );
                }
                h = z.iter().map(|v| v.max(0.0)).collect();
            }
        }
    }
    assert!(skipped > 0, "no stable unit: the test would not exercise the skipped rows");
}

/// Whether some point of the box makes class `t` beat every other class by at least `shift` (`y_t − y_j ≥ shift`
/// for all `j ≠ t`): one linear program per feasible activation pattern ([`for_each_pattern`]).
fn target_reachable(layers: &Layers, lo: &[f64], hi: &[f64], t: usize, shift: f64) -> bool {
    let n = lo.len();
    let zero = Affine { a: vec![0.0; n], b: 0.0 };
    let mut found = false;
    for_each_pattern(layers, lo, hi, &mut |out, cons| {
        let mut all = cons.to_vec();
        for j in (0..out.len()).filter(|j| *j != t) {
            all.push(Affine::combine(&[(1.0, &out[t]), (-1.0, &out[j])], -shift, n));
        }
        found = lp_min(&zero, &all, lo, hi).is_some();
        found
    });
    found
}

/// A targeted property (one disjunct, a conjunction of rows: `y_t ≥ y_j` for every `j ≠ t`), as the
/// `marabou-cifar10` benchmark writes them. Below the root, branch and bound optimises only the best row of a
/// conjunction per domain (the others keep their one-pass and parent's margins): every answer must still agree
/// with the exact one, and at least 85% of the properties must be answered.
#[test]
fn branch_and_bound_on_conjunctions_agrees_with_the_exact_answer() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4242);
    let opts = SearchOptions { branching: Branching::Relu, ..Default::default() };
    let (mut cases, mut answered, mut proved, mut violated, mut branched) = (0, 0, 0, 0, 0);
    for case in 0..72 {
        let n = 2 + case % 4;
        let Case { layers, model, exact, lo, hi, y } = random_case(n, [0.3, 0.6, 1.0][case % 3], &mut rng);
        let t = (y + 1 + case % 2) % 3;
        // Away from the boundary: reachable with a margin of 1e-4 to spare, or not even 1e-4 short of it.
        let reachable = target_reachable(&layers, &lo, &hi, t, 1e-4);
        if !reachable && target_reachable(&layers, &lo, &hi, t, -1e-4) {
            continue;
        }
        cases += 1;
        violated += usize::from(reachable);
        let disjuncts = vec![(0..3)
            .filter(|j| *j != t)
            .map(|j| Constraint { coef: vec![(t, 1.0), (j, -1.0)], offset: 0.0, strict: false })
            .collect::<Vec<_>>()];
        let p = Problem { model: &model, exact: &exact, lo: &lo, hi: &hi, disjuncts: &disjuncts };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let (v, stats) = search(&p, &opts, deadline, None).expect("search");
        branched += usize::from(stats.domains > 1);
        match v {
            Verdict::Proved => {
                assert!(!reachable, "case {case}: proved, but class {t} can win on the box ({stats:?})");
                answered += 1;
                proved += 1;
            }
            Verdict::Counterexample { x, y: out } => {
                assert!(reachable, "case {case}: a counterexample, but class {t} cannot win on the box");
                assert!(x.iter().zip(&lo).zip(&hi).all(|((v, a), b)| a <= v && v <= b));
                assert!((0..3).all(|j| out[t] >= out[j]));
                answered += 1;
            }
            Verdict::Unknown { .. } | Verdict::Timeout { .. } => {}
        }
    }
    println!(
        "{cases} targeted properties ({violated} reachable, {branched} split); answered {answered}, proved {proved}"
    );
    assert!(branched >= 5, "too few properties needed splits: {branched}");
    assert!(cases >= 30, "too few properties away from the boundary: {cases}");
    assert!(violated >= 3 && cases - violated >= 3, "the cases should mix both answers: {violated} of {cases}");
    assert!(answered * 100 >= cases * 85, "answered {answered} of {cases}");
}
