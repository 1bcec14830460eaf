//! The warm-up regularisers of Shi et al. 2021 ("Fast certified robust training with short warmup", Section
//! 3.3), on the layer bounds `l, u` (`[B, *shape]`) of every activation input, from the training bound. With
//! centers `c = (u + l) / 2`, radii `r = (u − l) / 2`, the input's mean radius `r₀` and tolerance `τ`:
//!
//! - interval tightness, per layer: `relu(τ − r₀ / mean(r)) / τ`; it is positive when a layer's bounds are
//!   more than `1/τ` times wider than the input's (bounds blowing up with depth);
//! - ReLU balance, per layer: with `A = {l > 0}` (active) and `I = {u < 0}` (inactive),
//!   `ρ_mean = mean(c·1_A) / −mean(c·1_I)` and `ρ_var = Σ (c − mean c)²·1_A / Σ (c − mean c)²·1_I`, each folded
//!   to `min(ρ, 1/ρ)`, and `(relu(τ − ρ_mean) + relu(τ − ρ_var)) / τ`; it is positive when stably active and
//!   stably inactive units are out of balance (IBP training favours dead units). A layer where a ratio is not
//!   finite (no active or no inactive unit) contributes no balance term.
//!
//! The regulariser is the mean over layers of the sum of both; the trainer weighs it by
//! `reg_lambda · (1 − ramp progress)`.

use candle_core::{DType, Tensor};
use petgraph::graph::NodeIndex;

use crate::error::{Context, Result};

/// The regulariser (a scalar tensor in the bounds' dtype and device, in the autograd graph of `layers`) for the
/// layer bounds `layers` and the input's mean radius `r0`; `None` for a network without activations.
pub fn warmup_regulariser(layers: &[(NodeIndex, Tensor, Tensor)], r0: f64, tol: f64) -> Result<Option<Tensor>> {
    let ctx = || "warm-up regulariser".to_string();
    let mut total: Option<Tensor> = None;
    let n = layers.len().max(1) as f64;
    for (_, l, u) in layers {
        let c = ((u + l).context(ctx)? * 0.5).context(ctx)?;
        let r = ((u - l).context(ctx)? * 0.5).context(ctx)?;
        // relu(τ − r₀ / mean r) / τ
        let tight = r
            .mean_all()
            .and_then(|m| m.maximum(1e-12))
            .and_then(|m| m.recip())
            .and_then(|q| q.affine(-r0, tol))
            .and_then(|t| t.relu())
            .and_then(|t| t / tol)
            .context(ctx)?;
        let mut term = tight;
        let act = l.gt(0.0).and_then(|m| m.to_dtype(c.dtype())).context(ctx)?;
        let inact = u.lt(0.0).and_then(|m| m.to_dtype(c.dtype())).context(ctx)?;
        let fold = |num: Tensor, den: Tensor| -> candle_core::Result<Tensor> {
            let q = (num / den)?;
            q.minimum(&q.maximum(1e-12)?.recip()?)
        };
        let mean_ratio = fold(
            (&c * &act).and_then(|t| t.mean_all()).context(ctx)?,
            (&c * &inact).and_then(|t| t.mean_all()).and_then(|t| t.neg()).context(ctx)?,
        )
        .context(ctx)?;
        let dev = c.broadcast_sub(&c.mean_all().context(ctx)?).and_then(|d| d.sqr()).context(ctx)?;
        let var_ratio = fold(
            (&dev * &act).and_then(|t| t.sum_all()).context(ctx)?,
            (&dev * &inact).and_then(|t| t.sum_all()).context(ctx)?,
        )
        .context(ctx)?;
        let balance = (mean_ratio.affine(-1.0, tol).and_then(|t| t.relu()).context(ctx)?
            + var_ratio.affine(-1.0, tol).and_then(|t| t.relu()).context(ctx)?)
        .and_then(|t| t / tol)
        .context(ctx)?;
        let bv: f64 = balance.to_dtype(DType::F64).and_then(|t| t.to_scalar()).context(ctx)?;
        if bv.is_finite() {
            term = (term + balance).context(ctx)?;
        }
        total = Some(match total {
            Some(t) => (t + term).context(ctx)?,
            None => term,
        });
    }
    total.map(|t| (t / n).context(ctx)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v, (1, v.len()), &Device::Cpu).unwrap()
    }

    fn value(layers: &[(NodeIndex, Tensor, Tensor)], r0: f64, tol: f64) -> f64 {
        warmup_regulariser(layers, r0, tol)
            .unwrap()
            .expect("a layer")
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn hand_computed_terms() {
        let z = NodeIndex::new(0);
        // Radii (u − l)/2 = [0.1, 0.1, 0.1, 0.1], mean 0.1 = r₀: tightness relu(0.5 − 1)/0.5 = 0.
        // Centers [0.5, 0.5, −0.5, −0.5]: units 0, 1 active, 2, 3 inactive; ρ_mean = 0.25 / 0.25 = 1;
        // deviations from the mean 0 all 0.25: ρ_var = 0.5 / 0.5 = 1; balance 0.
        let l = t(&[0.4, 0.4, -0.6, -0.6]);
        let u = t(&[0.6, 0.6, -0.4, -0.4]);
        assert!(value(&[(z, l.clone(), u.clone())], 0.1, 0.5).abs() < 1e-6);
        // r₀ = 0.01: r₀ / mean r = 0.1, tightness relu(0.5 − 0.1)/0.5 = 0.8.
        assert!((value(&[(z, l, u)], 0.01, 0.5) - 0.8).abs() < 1e-6);
        // Centers [1.5, 0.5, −0.5, −0.5] (radius 0.1 each, r₀ = 0.1: no tightness term): mean center 0.25,
        // ρ_mean = (2/4) / (1/4) = 2 → folded 0.5: relu(0.5 − 0.5) = 0; deviations² [1.5625, 0.0625, 0.5625,
        // 0.5625]: ρ_var = 1.625 / 1.125 = 1.444 → 0.692: 0. So 0; with τ = 1: (0.5 + 0.308)/1 = 0.808.
        let l = t(&[1.4, 0.4, -0.6, -0.6]);
        let u = t(&[1.6, 0.6, -0.4, -0.4]);
        assert!(value(&[(z, l.clone(), u.clone())], 0.1, 0.5).abs() < 1e-6);
        let want = (1.0 - 0.5) + (1.0 - 1.125 / 1.625);
        assert!((value(&[(z, l, u)], 0.1, 1.0) - want).abs() < 1e-5, "{want}");
        // No inactive unit: the balance term is skipped, only tightness counts.
        let l = t(&[0.4, 0.4]);
        let u = t(&[0.6, 0.6]);
        assert!(value(&[(z, l, u)], 0.1, 0.5).abs() < 1e-6);
        // No layer: no regulariser.
        assert!(warmup_regulariser(&[], 0.1, 0.5).unwrap().is_none());
    }
}
