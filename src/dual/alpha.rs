//! Optimised relaxations (α-CROWN, Xu et al. 2021) for the margin objectives and the intermediate bounds.
//!
//! Every lower line `a_l · z` of a crossing ReLU (`l < 0 < u`) is a valid lower bound of `relu(z)` for any
//! `a_l` in the op's range ([`crate::ops::OpExec::lower_slope_range`], `[0, 1]` for the ReLU). Likewise every
//! tangent of an S-shaped activation (`tanh`, `sigmoid`) at a point of its valid range
//! ([`crate::ops::OpExec::tangents`]: `[l, u]` on a convex or concave piece, out from CROWN's point on a mixed
//! one) is a valid lower or upper line; the point is `from + θ · width` with `θ ∈ [0, 1]`. So `J(c; α)`, the
//! dual objective ([`super::objective`]) with those lines, is a valid lower bound on `c·f(x')` for every α, and
//! each objective row may use its own α: every parameter is `[B, K, *shape]` per activation, one per example,
//! objective row and unit. Starting from CROWN's choice, `iters` steps of projected gradient ascent (Adam, step
//! `lr`, projection onto the range) raise `Σ J`; the result is, per example and row, the best bound met along
//! the way.
//!
//! 1. **Intermediate bounds.** For each activation input `z` whose bounds come from the dual network run
//!    backwards from it ([`super::bounds::backward_layers`], the narrow layers: a backward pass costs one row
//!    per unit), the rows `±e_j` of the units that cross zero in some example of the chunk are optimised with
//!    the slopes of the activations before `z`: `l_j = max(l_j, J(e_j))`, `u_j = min(u_j, −J(−e_j))`. The
//!    activation after `z` is relaxed again on the tighter bounds, before the next layer and the margins. Wide
//!    layers (the convolutions' outputs) keep the `crown` bounds: one row per unit would cost hundreds of
//!    margin passes.
//! 2. **Margins.** The margin rows `c = e_y − e_j` with the slopes of every activation. The margin is never
//!    below `start` (the caller's CROWN-and-interval margin) nor below the paper's objective on the same layer
//!    bounds.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Tensor, Var};
use petgraph::graph::NodeIndex;

use super::bounds::{strict_max, Bounds};
use super::input_set::InputSet;
use super::model::Model;
use super::objective::{dual_pass_recording, objective};
use crate::error::{Context, Error, Result};
use crate::ops::{Family, Lines, Relaxation, Role};

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
    let ctx = || "optimising the relaxations (alpha)".to_string();
    let b = c.dims()[0];
    let mut parts = Vec::new();
    for s in (0..b).step_by(CHUNK) {
        let n = CHUNK.min(b - s);
        let mut sub = Bounds {
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
            mags: bounds.mags.as_ref().map(|m| m.narrow(s, n)).transpose().context(ctx)?,
        };
        let set = set.narrow(s, n)?;
        let cs = c.narrow(0, s, n).context(ctx)?;
        let st = start.narrow(0, s, n).context(ctx)?;
        tighten(model, &set, &mut sub, iters, lr)?;
        parts.push(optimise_margins(model, &set, &sub, &cs, &st, iters, lr)?);
    }
    Tensor::cat(&parts, 0).context(ctx)
}

fn optimise_margins(
    model: &Model,
    set: &InputSet,
    bounds: &Bounds,
    c: &Tensor,
    start: &Tensor,
    iters: usize,
    lr: f64,
) -> Result<Tensor> {
    let ctx = || "optimising the relaxations (alpha)".to_string();
    // The paper's objective on the same bounds: the result is never below it either.
    let single = Bounds {
        layers: Vec::new(),
        relax: bounds.relax.iter().map(|(i, r)| (*i, r.single_slope())).collect(),
        finite: Vec::new(),
        mags: bounds.mags.clone(),
    };
    let best = strict_max(start, &objective(model, set, &single, c)?).context(ctx)?;
    match ascend(model, set, bounds, model.graph.output, c, iters, lr, None, None, None)? {
        Some((j, _)) => strict_max(&best, &j).context(ctx),
        None => Ok(best),
    }
}

/// Step 1 of the module doc: optimise the bounds of every narrow activation input, in topological order, and
/// relax its activations again on them. Every layer bound stays inside the one it had.
pub fn tighten(model: &Model, set: &InputSet, bounds: &mut Bounds, iters: usize, lr: f64) -> Result<()> {
    tighten_until(model, set, bounds, iters, lr, None)
}

/// [`tighten`], stopping with [`Error::Deadline`] once `deadline` has passed (checked at every ascent step).
pub fn tighten_until(
    model: &Model,
    set: &InputSet,
    bounds: &mut Bounds,
    iters: usize,
    lr: f64,
    deadline: Option<Instant>,
) -> Result<()> {
    for z in super::bounds::backward_layers(model) {
        tighten_layer(model, set, bounds, z, iters, lr, deadline)?;
    }
    Ok(())
}

/// A tensor's entries on the host, flat, in float64.
fn host_f64(t: &Tensor) -> candle_core::Result<Vec<f64>> {
    t.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

/// Rows of one ascent in [`tighten_layer`]: autograd keeps every row's adjoint at every node (about four copies
/// with the gradients and Adam's moments), within [`super::bounds::CROWN_LAYER_BYTES`].
fn rows_per_ascent(model: &Model, examples: usize) -> usize {
    let elems: usize = model.graph.order().map(|i| model.graph.node(i).shape.iter().product::<usize>()).sum();
    let per_row = 4.0 * 4.0 * elems.max(1) as f64 * examples.max(1) as f64;
    ((super::bounds::CROWN_LAYER_BYTES / per_row).floor() as usize).max(2)
}

/// Tighten the bounds of activation input `z` (see the module doc, step 1) and relax its activations again.
fn tighten_layer(
    model: &Model,
    set: &InputSet,
    bounds: &mut Bounds,
    z: NodeIndex,
    iters: usize,
    lr: f64,
    deadline: Option<Instant>,
) -> Result<()> {
    let g = &model.graph;
    let ctx = || format!("optimising the bounds of `{}`", g.node(z).name);
    let Some(pos) = bounds.layers.iter().position(|(n, _, _)| *n == z) else { return Ok(()) };
    let (l, u) = (bounds.layers[pos].1.clone(), bounds.layers[pos].2.clone());
    let (b, shape) = (l.dims()[0], l.dims()[1..].to_vec());
    let n: usize = shape.iter().product();
    let (mut lh, mut uh) = (host_f64(&l).context(ctx)?, host_f64(&u).context(ctx)?);
    let crossing: Vec<usize> = (0..n).filter(|&j| (0..b).any(|e| lh[e * n + j] < 0.0 && uh[e * n + j] > 0.0)).collect();
    if crossing.is_empty() {
        return Ok(());
    }
    let mut changed = false;
    for units in crossing.chunks((rows_per_ascent(model, b) / 2).max(1)) {
        changed |= tighten_units(model, set, bounds, z, &l, units, (&mut lh, &mut uh), iters, lr, deadline)?;
    }
    if !changed {
        return Ok(());
    }
    let back =
        |v: Vec<f64>| -> candle_core::Result<Tensor> { Tensor::from_vec(v, l.dims(), l.device())?.to_dtype(l.dtype()) };
    let (l, u) = (back(lh).context(ctx)?, back(uh).context(ctx)?);
    for (a, _) in g.consumers(z) {
        let Some(op) = g.node(a).kind.op().filter(|op| op.role() == Role::Activation) else { continue };
        let _ = op;
        let r = super::rounding::relax_sound(model, a, &l, &u, Family::Alpha)?;
        bounds.relax.insert(a, r);
    }
    bounds.layers[pos] = (z, l, u);
    Ok(())
}

/// One ascent of [`tighten_layer`] for the crossing `units` of `z` (`l` the layer's bounds as a tensor, `lh`,
/// `uh` on the host, raised and lowered in place); whether any bound moved.
#[allow(clippy::too_many_arguments)]
fn tighten_units(
    model: &Model,
    set: &InputSet,
    bounds: &Bounds,
    z: NodeIndex,
    l: &Tensor,
    units: &[usize],
    (lh, uh): (&mut [f64], &mut [f64]),
    iters: usize,
    lr: f64,
    deadline: Option<Instant>,
) -> Result<bool> {
    let g = &model.graph;
    let ctx = || format!("optimising the bounds of `{}`", g.node(z).name);
    let (b, shape) = (l.dims()[0], l.dims()[1..].to_vec());
    let n: usize = shape.iter().product();
    let m = units.len();
    // Rows `e_j` (lower bounds) then `−e_j` (minus the upper bounds), for every crossing unit `j`.
    let mut rows = vec![0f64; b * 2 * m * n];
    for e in 0..b {
        for (r, &j) in units.iter().enumerate() {
            rows[(e * 2 * m + r) * n + j] = 1.0;
            rows[(e * 2 * m + m + r) * n + j] = -1.0;
        }
    }
    let mut c_shape = vec![b, 2 * m];
    c_shape.extend_from_slice(&shape);
    let c = Tensor::from_vec(rows, c_shape, l.device()).and_then(|t| t.to_dtype(l.dtype())).context(ctx)?;
    let Some((j, _)) = ascend(model, set, bounds, z, &c, iters, lr, None, None, deadline)? else { return Ok(false) };
    let jh = host_f64(&j).context(ctx)?;
    let mut changed = false;
    for e in 0..b {
        for (r, &q) in units.iter().enumerate() {
            let (lo, hi) = (jh[e * 2 * m + r], -jh[e * 2 * m + m + r]);
            let (cl, cu) = (&mut lh[e * n + q], &mut uh[e * n + q]);
            let (nl, nu) =
                (if lo.is_finite() { cl.max(lo) } else { *cl }, if hi.is_finite() { cu.min(hi) } else { *cu });
            // Both are valid bounds; rounding could cross them on a unit fixed at one value: keep the old pair.
            if nl <= nu && (nl > *cl || nu < *cu) {
                (*cl, *cu) = (nl, nu);
                changed = true;
            }
        }
    }
    Ok(changed)
}

/// A free lower slope (ReLU-like activations): crossing units take the parameter, the others keep their slope.
struct FreeSlope {
    node: NodeIndex,
    mask: Tensor,
    fixed: Tensor,
    var: usize,
}

/// Free tangent points (S-shaped activations), all `[B, K, *shape]`: each line is the tangent at
/// `from + θ · width` where `free` is 1, the relaxation's own line (`base`) elsewhere.
struct FreeTangent {
    node: NodeIndex,
    base: Lines,
    lo: TangentLine,
    up: TangentLine,
}

struct TangentLine {
    from: Tensor,
    width: Tensor,
    free: Tensor,
    var: usize,
}

impl FreeTangent {
    /// The two lines at the current parameters.
    fn lines(&self, model: &Model, vars: &[(Var, f64, f64)]) -> Result<Lines> {
        let op = model.graph.node(self.node).kind.op().ok_or_else(|| Error::Usage("internal: not an op".into()))?;
        let mctx = model.ctx(self.node);
        let ctx = || format!("tangent lines of `{}`", model.graph.node(self.node).name);
        let line = |t: &TangentLine| -> Result<(Tensor, Tensor, Tensor)> {
            let at = (vars[t.var].0.as_tensor() * &t.width).and_then(|x| x + &t.from).context(ctx)?;
            op.tangent_line(&mctx, &at)
        };
        // `base + free · (new − base)`: the free units take the tangent, the others keep their line.
        let pick = |free: &Tensor, new: &Tensor, base: &Tensor| (new - base).and_then(|d| d * free)? + base;
        let (ld, loff, ls) = line(&self.lo)?;
        let (ud, uoff, us) = line(&self.up)?;
        let go = || -> candle_core::Result<Lines> {
            Ok(Lines {
                lo_slope: pick(&self.lo.free, &ld, &self.base.lo_slope)?,
                lo_off: pick(&self.lo.free, &(loff - ls)?, &self.base.lo_off)?,
                up_slope: pick(&self.up.free, &ud, &self.base.up_slope)?,
                up_off: pick(&self.up.free, &(uoff + us)?, &self.base.up_off)?,
            })
        };
        go().context(ctx)
    }
}

/// The best `J` (`[B, K]`) met by projected gradient ascent on the free parameters of the activations before
/// `start` (the lower slopes of [`crate::ops::OpExec::lower_slope_range`], the tangent points of
/// [`crate::ops::OpExec::tangents`]), from the relaxations' own (CROWN's) choice, for the rows
/// `c: [B, K, *shape_start]`; `None` when no activation before `start` has a free parameter.
/// Margins `[B, K]` of a batch of branch-and-bound domains with split multipliers (β-CROWN, Wang et al. 2021):
/// `signs[z]` `[B, *shape_z]` is `+1` on the units split active (`z ≥ 0` on the domain), `−1` on those split
/// inactive (`z ≤ 0`), 0 elsewhere. On the domain `c·f(x) ≥ c·f(x) − Σ_j β_j s_j z_j(x)` for every `β ≥ 0`, so
/// the dual objective of the right side (the term injected at `z`, [`dual_pass_recording`]) bounds the margin
/// below for every `β ≥ 0` and every lower slope in range; both are raised by the projected ascent of
/// [`ascend`] (β projected onto `[0, ∞)`), from `β = 0`. Never below `start`.
///
/// `warm` starts the ascent from given parameters (a parent domain's, NaN where there is none: CROWN's slope,
/// β = 0); the result carries the parameters of each row's best bound, for the domain's children.
#[allow(clippy::too_many_arguments)]
pub fn optimised_split_margins(
    model: &Model,
    set: &InputSet,
    bounds: &Bounds,
    c: &Tensor,
    start: &Tensor,
    signs: &HashMap<NodeIndex, Tensor>,
    iters: usize,
    lr: f64,
    warm: Option<&Warm>,
    deadline: Option<Instant>,
) -> Result<(Tensor, Option<Warm>)> {
    let ctx = || "optimising the split multipliers (beta)".to_string();
    match ascend(model, set, bounds, model.graph.output, c, iters, lr, Some(signs), warm, deadline)? {
        Some((j, w)) => Ok((strict_max(start, &j).context(ctx)?, w)),
        None => Ok((start.clone(), None)),
    }
}

/// The free parameters of the margin rows, `[B, K, *shape]` each: the lower slopes per activation node and
/// the split multipliers per split activation input. Any value in range gives a valid bound, so they may
/// start the ascent of another domain with the same rows (NaN entries: the default start).
#[derive(Debug, Clone, Default)]
pub struct Warm {
    pub slopes: HashMap<NodeIndex, Tensor>,
    pub betas: HashMap<NodeIndex, Tensor>,
}

/// `w` where it is a number, else `default`.
fn or_default(w: &Tensor, default: &Tensor) -> candle_core::Result<Tensor> {
    w.eq(w)?.where_cond(w, default)
}

#[allow(clippy::too_many_arguments)]
fn ascend(
    model: &Model,
    set: &InputSet,
    bounds: &Bounds,
    start: NodeIndex,
    c: &Tensor,
    iters: usize,
    lr: f64,
    signs: Option<&HashMap<NodeIndex, Tensor>>,
    warm: Option<&Warm>,
    deadline: Option<Instant>,
) -> Result<Option<(Tensor, Option<Warm>)>> {
    // Only the split margins hand their parameters on (to a domain's children); elsewhere the best-parameter
    // bookkeeping would be work on the hot path for nothing.
    let keep_params = signs.is_some();
    let ctx = || "optimising the relaxations (alpha)".to_string();
    let (b, k) = (c.dims()[0], c.dims()[1]);
    let expand = |t: &Tensor| -> candle_core::Result<Tensor> {
        let mut shape = vec![b, k];
        shape.extend_from_slice(&t.dims()[1..]);
        t.unsqueeze(1)?.broadcast_as(shape)?.contiguous()
    };
    // The parameters with their ranges, and what each activation makes of them.
    let mut vars: Vec<(Var, f64, f64)> = Vec::new();
    let mut slopes: Vec<FreeSlope> = Vec::new();
    let mut tangents: Vec<FreeTangent> = Vec::new();
    for (&i, r) in &bounds.relax {
        if i.index() >= start.index() {
            continue;
        }
        let Some(op) = model.graph.node(i).kind.op() else { continue };
        let z = model.graph.node(i).inputs[0];
        let Some((l, u)) = bounds.of(z) else { continue };
        if let (Some(al), Some((lo, hi))) = (&r.lower, op.lower_slope_range(&model.ctx(i))) {
            // Per activation with its own lower line: the crossing mask, the fixed slopes of the other units
            // (zero on crossing units), the range, and the parameter.
            let zero = l.zeros_like().context(ctx)?;
            let crossing = (l.lt(&zero).context(ctx)? * u.gt(&zero).context(ctx)?).context(ctx)?;
            let mask = expand(&crossing.to_dtype(l.dtype()).context(ctx)?).context(ctx)?;
            let init = expand(al).context(ctx)?;
            let fixed = (1.0 - &mask).and_then(|m| init.mul(&m)).context(ctx)?;
            let init = match warm.and_then(|w| w.slopes.get(&i)) {
                Some(w) => or_default(w, &init).and_then(|w| w.clamp(lo, hi)).context(ctx)?,
                None => init,
            };
            vars.push((Var::from_tensor(&init).context(ctx)?, lo, hi));
            slopes.push(FreeSlope { node: i, mask, fixed, var: vars.len() - 1 });
        } else if let Some(base) = &r.lines {
            let Some(t) = op.tangents(&model.ctx(i), l, u)? else { continue };
            let mut line = |from: &Tensor, width: &Tensor, free: &Tensor, init: &Tensor| -> Result<TangentLine> {
                let e = |t: &Tensor| expand(t).context(ctx);
                vars.push((Var::from_tensor(&e(init)?).context(ctx)?, 0.0, 1.0));
                Ok(TangentLine { from: e(from)?, width: e(width)?, free: e(free)?, var: vars.len() - 1 })
            };
            let lo = line(&t.lo_from, &t.lo_width, &t.lo_free, &t.lo_init)?;
            let up = line(&t.up_from, &t.up_width, &t.up_free, &t.up_init)?;
            let base = Lines {
                lo_slope: expand(&base.lo_slope).context(ctx)?,
                lo_off: expand(&base.lo_off).context(ctx)?,
                up_slope: expand(&base.up_slope).context(ctx)?,
                up_off: expand(&base.up_off).context(ctx)?,
            };
            tangents.push(FreeTangent { node: i, base, lo, up });
        }
    }
    // Split multipliers: one per example, row and unit of every split layer, from 0, kept `≥ 0`.
    let mut betas: Vec<(NodeIndex, Tensor, usize)> = Vec::new();
    for (&z, s) in signs.into_iter().flatten() {
        if z.index() >= start.index() {
            continue;
        }
        let s = expand(s).context(ctx)?;
        let zero = s.zeros_like().context(ctx)?;
        let init = match warm.and_then(|w| w.betas.get(&z)) {
            Some(w) => or_default(w, &zero).and_then(|w| w.clamp(0.0, f64::INFINITY)).context(ctx)?,
            None => zero,
        };
        vars.push((Var::from_tensor(&init).context(ctx)?, 0.0, f64::INFINITY));
        betas.push((z, s, vars.len() - 1));
    }
    if vars.is_empty() || iters == 0 {
        return Ok(None);
    }
    let (b1, b2, eps) = (0.9, 0.999, 1e-8);
    let mut moments: Vec<(Tensor, Tensor)> = vars
        .iter()
        .map(|(v, ..)| Ok((v.as_tensor().zeros_like()?, v.as_tensor().zeros_like()?)))
        .collect::<candle_core::Result<_>>()
        .context(ctx)?;
    let mut best: Option<Tensor> = None;
    let mut kept: Vec<Tensor> = Vec::new();
    for t in 1..=iters {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::Deadline);
        }
        let mut relax: HashMap<NodeIndex, Relaxation> = bounds.relax.clone();
        for f in &slopes {
            // The parameter stays in its range (projected after each step); crossing units take it.
            let lower = vars[f.var].0.as_tensor().mul(&f.mask).and_then(|a| a + &f.fixed).context(ctx)?;
            if let Some(r) = relax.get_mut(&f.node) {
                r.lower = Some(lower);
            }
        }
        for f in &tangents {
            let lines = f.lines(model, &vars)?;
            if let Some(r) = relax.get_mut(&f.node) {
                r.lines = Some(lines);
            }
        }
        let inject: HashMap<NodeIndex, Tensor> = betas
            .iter()
            .map(|(z, s, v)| Ok((*z, vars[*v].0.as_tensor().mul(s)?.neg()?)))
            .collect::<candle_core::Result<_>>()
            .context(ctx)?;
        let (lin, rad) = dual_pass_recording(
            model,
            set,
            &relax,
            bounds.mags.as_ref(),
            start,
            c,
            None,
            (!inject.is_empty()).then_some(&inject),
        )?;
        let j = (lin - rad).context(ctx)?;
        let jd = j.detach();
        match &best {
            _ if !keep_params => {}
            None => kept = vars.iter().map(|(v, ..)| v.as_tensor().detach()).collect(),
            Some(bst) => {
                // The parameters of each row's best bound so far (a NaN bound never counts as better).
                let better = jd.gt(bst).context(ctx)?;
                for ((v, ..), k) in vars.iter().zip(kept.iter_mut()) {
                    let dims = v.as_tensor().dims().to_vec();
                    let mut m = better.clone();
                    while m.rank() < dims.len() {
                        m = m.unsqueeze(m.rank()).context(ctx)?;
                    }
                    let m = m.broadcast_as(dims).context(ctx)?;
                    *k = m.where_cond(&v.as_tensor().detach(), k).context(ctx)?;
                }
            }
        }
        best = Some(match &best {
            None => jd,
            Some(bst) => strict_max(bst, &jd).context(ctx)?,
        });
        if t == iters {
            break;
        }
        let grads = j.sum_all().and_then(|s| s.backward()).context(ctx)?;
        for ((v, lo, hi), (m, s)) in vars.iter().zip(moments.iter_mut()) {
            let Some(g) = grads.get(v.as_tensor()) else { continue };
            // A non-finite gradient is an artefact of the optimisation (e.g. the ℓ2 norm's `sqrt` at 0 on the
            // zero objective row), not a bound: that entry does not move.
            let zero = g.zeros_like().context(ctx)?;
            let g = &(g - g).and_then(|d| d.eq(&zero)).and_then(|ok| ok.where_cond(g, &zero)).context(ctx)?;
            *m = ((&*m * b1).context(ctx)? + (g * (1.0 - b1)).context(ctx)?).context(ctx)?;
            *s = ((&*s * b2).context(ctx)? + (g.sqr().context(ctx)? * (1.0 - b2)).context(ctx)?).context(ctx)?;
            let mh = (&*m / (1.0 - b1.powi(t as i32))).context(ctx)?;
            let sh = (&*s / (1.0 - b2.powi(t as i32))).context(ctx)?;
            // Ascent on J, then the projection onto the range.
            let step = (mh / (sh.sqrt().context(ctx)? + eps).context(ctx)?).context(ctx)?;
            let next = (v.as_tensor() + (step * lr).context(ctx)?).and_then(|x| x.clamp(*lo, *hi)).context(ctx)?;
            v.set(&next).context(ctx)?;
        }
    }
    let Some(best) = best else { return Ok(None) };
    if !keep_params {
        return Ok(Some((best, None)));
    }
    let mut w = Warm::default();
    for f in &slopes {
        w.slopes.insert(f.node, kept[f.var].clone());
    }
    for (z, _, v) in &betas {
        w.betas.insert(*z, kept[*v].clone());
    }
    Ok(Some((best, Some(w))))
}
