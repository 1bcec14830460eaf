//! The median estimator of random projections (paper Theorem 2): `median_q |a[b, q, j]|` over the `k`
//! projections, `a: [B, k, n] → [B, n]`, the lower middle `(k − 1)/2`-th order statistic for even `k` (like
//! `torch.median`). One pass per example on the CPU, [`LANES`] columns at a time: their `k` rows of `|a|` are
//! loaded contiguously into a small buffer and a **selection network** (Batcher's odd–even merge sort for the
//! next power of two, cut to the comparators that can move the middle position, see [`median_network`]) runs on
//! all lanes at once with branch-free min/max; the selected `q*` is then found by equality (the first row whose
//! `|a|` equals the median). No sort, no transposed or host copies of the `[B, k, n]` operand. The gradient goes
//! to the selected entry: `∂a[b, q*, j] = sign(a[b, q*, j]) g[b, j]`, zero elsewhere; the `q*` are kept from
//! the forward pass. A column with a non-finite entry (NaN or ±∞) has median NaN: the comparators would
//! silently drop a NaN (`NaN < x` is false), and a bound built from such a column must not look finite.

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::elems;

/// Columns per network pass (one AVX register of f32 or two of f64).
const LANES: usize = 8;

/// Comparators `(i, j)`, `i < j`, of a network that puts the `(k − 1)/2`-th smallest of `k` values at position
/// `(k − 1)/2`: Batcher's odd–even merge sort of `p = 2^⌈log₂ k⌉` entries, without the comparators that touch a
/// position `≥ k` (think of those as +∞ pads: a comparator against a pad never moves anything) and without
/// those whose outputs never reach the middle position (pruned backwards from it). For k = 50: 543 → 325.
pub fn median_network(k: usize) -> Vec<(usize, usize)> {
    let p = k.next_power_of_two();
    let mut net = Vec::new();
    let mut q = 1;
    while q < p {
        let mut d = q;
        while d >= 1 {
            let mut j = d % q;
            while j + d < p {
                for i in 0..d.min(p - j - d) {
                    if (i + j) / (2 * q) == (i + j + d) / (2 * q) && i + j + d < k {
                        net.push((i + j, i + j + d));
                    }
                }
                j += 2 * d;
            }
            d /= 2;
        }
        q *= 2;
    }
    let mut needed = vec![false; k];
    if k > 0 {
        needed[(k - 1) / 2] = true;
    }
    let mut kept: Vec<(usize, usize)> = net
        .into_iter()
        .rev()
        .filter(|&(i, j)| {
            let keep = needed[i] || needed[j];
            if keep {
                needed[i] = true;
                needed[j] = true;
            }
            keep
        })
        .collect();
    kept.reverse();
    kept
}

trait Ord2: super::Float + Default + PartialOrd {
    fn abs(self) -> Self;
    fn signed(self, g: Self) -> Self;
    fn is_finite(self) -> bool;
    fn nan() -> Self;
}

macro_rules! ord2 {
    ($t:ty) => {
        impl Ord2 for $t {
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn nan() -> Self {
                <$t>::NAN
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
    let (b, k, _) = a.dims3()?;
    if k == 0 {
        bail!("median over zero projections")
    }
    a.apply_op1(MedianAbs { b, k, arg: Mutex::new(None) })
}

/// The same for `a` in merged layout `[B·k, *shape]` (the `k` rows of example `b` are rows `b·k .. (b+1)·k`):
/// `→ [B, n]`, `n = Π shape`. No reshape node reaches autograd.
pub fn median_abs_merged(a: &Tensor, b: usize) -> Result<Tensor> {
    let rows = a.dims().first().copied().unwrap_or(0);
    if b == 0 || rows == 0 || rows % b != 0 {
        bail!("median over projections: {rows} rows do not split into {b} examples")
    }
    a.apply_op1(MedianAbs { b, k: rows / b, arg: Mutex::new(None) })
}

struct MedianAbs {
    b: usize,
    k: usize,
    /// `q*` per output entry, from the last forward pass (for the backward pass).
    arg: Mutex<Option<Vec<u32>>>,
}

fn fwd<T: Ord2>(a: &[T], b: usize, k: usize, n: usize) -> (Vec<T>, Vec<u32>) {
    let mid = (k - 1) / 2;
    let net = median_network(k);
    let mut arg = vec![0u32; b * n];
    // Every element is written: each chunk is one example's `n` columns, each column written once (NaN or the
    // median).
    let out = super::output_vec(b * n, |out| {
        out.par_chunks_mut(n.max(1)).zip(arg.par_chunks_mut(n.max(1))).enumerate().for_each(|(e, (o, ar))| {
            let ab = &a[e * k * n..][..k * n];
            let mut buf = vec![[T::default(); LANES]; k];
            for j0 in (0..n).step_by(LANES) {
                let w = LANES.min(n - j0);
                let mut bad = [false; LANES];
                for (q, lane) in buf.iter_mut().enumerate() {
                    let row = &ab[q * n + j0..][..w];
                    for ((x, &v), b) in lane.iter_mut().zip(row).zip(bad.iter_mut()) {
                        *x = v.abs();
                        *b |= !v.is_finite();
                    }
                }
                for &(i, j) in &net {
                    let (x, y) = (buf[i], buf[j]);
                    buf[i] = std::array::from_fn(|l| if y[l] < x[l] { y[l] } else { x[l] });
                    buf[j] = std::array::from_fn(|l| if y[l] < x[l] { x[l] } else { y[l] });
                }
                for l in 0..w {
                    let m = buf[mid][l];
                    if bad[l] {
                        o[j0 + l].write(T::nan());
                        ar[j0 + l] = 0;
                        continue;
                    }
                    o[j0 + l].write(m);
                    ar[j0 + l] = (0..k).find(|&q| ab[q * n + j0 + l].abs() == m).unwrap_or(0) as u32;
                }
            }
        });
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
        let (b, k) = (self.b, self.k);
        let n = l.shape().elem_count() / (b * k);
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
        Ok(Some(a.apply_op2_no_bwd(g, &MedianAbsGrad { b: self.b, k: self.k, arg })?))
    }
}

/// `∂a` of [`MedianAbs`]: operands `a` (`[B, k, n]` or merged) and `g [B, n]`; the result has `a`'s shape.
struct MedianAbsGrad {
    b: usize,
    k: usize,
    arg: Vec<u32>,
}

impl candle_core::CustomOp2 for MedianAbsGrad {
    fn name(&self) -> &'static str {
        "dualnet-median-abs-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let k = self.k;
        let n = l1.shape().elem_count() / (self.b * k);
        let out = dispatch!(self.name(); s1, l1; s2, l2 => |a, g| bwd(a, g, &self.arg, k, n))?;
        Ok((out, l1.shape().clone()))
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

    /// A column with one NaN or ±∞ among finite values has median NaN (the comparators alone would drop a
    /// NaN and return a finite middle); the other columns are untouched. Column 0: 1, NaN, 3 → NaN; column 1:
    /// 1, ∞, 2 → NaN; column 2: 4, 5, 6 → 5.
    #[test]
    fn non_finite_columns_give_nan() -> Result<()> {
        let dev = Device::Cpu;
        for nan in [f32::NAN, f32::INFINITY] {
            let a = Tensor::new(&[[[1f32, 1.0, 4.0], [nan, f32::INFINITY, 5.0], [3.0, 2.0, -6.0]]], &dev)?;
            let m = median_abs(&a)?.to_vec2::<f32>()?;
            assert!(m[0][0].is_nan() && m[0][1].is_nan(), "{m:?}");
            assert_eq!(m[0][2], 5.0);
        }
        let a = Tensor::new(&[[[f64::NAN], [1.0], [2.0]]], &dev)?;
        assert!(median_abs(&a)?.to_vec2::<f64>()?[0][0].is_nan());
        Ok(())
    }

    /// The pruned network selects the middle of every k up to 70 (against a sort), on random values with ties,
    /// and is the size the doc states for k = 50.
    #[test]
    fn network_selects_the_middle() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for k in 1..=70usize {
            let net = median_network(k);
            assert!(net.iter().all(|&(i, j)| i < j && j < k));
            for _ in 0..50 {
                let mut v: Vec<f32> = (0..k).map(|_| (rng.random_range(0..20) as f32) * 0.5).collect();
                let mut sorted = v.clone();
                sorted.sort_by(f32::total_cmp);
                for &(i, j) in &net {
                    if v[j] < v[i] {
                        v.swap(i, j);
                    }
                }
                assert_eq!(v[(k - 1) / 2], sorted[(k - 1) / 2], "k = {k}");
            }
        }
        assert!(median_network(64).len() > median_network(50).len());
        assert_eq!(median_network(50).len(), 325);
    }
}
