//! The median estimator of random projections (paper Theorem 2): `median_q |a[b, q, j]|` over the `k`
//! projections, `a: [B, k, n] → [B, n]`, the lower middle `(k − 1)/2`-th order statistic for even `k` (like
//! `torch.median`). One pass per example on the CPU: the `k` entries of a column are gathered into a small
//! buffer and the middle one found by selection (no sort, no `|a|`, transposed or host copies of the
//! `[B, k, n]` operand). The gradient goes to the selected entry: `∂a[b, q*, j] = sign(a[b, q*, j]) g[b, j]`,
//! zero elsewhere; the selected `q*` are kept from the forward pass.

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::elems;

trait Ord2: Copy + Send + Sync + Default {
    fn cmp_abs(a: Self, b: Self) -> std::cmp::Ordering;
    fn abs(self) -> Self;
    fn signed(self, g: Self) -> Self;
}

macro_rules! ord2 {
    ($t:ty) => {
        impl Ord2 for $t {
            fn cmp_abs(a: Self, b: Self) -> std::cmp::Ordering {
                a.abs().total_cmp(&b.abs())
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn signed(self, g: Self) -> Self {
                if self > 0.0 {
                    g
                } else if self < 0.0 {
                    -g
                } else {
                    0.0
                }
            }
        }
    };
}
ord2!(f32);
ord2!(f64);

/// `median_q |a[:, q, :]|`, `[B, k, n] → [B, n]`, differentiable (CPU, f32/f64).
pub fn median_abs(a: &Tensor) -> Result<Tensor> {
    let (_, k, _) = a.dims3()?;
    if k == 0 {
        bail!("median over zero projections")
    }
    a.apply_op1(MedianAbs { arg: Mutex::new(None) })
}

struct MedianAbs {
    /// `q*` per output entry, from the last forward pass (for the backward pass).
    arg: Mutex<Option<Vec<u32>>>,
}

fn fwd<T: Ord2>(a: &[T], b: usize, k: usize, n: usize) -> (Vec<T>, Vec<u32>) {
    let mid = (k - 1) / 2;
    let mut out = vec![T::default(); b * n];
    let mut arg = vec![0u32; b * n];
    out.par_chunks_mut(n.max(1)).zip(arg.par_chunks_mut(n.max(1))).enumerate().for_each(|(e, (o, ar))| {
        let ab = &a[e * k * n..][..k * n];
        let mut buf: Vec<(T, u32)> = Vec::with_capacity(k);
        for j in 0..n {
            buf.clear();
            buf.extend((0..k).map(|q| (ab[q * n + j], q as u32)));
            let (_, &mut (v, q), _) = buf.select_nth_unstable_by(mid, |x, y| T::cmp_abs(x.0, y.0));
            o[j] = v.abs();
            ar[j] = q;
        }
    });
    (out, arg)
}

fn bwd<T: Ord2>(a: &[T], g: &[T], arg: &[u32], k: usize, n: usize) -> Vec<T> {
    let mut out = vec![T::default(); a.len()];
    out.par_chunks_mut((k * n).max(1)).enumerate().for_each(|(e, o)| {
        for j in 0..n {
            let q = arg[e * n + j] as usize;
            o[q * n + j] = a[e * k * n + q * n + j].signed(g[e * n + j]);
        }
    });
    out
}

impl CustomOp1 for MedianAbs {
    fn name(&self) -> &'static str {
        "dualnet-median-abs"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[b, k, n] = l.dims() else { bail!("{}: expects [B, k, n]", self.name()) };
        let (out, arg) = match s {
            CpuStorage::F32(a) => {
                let (o, arg) = fwd(&elems(a, l), b, k, n);
                (CpuStorage::F32(o), arg)
            }
            CpuStorage::F64(a) => {
                let (o, arg) = fwd(&elems(a, l), b, k, n);
                (CpuStorage::F64(o), arg)
            }
            _ => bail!("{}: f32 or f64 only", self.name()),
        };
        if let Ok(mut slot) = self.arg.lock() {
            *slot = Some(arg);
        }
        Ok((out, Shape::from((b, n))))
    }

    fn bwd(&self, a: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let arg = match self.arg.lock() {
            Ok(slot) => slot.clone(),
            Err(_) => None,
        };
        let Some(arg) = arg else { bail!("{}: backward before forward", self.name()) };
        Ok(Some(a.apply_op2_no_bwd(g, &MedianAbsGrad { arg })?))
    }
}

/// `∂a` of [`MedianAbs`]: operands `a [B, k, n]` and `g [B, n]`.
struct MedianAbsGrad {
    arg: Vec<u32>,
}

impl candle_core::CustomOp2 for MedianAbsGrad {
    fn name(&self) -> &'static str {
        "dualnet-median-abs-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[b, k, n] = l1.dims() else { bail!("{}: expects [B, k, n]", self.name()) };
        let out = super::dispatch(
            self.name(),
            s1,
            l1,
            s2,
            l2,
            |a: &[f32], g: &[f32]| bwd(a, g, &self.arg, k, n),
            |a: &[f64], g: &[f64]| bwd(a, g, &self.arg, k, n),
        )?;
        Ok((out, Shape::from((b, k, n))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// k = 4 values per column: |−3|, 1, |−2|, 5 → sorted 1, 2, 3, 5, lower middle (index 1) = 2 at q = 2
    /// (a = −2, so its gradient is −g); k = 3: 0.5, −4, 1 → 0.5, 1, 4 → 1 at q = 2.
    #[test]
    fn lower_median_and_its_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let a = Var::from_tensor(&Tensor::new(&[[[-3f64], [1.], [-2.], [5.]]], &dev)?)?;
        let m = median_abs(a.as_tensor())?;
        assert_eq!(m.to_vec2::<f64>()?, vec![vec![2.0]]);
        let g = (m * 3.0)?.sum_all()?.backward()?;
        let ga = g.get(a.as_tensor()).expect("grad").flatten_all()?.to_vec1::<f64>()?;
        assert_eq!(ga, vec![0., 0., -3., 0.]);
        let b = Tensor::new(&[[[0.5f32], [-4.], [1.]]], &dev)?;
        assert_eq!(median_abs(&b)?.to_vec2::<f32>()?, vec![vec![1.0]]);
        // Against a sort on random data, f32 and a strided (transposed) operand.
        let r = Tensor::randn(0f32, 1., (3, 7, 11), &dev)?;
        let t = r.transpose(1, 2)?.contiguous()?.transpose(1, 2)?; // same values, non-contiguous layout
        let ours = median_abs(&t)?.to_vec2::<f32>()?;
        let v = r.to_vec3::<f32>()?;
        for (e, row) in ours.iter().enumerate() {
            for (j, &m) in row.iter().enumerate() {
                let mut col: Vec<f32> = (0..7).map(|q| v[e][q][j].abs()).collect();
                col.sort_by(f32::total_cmp);
                assert_eq!(m, col[3]);
            }
        }
        let _ = DType::F32;
        Ok(())
    }
}
