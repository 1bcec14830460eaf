//! Projected gradient descent (Madry et al.) inside an input set: the empirical counterpart of the certificate.
//!
//! ℓ∞ / box: `x ← Π(x + α · sign(∇))`; ℓ2: `x ← Π(x + α · ∇ / ‖∇‖_2)`; Π is [`InputSet::project`]; a random start
//! inside the set. The objective is the cross-entropy of the logits (untargeted) or, for a target class `j`,
//! the margin `f_j - f_y` (used by the soundness tests to find the smallest margin a bound must stay below).

use candle_core::{Tensor, Var};
use rand::SeedableRng;

use crate::dual::{InputSet, Model};
use crate::error::{Context, Result};

#[derive(Debug, Clone, Copy)]
pub struct PgdConfig {
    pub steps: usize,
    /// Step size in input units; `None` picks `2.5 ε / steps` as in Madry et al.
    pub step_size: Option<f64>,
    pub restarts: usize,
    pub seed: u64,
}

impl Default for PgdConfig {
    fn default() -> Self {
        PgdConfig { steps: 40, step_size: None, restarts: 1, seed: 0 }
    }
}

/// What to maximise.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    /// Cross-entropy of the true labels.
    Untargeted,
    /// `f_j - f_y` for this class `j`.
    Target(usize),
}

fn one_hot(labels: &[u32], k: usize, like: &Tensor) -> Result<Tensor> {
    let mut d = vec![0f64; labels.len() * k];
    for (i, &y) in labels.iter().enumerate() {
        d[i * k + y as usize] = 1.0;
    }
    Tensor::from_vec(d, (labels.len(), k), like.device())
        .and_then(|t| t.to_dtype(like.dtype()))
        .context(|| "labels".to_string())
}

/// Run PGD; returns the final points `[B, *in]` and whether each example was misclassified at any iterate.
pub fn pgd(
    model: &Model,
    set: &InputSet,
    labels: &[u32],
    eps_max: f64,
    goal: Goal,
    cfg: &PgdConfig,
) -> Result<(Tensor, Vec<bool>)> {
    let ctx = || "running PGD".to_string();
    let k = model.graph.num_classes();
    let center = set.center();
    let y1 = one_hot(labels, k, center)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let alpha = cfg.step_size.unwrap_or(2.5 * eps_max / cfg.steps.max(1) as f64);
    let l2 = matches!(set, InputSet::L2 { .. });
    let mut fooled = vec![false; labels.len()];
    let mut best = center.clone();
    let mut best_obj: Option<Tensor> = None;
    for _ in 0..cfg.restarts.max(1) {
        let mut x = set.random_point(&mut rng)?;
        for step in 0..=cfg.steps {
            let var = Var::from_tensor(&x).context(ctx)?;
            let logits = model.forward(var.as_tensor())?;
            // per-example objective [B]
            let obj = match goal {
                Goal::Untargeted => {
                    let lsm = candle_nn::ops::log_softmax(&logits, 1).context(ctx)?;
                    (lsm * &y1).and_then(|t| t.sum(1)).and_then(|t| t.neg()).context(ctx)?
                }
                Goal::Target(j) => {
                    let fy = (&logits * &y1).and_then(|t| t.sum(1)).context(ctx)?;
                    let fj = logits.narrow(1, j, 1).and_then(|t| t.squeeze(1)).context(ctx)?;
                    (fj - fy).context(ctx)?
                }
            };
            let pred: Vec<u32> = logits.argmax(1).and_then(|t| t.to_vec1()).context(ctx)?;
            for (i, (&p, &y)) in pred.iter().zip(labels).enumerate() {
                if p != y {
                    fooled[i] = true;
                }
            }
            // keep the per-example best point
            best_obj = Some(match best_obj.take() {
                None => {
                    best = x.clone();
                    obj.clone()
                }
                Some(prev) => {
                    let better = obj.gt(&prev).context(ctx)?;
                    let mut mshape = vec![labels.len()];
                    mshape.extend(std::iter::repeat_n(1, x.rank() - 1));
                    let m = better.reshape(mshape).and_then(|m| m.broadcast_as(x.shape())).context(ctx)?;
                    best = m.where_cond(&x, &best).context(ctx)?;
                    better.where_cond(&obj, &prev).context(ctx)?
                }
            });
            if step == cfg.steps {
                break;
            }
            let grads = obj.sum_all().and_then(|s| s.backward()).context(ctx)?;
            let Some(g) = grads.get(var.as_tensor()) else { break };
            let dir = if l2 {
                let b = labels.len();
                let n = g
                    .reshape((b, ()))
                    .and_then(|t| t.sqr())
                    .and_then(|t| t.sum_keepdim(1))
                    .and_then(|t| t.sqrt())
                    .context(ctx)?;
                let mut s = vec![b];
                s.extend(std::iter::repeat_n(1, g.rank() - 1));
                g.broadcast_div(&(n + 1e-12).and_then(|n| n.reshape(s)).context(ctx)?).context(ctx)?
            } else {
                g.sign().context(ctx)?
            };
            x = set.project(&(x.detach() + (dir * alpha).context(ctx)?).context(ctx)?)?;
        }
    }
    Ok((best, fooled))
}
