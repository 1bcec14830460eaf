//! `batchnorm2d` in training (`batchnorm: batch`): each step normalises with the statistics of its clean batch,
//! and the running statistics, which certification uses, follow them.
//!
//! For a `batchnorm2d` whose input over the clean batch is `z: [B, C, H, W]`, the batch statistics are, per channel
//! `c`, `μ_c = mean_{b,h,w} z` and `σ²_c = mean_{b,h,w} (z − μ_c)²` (biased, as PyTorch normalises). They replace
//! `running_mean` and `running_var` for the step, as constants (no gradient flows through them), so the forward
//! pass and every bound of the step use the same affine map `y = weight · (z − μ) / √(σ² + eps) + bias`, and a
//! bound stays a bound of the network the step trains. After the step the stored statistics are updated,
//! `running = (1 − m) · running + m · batch`, with the unbiased variance `σ² · n / (n − 1)`, `n = B·H·W`
//! (PyTorch's rule).

use candle_core::Tensor;
use petgraph::graph::NodeIndex;

use crate::dual::Model;
use crate::error::{Context, Result};
use crate::ir::NodeKind;

/// The `batchnorm2d` nodes of the model, in node order.
pub fn nodes(model: &Model) -> Vec<NodeIndex> {
    let g = &model.graph;
    g.order().filter(|&i| matches!(g.node(i).kind, NodeKind::Op(op) if op.name() == "batchnorm2d")).collect()
}

/// What [`use_batch_stats`] replaced: per node, the stored running mean and variance, the batch variance, and
/// the number of values per channel.
pub struct Saved {
    stored: Vec<(Tensor, Tensor)>,
    batch: Vec<(Tensor, Tensor)>,
    count: usize,
}

/// Set every `batchnorm2d`'s statistics in `model` to those of the clean batch `x` (in node order: each layer's
/// input is computed with the batch statistics of the layers before it, so this costs one detached forward pass
/// per `batchnorm2d` layer, and nothing for a network without one). Returns the stored statistics.
pub fn use_batch_stats(model: &mut Model, x: &Tensor, bn: &[NodeIndex]) -> Result<Saved> {
    let mut saved = Saved { stored: Vec::new(), batch: Vec::new(), count: 0 };
    for &i in bn {
        let ctx = || format!("batch statistics of `{}`", model.graph.node(i).name);
        let input = model.graph.node(i).inputs[0];
        let vals = model.forward_all(&x.detach())?;
        let z =
            vals[input.index()].as_ref().ok_or_else(|| crate::error::Error::Usage("internal: value missing".into()))?;
        let z = z.detach();
        let (b, c, h, w) = z.dims4().context(ctx)?;
        let per_channel =
            |t: &Tensor| -> candle_core::Result<Tensor> { t.transpose(0, 1)?.reshape((c, b * h * w))?.mean(1) };
        let mean = per_channel(&z).context(ctx)?;
        let var =
            per_channel(&z.broadcast_sub(&mean.reshape((1, c, 1, 1)).context(ctx)?).context(ctx)?.sqr().context(ctx)?)
                .context(ctx)?;
        let weights = &mut model.weights.per_node[i.index()];
        let rm = weights.insert("running_mean".into(), mean.clone());
        let rv = weights.insert("running_var".into(), var.clone());
        match (rm, rv) {
            (Some(rm), Some(rv)) => saved.stored.push((rm, rv)),
            _ => return Err(crate::error::Error::Usage("internal: batchnorm statistics missing".into())),
        }
        saved.batch.push((mean, var));
        saved.count = b * h * w;
    }
    Ok(saved)
}

/// After the step: `running = (1 − m) · stored + m · batch` (unbiased batch variance), written into `model`.
pub fn update_running(model: &mut Model, bn: &[NodeIndex], saved: Saved, momentum: f64) -> Result<()> {
    let n = saved.count as f64;
    let unbias = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
    for ((&i, (rm, rv)), (bm, bv)) in bn.iter().zip(saved.stored).zip(saved.batch) {
        let ctx = || "updating the running statistics".to_string();
        let mean = ((rm * (1.0 - momentum)).context(ctx)? + (bm * momentum).context(ctx)?).context(ctx)?;
        let var = ((rv * (1.0 - momentum)).context(ctx)? + (bv * (momentum * unbias)).context(ctx)?).context(ctx)?;
        let weights = &mut model.weights.per_node[i.index()];
        weights.insert("running_mean".into(), mean);
        weights.insert("running_var".into(), var);
    }
    Ok(())
}
