//! Falsification of a VNN-LIB property on one input box: PGD with restarts on the property's own output
//! constraints, plus the box's center, random points and random corners. A candidate counts only after a float64
//! forward pass confirms that it violates the property (see [`crate::run::verify`]).
//!
//! For a disjunct `∧_i (c_i · y + d_i >= 0)` the attack maximises `min_i (c_i · f(x) + d_i)` over the box: a point
//! where it is `>= 0` satisfies every constraint of the disjunct, i.e. violates the property. Steps are signed
//! gradients scaled per element by the box's radius, `x ← clip(x + (2.5 / steps) · r ⊙ sign(∇), lo, hi)`.

use candle_core::{DType, Tensor, Var};
use rand::{Rng, SeedableRng};

use crate::dual::Model;
use crate::error::{Context, Result};
use crate::vnnlib::Constraint;

#[derive(Debug, Clone, Copy)]
pub struct AttackConfig {
    pub steps: usize,
    /// Random starts per disjunct (the first start of each disjunct is the box's center).
    pub restarts: usize,
    /// Random points and random corners tried per disjunct before the gradient steps.
    pub samples: usize,
    pub seed: u64,
}

impl Default for AttackConfig {
    fn default() -> Self {
        AttackConfig { steps: 50, restarts: 5, samples: 64, seed: 0 }
    }
}

/// The constraints of the disjuncts as a batch: `c: [D, M, K]`, `d: [D, M]` (padding rows never bind).
fn spec_tensors(disjuncts: &[&[Constraint]], k: usize, like: &Tensor) -> Result<(Tensor, Tensor)> {
    let m = disjuncts.iter().map(|d| d.len()).max().unwrap_or(0).max(1);
    let mut c = vec![0f64; disjuncts.len() * m * k];
    let mut off = vec![1e30f64; disjuncts.len() * m];
    for (b, d) in disjuncts.iter().enumerate() {
        for (i, con) in d.iter().enumerate() {
            for &(j, v) in &con.coef {
                if j < k {
                    c[(b * m + i) * k + j] += v;
                }
            }
            off[b * m + i] = con.offset;
        }
    }
    let ctx = || "the attack's objective".to_string();
    let c = Tensor::from_vec(c, (disjuncts.len(), m, k), like.device())
        .and_then(|t| t.to_dtype(like.dtype()))
        .context(ctx)?;
    let off = Tensor::from_vec(off, (disjuncts.len(), m), like.device())
        .and_then(|t| t.to_dtype(like.dtype()))
        .context(ctx)?;
    Ok((c, off))
}

/// `min_i (c_i · y + d_i)` per row, `y: [D, K]` → `[D]` (the gradient flows through the binding constraint).
fn objective(y: &Tensor, c: &Tensor, off: &Tensor) -> candle_core::Result<Tensor> {
    let v = (c.matmul(&y.unsqueeze(2)?)?.squeeze(2)? + off)?;
    let m = v.min_keepdim(1)?.detach();
    let mask = v.broadcast_eq(&m)?.to_dtype(v.dtype())?;
    (v * &mask)?.sum(1)?.div(&mask.sum(1)?)
}

/// Candidate points `[n, *in]` (f64 host rows) for the disjuncts of one box, best first per disjunct: the
/// final PGD iterates with the best objective, after the samples. `lo`/`hi` are the box (flattened).
pub fn candidates(
    model: &Model,
    lo: &[f64],
    hi: &[f64],
    disjuncts: &[&[Constraint]],
    cfg: &AttackConfig,
    deadline: std::time::Instant,
) -> Result<Vec<Vec<f64>>> {
    candidates_from(model, lo, hi, disjuncts, cfg, deadline, &[])
}

/// [`candidates`], with PGD restarts started from `starts` (points of the box, taken in turn; e.g. the points
/// that a bound's dual variables suggest) instead of random points, where given.
pub fn candidates_from(
    model: &Model,
    lo: &[f64],
    hi: &[f64],
    disjuncts: &[&[Constraint]],
    cfg: &AttackConfig,
    deadline: std::time::Instant,
    starts: &[Vec<f64>],
) -> Result<Vec<Vec<f64>>> {
    let ctx = || "attacking the property".to_string();
    let dev = &model.device;
    let dt = model.dtype;
    let k = model.graph.num_classes();
    let in_shape = model.graph.input_shape().clone();
    let n = lo.len();
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let mut out = Vec::new();
    let probe = Tensor::zeros(1, dt, dev).context(ctx)?;
    let (c1, off1) = spec_tensors(disjuncts, k, &probe)?;
    let d = disjuncts.len();
    let shape = |b: usize| {
        let mut s = vec![b];
        s.extend_from_slice(&in_shape);
        s
    };
    let to_t = |rows: &[Vec<f64>]| -> Result<Tensor> {
        let flat: Vec<f64> = rows.iter().flatten().copied().collect();
        Tensor::from_vec(flat, shape(rows.len()), dev).and_then(|t| t.to_dtype(dt)).context(ctx)
    };
    // 1. The center, random points and random corners, scored on every disjunct; the best few per disjunct.
    let mut pts: Vec<Vec<f64>> = vec![lo.iter().zip(hi).map(|(a, b)| 0.5 * (a + b)).collect()];
    for s in 0..cfg.samples {
        pts.push(
            (0..n)
                .map(|i| {
                    if s % 2 == 0 {
                        rng.random_range(0.0..=1.0) * (hi[i] - lo[i]) + lo[i]
                    } else if rng.random_bool(0.5) {
                        hi[i]
                    } else {
                        lo[i]
                    }
                })
                .collect(),
        );
    }
    let y = model.forward(&to_t(&pts)?)?.to_dtype(DType::F64).and_then(|t| t.to_vec2::<f64>()).context(ctx)?;
    let mut scored: Vec<(f64, usize)> = Vec::new();
    for (p, yp) in y.iter().enumerate() {
        for dj in disjuncts {
            let v = dj.iter().map(|c| c.value(yp)).fold(f64::INFINITY, f64::min);
            let v = if dj.is_empty() { f64::INFINITY } else { v };
            scored.push((v, p));
        }
    }
    scored.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    for &(_, p) in scored.iter().take(4) {
        out.push(pts[p].clone());
    }
    // 2. PGD: every disjunct × every restart in one batch.
    let restarts = cfg.restarts.max(1);
    let b = d * restarts;
    let rep = |t: &Tensor| -> Result<Tensor> {
        // [D, ...] -> [D * R, ...], disjunct-major.
        let mut s = t.dims().to_vec();
        let inner = s.split_off(1);
        let mut exp = vec![d, restarts];
        exp.extend_from_slice(&inner);
        let mut flat = vec![b];
        flat.extend_from_slice(&inner);
        t.unsqueeze(1)
            .and_then(|t| t.broadcast_as(exp))
            .and_then(|t| t.contiguous())
            .and_then(|t| t.reshape(flat))
            .context(ctx)
    };
    let (c, off) = (rep(&c1)?, rep(&off1)?);
    let lo_t = to_t(&vec![lo.to_vec(); b])?;
    let hi_t = to_t(&vec![hi.to_vec(); b])?;
    let rad: Vec<f64> = lo.iter().zip(hi).map(|(a, z)| 0.5 * (z - a)).collect();
    let step = to_t(&vec![rad.iter().map(|r| r * 2.5 / cfg.steps.max(1) as f64).collect(); b])?;
    let mut start: Vec<Vec<f64>> = Vec::with_capacity(b);
    for _ in 0..d {
        for r in 0..restarts {
            start.push(if r == 0 {
                lo.iter().zip(hi).map(|(a, z)| 0.5 * (a + z)).collect()
            } else if !starts.is_empty() && starts[(r - 1) % starts.len()].len() == n {
                starts[(r - 1) % starts.len()].iter().zip(lo).zip(hi).map(|((v, a), z)| v.max(*a).min(*z)).collect()
            } else {
                (0..n).map(|i| rng.random_range(0.0..=1.0) * (hi[i] - lo[i]) + lo[i]).collect()
            });
        }
    }
    let mut x = to_t(&start)?;
    let mut best = x.clone();
    let mut best_obj: Option<Tensor> = None;
    for it in 0..=cfg.steps {
        if std::time::Instant::now() > deadline {
            break;
        }
        let var = Var::from_tensor(&x).context(ctx)?;
        let y = model.forward(var.as_tensor())?;
        let obj = objective(&y, &c, &off).context(ctx)?;
        best_obj = Some(match best_obj.take() {
            None => {
                best = x.clone();
                obj.detach()
            }
            Some(prev) => {
                let better = obj.gt(&prev).context(ctx)?;
                let mut ms = vec![b];
                ms.extend(std::iter::repeat_n(1, x.rank() - 1));
                let m = better.reshape(ms).and_then(|m| m.broadcast_as(x.shape())).context(ctx)?;
                best = m.where_cond(&x, &best).context(ctx)?;
                better.where_cond(&obj.detach(), &prev).context(ctx)?
            }
        });
        if it == cfg.steps {
            break;
        }
        let grads = obj.sum_all().and_then(|s| s.backward()).context(ctx)?;
        let Some(g) = grads.get(var.as_tensor()) else { break };
        let moved = (x.detach() + g.sign().and_then(|s| s.mul(&step)).context(ctx)?).context(ctx)?;
        x = moved.maximum(&lo_t).and_then(|t| t.minimum(&hi_t)).context(ctx)?;
    }
    let objs: Vec<f64> = match &best_obj {
        Some(o) => o.to_dtype(DType::F64).and_then(|t| t.to_vec1()).context(ctx)?,
        None => vec![f64::NEG_INFINITY; b],
    };
    let rows =
        best.to_dtype(DType::F64).and_then(|t| t.reshape((b, n))).and_then(|t| t.to_vec2::<f64>()).context(ctx)?;
    let mut order: Vec<usize> = (0..b).collect();
    order.sort_by(|&i, &j| objs[j].partial_cmp(&objs[i]).unwrap_or(std::cmp::Ordering::Equal));
    for i in order {
        out.push(rows[i].clone());
    }
    Ok(out)
}
