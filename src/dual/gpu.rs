//! Device paths of the layer bounds: what [`super::bounds`] runs when its tensors are not on the CPU (a CUDA GPU),
//! so that the per-layer work of a training step never copies a large tensor to the host.
//!
//! - [`median_abs`]: the median over the projections by a device sort (`arg_sort_last_dim`, then a gather that
//!   carries the gradient), instead of the CPU path's host-side selection;
//! - [`random_tensor`], [`projected_offsets`]: Cauchy / Gaussian projections drawn on the device from its own
//!   generator (cuRAND on CUDA). The CPU draws from the bounds' seeded `StdRng` and is unchanged; on a GPU the
//!   stream is the device's, seeded once when the device is opened ([`crate::device::DeviceSpec::open_seeded`]),
//!   so a run is repeatable from its start, while the per-step seed of [`super::bounds::Options`] is not used.
//!   Only the scalar "how many units have a non-zero offset" comes back to the host, to choose between exact and
//!   projected offsets.
//!
//! The functions only use candle ops, so they run (and are tested) on the CPU too.

use candle_core::{bail, DType, Result, Tensor};

/// The largest `k` the device sort handles (one row of `k` indices in a block's shared memory).
const MAX_SORT: usize = 8192;

/// Median over dim 1 of `|a|`, `a: [B, k, n] -> [B, n]` (the lower middle for even `k`, like `torch.median`);
/// differentiable through the selected entries.
pub fn median_abs(a: &Tensor) -> Result<Tensor> {
    let (_, k, _) = a.dims3()?;
    if k == 0 || k > MAX_SORT {
        bail!("median over {k} projections: need 1 to {MAX_SORT} on this device")
    }
    // `t: [B, n, k]`. The sort only picks the index: it runs on a detached copy, the gather carries the gradient.
    let t = a.abs()?.transpose(1, 2)?.contiguous()?;
    let idx = t.detach().arg_sort_last_dim(true)?.narrow(2, (k - 1) / 2, 1)?.contiguous()?;
    t.gather(&idx, 2)?.squeeze(2)
}

/// Uniform draws in `[0, 1)` (CPU) or `(0, 1]` (cuRAND) of `like`'s dtype (f32 or f64) on its device.
fn uniform(shape: &[usize], like: &Tensor) -> Result<Tensor> {
    match like.dtype() {
        DType::F64 => Tensor::rand(0f64, 1f64, shape, like.device()),
        DType::F32 => Tensor::rand(0f32, 1f32, shape, like.device()),
        other => Tensor::rand(0f32, 1f32, shape, like.device())?.to_dtype(other),
    }
}

/// `shape` standard Cauchy (`cauchy`) or standard normal draws, in `like`'s dtype on its device.
pub fn random_tensor(shape: &[usize], cauchy: bool, like: &Tensor) -> Result<Tensor> {
    if cauchy {
        // tan(π(u − ½)) = sin/cos; u at an end of the interval gives a huge but finite value, which a median ignores.
        let theta = uniform(shape, like)?.affine(std::f64::consts::PI, -std::f64::consts::FRAC_PI_2)?;
        theta.sin()?.div(&theta.cos()?)
    } else {
        match like.dtype() {
            DType::F64 => Tensor::randn(0f64, 1f64, shape, like.device()),
            DType::F32 => Tensor::randn(0f32, 1f32, shape, like.device()),
            other => Tensor::randn(0f32, 1f32, shape, like.device())?.to_dtype(other),
        }
    }
}

/// Projected offsets of an activation with offset radii `rad: [B, *shape]`: `None` when at most `k` units have a
/// non-zero radius over the batch (the caller then uses exact offsets), else `k` Cauchy combinations
/// `C ⊙ rad`, `[B, k, *shape]`.
pub fn projected_offsets(rad: &Tensor, k: usize) -> Result<Option<Tensor>> {
    let count = rad.gt(0.0)?.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()? as usize;
    if count <= k {
        return Ok(None);
    }
    let mut shape = vec![rad.dims()[0], k];
    shape.extend_from_slice(&rad.dims()[1..]);
    let c = random_tensor(&shape, true, rad)?;
    Ok(Some(c.broadcast_mul(&rad.unsqueeze(1)?)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn values(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).expect("values")
    }

    /// The sort path gives the CPU selection's values, and gradient only to the selected entries.
    #[test]
    fn median_matches_the_cpu_selection() -> Result<()> {
        for (k, dt) in [(50, DType::F32), (7, DType::F64), (1, DType::F32), (4, DType::F64)] {
            let a = Tensor::randn(0f64, 1., (3, k, 11), &Device::Cpu)?.to_dtype(dt)?;
            let ours = median_abs(&a)?;
            let cpu = crate::dual::bounds::median_abs(&a)?;
            assert_eq!(values(&ours), values(&cpu), "k {k}");
            let v = Var::from_tensor(&a)?;
            let g = median_abs(v.as_tensor())?.sum_all()?.backward()?;
            let g = values(g.get(v.as_tensor()).ok_or_else(|| candle_core::Error::Msg("no grad".into()))?);
            // One selected entry per (example, unit), with gradient ±1.
            assert_eq!(g.iter().filter(|x| **x != 0.0).count(), 3 * 11);
            assert!(g.iter().all(|x| *x == 0.0 || x.abs() == 1.0));
        }
        assert!(median_abs(&Tensor::zeros((1, 0, 2), DType::F32, &Device::Cpu)?).is_err());
        Ok(())
    }

    /// Medians of |Cauchy| and |N(0,1)| draws are 1 and Φ⁻¹(3/4) ≈ 0.6745 (candle's CPU generator is not seeded:
    /// the tolerance is over 4 standard deviations of the sample median).
    #[test]
    fn draws_have_the_right_scale() -> Result<()> {
        let like = Tensor::zeros(1, DType::F32, &Device::Cpu)?;
        for (cauchy, want) in [(true, 1.0), (false, 0.674_489_75)] {
            let r = random_tensor(&[1, 20_001, 1], cauchy, &like)?;
            assert_eq!(r.dtype(), DType::F32);
            let m = values(&crate::dual::bounds::median_abs(&r)?)[0];
            assert!((m - want).abs() < 0.05, "cauchy {cauchy}: median |x| {m}, want {want}");
            assert!(values(&r).iter().all(|x| x.is_finite()));
        }
        Ok(())
    }

    #[test]
    fn projected_offsets_only_when_more_than_k_units_cross() -> Result<()> {
        let rad = Tensor::new(&[[0f32, 0.5, 0.0, 2.0], [0.0, 0.0, 1.0, 0.0]], &Device::Cpu)?;
        assert!(projected_offsets(&rad, 3)?.is_none());
        let inj = projected_offsets(&rad, 2)?.ok_or_else(|| candle_core::Error::Msg("expected offsets".into()))?;
        assert_eq!(inj.dims(), [2, 2, 4]);
        // Zero radius, zero column.
        let v = values(&inj);
        for (i, x) in v.iter().enumerate() {
            let (e, j) = (i / 8, i % 4);
            let r = [[0.0, 0.5, 0.0, 2.0], [0.0, 0.0, 1.0, 0.0]][e][j];
            assert_eq!(*x == 0.0, r == 0.0, "entry {i}");
        }
        Ok(())
    }
}
