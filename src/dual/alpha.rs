//! Optimised lower slopes (α-CROWN, Xu et al. 2021) for the margin objectives.
//!
//! Every lower line `a_l · z` of a crossing ReLU (`l < 0 < u`) is a valid lower bound of `relu(z)` for any
//! `a_l ∈ [0, 1]`, so `J(c; α)`, the dual objective ([`super::objective`]) with those lower slopes, is a valid
//! lower bound on `c·f(x')` for every α, and each output specification may use its own α: `α` is
//! `[B, K, *shape]` per activation, one slope per example, margin row and unit. Starting from CROWN's choice,
//! `iters` steps of projected gradient ascent (Adam, step `lr`, projection onto `[0, 1]`) raise `Σ J`; the
//! result is, per example and margin, the best bound met along the way, and never below `start` (the caller's
//! CROWN-and-interval margin) nor below the paper's objective on the same layer bounds.
//!
//! The layer bounds themselves are not optimised: they are those of the `crown` family (the paper's exact
//! bounds intersected with interval bounds).

use std::collections::HashMap;

use candle_core::{Tensor, Var};
use petgraph::graph::NodeIndex;

use super::bounds::{strict_max, Bounds};
use super::input_set::InputSet;
use super::model::Model;
use super::objective::objective;
use crate::error::{Context, Result};
use crate::ops::Relaxation;

/// Examples optimised together: autograd keeps every adjoint `[B, K, *shape]` of the dual pass, so the memory
/// grows with this (on `mnist_small`, 25 examples per worker at once peaked at 3.3 GB; chunks of 4 stay near
/// 300 MB, measured with `certify --bound alpha --limit 200`).
pub const CHUNK: usize = 4;

/// Margins `[B, K]` for the objectives `c: [B, K, *out]` with optimised lower slopes, [`CHUNK`] examples at a
/// time.
pub fn optimised_margins(
    model: &Model,
    set: &InputSet,
    bounds: &Bounds,
    c: &Tensor,
    start: &Tensor,
    iters: usize,
    lr: f64,
) -> Result<Tensor> {
    let ctx = || "optimising the lower slopes".to_string();
    let b = c.dims()[0];
    if b <= CHUNK {
        return optimise_chunk(model, set, bounds, c, start, iters, lr);
    }
    let mut parts = Vec::new();
    for s in (0..b).step_by(CHUNK) {
        let n = CHUNK.min(b - s);
        let sub = Bounds {
            layers: bounds
                .layers
                .iter()
                .map(|(z, l, u)| Ok((*z, l.narrow(0, s, n)?, u.narrow(0, s, n)?)))
                .collect::<candle_core::Result<_>>()
                .context(ctx)?,
            relax: bounds
                .relax
                .iter()
                .map(|(i, r)| Ok((*i, r.narrow(s, n)?)))
                .collect::<candle_core::Result<_>>()
                .context(ctx)?,
            finite: Vec::new(),
        };
        let cs = c.narrow(0, s, n).context(ctx)?;
        let st = start.narrow(0, s, n).context(ctx)?;
        parts.push(optimise_chunk(model, &set.narrow(s, n)?, &sub, &cs, &st, iters, lr)?);
    }
    Tensor::cat(&parts, 0).context(ctx)
}

fn optimise_chunk(
    model: &Model,
    set: &InputSet,
    bounds: &Bounds,
    c: &Tensor,
    start: &Tensor,
    iters: usize,
    lr: f64,
) -> Result<Tensor> {
    let ctx = || "optimising the lower slopes".to_string();
    let (b, k) = (c.dims()[0], c.dims()[1]);
    // The paper's objective on the same bounds: the result is never below it either.
    let single = Bounds {
        layers: Vec::new(),
        relax: bounds.relax.iter().map(|(i, r)| (*i, r.single_slope())).collect(),
        finite: Vec::new(),
    };
    let mut best = strict_max(start, &objective(model, set, &single, c)?).context(ctx)?;
    // Free slopes: per activation with its own lower line, the crossing mask, the fixed slopes of the other
    // units (1 active, 0 inactive; zero on crossing units) and the parameter.
    let mut free: Vec<(NodeIndex, Tensor, Tensor, Var)> = Vec::new();
    for (&i, r) in &bounds.relax {
        let Some(al) = &r.lower else { continue };
        let z = model.graph.node(i).inputs[0];
        let Some((l, u)) = bounds.of(z) else { continue };
        let zero = l.zeros_like().context(ctx)?;
        let crossing = (l.lt(&zero).context(ctx)? * u.gt(&zero).context(ctx)?).context(ctx)?;
        let expand = |t: &Tensor| -> candle_core::Result<Tensor> {
            let mut shape = vec![b, k];
            shape.extend_from_slice(&t.dims()[1..]);
            t.unsqueeze(1)?.broadcast_as(shape)?.contiguous()
        };
        let mask = expand(&crossing.to_dtype(l.dtype()).context(ctx)?).context(ctx)?;
        let init = expand(al).context(ctx)?;
        let fixed = (1.0 - &mask).and_then(|m| init.mul(&m)).context(ctx)?;
        free.push((i, mask, fixed, Var::from_tensor(&init).context(ctx)?));
    }
    if free.is_empty() || iters == 0 {
        return Ok(best);
    }
    let (b1, b2, eps) = (0.9, 0.999, 1e-8);
    let mut moments: Vec<(Tensor, Tensor)> = free
        .iter()
        .map(|(_, _, _, v)| Ok((v.as_tensor().zeros_like()?, v.as_tensor().zeros_like()?)))
        .collect::<candle_core::Result<_>>()
        .context(ctx)?;
    for t in 1..=iters {
        let mut relax: HashMap<NodeIndex, Relaxation> = bounds.relax.clone();
        for (i, mask, fixed, v) in &free {
            // The parameter stays in [0, 1] (projected after each step); crossing units take it.
            let lower = v.as_tensor().mul(mask).and_then(|a| a + fixed).context(ctx)?;
            if let Some(r) = relax.get_mut(i) {
                r.lower = Some(lower);
            }
        }
        let j = objective(model, set, &Bounds { layers: Vec::new(), relax, finite: Vec::new() }, c)?;
        best = strict_max(&best, &j.detach()).context(ctx)?;
        if t == iters {
            break;
        }
        let grads = j.sum_all().and_then(|s| s.backward()).context(ctx)?;
        for ((_, _, _, v), (m, s)) in free.iter().zip(moments.iter_mut()) {
            let Some(g) = grads.get(v.as_tensor()) else { continue };
            // A non-finite gradient is an artefact of the optimisation (e.g. the ℓ2 norm's `sqrt` at 0 on the
            // zero objective row), not a bound: that entry does not move.
            let zero = g.zeros_like().context(ctx)?;
            let g = &(g - g).and_then(|d| d.eq(&zero)).and_then(|ok| ok.where_cond(g, &zero)).context(ctx)?;
            *m = ((&*m * b1).context(ctx)? + (g * (1.0 - b1)).context(ctx)?).context(ctx)?;
            *s = ((&*s * b2).context(ctx)? + (g.sqr().context(ctx)? * (1.0 - b2)).context(ctx)?).context(ctx)?;
            let mh = (&*m / (1.0 - b1.powi(t as i32))).context(ctx)?;
            let sh = (&*s / (1.0 - b2.powi(t as i32))).context(ctx)?;
            // Ascent on J, then the projection onto [0, 1].
            let step = (mh / (sh.sqrt().context(ctx)? + eps).context(ctx)?).context(ctx)?;
            let next = (v.as_tensor() + (step * lr).context(ctx)?).and_then(|x| x.clamp(0.0, 1.0)).context(ctx)?;
            v.set(&next).context(ctx)?;
        }
    }
    Ok(best)
}
