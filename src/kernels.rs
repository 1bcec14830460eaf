//! The hot tensor kernels of the dual network, in one place so a faster implementation can replace candle's
//! built-in one without touching the ops.
//!
//! Shapes: `conv2d(x: [N, C_in, H, W], w: [C_out, C_in, K, K]) -> [N, C_out, H', W']`, `H' = (H + 2P − K)/S + 1`;
//! `conv_transpose2d(nu: [N, C_out, H', W'], w) -> [N, C_in, H, W]`, `H = (H' − 1)S − 2P + K + output_padding`.
//! (Non-square kernels `[C_out, C_in, KH, KW]` work too.)
//!
//! Algorithm (CPU, f32 and f64): candle custom ops over the slice kernels of [`cpu`]. The batch is cut into chunks
//! of images whose scratch buffers stay near 1 MB (about what one core's L2 holds). Per chunk, conv2d splits the
//! padded images into stride-phase planes, builds im2col from them with one contiguous copy per kernel tap and
//! channel, and runs one `gemm` (`w · col`); conv_transpose2d runs one `gemm` (`wᵀ · nu`) and the reverse col2im.
//! Chunks run in parallel on rayon. Memory stays `O(output + threads × chunk)` instead of candle's whole-batch
//! im2col.
//!
//! Autograd: the three ops (conv2d, conv_transpose2d, and the kernel gradient `Σ g ⊗ im2col(x)`) take explicit
//! output sizes, which makes them exact mutual adjoints for any sizes; each op's `bwd` is built from the other two
//! ops, so gradients of gradients work as well; only operands that track gradients (`Tensor::track_op`) get
//! one.
//!
//! Devices (`fast_path`): the custom ops above exist for the CPU only (no `cuda_fwd`). Tensors on any other
//! device (CUDA), and other dtypes, go to candle's built-in `conv2d` / `conv_transpose2d` **on their own device**
//! — never through the host. On CUDA those are candle's im2col + cuBLAS conv2d and its direct conv_transpose2d
//! kernel, which takes the stride, padding and output padding we pass; gradients (the kernel gradient included)
//! come from candle's autograd of its own conv ops, whose rules `tests/kernels.rs` checks against these ops for
//! the model shapes (candle's conv2d backward restores the height only, so square images, as in every spec here).
//! Likewise [`l1`] composes candle ops on other devices, and the median of projections goes to
//! `crate::dual::gpu` before reaching [`median`].

/// Runs a CPU kernel on operands that are all f32 or all f64, each read through its layout with [`elems`]:
/// `dispatch!(name; s1, l1; s2, l2 => |a, b| kernel(a, b, ...))`. The body is written once and compiled for both
/// dtypes (it must return the `Vec` of the output); mixed or other dtypes are an error naming the op.
macro_rules! dispatch {
    ($op:expr; $($s:expr, $l:expr);+ => |$($a:ident),+| $body:expr) => {{
        use candle_core::CpuStorage as S;
        match ($($s,)+) {
            ($(S::F32($a),)+) => {
                $(let $a: &[f32] = &$crate::kernels::elems($a, $l);)+
                Ok::<S, candle_core::Error>(S::F32($body))
            }
            ($(S::F64($a),)+) => {
                $(let $a: &[f64] = &$crate::kernels::elems($a, $l);)+
                Ok(S::F64($body))
            }
            _ => candle_core::bail!("{}: operands must all be f32 or all f64", $op),
        }
    }};
}

pub mod balance;
mod cpu;
pub mod interval;
pub mod l1;
pub mod median;
pub mod rowsum;
pub mod scale;
#[cfg(test)]
pub(crate) mod testing;

use std::borrow::Cow;
use std::mem::MaybeUninit;

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

use cpu::Geom;

/// `conv2d` with stride `stride` and zero padding `padding` on each side, dilation 1, one group.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if !fast_path(x, w) {
        return x.conv2d(w, padding, stride, 1, 1);
    }
    let (_, c_in, h, wd) = x.dims4()?;
    let (_, c_in_w, kh, kw) = w.dims4()?;
    check(c_in, c_in_w, stride, "conv2d")?;
    let out = |n: usize, k: usize, side: &str| -> Result<usize> {
        if n + 2 * padding < k {
            bail!("conv2d: kernel {side} {k} exceeds padded input {side} {n} + 2×{padding}")
        }
        Ok((n + 2 * padding - k) / stride + 1)
    };
    let (ho, wo) = (out(h, kh, "height")?, out(wd, kw, "width")?);
    conv2d_to(x, w, stride, padding, ho, wo)
}

/// The transpose (adjoint) of [`conv2d`]; `output_padding` adds rows/columns at the bottom/right of the output.
pub fn conv_transpose2d(
    nu: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Result<Tensor> {
    if !fast_path(nu, w) {
        return nu.conv_transpose2d(w, padding, output_padding, stride, 1);
    }
    let (_, c_out, ho, wo) = nu.dims4()?;
    let (c_out_w, _, kh, kw) = w.dims4()?;
    check(c_out, c_out_w, stride, "conv_transpose2d")?;
    let out = |n: usize, k: usize, side: &str| -> Result<usize> {
        let full = n.saturating_sub(1) * stride + k + output_padding;
        if n == 0 || full <= 2 * padding {
            bail!("conv_transpose2d: input {side} {n} with kernel {k}, stride {stride}, padding {padding} gives no output")
        }
        Ok(full - 2 * padding)
    };
    let (h, wd) = (out(ho, kh, "height")?, out(wo, kw, "width")?);
    conv_transpose2d_to(nu, w, stride, padding, h, wd)
}

/// Whether the custom CPU kernels handle these operands: CPU tensors of one float dtype. Everything else goes to
/// candle's built-in op on the operands' device (the CUDA path).
fn fast_path(a: &Tensor, w: &Tensor) -> bool {
    a.device().is_cpu() && w.device().is_cpu() && a.dtype() == w.dtype() && matches!(a.dtype(), DType::F32 | DType::F64)
}

fn check(c: usize, c_w: usize, stride: usize, op: &str) -> Result<()> {
    if c != c_w {
        bail!("{op}: input has {c} channels but the kernel expects {c_w}")
    }
    if stride == 0 {
        bail!("{op}: stride must be at least 1")
    }
    Ok(())
}

/// `conv2d` producing exactly `ho × wo` outputs (positions past the padded input read zeros).
fn conv2d_to(x: &Tensor, w: &Tensor, s: usize, p: usize, ho: usize, wo: usize) -> Result<Tensor> {
    x.apply_op2(w, Conv2d { s, p, ho, wo })
}

/// `conv_transpose2d` producing exactly `h × w` outputs (contributions past them are dropped).
fn conv_transpose2d_to(nu: &Tensor, w: &Tensor, s: usize, p: usize, h: usize, wd: usize) -> Result<Tensor> {
    nu.apply_op2(w, ConvTranspose2d { s, p, h, w: wd })
}

/// The kernel gradient `[C_out, C_in, kh, kw]` of `conv2d(x, ·)` against the output gradient `g`.
fn weight_grad(x: &Tensor, g: &Tensor, s: usize, p: usize, kh: usize, kw: usize) -> Result<Tensor> {
    x.apply_op2(g, WeightGrad { s, p, kh, kw })
}

/// The elements of a (possibly strided) CPU operand, in row-major order.
pub(crate) fn elems<'a, T: Copy>(data: &'a [T], l: &Layout) -> Cow<'a, [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Cow::Borrowed(&data[a..b]),
        None => Cow::Owned(strided(data, l)),
    }
}

/// Copies a strided view (any strides, broadcasts included) into a row-major vector.
fn strided<T: Copy>(data: &[T], l: &Layout) -> Vec<T> {
    let (dims, stride) = (l.dims(), l.stride());
    let n = l.shape().elem_count();
    let mut out = Vec::with_capacity(n);
    let Some((&last, outer)) = dims.split_last() else {
        out.push(data[l.start_offset()]);
        return out;
    };
    let step = stride[dims.len() - 1];
    let mut idx = vec![0usize; outer.len()];
    for _ in 0..n.checked_div(last).unwrap_or(0) {
        let base = l.start_offset() + idx.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
        out.extend((0..last).map(|j| data[base + j * step]));
        for d in (0..outer.len()).rev() {
            idx[d] += 1;
            if idx[d] < outer[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

fn dims4(l: &Layout, op: &str, what: &str) -> Result<(usize, usize, usize, usize)> {
    match *l.dims() {
        [a, b, c, d] => Ok((a, b, c, d)),
        ref d => bail!("{op}: {what} must have rank 4, got shape {d:?}"),
    }
}

/// Runs `f` on the two operands as f32 or f64 slices.
/// Plain floating-point element types: every bit pattern is a value.
pub trait Float: Copy + Send + Sync + 'static + sealed::Sealed {}
impl Float for f32 {}
impl Float for f64 {}
mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A kernel's output of `len` elements, without the zero fill (a full pass over tens of MB per call: most of
/// the time of a kernel that does one multiply per element). `fill` writes **every** element into the vector's
/// spare capacity (`MaybeUninit`, as candle's CPU backend does); the length is set only after it returns.
pub fn output_vec<T: Float>(len: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the capacity is at least `len`; every caller's `fill` writes each of the first `len` elements
    // (each call site says how), and `T` is f32 or f64 (sealed).
    unsafe { v.set_len(len) };
    v
}

/// `dst[i] = src[i]` into uninitialised memory (`<[MaybeUninit<T>]>::write_copy_of_slice`, which is newer than
/// the crate's minimum Rust).
pub fn write_slice<T: Copy>(dst: &mut [MaybeUninit<T>], src: &[T]) {
    assert_eq!(dst.len(), src.len(), "write_slice: lengths differ");
    // SAFETY: both are valid for `len` elements, `MaybeUninit<T>` has `T`'s layout, and a `&mut` does not alias
    // a `&`.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<T>(), src.len()) }
}

/// `x [N, C_in, H, W] ⋆ w [C_out, C_in, KH, KW] → [N, C_out, ho, wo]`.
struct Conv2d {
    s: usize,
    p: usize,
    ho: usize,
    wo: usize,
}

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        "dualnet-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c_in, h, w) = dims4(l1, self.name(), "input")?;
        let (c_out, c_in_w, kh, kw) = dims4(l2, self.name(), "kernel")?;
        check(c_in, c_in_w, self.s, self.name())?;
        let g = Geom { c_in, h, w, c_out, ho: self.ho, wo: self.wo, kh, kw, s: self.s, p: self.p };
        let out = dispatch!(self.name(); s1, l1; s2, l2 => |x, w| cpu::conv2d(x, w, n, &g))?;
        Ok((out, Shape::from((n, c_out, self.ho, self.wo))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, wd) = x.dims4()?;
        let (_, _, kh, kw) = w.dims4()?;
        let gx = x.track_op().then(|| conv_transpose2d_to(g, w, self.s, self.p, h, wd)).transpose()?;
        let gw = w.track_op().then(|| weight_grad(x, g, self.s, self.p, kh, kw)).transpose()?;
        Ok((gx, gw))
    }
}

/// `nu [N, C_out, H', W'] ⋆ᵀ w [C_out, C_in, KH, KW] → [N, C_in, h, w]`.
struct ConvTranspose2d {
    s: usize,
    p: usize,
    h: usize,
    w: usize,
}

impl CustomOp2 for ConvTranspose2d {
    fn name(&self) -> &'static str {
        "dualnet-conv-transpose2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c_out, ho, wo) = dims4(l1, self.name(), "input")?;
        let (c_out_w, c_in, kh, kw) = dims4(l2, self.name(), "kernel")?;
        check(c_out, c_out_w, self.s, self.name())?;
        let g = Geom { c_in, h: self.h, w: self.w, c_out, ho, wo, kh, kw, s: self.s, p: self.p };
        let out = dispatch!(self.name(); s1, l1; s2, l2 => |nu, w| cpu::conv_transpose2d(nu, w, n, &g))?;
        Ok((out, Shape::from((n, c_in, self.h, self.w))))
    }

    fn bwd(&self, nu: &Tensor, w: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, ho, wo) = nu.dims4()?;
        let (_, _, kh, kw) = w.dims4()?;
        let gnu = nu.track_op().then(|| conv2d_to(g, w, self.s, self.p, ho, wo)).transpose()?;
        let gw = w.track_op().then(|| weight_grad(g, nu, self.s, self.p, kh, kw)).transpose()?;
        Ok((gnu, gw))
    }
}

/// `x [N, C_in, H, W]`, `g [N, C_out, H', W'] → [C_out, C_in, kh, kw]`, the kernel gradient of [`Conv2d`].
struct WeightGrad {
    s: usize,
    p: usize,
    kh: usize,
    kw: usize,
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "dualnet-conv2d-weight-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c_in, h, w) = dims4(l1, self.name(), "input")?;
        let (n_g, c_out, ho, wo) = dims4(l2, self.name(), "output gradient")?;
        if n != n_g {
            bail!("{}: input batch {n} differs from gradient batch {n_g}", self.name())
        }
        if self.s == 0 {
            bail!("{}: stride must be at least 1", self.name())
        }
        let g = Geom { c_in, h, w, c_out, ho, wo, kh: self.kh, kw: self.kw, s: self.s, p: self.p };
        let out = dispatch!(self.name(); s1, l1; s2, l2 => |x, gy| cpu::weight_grad(x, gy, n, &g))?;
        Ok((out, Shape::from((c_out, c_in, self.kh, self.kw))))
    }

    fn bwd(&self, x: &Tensor, g: &Tensor, _res: &Tensor, gw: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, wd) = x.dims4()?;
        let (_, _, ho, wo) = g.dims4()?;
        let gx = x.track_op().then(|| conv_transpose2d_to(g, gw, self.s, self.p, h, wd)).transpose()?;
        let gg = g.track_op().then(|| conv2d_to(x, gw, self.s, self.p, ho, wo)).transpose()?;
        Ok((gx, gg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rand(shape: &[usize], dt: DType) -> Result<Tensor> {
        Tensor::randn(0f64, 1., shape, &Device::Cpu)?.to_dtype(dt)
    }

    use super::testing::max_diff;

    /// The kernel-gradient op against candle's gradient, and its own backward (the second derivative of a conv)
    /// against candle's conv2d / conv_transpose2d.
    #[test]
    fn weight_grad_and_its_backward() -> Result<()> {
        for (dt, tol) in [(DType::F32, 1e-3), (DType::F64, 1e-9)] {
            // x [3, 4, 9, 9], w [5, 4, 3, 3], stride 2, padding 1 → g [3, 5, 5, 5]; 9 = 4·2 − 2 + 3 (op 0).
            let (s, p) = (2, 1);
            let x = rand(&[3, 4, 9, 9], dt)?;
            let w = rand(&[5, 4, 3, 3], dt)?;
            let g = rand(&[3, 5, 5, 5], dt)?;
            let wv = Var::from_tensor(&w)?;
            let theirs = (x.conv2d(wv.as_tensor(), p, s, 1, 1)? * &g)?.sum_all()?.backward()?;
            let theirs =
                theirs.get(wv.as_tensor()).cloned().ok_or_else(|| candle_core::Error::Msg("no grad".into()))?;
            let (xv, gv) = (Var::from_tensor(&x)?, Var::from_tensor(&g)?);
            let ours = weight_grad(xv.as_tensor(), gv.as_tensor(), s, p, 3, 3)?;
            assert!(max_diff(&ours, &theirs)? < tol);
            let r = rand(&[5, 4, 3, 3], dt)?;
            let gs = (ours * &r)?.sum_all()?.backward()?;
            let get = |v: &Var| gs.get(v.as_tensor()).cloned().ok_or_else(|| candle_core::Error::Msg("no grad".into()));
            assert!(max_diff(&get(&xv)?, &g.conv_transpose2d(&r, p, 0, s, 1)?)? < tol);
            assert!(max_diff(&get(&gv)?, &x.conv2d(&r, p, s, 1, 1)?)? < tol);
        }
        Ok(())
    }
}
