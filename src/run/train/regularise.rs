//! The warm-up regularisers of Shi et al. 2021 ("Fast certified robust training with short warmup", Section
//! 3.3), on the layer bounds `l, u` (`[B, *shape]`) of every activation input, from the training bound. With
//! centers `c = (u + l) / 2`, radii `r = (u − l) / 2`, the input's mean radius `r₀` and tolerance `τ`:
//!
//! - interval tightness, per layer: `relu(τ − r₀ / mean(r)) / τ`; it is positive when a layer's bounds are
//!   more than `1/τ` times wider than the input's (bounds blowing up with depth);
//! - ReLU balance, per layer: with `A = {l > 0}` (active) and `I = {u < 0}` (inactive),
//!   `ρ_mean = mean(c·1_A) / −mean(c·1_I)` and `ρ_var = Σ (c − mean c)²·1_A / Σ (c − mean c)²·1_I`, each folded
//!   to `min(ρ, 1/ρ)`, and `(relu(τ − ρ_mean) + relu(τ − ρ_var)) / τ`; it is positive when stably active and
//!   stably inactive units are out of balance (IBP training favours dead units). A layer without both kinds of
//!   unit (or without spread among either) contributes no balance term: there a ratio is 0 or infinite, and its
//!   gradient would be NaN.
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
    let boxes = layers
        .iter()
        .map(|(_, l, u)| {
            let c = ((u + l)? * 0.5)?;
            let r = ((u - l)? * 0.5)?;
            Tensor::cat(&[&c, &r], 0)
        })
        .collect::<candle_core::Result<Vec<Tensor>>>()
        .context(ctx)?;
    warmup_regulariser_packed(&boxes, 1, r0, tol)
}

/// [`warmup_regulariser`] on every layer's packed box (`[S·B, *shape]`, slice 0 the centre, slice `points` the
/// radius; see [`crate::kernels::interval`]), from the per-layer sums of [`crate::kernels::balance`].
pub fn warmup_regulariser_packed(boxes: &[Tensor], points: usize, r0: f64, tol: f64) -> Result<Option<Tensor>> {
    let ctx = || "warm-up regulariser".to_string();
    let mut total: Option<Tensor> = None;
    let n_layers = boxes.len().max(1) as f64;
    for packed in boxes {
        let n = (packed.elem_count() / (points + 1)).max(1) as f64;
        let s = crate::kernels::balance::layer_sums(packed, points).context(ctx)?;
        let at = |i: usize| s.narrow(0, i, 1).context(ctx);
        // relu(τ − r₀ / mean r) / τ
        let tight = (at(0)? / n)
            .and_then(|m| m.maximum(1e-12))
            .and_then(|m| m.recip())
            .and_then(|q| q.affine(-r0, tol))
            .and_then(|t| t.relu())
            .and_then(|t| t / tol)
            .context(ctx)?;
        let mut term = tight;
        // The balance term needs both kinds of unit: with no active (`Σ c·1_A = 0`) or no inactive unit, or no
        // spread among them, a ratio is 0 or infinite, and although the fold below keeps its value finite, its
        // gradient is not (0 · ∞); such a layer contributes no balance term.
        let host: Vec<f64> = s.to_dtype(DType::F64).and_then(|t| t.to_vec1()).context(ctx)?;
        let both =
            host[2] > 0.0 && host[3] < 0.0 && host[4] > 0.0 && host[5] > 0.0 && host.iter().all(|v| v.is_finite());
        if both {
            let fold = |num: Tensor, den: Tensor| -> candle_core::Result<Tensor> {
                let q = (num / den)?;
                q.minimum(&q.maximum(1e-12)?.recip()?)
            };
            // ρ_mean = mean(c·1_A) / −mean(c·1_I), ρ_var = Σ (c − mean c)²·1_A / Σ (c − mean c)²·1_I.
            let mean_ratio = fold(at(2)?, at(3)?.neg().context(ctx)?).context(ctx)?;
            let var_ratio = fold(at(4)?, at(5)?).context(ctx)?;
            let balance = (mean_ratio.affine(-1.0, tol).and_then(|t| t.relu()).context(ctx)?
                + var_ratio.affine(-1.0, tol).and_then(|t| t.relu()).context(ctx)?)
            .and_then(|t| t / tol)
            .context(ctx)?;
            term = (term + balance).context(ctx)?;
        }
        total = Some(match total {
            Some(t) => (t + term).context(ctx)?,
            None => term,
        });
    }
    total.map(|t| (t / n_layers).and_then(|t| t.reshape(())).context(ctx)).transpose()
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

    /// A layer with active units only (and tightness active: r₀ = 0.01 against mean radius 0.1) has a finite
    /// gradient: the skipped balance term must not leave a 0 · ∞ in the graph.
    #[test]
    fn one_sided_layer_has_a_finite_gradient() {
        let z = NodeIndex::new(0);
        let l = candle_core::Var::from_tensor(&t(&[0.4, 0.5])).unwrap();
        let u = candle_core::Var::from_tensor(&t(&[0.6, 0.7])).unwrap();
        let reg = warmup_regulariser(&[(z, l.as_tensor().clone(), u.as_tensor().clone())], 0.01, 0.5).unwrap();
        let grads = reg.expect("a layer").backward().unwrap();
        for v in [&l, &u] {
            let g: Vec<f32> = grads.get(v.as_tensor()).expect("gradient").flatten_all().unwrap().to_vec1().unwrap();
            // Tightness relu(τ − r₀/mean r)/τ: ∂/∂r_k = r₀/(τ N mean(r)²) = 0.01/(0.5 · 2 · 0.01) = 1; r = (u − l)/2.
            assert!(g.iter().all(|x| x.is_finite() && (x.abs() - 0.5).abs() < 1e-4), "{g:?}");
        }
    }
}
