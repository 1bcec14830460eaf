//! Margin lower bounds, robust cross-entropy and robust error for a batch (paper eq. (13) and Section 4).
//!
//! `margin_lb[b][j]` lower-bounds `f_{y_b}(x') - f_j(x')` over the input set (0 on the diagonal);
//! `robust_ce = mean_b CE(-margin_lb[b], y_b) = mean_b log Σ_j exp(-margin_lb[b][j])`;
//! an example is certified when `margin_lb[b][j] > 0` for every `j != y_b`.

use candle_core::Tensor;

use super::bounds::{self, Bounds};
use super::input_set::InputSet;
use super::model::Model;
use super::objective::{margin_objectives, objective};
use crate::error::{Context, Result};

pub struct Certificate {
    pub bounds: Bounds,
    /// `[B, K]`.
    pub margin_lb: Tensor,
}

/// Exact bounds and margins for inputs with labels `y`.
pub fn certify_batch(model: &Model, set: &InputSet, labels: &[u32]) -> Result<Certificate> {
    certify_batch_with(model, set, labels, &bounds::Options::default())
}

/// Bounds (exact or projected, see [`bounds::Options`]) and the exact dual objective for the margins.
pub fn certify_batch_with(
    model: &Model,
    set: &InputSet,
    labels: &[u32],
    opts: &bounds::Options,
) -> Result<Certificate> {
    let bounds = bounds::compute_with(model, set, opts)?;
    let k = model.graph.num_classes();
    let c = margin_objectives(labels, k, set.center())?;
    let margin_lb = objective(model, set, &bounds, &c)?;
    Ok(Certificate { bounds, margin_lb })
}

/// Per-example robust cross-entropy `log Σ_j exp(-margin_lb[b][j])`, `[B]`.
pub fn robust_ce_per_example(margin_lb: &Tensor) -> Result<Tensor> {
    let neg = margin_lb.neg().context(|| "robust loss".to_string())?;
    let m = neg.max_keepdim(1).context(|| "robust loss".to_string())?;
    let lse = neg
        .broadcast_sub(&m)
        .and_then(|t| t.exp())
        .and_then(|t| t.sum_keepdim(1))
        .and_then(|t| t.log())
        .and_then(|t| t + m)
        .and_then(|t| t.squeeze(1))
        .context(|| "robust loss".to_string())?;
    Ok(lse)
}

/// Whether each example is certified: every off-diagonal margin bound is `> 0`.
pub fn certified(margin_lb: &[Vec<f64>], labels: &[u32]) -> Vec<bool> {
    margin_lb
        .iter()
        .zip(labels)
        .map(|(row, &y)| row.iter().enumerate().all(|(j, &m)| j == y as usize || m > 0.0))
        .collect()
}
