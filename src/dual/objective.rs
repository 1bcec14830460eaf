//! The dual network proper (paper Theorem 1, Figure 1): the objective `J(c)` — a lower bound on `c·f(x')` over the
//! input set — computed by running the network backwards, one dual rule per op, in reverse topological order.
//!
//! With `λ_n` the adjoint at node `n`'s output (the paper's `-ν_n`), seeded `λ_out = c`:
//! - affine op `m` (`y = A x + b`): `λ_in += Aᵀ λ_m` (its dual rule), and `J += λ_m · b`;
//! - activation `m` with relaxation `a = d z + δ`, `δ ∈ [mid - rad, mid + rad]`: `λ_z += d ⊙ λ_m`, and
//!   `J += λ_m · mid - |λ_m| · rad` (for ReLU this is the paper's `Σ_{crossing} l_j [ν_j]_+`); with a lower line
//!   of its own slope `a_l` (CROWN), `λ_z += a_l ⊙ [λ_m]_+ + d ⊙ [λ_m]_-` and the same offset term;
//! - a node with several consumers sums their contributions (skip connections reversed);
//! - the input: `J += λ_x · center - Σ |λ_x| radius` (ℓ∞ / box) or `- ε ‖λ_x‖_2` (ℓ2).
//!
//! Shapes: `c` is `[B, K, *out]` (K objectives per example); every `λ_n` is `[B, K, *shape_n]`; `J` is `[B, K]`.

use candle_core::Tensor;
use petgraph::graph::NodeIndex;

use super::bounds::Bounds;
use super::input_set::InputSet;
use super::model::Model;
use super::rounding::{self, Magnitudes};
use crate::error::{Context, Error, Result};
use crate::ir::NodeKind;
use crate::kernels::rowsum::weighted_row_sums;
use crate::ops::Role;

fn sum_trailing(t: &Tensor) -> candle_core::Result<Tensor> {
    // [B, K, *s] -> [B, K]
    let d = t.dims();
    t.reshape((d[0], d[1], d[2..].iter().product::<usize>()))?.sum(2)
}

/// Whether affine node `i` only moves values (no products, no sums, no bias): its transpose rounds nothing.
fn exact_move(model: &Model, i: NodeIndex, op: &dyn crate::ops::Op) -> Result<bool> {
    let ctx = model.ctx(i);
    Ok(op.terms(&ctx) == 0 && op.bias(&ctx)?.is_none() && op.bias_error(&ctx)?.is_none())
}

/// `J(c)` for every objective row of `c: [B, K, *out]`.
pub fn objective(model: &Model, set: &InputSet, bounds: &Bounds, c: &Tensor) -> Result<Tensor> {
    let (lin, rad) = dual_pass(model, set, &bounds.relax, bounds.mags.as_ref(), model.graph.output, c)?;
    (lin - rad).context(|| "dual objective".to_string())
}

/// The dual network run backwards from node `start` with `λ_start = c` (`c: [B, K, *shape_start]`), using the
/// relaxations in `relax` (every activation before `start` must have one). Returns the two parts of the bound
/// `c·start(x') >= lin - rad` over the input set: `lin` collects the linear terms (biases, relaxation midpoints,
/// the input center) and `rad` the dual-norm terms; since `λ(-c) = -λ(c)`, the upper bound is `lin + rad`.
///
/// With `mags` (sound magnitudes of every node before `start`) the rounding of the whole pass is paid for
/// (item 4 of [`super::rounding`]): the charge is part of `rad`, and `lin ∓ rad` computed in floating point
/// is then a bound in real arithmetic. `None` skips the charges: only for training losses, never for a bound
/// that is reported or acted on.
pub fn dual_pass(
    model: &Model,
    set: &InputSet,
    relax: &std::collections::HashMap<NodeIndex, crate::ops::Relaxation>,
    mags: Option<&Magnitudes>,
    start: NodeIndex,
    c: &Tensor,
) -> Result<(Tensor, Tensor)> {
    dual_pass_recording(model, set, relax, mags, start, c, None, None)
}

/// [`dual_pass`], keeping the adjoint `λ_m` `[B, K, *shape_m]` at every activation node `m` and at the input in
/// `record` (indexed by node): the dual variables that branching heuristics read ([`crate::run::search`]).
///
/// `inject` adds a term `t_n · n(x')` (`t_n: [B, K, *shape_n]`) to the objective at nodes before `start`: the
/// bound is then on `c·start(x') + Σ_n t_n · n(x')`. Branch and bound's split multipliers use it
/// ([`super::alpha::optimised_split_margins`]).
#[allow(clippy::too_many_arguments)]
pub fn dual_pass_recording(
    model: &Model,
    set: &InputSet,
    relax: &std::collections::HashMap<NodeIndex, crate::ops::Relaxation>,
    mags: Option<&Magnitudes>,
    start: NodeIndex,
    c: &Tensor,
    mut record: Option<&mut Vec<Option<Tensor>>>,
    inject: Option<&std::collections::HashMap<NodeIndex, Tensor>>,
) -> Result<(Tensor, Tensor)> {
    let g = &model.graph;
    let (b, k) = (c.dims()[0], c.dims()[1]);
    let n_nodes = g.dag.node_count();
    let mut lambda: Vec<Option<Tensor>> = vec![None; n_nodes];
    lambda[start.index()] = Some(c.clone());
    let mut hits = vec![0usize; n_nodes];
    let injected = |j: NodeIndex| inject.is_some_and(|m| m.contains_key(&j));
    for (j, t) in inject.into_iter().flatten() {
        if j.index() < start.index() {
            hits[j.index()] += 1;
            accumulate(&mut lambda, *j, t.clone()).context(|| "dual objective".to_string())?;
        }
    }
    let zero = Tensor::zeros((b, k), c.dtype(), c.device()).context(|| "dual objective".to_string())?;
    let (mut lin, mut rad) = (zero.clone(), zero.clone());
    let dt = c.dtype();
    // The rounding charge and the magnitude of every term added to `lin` or `rad` (their sums round too).
    let (mut charge, mut terms_abs, mut n_terms) = (zero.clone(), zero, 0usize);
    // Affine nodes whose charge an activation (their one consumer) already took (see below).
    let mut prepaid = vec![false; n_nodes];
    let magnitude = |j: NodeIndex| -> Result<&Tensor> {
        mags.and_then(|m| m.value[j.index()].as_ref())
            .ok_or_else(|| Error::Usage("internal: rounding magnitude missing".into()))
    };
    let order: Vec<NodeIndex> = g.order().take(start.index() + 1).collect();
    for &i in order.iter().rev() {
        let Some(lam) = lambda[i.index()].take() else { continue };
        let node = g.node(i);
        let ctx_err = || format!("dual network at `{}`", node.name);
        let (lin0, rad0) = (lin.clone(), rad.clone());
        let n_here: usize = node.shape.iter().product();
        // The charge weights `w` of this node (`Σ |λ| w` is charged): folded into a sum over `|λ|` the dual
        // network makes anyway where there is one (the input's radius, a relaxation's `rad`), so the charges
        // cost one fused pass over `λ` per affine node and nothing elsewhere.
        let mut charge_w: Option<Tensor> = None;
        if mags.is_some() {
            // The charges are constants to autograd (tiny, and their gradients would only cost).
            let add_w = |acc: Option<Tensor>, w: Tensor| -> candle_core::Result<Option<Tensor>> {
                Ok(Some(match acc {
                    None => w,
                    Some(a) => a.broadcast_add(&w)?,
                }))
            };
            // Adjoints that met here were summed: `γ_{k−1} Σ |λ̃| m`.
            if hits[i.index()] > 1 {
                let w = (magnitude(i)? * rounding::charge_gamma(hits[i.index()], dt)).context(ctx_err)?;
                charge_w = add_w(charge_w, w).context(ctx_err)?;
            }
            let w = match node.kind {
                NodeKind::Input => Some(
                    (magnitude(i)? * rounding::charge_gamma(rounding::sum_terms(n_here) + 2, dt)).context(ctx_err)?,
                ),
                NodeKind::Op(op) => match op.role() {
                    Role::Affine if prepaid[i.index()] => None,
                    // A pure data movement (flatten, transpose, padding: no terms, no bias) rounds nothing.
                    Role::Affine if exact_move(model, i, op)? => None,
                    Role::Affine => {
                        let ctx = model.ctx(i);
                        let image = mags
                            .and_then(|m| m.image[i.index()].as_ref())
                            .ok_or_else(|| Error::Usage("internal: rounding image missing".into()))?;
                        // `image` includes `|b|` and the bias error; the bias sum has `n` terms, the transpose
                        // `transpose_terms`: charge the larger count on all of it.
                        let t = op.transpose_terms(&ctx).max(rounding::sum_terms(n_here)) + 1;
                        Some((image * rounding::charge_gamma(t, dt)).context(ctx_err)?)
                    }
                    _ => None,
                },
            };
            // A deployed inference's own rounding at this node ([`super::deployed`]), unless an activation took
            // it with the node's other charge (`prepaid`).
            if let (Some(own), false) = (mags.and_then(|m| m.own[i.index()].as_ref()), prepaid[i.index()]) {
                charge_w = add_w(charge_w, own.clone()).context(ctx_err)?;
            }
            if let Some(w) = w {
                charge_w = add_w(charge_w, w).context(ctx_err)?;
            }
            if let (NodeKind::Op(op), Some(r)) = (node.kind, relax.get(&i)) {
                if op.role() == Role::Activation {
                    let m_z = magnitude(node.inputs[0])?;
                    let g_n = rounding::charge_gamma(rounding::sum_terms(n_here) + 2, dt);
                    let g_3 = rounding::charge_gamma(4, dt);
                    let per_row = r.lines.is_some()
                        || r.lower.as_ref().is_some_and(|al| al.rank() == lam.rank())
                        || r.slope.rank() == lam.rank()
                        || r.mid.rank() == lam.rank();
                    if !per_row {
                        // One weight per unit: `|slope| m_z γ_3 + (|mid| + rad) γ_n`, `|slope|` the larger of
                        // the two lines' slopes.
                        let smax = || -> candle_core::Result<Tensor> {
                            let slope = r.slope.detach().abs()?;
                            match &r.lower {
                                Some(al) => slope.maximum(&al.detach().abs()?),
                                None => Ok(slope),
                            }
                        };
                        let slope = smax().context(ctx_err)?;
                        let go = || -> candle_core::Result<Tensor> {
                            let offs = (r.mid.detach().abs()? + r.rad.detach())?;
                            (slope.mul(m_z)? * g_3)? + (offs * g_n)?
                        };
                        charge_w = add_w(charge_w, go().context(ctx_err)?).context(ctx_err)?;
                        // The input's charge `γ_t Σ |λ_z| image_z`, paid here: `λ_z` is `fl(slope ⊙ λ)` (or
                        // the lower slope's on `λ ≥ 0`), so `|λ_z| ≤ (1 + 2u) max(|slope|, |lower|) |λ|`, and the
                        // weight joins this node's sum over `|λ|`. Only for an affine input with this node as
                        // its one consumer (no other adjoint meets there).
                        let z = node.inputs[0];
                        if let NodeKind::Op(zop) = g.node(z).kind {
                            let single = g.consumers(z).len() == 1 && z != start && !injected(z);
                            let image = mags.and_then(|m| m.image[z.index()].as_ref());
                            if let (Role::Affine, true, Some(image)) = (zop.role(), single, image) {
                                let zctx = model.ctx(z);
                                let n_z: usize = g.node(z).shape.iter().product();
                                let t = zop.transpose_terms(&zctx).max(rounding::sum_terms(n_z)) + 1;
                                let k = rounding::charge_gamma(t, dt) * (1.0 + 4.0 * rounding::unit(dt));
                                let go = || (&slope * k)?.broadcast_mul(image);
                                charge_w = add_w(charge_w, go().context(ctx_err)?).context(ctx_err)?;
                                if let Some(own) = mags.and_then(|m| m.own[z.index()].as_ref()) {
                                    let go = || (&slope * (1.0 + 4.0 * rounding::unit(dt)))?.broadcast_mul(own);
                                    charge_w = add_w(charge_w, go().context(ctx_err)?).context(ctx_err)?;
                                }
                                prepaid[z.index()] = true;
                            }
                        }
                    } else {
                        let abs_lam = lam.detach().abs().context(ctx_err)?;
                        let r = &crate::ops::Relaxation {
                            slope: r.slope.detach(),
                            mid: r.mid.detach(),
                            rad: r.rad.detach(),
                            lower: r.lower.as_ref().map(|t| t.detach()),
                            lines: r.lines.as_ref().map(|l| crate::ops::Lines {
                                lo_slope: l.lo_slope.detach(),
                                lo_off: l.lo_off.detach(),
                                up_slope: l.up_slope.detach(),
                                up_off: l.up_off.detach(),
                            }),
                            constant: r.constant,
                        };
                        let go = || -> candle_core::Result<Tensor> {
                            let mut offs = (r.mid.abs()? + &r.rad)?;
                            let mut slope = r.slope.abs()?;
                            if let Some(al) = &r.lower {
                                slope = match al.rank() == lam.rank() {
                                    true => al.abs()?.broadcast_maximum(&slope.unsqueeze(1)?)?,
                                    false => slope.maximum(&al.abs()?)?,
                                };
                            }
                            if let Some(ln) = &r.lines {
                                let sl = ln.lo_slope.abs()?.maximum(&ln.up_slope.abs()?)?;
                                let of = ln.lo_off.abs()?.maximum(&ln.up_off.abs()?)?;
                                let per_row = sl.rank() == lam.rank();
                                slope = if per_row {
                                    sl.broadcast_maximum(&slope.unsqueeze(1)?)?
                                } else {
                                    slope.maximum(&sl)?
                                };
                                offs = if of.rank() == lam.rank() {
                                    of.broadcast_add(&offs.unsqueeze(1)?)?
                                } else {
                                    (offs + of)?
                                };
                            }
                            let per_row = slope.rank() == lam.rank() || offs.rank() == lam.rank();
                            if per_row {
                                let mz = m_z.unsqueeze(1)?;
                                let s = slope.broadcast_mul(&mz)?.affine(g_3, 0.0)?;
                                let w = if offs.rank() == lam.rank() {
                                    (offs * g_n)?.broadcast_add(&s)?
                                } else {
                                    s.broadcast_add(&(offs * g_n)?.unsqueeze(1)?)?
                                };
                                abs_lam.broadcast_mul(&w)?.flatten_from(2)?.sum(2)
                            } else {
                                let w = ((slope.mul(m_z)? * g_3)? + (offs * g_n)?)?;
                                weighted_row_sums(&abs_lam, &w, false)
                            }
                        };
                        charge = (charge + go().context(ctx_err)?).context(ctx_err)?;
                    }
                }
            }
        }
        // Where no sum over `|λ|` takes the weights, one pass of their own.
        let fold_here = match node.kind {
            NodeKind::Input => matches!(set, InputSet::Box { .. }),
            NodeKind::Op(op) => {
                op.role() == Role::Activation
                    && relax.get(&i).is_some_and(|r| r.lines.is_none() && r.rad.rank() + 1 == lam.rank())
            }
        };
        if !fold_here {
            if let Some(w) = charge_w.take() {
                charge = (charge + weighted_row_sums(&lam.detach(), &w, true).context(ctx_err)?).context(ctx_err)?;
            }
        }
        // `w` added to the weights of a sum over `|λ|` (a constant to autograd).
        let with_charge = |w: &Tensor| -> Result<Tensor> {
            match &charge_w {
                Some(c) => w.broadcast_add(c).context(ctx_err),
                None => Ok(w.clone()),
            }
        };
        match node.kind {
            NodeKind::Input => {
                if let Some(rec) = record.as_deref_mut() {
                    if rec.len() < n_nodes {
                        rec.resize(n_nodes, None);
                    }
                    rec[i.index()] = Some(lam.detach());
                }
                let center = set.center();
                let l = weighted_row_sums(&lam, center, false).context(ctx_err)?;
                let nrm = match set {
                    InputSet::Box { radius, .. } => {
                        weighted_row_sums(&lam, &with_charge(radius)?, true).context(ctx_err)?
                    }
                    InputSet::L2 { eps, .. } => {
                        let n = sum_trailing(&lam.sqr().context(ctx_err)?).and_then(|s| s.sqrt()).context(ctx_err)?;
                        n.broadcast_mul(&eps.unsqueeze(1).context(ctx_err)?).context(ctx_err)?
                    }
                };
                lin = (lin + l).context(ctx_err)?;
                rad = (rad + nrm).context(ctx_err)?;
            }
            NodeKind::Op(op) => {
                let ctx = model.ctx(i);
                match op.role() {
                    Role::Affine => {
                        if let Some(bias) = op.bias(&ctx)? {
                            lin = (lin + weighted_row_sums(&lam, &bias, false).context(ctx_err)?).context(ctx_err)?;
                        }
                        let mut flat_shape = vec![b * k];
                        flat_shape.extend_from_slice(&node.shape);
                        let flat = lam.reshape(flat_shape).context(ctx_err)?;
                        let contribs = op.transpose(&ctx, &flat)?;
                        for (inp, t) in node.inputs.iter().zip(contribs) {
                            let mut shape = vec![b, k];
                            shape.extend_from_slice(&g.node(*inp).shape);
                            let t = t.reshape(shape).context(ctx_err)?;
                            hits[inp.index()] += 1;
                            accumulate(&mut lambda, *inp, t).context(ctx_err)?;
                        }
                    }
                    Role::Activation => {
                        let r = relax.get(&i).ok_or_else(|| Error::Usage("internal: relaxation missing".into()))?;
                        if let Some(rec) = record.as_deref_mut() {
                            if rec.len() < n_nodes {
                                rec.resize(n_nodes, None);
                            }
                            rec[i.index()] = Some(lam.detach());
                        }
                        // The one place where the adjoint's sign picks the line: a coefficient `λ >= 0` on `σ(z)`
                        // is bounded below by the lower line, `λ < 0` by the upper one.
                        let back = if let Some(ln) = &r.lines {
                            // Two lines with their own offsets: `[λ]₊ (a_l z + b_l) + [λ]₋ (a_u z + b_u)`.
                            let pos = lam.relu().context(ctx_err)?;
                            let neg = (&lam - &pos).context(ctx_err)?;
                            // The lines are `[B, *shape]` (one per unit) or `[B, K, *shape]` (one per objective
                            // row, `alpha`'s tangent points).
                            let per_row = ln.lo_slope.rank() == lam.rank();
                            let dot = |x: &Tensor, w: &Tensor| match per_row {
                                true => x.mul(w)?.flatten_from(2)?.sum(2),
                                false => weighted_row_sums(x, w, false),
                            };
                            let scale = |x: &Tensor, w: &Tensor| match per_row {
                                true => x.mul(w),
                                false => crate::kernels::scale::scale_rows(x, w),
                            };
                            let go = || -> candle_core::Result<(Tensor, Tensor)> {
                                let off = (dot(&pos, &ln.lo_off)? + dot(&neg, &ln.up_off)?)?;
                                let back = (scale(&pos, &ln.lo_slope)? + scale(&neg, &ln.up_slope)?)?;
                                Ok((off, back))
                            };
                            let (off, back) = go().context(ctx_err)?;
                            lin = (lin + off).context(ctx_err)?;
                            back
                        } else {
                            let t1 = weighted_row_sums(&lam, &r.mid, false).context(ctx_err)?;
                            let t2 = weighted_row_sums(&lam, &with_charge(&r.rad)?, true).context(ctx_err)?;
                            lin = (lin + t1).context(ctx_err)?;
                            rad = (rad + t2).context(ctx_err)?;
                            // With one slope for both lines (`lower: None`) this is `slope ⊙ λ`.
                            match &r.lower {
                                None => crate::kernels::scale::scale_rows(&lam, &r.slope),
                                // `a_l` is `[B, *shape]` (one slope per unit) or `[B, K, *shape]` (one per
                                // objective row, optimised by `alpha`).
                                Some(al) => lam.relu().and_then(|pos| {
                                    let neg = (&lam - &pos)?;
                                    let lo = match al.rank() == lam.rank() {
                                        true => pos.mul(al)?,
                                        false => crate::kernels::scale::scale_rows(&pos, al)?,
                                    };
                                    lo + crate::kernels::scale::scale_rows(&neg, &r.slope)?
                                }),
                            }
                            .context(ctx_err)?
                        };
                        // A constant relaxation (slope 0) sends nothing back: the network before it adds nothing.
                        if !(r.constant && r.lines.is_none() && r.lower.is_none()) {
                            hits[node.inputs[0].index()] += 1;
                            accumulate(&mut lambda, node.inputs[0], back).context(ctx_err)?;
                        }
                    }
                    Role::Unsupported => return Err(Error::Usage(format!("`{}` has no dual rule", op.name()))),
                }
            }
        }
        if mags.is_some() {
            // The terms this node added (each `|new − old|` bounds the term up to one rounding).
            let go = || (&lin - &lin0)?.detach().abs()? + (&rad - &rad0)?.detach().abs()?;
            terms_abs = (terms_abs + go().context(ctx_err)?).context(ctx_err)?;
            n_terms += 2;
        }
    }
    if mags.is_none() {
        return Ok((lin, rad));
    }
    // The sums of the terms (`γ_{2·nodes}` of their magnitudes), then the final `lin ∓ rad` rounded outward:
    // `4u (|lin| + |rad| + charge) + η` covers the callers' subtraction and the additions here.
    let fin = || -> candle_core::Result<Tensor> {
        let charge = (charge + (terms_abs * rounding::charge_gamma(n_terms + 2, dt))?)?;
        let charge = rounding::inflate(&charge, 2)?;
        let out = (&rad + &charge)?;
        let slack = ((((lin.detach().abs()? + rad.detach().abs()?)? + &charge)? * (4.0 * rounding::unit(dt)))?
            + rounding::tiny(dt))?;
        // `rad` keeps its gradient; what is added to it is a constant.
        out + slack + (rad.detach().abs()? * (2.0 * rounding::unit(dt)))?
    };
    let rad = fin().context(|| "rounding charge of the dual network".to_string())?;
    Ok((lin, rad))
}

/// Adds `t` to the adjoint of node `i` (or sets it, the first time).
pub(crate) fn accumulate(lambda: &mut [Option<Tensor>], i: NodeIndex, t: Tensor) -> candle_core::Result<()> {
    let slot = &mut lambda[i.index()];
    *slot = Some(match slot.take() {
        Some(prev) => (prev + t)?,
        None => t,
    });
    Ok(())
}

/// `c[b, j] = e_{y_b} - e_j` for all `j` (row `y_b` is zero): `[B, K, K]`.
pub fn margin_objectives(labels: &[u32], k: usize, like: &Tensor) -> Result<Tensor> {
    let b = labels.len();
    let mut data = vec![0f64; b * k * k];
    for (e, &y) in labels.iter().enumerate() {
        for jj in 0..k {
            if jj != y as usize {
                data[(e * k + jj) * k + y as usize] += 1.0;
                data[(e * k + jj) * k + jj] -= 1.0;
            }
        }
    }
    Tensor::from_vec(data, (b, k, k), like.device())
        .and_then(|t| t.to_dtype(like.dtype()))
        .context(|| "building the margin objectives".to_string())
}
