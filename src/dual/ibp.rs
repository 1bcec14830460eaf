//! Interval bound propagation (Gowal et al. 2018): every node's value over the input set lies in a box
//! `center ± radius`, pushed forward op by op with each op's interval rule ([`crate::ops::OpExec::linear_abs`]
//! for affine ops: `A c + b ± |A| r`; [`crate::ops::OpExec::interval`] for activations). The ℓ2 ball is
//! enclosed in the ℓ∞ ball of the same radius.
//!
//! Shapes: every node's `(lower, upper)` is `[B, *shape_n]`. Cost: two forward passes of the network.

use candle_core::Tensor;

use super::input_set::InputSet;
use super::model::Model;
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
                        let rs: Vec<Tensor> = ins.iter().map(|(_, r)| r.clone()).collect();
                        let mut c = op.linear(&ctx, &cs)?;
                        if let Some(b) = op.bias(&ctx)? {
                            c = c.broadcast_add(&b).context(ctx_err)?;
                        }
                        (c, op.linear_abs(&ctx, &rs)?)
                    }
                    Role::Activation => {
                        let (c, r) = ins[0];
                        let (l, u) = ((c - r).context(ctx_err)?, (c + r).context(ctx_err)?);
                        let (lo, hi) = op.interval(&ctx, &l, &u)?;
                        let c = ((&lo + &hi).context(ctx_err)? * 0.5).context(ctx_err)?;
                        let r = ((&hi - &lo).context(ctx_err)? * 0.5).and_then(|r| r.relu()).context(ctx_err)?;
                        (c, r)
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
                let l = (&c - &r).context(|| "interval bounds".to_string())?;
                let u = (&c + &r).context(|| "interval bounds".to_string())?;
                Ok(Some((l, u)))
            }
            None => Ok(None),
        })
        .collect()
}
