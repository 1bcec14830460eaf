//! Fused weighted ℓ1 terms of exact bounds (paper eq. (7)–(8): `Σ_r w_r |A_{r,j}|` for every unit `j`), computed
//! without materialising the `[B, m, n]` matrices they are taken over.
//!
//! * [`gathered_abs_rows`]: `out[b, j] = Σ_r w[b, r] · |M[idx[b·m + r], j]|`, `M: [N, n]`, `w: [B, m]` → `[B, n]`.
//!   The rows of an op's matrix picked by an activation's crossing units (the one-hot offset source read one op
//!   later); the gathered `[B, m, n]` tensor (0.5 GB per 25 MNIST images) is never built.
//!   Gradients: `∂M[i, :] = sign(M[i, :]) ⊙ Σ_{idx[b·m+r] = i} w[b, r] g[b, :]`, `∂w[b, r] = Σ_j |M[idx, j]| g[b, j]`.
//! * [`grouped_abs`]: `out[b, j] = Σ_g |Y[b', g, j]| · r[b, owner[g·n + j]]` (`b' = b`, or `0` when `Y` has one
//!   leading row shared by the batch; `r[b, N] = 0` for "no owner"), `Y: [B' , G, n]`, `r: [B, N]` → `[B, n]`:
//!   the ℓ1 term of grouped input directions ([`crate::dual::grouping`]).
//!   Gradient in `Y` only (the radius is data): `∂Y[b', g, j] = sign(Y) Σ_{b → b'} r[b, owner] g[b, j]`.
//!
//! CPU f32/f64 kernels parallel over the batch (rayon); other devices use the equivalent composition of candle
//! ops (index_select, abs, matmul), which builds the intermediate tensors.

use std::sync::Arc;

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::elems;

trait Real: Copy + Send + Sync + PartialOrd + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> {
    const ZERO: Self;
    fn abs(self) -> Self;
    fn sign(self) -> Self;
}

macro_rules! real {
    ($t:ty) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn sign(self) -> Self {
                if self > 0.0 {
                    1.0
                } else if self < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
        }
    };
}
real!(f32);
real!(f64);

fn fast(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64))
        && ts.windows(2).all(|p| p[0].dtype() == p[1].dtype())
}

/// `Σ_r w[b, r] |M[idx[b·m + r], :]|`, see the module docs. `idx` holds `B·m` row indices of `M`.
pub fn gathered_abs_rows(mat: &Tensor, w: &Tensor, idx: &Arc<Vec<u32>>) -> Result<Tensor> {
    let (n_rows, _) = mat.dims2()?;
    let (b, m) = w.dims2()?;
    if idx.len() != b * m {
        bail!("gathered_abs_rows: {} indices for a [{b}, {m}] weight", idx.len())
    }
    if let Some(bad) = idx.iter().find(|&&i| i as usize >= n_rows) {
        bail!("gathered_abs_rows: row {bad} of a matrix with {n_rows} rows")
    }
    if fast(&[mat, w]) {
        return mat.apply_op2(w, Gathered { idx: idx.clone() });
    }
    let t = Tensor::from_slice(idx, idx.len(), mat.device())?;
    let (_, n) = mat.dims2()?;
    let a = mat.index_select(&t, 0)?.reshape((b, m, n))?.abs()?;
    w.unsqueeze(1)?.matmul(&a)?.squeeze(1)
}

/// `Σ_g |Y[b', g, :]| r[b, owner[g, :]]`, see the module docs. `owner` holds `G·n` column indices of `r`
/// (`N` = "none").
pub fn grouped_abs(y: &Tensor, radius: &Tensor, owner: &Arc<Vec<u32>>) -> Result<Tensor> {
    let (bs, g, n) = y.dims3()?;
    let (b, n_in) = radius.dims2()?;
    if bs != 1 && bs != b {
        bail!("grouped_abs: {bs} leading rows for a batch of {b}")
    }
    if owner.len() != g * n || owner.iter().any(|&o| o as usize > n_in) {
        bail!("grouped_abs: owner table does not fit [{g}, {n}] groups over {n_in} inputs")
    }
    if fast(&[y, radius]) {
        let r = radius.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        return y.apply_op1(Grouped { owner: owner.clone(), radius: Arc::new(r), b, n_in });
    }
    let zero = Tensor::zeros((b, 1), radius.dtype(), radius.device())?;
    let ext = Tensor::cat(&[radius, &zero], 1)?;
    let idx = Tensor::from_slice(owner, owner.len(), radius.device())?;
    let r = ext.index_select(&idx, 1)?.reshape((b, g, n))?;
    y.abs()?.broadcast_mul(&r)?.sum(1)
}

struct Gathered {
    idx: Arc<Vec<u32>>,
}

fn gathered_fwd<T: Real>(mat: &[T], w: &[T], idx: &[u32], b: usize, m: usize, n: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; b * n];
    out.par_chunks_mut(n.max(1)).enumerate().for_each(|(e, acc)| {
        for r in 0..m {
            let wr = w[e * m + r];
            if wr == T::ZERO {
                continue;
            }
            let row = &mat[idx[e * m + r] as usize * n..][..n];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a = *a + wr * v.abs();
            }
        }
    });
    out
}

impl CustomOp2 for Gathered {
    fn name(&self) -> &'static str {
        "dualnet-gathered-abs-rows"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (&[_, n], &[b, m]) = (l1.dims(), l2.dims()) else { bail!("{}: expects [N, n] and [B, m]", self.name()) };
        let out = dispatch!(self.name(); s1, l1; s2, l2 => |a, w| gathered_fwd(a, w, &self.idx, b, m, n))?;
        Ok((out, Shape::from((b, n))))
    }

    fn bwd(&self, mat: &Tensor, w: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gm = match mat.track_op() {
            true => Some(mat.apply_op2_no_bwd(&Tensor::cat(&[w, g], 1)?, &GatheredGradM { idx: self.idx.clone() })?),
            false => None,
        };
        let gw = match w.track_op() {
            true => Some(mat.apply_op2_no_bwd(g, &GatheredGradW { idx: self.idx.clone(), m: w.dims2()?.1 })?),
            false => None,
        };
        Ok((gm, gw))
    }
}

/// `∂M` of [`Gathered`]: operands `M [N, n]` and `[w | g]` (`[B, m + n]`).
struct GatheredGradM {
    idx: Arc<Vec<u32>>,
}

fn gathered_grad_m<T: Real>(mat: &[T], wg: &[T], idx: &[u32], b: usize, m: usize, n: usize) -> Vec<T> {
    let n_rows = mat.len() / n.max(1);
    // Inverse lists: the (example, row) pairs that read each matrix row.
    let mut start = vec![0usize; n_rows + 1];
    for &i in idx {
        start[i as usize + 1] += 1;
    }
    for i in 0..n_rows {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut pairs = vec![0usize; idx.len()];
    for (k, &i) in idx.iter().enumerate() {
        pairs[fill[i as usize]] = k;
        fill[i as usize] += 1;
    }
    let mut out = vec![T::ZERO; mat.len()];
    out.par_chunks_mut(n.max(1)).enumerate().for_each(|(i, acc)| {
        for &k in &pairs[start[i]..start[i + 1]] {
            let (e, r) = (k / m, k % m);
            let wr = wg[e * (m + n) + r];
            if wr == T::ZERO {
                continue;
            }
            let ge = &wg[e * (m + n) + m..][..n];
            for (a, &gv) in acc.iter_mut().zip(ge) {
                *a = *a + wr * gv;
            }
        }
        for (a, &v) in acc.iter_mut().zip(&mat[i * n..][..n]) {
            *a = *a * v.sign();
        }
    });
    let _ = b;
    out
}

impl CustomOp2 for GatheredGradM {
    fn name(&self) -> &'static str {
        "dualnet-gathered-abs-rows-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (&[rows, n], &[b, mn]) = (l1.dims(), l2.dims()) else { bail!("{}: bad operands", self.name()) };
        let m = mn - n;
        let out = dispatch!(self.name(); s1, l1; s2, l2 => |a, wg| gathered_grad_m(a, wg, &self.idx, b, m, n))?;
        Ok((out, Shape::from((rows, n))))
    }
}

/// `∂w` of [`Gathered`]: `∂w[b, r] = <|M[idx[b·m + r], :]|, g[b, :]>`, operands `M [N, n]` and `g [B, n]`.
struct GatheredGradW {
    idx: Arc<Vec<u32>>,
    m: usize,
}

fn gathered_grad_w<T: Real>(mat: &[T], g: &[T], idx: &[u32], m: usize, n: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; idx.len()];
    out.par_chunks_mut(m.max(1)).enumerate().for_each(|(e, dw)| {
        let ge = &g[e * n..][..n];
        for (r, d) in dw.iter_mut().enumerate() {
            let row = &mat[idx[e * m + r] as usize * n..][..n];
            *d = row.iter().zip(ge).fold(T::ZERO, |acc, (&v, &gv)| acc + v.abs() * gv);
        }
    });
    out
}

impl CustomOp2 for GatheredGradW {
    fn name(&self) -> &'static str {
        "dualnet-gathered-abs-rows-grad-w"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (&[_, n], &[b, _]) = (l1.dims(), l2.dims()) else { bail!("{}: bad operands", self.name()) };
        let out = dispatch!(self.name(); s1, l1; s2, l2 => |a, g| gathered_grad_w(a, g, &self.idx, self.m, n))?;
        Ok((out, Shape::from((b, self.m))))
    }
}

struct Grouped {
    owner: Arc<Vec<u32>>,
    /// `[B, N]` radii (row-major, f64).
    radius: Arc<Vec<f64>>,
    b: usize,
    n_in: usize,
}

trait FromF64 {
    fn from_f64(v: f64) -> Self;
}
impl FromF64 for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}
impl FromF64 for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
}

impl Grouped {
    fn r<T: FromF64 + Real>(&self, e: usize, o: u32) -> T {
        match o as usize {
            o if o < self.n_in => T::from_f64(self.radius[e * self.n_in + o]),
            _ => T::ZERO,
        }
    }

    fn fwd<T: Real + FromF64>(&self, y: &[T], bs: usize, g: usize, n: usize) -> Vec<T> {
        let mut out = vec![T::ZERO; self.b * n];
        out.par_chunks_mut(n.max(1)).enumerate().for_each(|(e, acc)| {
            let yb = &y[if bs == 1 { 0 } else { e * g * n }..][..g * n];
            for (k, (&v, &o)) in yb.iter().zip(self.owner.iter()).enumerate() {
                if v != T::ZERO {
                    let j = k % n;
                    acc[j] = acc[j] + v.abs() * self.r::<T>(e, o);
                }
            }
        });
        out
    }

    fn grad<T: Real + FromF64>(&self, y: &[T], gr: &[T], bs: usize, g: usize, n: usize) -> Vec<T> {
        let mut out = vec![T::ZERO; bs * g * n];
        out.par_chunks_mut((g * n).max(1)).enumerate().for_each(|(e0, acc)| {
            let examples: Vec<usize> = if bs == 1 { (0..self.b).collect() } else { vec![e0] };
            let yb = &y[e0 * g * n..][..g * n];
            for e in examples {
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = *a + self.r::<T>(e, self.owner[k]) * gr[e * n + k % n];
                }
            }
            for (a, &v) in acc.iter_mut().zip(yb) {
                *a = *a * v.sign();
            }
        });
        out
    }
}

impl CustomOp1 for Grouped {
    fn name(&self) -> &'static str {
        "dualnet-grouped-abs"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[bs, g, n] = l.dims() else { bail!("{}: expects [B, G, n]", self.name()) };
        let out = match s {
            CpuStorage::F32(y) => CpuStorage::F32(self.fwd(&elems(y, l), bs, g, n)),
            CpuStorage::F64(y) => CpuStorage::F64(self.fwd(&elems(y, l), bs, g, n)),
            _ => bail!("{}: f32 or f64 only", self.name()),
        };
        Ok((out, Shape::from((self.b, n))))
    }

    fn bwd(&self, y: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let op = GroupedGrad {
            inner: Grouped { owner: self.owner.clone(), radius: self.radius.clone(), b: self.b, n_in: self.n_in },
        };
        Ok(Some(y.apply_op2_no_bwd(g, &op)?))
    }
}

/// `∂Y` of [`Grouped`]: operands `Y [B', G, n]` and the output gradient `[B, n]`.
struct GroupedGrad {
    inner: Grouped,
}

impl CustomOp2 for GroupedGrad {
    fn name(&self) -> &'static str {
        "dualnet-grouped-abs-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[bs, g, n] = l1.dims() else { bail!("{}: expects [B, G, n]", self.name()) };
        let out = dispatch!(self.name(); s1, l1; s2, l2 => |y, gr| self.inner.grad(y, gr, bs, g, n))?;
        Ok((out, Shape::from((bs, g, n))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    use crate::kernels::testing::max_diff;

    fn grad(store: &candle_core::backprop::GradStore, v: &Var) -> Result<Tensor> {
        store.get(v.as_tensor()).cloned().ok_or_else(|| candle_core::Error::Msg("no grad".into()))
    }

    /// Both fused terms and their gradients against the plain composition of candle ops (f64, so the only
    /// difference is summation order).
    #[test]
    fn fused_terms_match_the_composition() -> Result<()> {
        let dev = Device::Cpu;
        let (b, m, n, rows) = (3, 5, 7, 11);
        let mat = Var::from_tensor(&Tensor::randn(0f64, 1., (rows, n), &dev)?)?;
        let w = Var::from_tensor(&Tensor::rand(0f64, 1., (b, m), &dev)?)?;
        let idx: Arc<Vec<u32>> = Arc::new((0..b * m).map(|k| ((k * 7) % rows) as u32).collect());
        let gout = Tensor::randn(0f64, 1., (b, n), &dev)?;
        let ours = gathered_abs_rows(mat.as_tensor(), w.as_tensor(), &idx)?;
        let t = Tensor::from_slice(&idx, idx.len(), &dev)?;
        let plain = w.unsqueeze(1)?.matmul(&mat.index_select(&t, 0)?.reshape((b, m, n))?.abs()?)?.squeeze(1)?;
        assert!(max_diff(&ours, &plain)? < 1e-12);
        let g1 = (ours * &gout)?.sum_all()?.backward()?;
        let g2 = (plain * &gout)?.sum_all()?.backward()?;
        assert!(max_diff(&grad(&g1, &mat)?, &grad(&g2, &mat)?)? < 1e-12);
        assert!(max_diff(&grad(&g1, &w)?, &grad(&g2, &w)?)? < 1e-12);

        // Grouped: 4 groups over n units, owners among 6 inputs or "none" (6); shared and per-example Y.
        let (g, n_in) = (4, 6);
        let owner: Arc<Vec<u32>> = Arc::new((0..g * n).map(|k| ((k * 5) % (n_in + 1)) as u32).collect());
        let radius = Tensor::rand(0f64, 1., (b, n_in), &dev)?;
        for bs in [1, b] {
            let y = Var::from_tensor(&Tensor::randn(0f64, 1., (bs, g, n), &dev)?)?;
            let ours = grouped_abs(y.as_tensor(), &radius, &owner)?;
            let ext = Tensor::cat(&[&radius, &Tensor::zeros((b, 1), DType::F64, &dev)?], 1)?;
            let r = ext.index_select(&Tensor::from_slice(&owner, owner.len(), &dev)?, 1)?.reshape((b, g, n))?;
            let plain = y.abs()?.broadcast_mul(&r)?.sum(1)?;
            assert!(max_diff(&ours, &plain)? < 1e-12);
            let g1 = (ours * &gout)?.sum_all()?.backward()?;
            let g2 = (plain * &gout)?.sum_all()?.backward()?;
            assert!(max_diff(&grad(&g1, &y)?, &grad(&g2, &y)?)? < 1e-12);
        }
        Ok(())
    }
}
