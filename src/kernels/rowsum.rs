//! Weighted sums of the dual variables: `out[b, q] = Σ_j f(λ[b, q, j]) · w[b, j]`, `f = id` or `|·|`,
//! `λ: [B, K, *shape]`, `w: [B, *shape]` (per example) or `[*shape]` (shared, e.g. a bias) → `[B, K]`.
//!
//! These are the terms of the dual objective (paper Theorem 1, eq. (7)): `λ · b` for a bias, `λ · mid` and
//! `|λ| · rad` for an activation's relaxation (for ReLU `Σ_{crossing} l_j [ν_j]_+`), `λ · x` and `|λ| · radius`
//! for the input. One pass forward. Backward: `∂λ[b, q, j] = g[b, q] · w[b, j] · f'(λ[b, q, j])` and
//! `∂w[b, j] = Σ_q g[b, q] f(λ[b, q, j])` (summed over `b` too for a shared `w`), each one pass, instead of
//! candle's broadcast multiply, reshape and sum, whose backward reduces the broadcast over `K` with a strided
//! sum and adds several `[B, K, *shape]` gradients. CPU f32/f64; other devices and dtypes compose candle ops.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::Float;

/// `Σ_j f(λ[b, q, j]) · w[b or ·, j]`, `[B, K]`; `abs` picks `f = |·|`.
pub fn weighted_row_sums(lam: &Tensor, w: &Tensor, abs: bool) -> Result<Tensor> {
    if lam.rank() < 2 {
        bail!("weighted_row_sums: λ must be [B, K, ...], got {:?}", lam.dims())
    }
    let (b, k) = (lam.dims()[0], lam.dims()[1]);
    let n: usize = lam.dims()[2..].iter().product();
    let shared = match w.elem_count() {
        c if c == n && w.dims() == &lam.dims()[2..] => true,
        c if c == b * n && w.dims()[0] == b && w.dims()[1..] == lam.dims()[2..] => false,
        _ => bail!("weighted_row_sums: weights {:?} do not match λ {:?}", w.dims(), lam.dims()),
    };
    let fast = lam.device().is_cpu()
        && w.device().is_cpu()
        && lam.dtype() == w.dtype()
        && matches!(lam.dtype(), DType::F32 | DType::F64);
    if !fast {
        let f = if abs { lam.abs()? } else { lam.clone() };
        let w = if shared { w.unsqueeze(0)?.unsqueeze(0)? } else { w.unsqueeze(1)? };
        return f.broadcast_mul(&w)?.reshape((b, k, n))?.sum(2);
    }
    lam.apply_op2(w, RowSums { dims: Dims { b, k, n, shared }, abs })
}

#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    k: usize,
    n: usize,
    shared: bool,
}

impl Dims {
    fn w_row<'a, T>(&self, w: &'a [T], e: usize) -> &'a [T] {
        match self.shared {
            true => &w[..self.n],
            false => &w[e * self.n..][..self.n],
        }
    }
}

trait Num: Float + Default + std::ops::Mul<Output = Self> + std::ops::AddAssign + PartialOrd {
    fn abs(self) -> Self;
    fn f(self, abs: bool) -> Self {
        if abs {
            self.abs()
        } else {
            self
        }
    }
    /// `f'(x) · y`: `y`, or `sign(x) · y` for `|·|`, with `+y` at 0 (candle's convention for `abs`, so the
    /// gradients are exactly those of the composition this replaces).
    fn df(self, abs: bool, y: Self) -> Self;
}

macro_rules! num {
    ($t:ty) => {
        impl Num for $t {
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn df(self, abs: bool, y: Self) -> Self {
                if abs && self < 0.0 {
                    -y
                } else {
                    y
                }
            }
        }
    };
}
num!(f32);
num!(f64);

fn fwd<T: Num>(lam: &[T], w: &[T], d: Dims, abs: bool) -> Vec<T> {
    // Every element is written: one per (example, row).
    super::output_vec(d.b * d.k, |out| {
        out.par_chunks_mut(d.k.max(1)).enumerate().for_each(|(e, o)| {
            let we = d.w_row(w, e);
            for (q, o) in o.iter_mut().enumerate() {
                let row = &lam[(e * d.k + q) * d.n..][..d.n];
                let mut acc = T::default();
                for (&x, &y) in row.iter().zip(we) {
                    acc += x.f(abs) * y;
                }
                o.write(acc);
            }
        })
    })
}

struct RowSums {
    dims: Dims,
    abs: bool,
}

impl CustomOp2 for RowSums {
    fn name(&self) -> &'static str {
        "dualnet-weighted-row-sums"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (d, abs) = (self.dims, self.abs);
        let out = dispatch!(self.name(); s1, l1; s2, l2 => |lam, w| fwd(lam, w, d, abs))?;
        Ok((out, Shape::from((d.b, d.k))))
    }

    fn bwd(&self, lam: &Tensor, w: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let glam = match lam.track_op() {
            true => Some(lam.apply_op3_no_bwd(w, &g, &GradLam { dims: self.dims, abs: self.abs })?),
            false => None,
        };
        let gw = match w.track_op() {
            true => {
                Some(lam.apply_op2_no_bwd(&g, &GradW { dims: self.dims, abs: self.abs, shape: w.shape().clone() })?)
            }
            false => None,
        };
        Ok((glam, gw))
    }
}

/// `∂λ[b, q, j] = g[b, q] · w[b, j] · f'(λ[b, q, j])`; operands `λ, w, g`; the result has `λ`'s shape.
struct GradLam {
    dims: Dims,
    abs: bool,
}

fn grad_lam<T: Num>(lam: &[T], w: &[T], g: &[T], d: Dims, abs: bool) -> Vec<T> {
    // Every element is written: the chunks cover `lam`, each row `n` elements.
    super::output_vec(lam.len(), |out| {
        out.par_chunks_mut((d.k * d.n).max(1)).enumerate().for_each(|(e, o)| {
            let we = d.w_row(w, e);
            for (q, row) in o.chunks_mut(d.n.max(1)).enumerate() {
                let gq = g[e * d.k + q];
                let lr = &lam[(e * d.k + q) * d.n..][..d.n];
                for ((o, &x), &y) in row.iter_mut().zip(lr).zip(we) {
                    o.write(x.df(abs, gq * y));
                }
            }
        })
    })
}

impl CustomOp3 for GradLam {
    fn name(&self) -> &'static str {
        "dualnet-weighted-row-sums-grad-lambda"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (d, abs) = (self.dims, self.abs);
        let out = dispatch!(self.name(); s1, l1; s2, l2; s3, l3 => |lam, w, g| grad_lam(lam, w, g, d, abs))?;
        Ok((out, l1.shape().clone()))
    }
}

/// `∂w[b, j] = Σ_q g[b, q] f(λ[b, q, j])` (and `Σ_b` for a shared `w`); operands `λ, g`.
struct GradW {
    dims: Dims,
    abs: bool,
    shape: Shape,
}

fn grad_w<T: Num>(lam: &[T], g: &[T], d: Dims, abs: bool) -> Vec<T> {
    let per: Vec<Vec<T>> = (0..d.b)
        .into_par_iter()
        .map(|e| {
            let mut acc = vec![T::default(); d.n];
            for q in 0..d.k {
                let gq = g[e * d.k + q];
                let lr = &lam[(e * d.k + q) * d.n..][..d.n];
                for (a, &x) in acc.iter_mut().zip(lr) {
                    *a += gq * x.f(abs);
                }
            }
            acc
        })
        .collect();
    match d.shared {
        false => per.concat(),
        true => {
            let mut acc = vec![T::default(); d.n];
            for row in per {
                for (a, x) in acc.iter_mut().zip(row) {
                    *a += x;
                }
            }
            acc
        }
    }
}

impl CustomOp2 for GradW {
    fn name(&self) -> &'static str {
        "dualnet-weighted-row-sums-grad-w"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (d, abs) = (self.dims, self.abs);
        let out = dispatch!(self.name(); s1, l1; s2, l2 => |lam, g| grad_w(lam, g, d, abs))?;
        Ok((out, self.shape.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::assert_same_value_and_grads;
    use candle_core::{Device, Var};

    /// Value and both gradients against the candle composition, per-example and shared weights, `f = id` and
    /// `|·|` (f64). λ has exact zeros, where both take `+1` as the derivative of `|·|`.
    #[test]
    fn matches_the_candle_composition() -> Result<()> {
        let dev = Device::Cpu;
        let raw = Tensor::randn(0f64, 1., (3, 4, 2, 5), &dev)?;
        let mask = Tensor::randn(0f64, 1., (3, 4, 2, 5), &dev)?.ge(0.0)?.to_dtype(DType::F64)?;
        let lam = Var::from_tensor(&(raw * mask)?)?;
        let g = Tensor::randn(0f64, 1., (3, 4), &dev)?;
        for shared in [false, true] {
            let w = match shared {
                true => Var::from_tensor(&Tensor::randn(0f64, 1., (2, 5), &dev)?)?,
                false => Var::from_tensor(&Tensor::randn(0f64, 1., (3, 2, 5), &dev)?)?,
            };
            for abs in [false, true] {
                let ours = weighted_row_sums(lam.as_tensor(), w.as_tensor(), abs)?;
                let f = if abs { lam.as_tensor().abs()? } else { lam.as_tensor().clone() };
                let wb = if shared { w.unsqueeze(0)?.unsqueeze(0)? } else { w.unsqueeze(1)? };
                let plain = f.broadcast_mul(&wb)?.reshape((3, 4, 10))?.sum(2)?;
                let what = format!("shared {shared} abs {abs}");
                assert_same_value_and_grads(&ours, &plain, &g, &[&lam, &w], 1e-12, &what)?;
            }
        }
        assert!(weighted_row_sums(lam.as_tensor(), &Tensor::zeros((3, 5), DType::F64, &dev)?, true).is_err());
        Ok(())
    }
}
