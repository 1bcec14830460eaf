//! Per-example diagonal scaling of many dual vectors: `y[b, q, j] = x[b, q, j] · s[b, j]`, `x: [B, m, *shape]`,
//! `s: [B, *shape]` (an activation's slopes `d` applied to every source direction, paper eq. (4); or offset radii
//! applied to random projections). One pass forward; backward `∂x = g ⊙ s` (the same op) and
//! `∂s[b, j] = Σ_q g[b, q, j] x[b, q, j]` (one pass), instead of candle's broadcast multiply whose backward
//! materialises `g ⊙ x` and reduces it over the strided middle axis. CPU f32/f64; other devices and dtypes use
//! `broadcast_mul`.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `x ⊙ s` broadcast over dim 1: `x: [B, m, *shape]`, `s: [B, *shape]` (or `[B, 1, *shape]`).
pub fn scale_rows(x: &Tensor, s: &Tensor) -> Result<Tensor> {
    let s = if s.rank() == x.rank() { s.squeeze(1)? } else { s.clone() };
    let fast = x.device().is_cpu()
        && s.device().is_cpu()
        && x.dtype() == s.dtype()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.rank() >= 2
        && x.dims()[0] == s.dims()[0]
        && x.dims()[2..] == s.dims()[1..];
    if !fast {
        return x.broadcast_mul(&s.unsqueeze(1)?);
    }
    x.apply_op2(&s, ScaleRows { b: s.dims()[0] })
}

/// The same for `x` in merged layout `[B·m, *shape]` (rows `b·m .. (b+1)·m` belong to example `b`), `s: [B,
/// *shape]`; the result has `x`'s shape. No reshape node reaches autograd.
pub fn scale_rows_merged(x: &Tensor, s: &Tensor) -> Result<Tensor> {
    let b = s.dims().first().copied().unwrap_or(0);
    let rows = x.dims().first().copied().unwrap_or(0);
    if b == 0 || x.rank() == 0 || rows % b != 0 || x.dims()[1..] != s.dims()[1..] {
        candle_core::bail!("scale_rows: {:?} rows do not match the scales {:?}", x.dims(), s.dims())
    }
    let fast = x.device().is_cpu()
        && s.device().is_cpu()
        && x.dtype() == s.dtype()
        && matches!(x.dtype(), DType::F32 | DType::F64);
    if !fast {
        let mut split = vec![b, rows / b];
        split.extend_from_slice(&x.dims()[1..]);
        return x.reshape(split)?.broadcast_mul(&s.unsqueeze(1)?)?.reshape(x.shape());
    }
    x.apply_op2(s, ScaleRows { b })
}

/// `b`: examples; `x` holds `b · m · n` entries and `s` `b · n`, whatever their shapes.
struct ScaleRows {
    b: usize,
}

fn dims(b: usize, x: &Layout, s: &Layout) -> (usize, usize, usize) {
    let n = s.shape().elem_count() / b.max(1);
    (b, x.shape().elem_count() / (b * n).max(1), n)
}

fn fwd<T: super::Float + std::ops::Mul<Output = T>>(x: &[T], s: &[T], b: usize, m: usize, n: usize) -> Vec<T> {
    // Every element is written: the chunks cover `b · m · n`, each row `n` elements.
    super::output_vec(b * m * n, |out| {
        out.par_chunks_mut((m * n).max(1)).enumerate().for_each(|(e, o)| {
            let se = &s[e * n..][..n];
            for (q, row) in o.chunks_mut(n.max(1)).enumerate() {
                let xr = &x[(e * m + q) * n..][..n];
                for ((y, &a), &c) in row.iter_mut().zip(xr).zip(se) {
                    y.write(a * c);
                }
            }
        })
    })
}

impl CustomOp2 for ScaleRows {
    fn name(&self) -> &'static str {
        "dualnet-scale-rows"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, m, n) = dims(self.b, l1, l2);
        let out = dispatch!(self.name(); s1, l1; s2, l2 => |x, s| fwd(x, s, b, m, n))?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, s: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gx = match x.track_op() {
            true => Some(g.apply_op2_no_bwd(s, &ScaleRows { b: self.b })?),
            false => None,
        };
        let gs = match s.track_op() {
            true => Some(g.apply_op2_no_bwd(x, &RowDot { s: s.shape().clone() })?),
            false => None,
        };
        Ok((gx, gs))
    }
}

/// `Σ_q g[b, q, j] x[b, q, j]`: `[B, m, *shape]` (or merged) twice → `s` of shape `[B, *shape]`.
struct RowDot {
    s: Shape,
}

fn row_dot<T: Copy + Send + Sync + std::ops::Mul<Output = T> + std::ops::AddAssign + Default>(
    g: &[T],
    x: &[T],
    b: usize,
    m: usize,
    n: usize,
) -> Vec<T> {
    let mut out = vec![T::default(); b * n];
    out.par_chunks_mut(n.max(1)).enumerate().for_each(|(e, acc)| {
        for q in 0..m {
            let (gr, xr) = (&g[(e * m + q) * n..][..n], &x[(e * m + q) * n..][..n]);
            for ((a, &u), &v) in acc.iter_mut().zip(gr).zip(xr) {
                *a += u * v;
            }
        }
    });
    out
}

impl CustomOp2 for RowDot {
    fn name(&self) -> &'static str {
        "dualnet-scale-rows-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let b = self.s.dims().first().copied().unwrap_or(1);
        let n = self.s.elem_count() / b.max(1);
        let m = l1.shape().elem_count() / (b * n).max(1);
        let out = dispatch!(self.name(); s1, l1; s2, l2 => |g, x| row_dot(g, x, b, m, n))?;
        Ok((out, self.s.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Value and both gradients against `broadcast_mul` (f64).
    #[test]
    fn matches_broadcast_mul() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f64, 1., (3, 4, 2, 5), &dev)?)?;
        let s = Var::from_tensor(&Tensor::randn(0f64, 1., (3, 2, 5), &dev)?)?;
        let g = Tensor::randn(0f64, 1., (3, 4, 2, 5), &dev)?;
        let ours = scale_rows(x.as_tensor(), s.as_tensor())?;
        let plain = x.broadcast_mul(&s.unsqueeze(1)?)?;
        crate::kernels::testing::assert_same_value_and_grads(&ours, &plain, &g, &[&x, &s], 1e-12, "scale_rows")
    }
}
