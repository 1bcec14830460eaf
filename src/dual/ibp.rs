//! Interval bound propagation (Gowal et al. 2018): every node's value over the input set lies in a box
//! `center ± radius`, pushed forward op by op with each op's interval rule ([`crate::ops::OpExec::linear_abs`]
//! for affine ops: `A c + b ± |A| r`; [`crate::ops::OpExec::interval`] for activations). The ℓ2 ball is
//! enclosed in the ℓ∞ ball of the same radius.
//!
//! Every rounding is paid for (item 2 of [`super::rounding`]): the bounds hold in real arithmetic.
//!
//! Shapes: every node's `(lower, upper)` is `[B, *shape_n]`. Cost: three forward passes of the network.

use candle_core::Tensor;
use petgraph::graph::NodeIndex;

use super::input_set::InputSet;
use super::model::Model;
use super::rounding;
use crate::error::{Context, Error, Result};
use crate::ir::NodeKind;
use crate::ops::Role;

/// `(lower, upper)` of every node (index = node index) over `set`.
pub fn interval_bounds(model: &Model, set: &InputSet) -> Result<Vec<Option<(Tensor, Tensor)>>> {
    let g = &model.graph;
    let ctx_in = || "interval bounds of the input".to_string();
    let (c0, r0) = match set {
        InputSet::Box { center, radius } => (center.clone(), radius.clone()),
        InputSet::L2 { center, eps } => {
            let mut shape = vec![center.dims()[0]];
            shape.extend(std::iter::repeat_n(1, center.rank() - 1));
            let r = eps.reshape(shape).and_then(|e| e.broadcast_as(center.shape())).context(ctx_in)?;
            (center.clone(), r.contiguous().context(ctx_in)?)
        }
    };
    // Centers and radii, index = node index.
    let mut cr: Vec<Option<(Tensor, Tensor)>> = vec![None; g.dag.node_count()];
    for i in g.order() {
        let node = g.node(i);
        let ctx_err = || format!("interval bounds at `{}`", node.name);
        let v = match node.kind {
            NodeKind::Input => (c0.clone(), r0.clone()),
            NodeKind::Op(op) => {
                let ctx = model.ctx(i);
                let ins: Vec<&(Tensor, Tensor)> = node.inputs.iter().filter_map(|j| cr[j.index()].as_ref()).collect();
                if ins.len() != node.inputs.len() {
                    return Err(Error::Usage("internal: interval of an input missing".into()));
                }
                match op.role() {
                    Role::Affine => {
                        let cs: Vec<Tensor> = ins.iter().map(|(c, _)| c.clone()).collect();
                        let bias = op.bias(&ctx)?;
                        let mut c = op.linear(&ctx, &cs)?;
                        if let Some(b) = &bias {
                            c = c.broadcast_add(b).context(ctx_err)?;
                        }
                        // Rounding (item 2 of [`super::rounding`]): `γ (|A| (|c| + r) + |b|)` plus the bias error.
                        // One `|A|` call for both products, `[r; |c| + r]` stacked on the batch axis.
                        let stacked: Vec<Tensor> = ins
                            .iter()
                            .map(|(c, r)| Tensor::cat(&[r, &(c.detach().abs()? + r.detach())?], 0))
                            .collect::<candle_core::Result<_>>()
                            .context(ctx_err)?;
                        let both = op.linear_abs(&ctx, &stacked)?;
                        let nb = both.dims()[0] / 2;
                        let ar = both.narrow(0, 0, nb).context(ctx_err)?;
                        let mut m = both.narrow(0, nb, nb).context(ctx_err)?;
                        if let Some(b) = &bias {
                            m = m.broadcast_add(&b.abs().context(ctx_err)?).context(ctx_err)?;
                        }
                        let g = rounding::charge_gamma(op.terms(&ctx) + 1, m.dtype());
                        let mut r = (ar + (m * g).context(ctx_err)?).context(ctx_err)?;
                        if let Some(e) = op.bias_error(&ctx)? {
                            r = r.broadcast_add(&e).context(ctx_err)?;
                        }
                        (c, rounding::inflate(&r, 2).context(ctx_err)?)
                    }
                    Role::Activation => {
                        let (c, r) = ins[0];
                        let go = || rounding::widen_interval(&(c - r)?, &(c + r)?);
                        let (l, u) = go().context(ctx_err)?;
                        let (lo, hi) = rounding::interval_sound(model, i, &l, &u)?;
                        rounding::center_radius(&lo, &hi).context(ctx_err)?
                    }
                    Role::Unsupported => return Err(Error::Usage(format!("`{}` has no dual rule", op.name()))),
                }
            }
        };
        cr[i.index()] = Some(v);
    }
    cr.into_iter()
        .map(|v| match v {
            Some((c, r)) => {
                let go = || rounding::widen_interval(&(&c - &r)?, &(&c + &r)?);
                Ok(Some(go().context(|| "interval bounds".to_string())?))
            }
            None => Ok(None),
        })
        .collect()
}

/// Interval bounds and extra points of every node, **packed** (see [`crate::kernels::interval`]): node `n`'s
/// value is `[S·B, *shape_n]`, slice 0 the box centre, slices `1..points` the extra points (pushed through the
/// plain network), slice `points` the radius. One op call per node carries them all (fused kernels where the op
/// has one), so this is the cheap form for training; certification uses [`interval_bounds`].
pub struct Packed {
    /// Index = node index.
    pub vals: Vec<Option<Tensor>>,
    /// Point slices: the centre plus the extra points.
    pub points: usize,
    /// Rows per slice (`B`).
    pub rows: usize,
}

/// [`Packed`] bounds over the box `center ± radius` (both `[B, *in]`), with `extra` points (each `[B, *in]`,
/// such as the clean inputs) pushed through the network alongside.
pub fn packed_bounds(model: &Model, center: &Tensor, radius: &Tensor, extra: &[&Tensor]) -> Result<Packed> {
    let g = &model.graph;
    let ctx_in = || "packing the input box".to_string();
    let rows = center.dims().first().copied().unwrap_or(0);
    let mut parts = vec![center.to_dtype(model.dtype).context(ctx_in)?];
    for x in extra {
        parts.push(x.to_dtype(model.dtype).context(ctx_in)?);
    }
    parts.push(radius.to_dtype(model.dtype).context(ctx_in)?);
    let input = Tensor::cat(&parts, 0).context(ctx_in)?;
    let points = 1 + extra.len();
    let mut vals: Vec<Option<Tensor>> = vec![None; g.dag.node_count()];
    for i in g.order() {
        let node = g.node(i);
        let v = match node.kind {
            NodeKind::Input => input.clone(),
            NodeKind::Op(op) => {
                let ins: Vec<Tensor> = node.inputs.iter().filter_map(|j| vals[j.index()].clone()).collect();
                if ins.len() != node.inputs.len() {
                    return Err(Error::Usage("internal: packed interval of an input missing".into()));
                }
                op.interval_packed(&model.ctx(i), &ins, points)?
            }
        };
        vals[i.index()] = Some(v);
    }
    Ok(Packed { vals, points, rows })
}

impl Packed {
    /// Slice `k` (`0..=points`) of node `i`: `[B, *shape_i]`.
    pub fn slice(&self, i: NodeIndex, k: usize) -> Result<Tensor> {
        let v = self.vals[i.index()].as_ref().ok_or_else(|| Error::Usage("internal: packed value missing".into()))?;
        v.narrow(0, k * self.rows, self.rows).context(|| "slicing packed bounds".to_string())
    }

    /// `(lower, upper)` of node `i`.
    pub fn bounds(&self, i: NodeIndex) -> Result<(Tensor, Tensor)> {
        let (c, r) = (self.slice(i, 0)?, self.slice(i, self.points)?);
        let ctx = || "packed bounds".to_string();
        Ok(((&c - &r).context(ctx)?, (&c + &r).context(ctx)?))
    }

    /// Lower bounds of `c_r · f(x')` for the specification rows `c: [B, K, out]`, `[B, K]`: the affine ops at
    /// the end of the network are folded into the rows (the dual rule run back until an activation or the
    /// input), and each such node's box then gives `λ · centre − |λ| · radius`. This is the interval objective
    /// of [`super::objective::objective`] with the constant relaxations (IBP with the last layer folded into the
    /// margin).
    pub fn margins(&self, model: &Model, c: &Tensor) -> Result<Tensor> {
        use crate::kernels::rowsum::weighted_row_sums;
        let g = &model.graph;
        let start = g.output;
        let (b, k) = (c.dims()[0], c.dims()[1]);
        let mut lambda: Vec<Option<Tensor>> = vec![None; g.dag.node_count()];
        lambda[start.index()] = Some(c.to_dtype(model.dtype).context(|| "specification matrix".to_string())?);
        let zero = Tensor::zeros((b, k), model.dtype, c.device()).context(|| "interval objective".to_string())?;
        let (mut lin, mut rad) = (zero.clone(), zero);
        let order: Vec<NodeIndex> = g.order().take(start.index() + 1).collect();
        for &i in order.iter().rev() {
            let Some(lam) = lambda[i.index()].take() else { continue };
            let node = g.node(i);
            let ctx_err = || format!("interval objective at `{}`", node.name);
            match node.kind.op() {
                Some(op) if op.role() == Role::Affine => {
                    let ctx = model.ctx(i);
                    if let Some(bias) = op.bias(&ctx)? {
                        lin = (lin + weighted_row_sums(&lam, &bias, false).context(ctx_err)?).context(ctx_err)?;
                    }
                    let mut flat_shape = vec![b * k];
                    flat_shape.extend_from_slice(&node.shape);
                    let contribs = op.transpose(&ctx, &lam.reshape(flat_shape).context(ctx_err)?)?;
                    for (inp, t) in node.inputs.iter().zip(contribs) {
                        let mut shape = vec![b, k];
                        shape.extend_from_slice(&g.node(*inp).shape);
                        let t = t.reshape(shape).context(ctx_err)?;
                        super::objective::accumulate(&mut lambda, *inp, t).context(ctx_err)?;
                    }
                }
                _ => {
                    let (cn, rn) = (self.slice(i, 0)?, self.slice(i, self.points)?);
                    lin = (lin + weighted_row_sums(&lam, &cn, false).context(ctx_err)?).context(ctx_err)?;
                    rad = (rad + weighted_row_sums(&lam, &rn, true).context(ctx_err)?).context(ctx_err)?;
                }
            }
        }
        (lin - rad).context(|| "interval objective".to_string())
    }
}
