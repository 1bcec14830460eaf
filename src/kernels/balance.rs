//! The sums behind Shi et al.'s warm-up regularisers (`crate::run::train::regularise`), in one pass over a
//! layer's packed box (see [`super::interval`]: slice 0 the centre `c`, slice `points` the radius `r`, each
//! `[B, *shape]`, `N` elements), with its backward, instead of some twenty candle ops and their gradients.
//!
//! With the active and inactive masks `A = [c − r > 0]`, `I = [c + r < 0]` (constants: piecewise, no gradient)
//! and `m = Σ c / N`, [`layer_sums`] is the vector
//! `s = [Σ r, Σ c, Σ c·A, Σ c·I, Σ (c − m)²·A, Σ (c − m)²·I]` (accumulated in f64).
//!
//! Backward for `g = ∂L/∂s`: `∂r_k = g₀` and
//! `∂c_k = g₁ + g₂ A_k + g₃ I_k + 2 (c_k − m)(g₄ A_k + g₅ I_k) − (2/N) (g₄ Σ (c − m)·A + g₅ Σ (c − m)·I)`
//! (the last term through `m`); the other slices get zero. CPU f32 / f64; elsewhere the same sums are composed
//! from candle ops.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

/// Number of sums in [`layer_sums`].
pub const SUMS: usize = 6;

/// `[SUMS]` (dtype of `packed`): the sums of the module docs over the box in slices 0 and `points` of `packed`.
pub fn layer_sums(packed: &Tensor, points: usize) -> Result<Tensor> {
    if packed.device().is_cpu() && matches!(packed.dtype(), candle_core::DType::F32 | candle_core::DType::F64) {
        return packed.apply_op1(LayerSums { points });
    }
    composed_sums(packed, points)
}

/// [`layer_sums`] from candle ops (any device; the reference for the fused kernel).
fn composed_sums(packed: &Tensor, points: usize) -> Result<Tensor> {
    let rows = rows(packed.dims().first().copied().unwrap_or(0), points)?;
    let (c, r) = (packed.narrow(0, 0, rows)?, packed.narrow(0, points * rows, rows)?);
    let act = (&c - &r)?.gt(0.0)?.to_dtype(c.dtype())?;
    let inact = (&c + &r)?.lt(0.0)?.to_dtype(c.dtype())?;
    let dev = c.broadcast_sub(&c.mean_all()?)?.sqr()?;
    let parts = [
        r.sum_all()?,
        c.sum_all()?,
        (&c * &act)?.sum_all()?,
        (&c * &inact)?.sum_all()?,
        (&dev * &act)?.sum_all()?,
        (&dev * &inact)?.sum_all()?,
    ];
    Tensor::stack(&parts, 0)
}

fn rows(n: usize, points: usize) -> Result<usize> {
    if points == 0 || n % (points + 1) != 0 {
        bail!("layer sums: a packed batch of {n} rows does not hold {points} point slices and a radius slice")
    }
    Ok(n / (points + 1))
}

/// The elementwise maths, in f64.
trait Real: Copy + Send + Sync + 'static {
    fn f(self) -> f64;
    fn from(v: f64) -> Self;
}
impl Real for f32 {
    fn f(self) -> f64 {
        self as f64
    }
    fn from(v: f64) -> Self {
        v as f32
    }
}
impl Real for f64 {
    fn f(self) -> f64 {
        self
    }
    fn from(v: f64) -> Self {
        v
    }
}

/// `(Σ c, Σ (c − m)·A, Σ (c − m)·I, and the sums)` over the box `c`, `r` (equal lengths).
fn sums<T: Real>(c: &[T], r: &[T]) -> ([f64; SUMS], f64, f64) {
    let n = c.len().max(1) as f64;
    let (mut sr, mut sc) = (0.0, 0.0);
    for (&cv, &rv) in c.iter().zip(r) {
        sr += rv.f();
        sc += cv.f();
    }
    let m = sc / n;
    let (mut ca, mut ci, mut da, mut di, mut la, mut li) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (&cv, &rv) in c.iter().zip(r) {
        let (cv, rv) = (cv.f(), rv.f());
        let d = cv - m;
        if cv - rv > 0.0 {
            ca += cv;
            da += d * d;
            la += d;
        }
        if cv + rv < 0.0 {
            ci += cv;
            di += d * d;
            li += d;
        }
    }
    ([sr, sc, ca, ci, da, di], la, li)
}

struct LayerSums {
    points: usize,
}

fn split<T>(x: &[T], n: usize, points: usize) -> (&[T], &[T]) {
    let m = x.len().checked_div(n).unwrap_or(0) * (n / (points + 1));
    (&x[..m], &x[points * m..])
}

impl CustomOp1 for LayerSums {
    fn name(&self) -> &'static str {
        "dualnet-layer-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let n = l.dims().first().copied().unwrap_or(0);
        rows(n, self.points)?;
        let points = self.points;
        let out = dispatch!(self.name(); s, l => |x| {
            let (c, r) = split(x, n, points);
            sums(c, r).0.iter().map(|v| Real::from(*v)).collect::<Vec<_>>()
        })?;
        Ok((out, Shape::from(SUMS)))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(g, &LayerSumsGrad { points: self.points })?))
    }
}

/// `packed`, `g [SUMS]` → `∂packed` of [`LayerSums`].
struct LayerSumsGrad {
    points: usize,
}

fn sums_grad<T: Real>(x: &[T], g: &[T], n: usize, points: usize) -> Vec<T> {
    let (c, r) = split(x, n, points);
    let m_len = c.len();
    let (s, la, li) = sums(c, r);
    let g: Vec<f64> = g.iter().map(|v| v.f()).collect();
    let mean = s[1] / m_len.max(1) as f64;
    let through_mean = -2.0 / m_len.max(1) as f64 * (g[4] * la + g[5] * li);
    let mut out = vec![T::from(0.0); x.len()];
    for (k, (&cv, &rv)) in c.iter().zip(r).enumerate() {
        let (cv, rv) = (cv.f(), rv.f());
        let (a, i) = ((cv - rv > 0.0) as u8 as f64, (cv + rv < 0.0) as u8 as f64);
        let d = cv - mean;
        out[k] = T::from(g[1] + g[2] * a + g[3] * i + 2.0 * d * (g[4] * a + g[5] * i) + through_mean);
    }
    for v in &mut out[points * m_len..] {
        *v = T::from(g[0]);
    }
    out
}

impl CustomOp2 for LayerSumsGrad {
    fn name(&self) -> &'static str {
        "dualnet-layer-sums-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let n = l1.dims().first().copied().unwrap_or(0);
        rows(n, self.points)?;
        if l2.shape().elem_count() != SUMS {
            bail!("{}: the gradient has {} elements, not {SUMS}", self.name(), l2.shape().elem_count())
        }
        let points = self.points;
        let out = dispatch!(self.name(); s1, l1; s2, l2 => |x, g| sums_grad(x, g, n, points))?;
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    use crate::kernels::testing::max_diff;

    /// The fused sums and their gradient against candle's autograd of the composed sums (the fallback for
    /// other devices, run on the CPU), with two point slices (the clean slice must get no gradient).
    #[test]
    fn sums_match_the_composed_ones() -> Result<()> {
        for (dt, tol) in [(DType::F32, 1e-3), (DType::F64, 1e-9)] {
            let (b, points) = (6, 2);
            let x = Tensor::randn(0f64, 1., (b * (points + 1), 3, 5), &Device::Cpu)?.to_dtype(dt)?;
            // Radii 0.3·|x| keep both masks populated.
            let (pts, r) = (x.narrow(0, 0, points * b)?, (x.narrow(0, points * b, b)?.abs()? * 0.3)?);
            let v = Var::from_tensor(&Tensor::cat(&[&pts, &r], 0)?)?;
            let ours = layer_sums(v.as_tensor(), points)?;
            let theirs = composed_sums(v.as_tensor(), points)?;
            assert!(max_diff(&ours, &theirs)? < tol);
            let probe = Tensor::new(&[0.3f64, -1.1, 0.7, 2.0, -0.4, 0.9], &Device::Cpu)?.to_dtype(dt)?;
            let go = (ours * &probe)?.sum_all()?.backward()?;
            let gt = (theirs * &probe)?.sum_all()?.backward()?;
            let (Some(a), Some(e)) = (go.get(v.as_tensor()), gt.get(v.as_tensor())) else {
                panic!("a gradient is missing")
            };
            assert!(max_diff(a, e)? < tol, "gradient differs by {}", max_diff(a, e)?);
        }
        Ok(())
    }
}
