//! Fused interval kernels for interval-bound training (Gowal et al. 2018) on **packed** tensors.
//!
//! A packed tensor is `[S·B, *shape]`: `S = p + 1` slices of `B` rows. Slices `0..p` are *points* pushed through
//! the plain network (slice 0 is the box centre `c`; further points, such as the clean inputs, ride along), and
//! slice `p` is the box radius `r ≥ 0`. One op per layer then carries the interval rule and the clean forward
//! pass together, in one candle node with one backward, instead of the dozen candle ops (each with its own
//! allocation and gradient accumulation) of the rule composed from `linear`, `bias`, `linear_abs` and `interval`.
//!
//! - [`conv2d`]: points `w ⋆ x + b`, radius `|w| ⋆ r` (an affine map sends the box `c ± r` into
//!   `A c + b ± |A| r`).
//! - [`linear`]: points `x wᵀ + b`, radius `r |w|ᵀ`.
//! - [`relu`]: the centre and radius `c' = (relu(c + r) + relu(c − r))/2`, `r' = (relu(c + r) − relu(c − r))/2`;
//!   every other point `relu(x)`.
//!
//! Backward (hand-derived; `tests` checks each against candle's autograd of the composed rule):
//! - conv: `∂x_pts = wᵀ ⋆ g_pts`, `∂r = |w|ᵀ ⋆ g_r`, `∂w = Σ g_pts ⊗ x_pts + sign(w) ⊙ Σ g_r ⊗ r`,
//!   `∂b = Σ g_pts` (over points, rows and positions);
//! - linear: `∂x_pts = g_pts w`, `∂r = g_r |w|`, `∂w = g_ptsᵀ x_pts + sign(w) ⊙ g_rᵀ r`, `∂b = Σ g_pts`;
//! - relu, with `a_u = [c + r > 0]`, `a_l = [c − r > 0]`: `∂c = ½(a_u + a_l) g_c + ½(a_u − a_l) g_r`,
//!   `∂r = ½(a_u − a_l) g_c + ½(a_u + a_l) g_r`; a point `∂x = [x > 0] g`.
//!
//! The backward ops have no backward of their own: these kernels serve first-order training only. NaN
//! propagates through `relu` (a NaN bound must reach the loss, where training stops on it, rather than read as
//! an inactive unit). CPU, f32 and f64: callers use the composed rule elsewhere ([`supported`]).

use std::mem::MaybeUninit;

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{self, Elem, Geom};
use super::{check, dims4};

/// Whether these kernels handle the operands: CPU tensors of one float dtype (f32 or f64).
pub fn supported(a: &Tensor, w: &Tensor) -> bool {
    super::fast_path(a, w)
}

/// Elements per parallel task of the elementwise kernels.
const CHUNK: usize = 1 << 14;

/// The arithmetic the elementwise rules need, for f32 and f64.
trait Num:
    Elem + PartialOrd + std::ops::Add<Output = Self> + std::ops::Sub<Output = Self> + std::ops::Mul<Output = Self>
{
    const HALF: Self;
    fn abs(self) -> Self;
    /// `max(x, 0)`, with NaN kept.
    fn relu(self) -> Self {
        if self > Self::ZERO || self != self {
            self
        } else {
            Self::ZERO
        }
    }
    /// `−1`, `0` or `1`: the derivative of `|w|` (0 at 0).
    fn sign(self) -> Self {
        if self > Self::ZERO {
            Self::ONE
        } else if self < Self::ZERO {
            Self::ZERO - Self::ONE
        } else {
            Self::ZERO
        }
    }
}
impl Num for f32 {
    const HALF: Self = 0.5;
    fn abs(self) -> Self {
        f32::abs(self)
    }
}
impl Num for f64 {
    const HALF: Self = 0.5;
    fn abs(self) -> Self {
        f64::abs(self)
    }
}

/// `(points, rows)`: the packed batch `n` split into `S = points + 1` slices of `rows`.
fn slices(n: usize, points: usize, op: &str) -> Result<(usize, usize)> {
    if points == 0 || n % (points + 1) != 0 {
        bail!("{op}: a packed batch of {n} rows does not hold {points} point slices and a radius slice")
    }
    Ok((points, n / (points + 1)))
}

/// The interval rule of `conv2d` with bias on a packed `x [S·B, C_in, H, W]`: `[S·B, C_out, H', W']`.
pub fn conv2d(x: &Tensor, w: &Tensor, b: &Tensor, stride: usize, padding: usize, points: usize) -> Result<Tensor> {
    let (_, _, h, wd) = x.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    let out = |n: usize, k: usize, side: &str| -> Result<usize> {
        if n + 2 * padding < k {
            bail!("interval conv2d: kernel {side} {k} exceeds padded input {side} {n} + 2×{padding}")
        }
        Ok((n + 2 * padding - k) / stride.max(1) + 1)
    };
    let (ho, wo) = (out(h, kh, "height")?, out(wd, kw, "width")?);
    x.apply_op3(w, b, IntervalConv { s: stride, p: padding, ho, wo, points })
}

/// The interval rule of `relu` on a packed tensor (any shape `[S·B, ...]`).
pub fn relu(x: &Tensor, points: usize) -> Result<Tensor> {
    x.apply_op1(IntervalRelu { points })
}

/// The interval rule of `linear` with bias on a packed `x [S·B, in]`, `w [out, in]`, `b [out]`: `[S·B, out]`.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, points: usize) -> Result<Tensor> {
    x.apply_op3(w, b, IntervalLinear { points })
}

fn dims2(l: &Layout, op: &str, what: &str) -> Result<(usize, usize)> {
    match *l.dims() {
        [a, b] => Ok((a, b)),
        ref d => bail!("{op}: {what} must have rank 2, got shape {d:?}"),
    }
}

struct IntervalLinear {
    points: usize,
}

fn linear_fwd<T: Num>(x: &[T], w: &[T], b: &[T], n: usize, points: usize, (o, i): (usize, usize)) -> Vec<T> {
    let rows = n / (points + 1);
    let np = points * rows;
    let wabs: Vec<T> = w.iter().map(|v| v.abs()).collect();
    let mut out = vec![T::ZERO; n * o];
    let (pts, rad) = out.split_at_mut(np * o);
    for row in pts.chunks_mut(o) {
        row.copy_from_slice(b);
    }
    cpu::gemm_rows(pts, (np, o, i), &x[..np * i], false, w, true, true);
    cpu::gemm_rows(rad, (rows, o, i), &x[np * i..], false, &wabs, true, false);
    out
}

impl CustomOp3 for IntervalLinear {
    fn name(&self) -> &'static str {
        "dualnet-interval-linear"
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
        let (n, i) = dims2(l1, self.name(), "input")?;
        let (o, i_w) = dims2(l2, self.name(), "weight")?;
        if i != i_w || l3.shape().elem_count() != o {
            bail!(
                "{}: input {:?}, weight {:?} and bias {:?} do not match",
                self.name(),
                l1.dims(),
                l2.dims(),
                l3.dims()
            )
        }
        slices(n, self.points, self.name())?;
        let points = self.points;
        let out = dispatch!(self.name(); s1, l1; s2, l2; s3, l3 => |x, w, b| linear_fwd(x, w, b, n, points, (o, i)))?;
        Ok((out, Shape::from((n, o))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (o, i) = w.dims2()?;
        let gx = match x.track_op() {
            true => Some(g.apply_op2_no_bwd(w, &IntervalLinearGradInput { points: self.points })?),
            false => None,
        };
        let (gw, gb) = match w.track_op() || b.track_op() {
            true => {
                let flat = x.apply_op3_no_bwd(g, w, &IntervalLinearGradWeight { points: self.points })?;
                let gw = flat.narrow(0, 0, o * i)?.reshape((o, i))?;
                let gb = flat.narrow(0, o * i, o)?.reshape(b.shape())?;
                (w.track_op().then_some(gw), b.track_op().then_some(gb))
            }
            false => (None, None),
        };
        Ok((gx, gw, gb))
    }
}

/// `g [S·B, out]`, `w [out, in]` → `∂x [S·B, in]` of [`IntervalLinear`].
struct IntervalLinearGradInput {
    points: usize,
}

impl CustomOp2 for IntervalLinearGradInput {
    fn name(&self) -> &'static str {
        "dualnet-interval-linear-grad-input"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, o) = dims2(l1, self.name(), "output gradient")?;
        let (o_w, i) = dims2(l2, self.name(), "weight")?;
        if o != o_w {
            bail!("{}: gradient {:?} and weight {:?} do not match", self.name(), l1.dims(), l2.dims())
        }
        let (points, rows) = slices(n, self.points, self.name())?;
        let np = points * rows;
        let out = dispatch!(self.name(); s1, l1; s2, l2 => |gy, w| linear_grad_input(gy, w, n, np, rows, (o, i)))?;
        Ok((out, Shape::from((n, i))))
    }
}

/// `x [S·B, in]`, `g [S·B, out]`, `w [out, in]` → `[out·in + out]`: the weight gradient of [`IntervalLinear`]
/// (row-major) followed by its bias gradient.
struct IntervalLinearGradWeight {
    points: usize,
}

fn linear_grad_weight<T: Num>(x: &[T], gy: &[T], w: &[T], n: usize, points: usize, (o, i): (usize, usize)) -> Vec<T> {
    let rows = n / (points + 1);
    let np = points * rows;
    let mut gw = vec![T::ZERO; o * i];
    let mut gr = vec![T::ZERO; o * i];
    cpu::gemm_rows(&mut gw, (o, i, np), &gy[..np * o], true, &x[..np * i], false, false);
    cpu::gemm_rows(&mut gr, (o, i, rows), &gy[np * o..], true, &x[np * i..], false, false);
    for ((a, r), wv) in gw.iter_mut().zip(&gr).zip(w) {
        *a += wv.sign() * *r;
    }
    let mut gb = vec![T::ZERO; o];
    for row in gy[..np * o].chunks(o) {
        for (acc, &v) in gb.iter_mut().zip(row) {
            *acc += v;
        }
    }
    gw.extend(gb);
    gw
}

impl CustomOp3 for IntervalLinearGradWeight {
    fn name(&self) -> &'static str {
        "dualnet-interval-linear-grad-weight"
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
        let (n, i) = dims2(l1, self.name(), "input")?;
        let (n_g, o) = dims2(l2, self.name(), "output gradient")?;
        let (o_w, i_w) = dims2(l3, self.name(), "weight")?;
        if n != n_g || o != o_w || i != i_w {
            bail!(
                "{}: input {:?}, gradient {:?} and weight {:?} do not match",
                self.name(),
                l1.dims(),
                l2.dims(),
                l3.dims()
            )
        }
        slices(n, self.points, self.name())?;
        let points = self.points;
        let out = dispatch!(self.name(); s1, l1; s2, l2; s3, l3 => |x, gy, w| linear_grad_weight(x, gy, w, n, points, (o, i)))?;
        Ok((out, Shape::from(o * i + o)))
    }
}

fn linear_grad_input<T: Num>(gy: &[T], w: &[T], n: usize, np: usize, rows: usize, (o, i): (usize, usize)) -> Vec<T> {
    let mut out = vec![T::ZERO; n * i];
    let wabs: Vec<T> = w.iter().map(|v| v.abs()).collect();
    let (pts, rad) = out.split_at_mut(np * i);
    cpu::gemm_rows(pts, (np, i, o), &gy[..np * o], false, w, false, false);
    cpu::gemm_rows(rad, (rows, i, o), &gy[np * o..], false, &wabs, false, false);
    out
}

struct IntervalConv {
    s: usize,
    p: usize,
    ho: usize,
    wo: usize,
    points: usize,
}

impl IntervalConv {
    fn geom(&self, l1: &Layout, l2: &Layout) -> Result<(usize, Geom)> {
        let (n, c_in, h, w) = dims4(l1, "interval-conv2d", "input")?;
        let (c_out, c_in_w, kh, kw) = dims4(l2, "interval-conv2d", "kernel")?;
        check(c_in, c_in_w, self.s, "interval-conv2d")?;
        Ok((n, Geom { c_in, h, w, c_out, ho: self.ho, wo: self.wo, kh, kw, s: self.s, p: self.p }))
    }
}

fn conv_fwd<T: Num>(x: &[T], w: &[T], b: &[T], n: usize, points: usize, g: &Geom) -> Vec<T> {
    let rows = n / (points + 1);
    let np = points * rows;
    let (ii, oi, hw) = (g.in_img(), g.out_img(), g.ho * g.wo);
    if n == 0 || g.degenerate() {
        let mut out = vec![T::ZERO; n * oi];
        add_bias(&mut out[..np * oi], b, hw);
        return out;
    }
    let wabs: Vec<T> = w.iter().map(|v| v.abs()).collect();
    let mut out = super::output_vec(n * oi, |out: &mut [MaybeUninit<T>]| {
        // Every element is written: the two convolutions cover the point rows and the radius rows.
        let (pts, rad) = out.split_at_mut(np * oi);
        cpu::conv2d_into(&x[..np * ii], w, np, g, pts);
        cpu::conv2d_into(&x[np * ii..], &wabs, rows, g, rad);
    });
    add_bias(&mut out[..np * oi], b, hw);
    out
}

/// `out[i, c, ·] += b[c]` for maps of `hw` positions.
fn add_bias<T: Num>(out: &mut [T], b: &[T], hw: usize) {
    let img = b.len() * hw;
    if img == 0 {
        return;
    }
    out.par_chunks_mut(img).for_each(|o| {
        for (m, &bv) in o.chunks_mut(hw).zip(b) {
            for v in m {
                *v += bv;
            }
        }
    });
}

impl CustomOp3 for IntervalConv {
    fn name(&self) -> &'static str {
        "dualnet-interval-conv2d"
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
        let (n, g) = self.geom(l1, l2)?;
        slices(n, self.points, self.name())?;
        if l3.shape().elem_count() != g.c_out {
            bail!("{}: bias has {} elements for {} channels", self.name(), l3.shape().elem_count(), g.c_out)
        }
        let points = self.points;
        let out = dispatch!(self.name(); s1, l1; s2, l2; s3, l3 => |x, w, b| conv_fwd(x, w, b, n, points, &g))?;
        Ok((out, Shape::from((n, g.c_out, self.ho, self.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, wd) = x.dims4()?;
        let (c_out, c_in, kh, kw) = w.dims4()?;
        let gx = match x.track_op() {
            true => Some(
                g.apply_op2_no_bwd(w, &IntervalConvGradInput { s: self.s, p: self.p, h, w: wd, points: self.points })?,
            ),
            false => None,
        };
        let (gw, gb) = match w.track_op() || b.track_op() {
            true => {
                let flat =
                    x.apply_op3_no_bwd(g, w, &IntervalConvGradWeight { s: self.s, p: self.p, points: self.points })?;
                let len = c_out * c_in * kh * kw;
                let gw = flat.narrow(0, 0, len)?.reshape((c_out, c_in, kh, kw))?;
                let gb = flat.narrow(0, len, c_out)?.reshape(b.shape())?;
                (w.track_op().then_some(gw), b.track_op().then_some(gb))
            }
            false => (None, None),
        };
        Ok((gx, gw, gb))
    }
}

/// `g [S·B, C_out, H', W']`, `w` → `∂x [S·B, C_in, h, w]` of [`IntervalConv`].
struct IntervalConvGradInput {
    s: usize,
    p: usize,
    h: usize,
    w: usize,
    points: usize,
}

fn conv_grad_input<T: Num>(gy: &[T], w: &[T], n: usize, points: usize, g: &Geom) -> Vec<T> {
    let rows = n / (points + 1);
    let np = points * rows;
    let (ii, oi) = (g.in_img(), g.out_img());
    let mut out = cpu::zeroed(n * ii);
    if n == 0 || g.degenerate() {
        return out;
    }
    let wabs: Vec<T> = w.iter().map(|v| v.abs()).collect();
    let (pts, rad) = out.split_at_mut(np * ii);
    cpu::conv_transpose2d_into(&gy[..np * oi], w, np, g, pts);
    cpu::conv_transpose2d_into(&gy[np * oi..], &wabs, rows, g, rad);
    out
}

impl CustomOp2 for IntervalConvGradInput {
    fn name(&self) -> &'static str {
        "dualnet-interval-conv2d-grad-input"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c_out, ho, wo) = dims4(l1, self.name(), "output gradient")?;
        let (c_out_w, c_in, kh, kw) = dims4(l2, self.name(), "kernel")?;
        check(c_out, c_out_w, self.s, self.name())?;
        slices(n, self.points, self.name())?;
        let g = Geom { c_in, h: self.h, w: self.w, c_out, ho, wo, kh, kw, s: self.s, p: self.p };
        let points = self.points;
        let out = dispatch!(self.name(); s1, l1; s2, l2 => |gy, w| conv_grad_input(gy, w, n, points, &g))?;
        Ok((out, Shape::from((n, c_in, self.h, self.w))))
    }
}

/// `x [S·B, C_in, H, W]`, `g [S·B, C_out, H', W']`, `w` → `[C_out·C_in·kh·kw + C_out]`: the kernel gradient of
/// [`IntervalConv`] (row-major) followed by its bias gradient.
struct IntervalConvGradWeight {
    s: usize,
    p: usize,
    points: usize,
}

fn conv_grad_weight<T: Num>(x: &[T], gy: &[T], w: &[T], n: usize, points: usize, g: &Geom) -> Vec<T> {
    let rows = n / (points + 1);
    let np = points * rows;
    let (ii, oi, hw) = (g.in_img(), g.out_img(), g.ho * g.wo);
    let pts = cpu::weight_grad(&x[..np * ii], &gy[..np * oi], np, g);
    let rad = cpu::weight_grad(&x[np * ii..], &gy[np * oi..], rows, g);
    let mut out: Vec<T> = pts.iter().zip(&rad).zip(w).map(|((&a, &r), &wv)| a + wv.sign() * r).collect();
    let mut gb = vec![T::ZERO; g.c_out];
    if hw > 0 {
        for img in gy[..np * oi].chunks(oi) {
            for (acc, m) in gb.iter_mut().zip(img.chunks(hw)) {
                let mut s = T::ZERO;
                for &v in m {
                    s += v;
                }
                *acc += s;
            }
        }
    }
    out.extend(gb);
    out
}

impl CustomOp3 for IntervalConvGradWeight {
    fn name(&self) -> &'static str {
        "dualnet-interval-conv2d-grad-weight"
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
        let (n, c_in, h, w) = dims4(l1, self.name(), "input")?;
        let (n_g, c_out, ho, wo) = dims4(l2, self.name(), "output gradient")?;
        let (c_out_w, c_in_w, kh, kw) = dims4(l3, self.name(), "kernel")?;
        if n != n_g || c_out != c_out_w || c_in != c_in_w {
            bail!(
                "{}: input {:?}, gradient {:?} and kernel {:?} do not match",
                self.name(),
                l1.dims(),
                l2.dims(),
                l3.dims()
            )
        }
        check(c_in, c_in_w, self.s, self.name())?;
        slices(n, self.points, self.name())?;
        let g = Geom { c_in, h, w, c_out, ho, wo, kh, kw, s: self.s, p: self.p };
        let points = self.points;
        let out =
            dispatch!(self.name(); s1, l1; s2, l2; s3, l3 => |x, gy, w| conv_grad_weight(x, gy, w, n, points, &g))?;
        Ok((out, Shape::from(c_out * c_in * kh * kw + c_out)))
    }
}

struct IntervalRelu {
    points: usize,
}

/// The `(centre, other points, radius)` regions of a packed slice layout of `m` elements per slice.
fn regions<T>(v: &mut [T], m: usize, points: usize) -> (&mut [T], &mut [T], &mut [T]) {
    let (c, rest) = v.split_at_mut(m);
    let (pts, r) = rest.split_at_mut((points - 1) * m);
    (c, pts, r)
}

fn relu_fwd<T: Num>(x: &[T], n: usize, points: usize) -> Vec<T> {
    let m = x.len().checked_div(n).unwrap_or(0) * (n / (points + 1));
    let (xc, xpts, xr) = (&x[..m], &x[m..points * m], &x[points * m..]);
    // Every element is written: the centre and radius regions by the first pass, the points by the second.
    super::output_vec(x.len(), |out: &mut [MaybeUninit<T>]| {
        let (oc, opts, or) = regions(out, m, points);
        oc.par_chunks_mut(CHUNK)
            .zip(or.par_chunks_mut(CHUNK))
            .zip(xc.par_chunks(CHUNK).zip(xr.par_chunks(CHUNK)))
            .for_each(|((oc, or), (xc, xr))| {
                for (((o_c, o_r), &c), &r) in oc.iter_mut().zip(or.iter_mut()).zip(xc).zip(xr) {
                    let (lo, hi) = ((c - r).relu(), (c + r).relu());
                    o_c.write(T::HALF * (lo + hi));
                    o_r.write((T::HALF * (hi - lo)).relu());
                }
            });
        opts.par_chunks_mut(CHUNK).zip(xpts.par_chunks(CHUNK)).for_each(|(o, xp)| {
            for (v, &xv) in o.iter_mut().zip(xp) {
                v.write(xv.relu());
            }
        });
    })
}

impl CustomOp1 for IntervalRelu {
    fn name(&self) -> &'static str {
        "dualnet-interval-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let n = l.dims().first().copied().unwrap_or(0);
        slices(n, self.points, self.name())?;
        let points = self.points;
        let out = dispatch!(self.name(); s, l => |x| relu_fwd(x, n, points))?;
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(g, &IntervalReluGrad { points: self.points })?))
    }
}

/// `x`, `g` (both packed, same shape) → `∂x` of [`IntervalRelu`].
struct IntervalReluGrad {
    points: usize,
}

fn relu_bwd<T: Num>(x: &[T], gy: &[T], n: usize, points: usize) -> Vec<T> {
    let m = x.len().checked_div(n).unwrap_or(0) * (n / (points + 1));
    let mut out = gy.to_vec();
    let (xc, xpts, xr) = (&x[..m], &x[m..points * m], &x[points * m..]);
    let (gc, gr) = (&gy[..m], &gy[points * m..]);
    let (oc, opts, or) = regions(&mut out, m, points);
    oc.par_chunks_mut(CHUNK)
        .zip(or.par_chunks_mut(CHUNK))
        .zip(xc.par_chunks(CHUNK).zip(xr.par_chunks(CHUNK)))
        .zip(gc.par_chunks(CHUNK).zip(gr.par_chunks(CHUNK)))
        .for_each(|(((oc, or), (xc, xr)), (gc, gr))| {
            for i in 0..oc.len() {
                let (c, r) = (xc[i], xr[i]);
                let au = if c + r > T::ZERO { T::ONE } else { T::ZERO };
                let al = if c - r > T::ZERO { T::ONE } else { T::ZERO };
                let (sum, diff) = (T::HALF * (au + al), T::HALF * (au - al));
                oc[i] = sum * gc[i] + diff * gr[i];
                or[i] = diff * gc[i] + sum * gr[i];
            }
        });
    opts.par_chunks_mut(CHUNK).zip(xpts.par_chunks(CHUNK)).for_each(|(o, xp)| {
        for (v, &xv) in o.iter_mut().zip(xp) {
            if !(xv > T::ZERO) {
                *v = T::ZERO;
            }
        }
    });
    out
}

impl CustomOp2 for IntervalReluGrad {
    fn name(&self) -> &'static str {
        "dualnet-interval-relu-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            bail!("{}: input {:?} and gradient {:?} differ", self.name(), l1.dims(), l2.dims())
        }
        let n = l1.dims().first().copied().unwrap_or(0);
        slices(n, self.points, self.name())?;
        let points = self.points;
        let out = dispatch!(self.name(); s1, l1; s2, l2 => |x, gy| relu_bwd(x, gy, n, points))?;
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    use crate::kernels::testing::max_diff;

    fn rand(shape: &[usize], dt: DType) -> Result<Tensor> {
        Tensor::randn(0f64, 1., shape, &Device::Cpu)?.to_dtype(dt)
    }

    /// The packed slices `(points [p·B, ...], radius [B, ...])` of `t`.
    fn split(t: &Tensor, points: usize) -> Result<(Tensor, Tensor)> {
        let b = t.dims()[0] / (points + 1);
        Ok((t.narrow(0, 0, points * b)?, t.narrow(0, points * b, b)?))
    }

    /// conv: forward and every gradient against candle's autograd of `w ⋆ x + b` and `|w| ⋆ r`, for one point
    /// slice (the centre) and for two (centre and clean input).
    #[test]
    fn conv_matches_the_composed_rule() -> Result<()> {
        for (dt, tol) in [(DType::F32, 1e-3), (DType::F64, 1e-9)] {
            for points in [1usize, 2] {
                // x [(p+1)·3, 2, 9, 9], w [4, 2, 4, 4], stride 2, padding 1 → [(p+1)·3, 4, 4, 4].
                let b = 3;
                let x = Var::from_tensor(&rand(&[(points + 1) * b, 2, 9, 9], dt)?)?;
                let w = Var::from_tensor(&rand(&[4, 2, 4, 4], dt)?)?;
                let bias = Var::from_tensor(&rand(&[4], dt)?)?;
                // A radius must be nonnegative: use |x| for that slice.
                let (xp, xr) = split(x.as_tensor(), points)?;
                let packed = Tensor::cat(&[&xp, &xr.abs()?], 0)?;
                let ours = conv2d(&packed, w.as_tensor(), bias.as_tensor(), 2, 1, points)?;
                let (pp, pr) = split(&packed, points)?;
                let theirs = Tensor::cat(
                    &[
                        &pp.conv2d(w.as_tensor(), 1, 2, 1, 1)?
                            .broadcast_add(&bias.as_tensor().reshape((1, 4, 1, 1))?)?,
                        &pr.conv2d(&w.as_tensor().abs()?, 1, 2, 1, 1)?,
                    ],
                    0,
                )?;
                assert!(max_diff(&ours, &theirs)? < tol);
                let probe = rand(ours.dims(), dt)?;
                let go = (ours * &probe)?.sum_all()?.backward()?;
                let gt = (theirs * &probe)?.sum_all()?.backward()?;
                for v in [&x, &w, &bias] {
                    let (a, e) = (go.get(v.as_tensor()), gt.get(v.as_tensor()));
                    let (Some(a), Some(e)) = (a, e) else { panic!("a gradient is missing") };
                    assert!(max_diff(a, e)? < tol, "gradient differs by {}", max_diff(a, e)?);
                }
            }
        }
        Ok(())
    }

    /// linear: forward and every gradient against candle's autograd of `x wᵀ + b` and `r |w|ᵀ`.
    #[test]
    fn linear_matches_the_composed_rule() -> Result<()> {
        for (dt, tol) in [(DType::F32, 1e-4), (DType::F64, 1e-10)] {
            for points in [1usize, 2] {
                let b = 4;
                let x = Var::from_tensor(&rand(&[(points + 1) * b, 7], dt)?)?;
                let w = Var::from_tensor(&rand(&[5, 7], dt)?)?;
                let bias = Var::from_tensor(&rand(&[5], dt)?)?;
                let (xp, xr) = split(x.as_tensor(), points)?;
                let packed = Tensor::cat(&[&xp, &xr.abs()?], 0)?;
                let ours = linear(&packed, w.as_tensor(), bias.as_tensor(), points)?;
                let (pp, pr) = split(&packed, points)?;
                let theirs = Tensor::cat(
                    &[
                        &pp.matmul(&w.as_tensor().t()?)?.broadcast_add(bias.as_tensor())?,
                        &pr.matmul(&w.as_tensor().abs()?.t()?)?,
                    ],
                    0,
                )?;
                assert!(max_diff(&ours, &theirs)? < tol);
                let probe = rand(ours.dims(), dt)?;
                let go = (ours * &probe)?.sum_all()?.backward()?;
                let gt = (theirs * &probe)?.sum_all()?.backward()?;
                for v in [&x, &w, &bias] {
                    let (Some(a), Some(e)) = (go.get(v.as_tensor()), gt.get(v.as_tensor())) else {
                        panic!("a gradient is missing")
                    };
                    assert!(max_diff(a, e)? < tol, "gradient differs by {}", max_diff(a, e)?);
                }
            }
        }
        Ok(())
    }

    /// relu: forward and gradient against candle's autograd of the composed rule
    /// `c' = (relu(c + r) + relu(c − r))/2`, `r' = relu((relu(c + r) − relu(c − r))/2)`, points `relu(x)`.
    #[test]
    fn relu_matches_the_composed_rule() -> Result<()> {
        for dt in [DType::F32, DType::F64] {
            for points in [1usize, 2, 3] {
                let b = 5;
                let x = Var::from_tensor(&rand(&[(points + 1) * b, 3, 7], dt)?)?;
                let (xp, xr) = split(x.as_tensor(), points)?;
                let packed = Tensor::cat(&[&xp, &xr.abs()?], 0)?;
                let ours = relu(&packed, points)?;
                let (c, r) = (packed.narrow(0, 0, b)?, packed.narrow(0, points * b, b)?);
                let (lo, hi) = ((&c - &r)?.relu()?, (&c + &r)?.relu()?);
                let mut parts = vec![((&lo + &hi)? * 0.5)?];
                if points > 1 {
                    parts.push(packed.narrow(0, b, (points - 1) * b)?.relu()?);
                }
                parts.push(((&hi - &lo)? * 0.5)?.relu()?);
                let theirs = Tensor::cat(&parts, 0)?;
                assert!(max_diff(&ours, &theirs)? < 1e-6);
                let probe = rand(ours.dims(), dt)?;
                let go = (ours * &probe)?.sum_all()?.backward()?;
                let gt = (theirs * &probe)?.sum_all()?.backward()?;
                let (Some(a), Some(e)) = (go.get(x.as_tensor()), gt.get(x.as_tensor())) else {
                    panic!("a gradient is missing")
                };
                assert!(max_diff(a, e)? < 1e-6);
            }
        }
        Ok(())
    }

    /// A NaN centre stays NaN (and so reaches the loss), where `max(x, 0)` would read it as an inactive unit.
    #[test]
    fn relu_keeps_nan() -> Result<()> {
        let packed = Tensor::new(&[[f32::NAN, -1.0], [0.5, 0.5]], &Device::Cpu)?;
        let out: Vec<Vec<f32>> = relu(&packed, 1)?.to_vec2()?;
        assert!(out[0][0].is_nan() && out[1][0].is_nan());
        // c = −1, r = 0.5: l = −1.5, u = −0.5, both inactive: c' = 0, r' = 0.
        assert_eq!((out[0][1], out[1][1]), (0.0, 0.0));
        Ok(())
    }
}
