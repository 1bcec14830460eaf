//! `window_pick(src, kernel=K, stride=K, padding=P, at=A)`: `[C, H, W] -> [C, H', W']`, the element at position
//! `A = dy·K + dx` of every `K×K` window, a position on the padding taken from the nearest edge of the image:
//! `y[c, i, j] = x[c, clamp(i·S + dy − P, 0, H − 1), clamp(j·S + dx − P, 0, W − 1)]`. A selection, used by
//! `maxpool2d`'s expansion. Computed as the edge padding (`pad_with_same`) followed by a convolution with the
//! one-hot diagonal kernel; the dual rule is the transposed convolution with it (which scatters `ν` back to the
//! picked positions of the padded image), then the adjoint of the edge padding, which adds the `ν` of every
//! padded row and column onto the edge row or column it copied.
//!
//! Why the edge: with `P < K` every window holds at least one position of the image, and a window that reaches
//! over the top edge holds row 0 (it is contiguous and reaches row 0 or beyond), so the copies of row 0 on the
//! padding repeat a value that the window holds anyway. The maximum over the picks is then the maximum over the
//! window's positions in the image: padded positions take no part in it, as in PyTorch's `−∞` padding.

use candle_core::{Device, Tensor};

use super::*;
use crate::error::{Context, Result};

pub struct WindowPick;

static PARAMS: &[ParamSpec] = &[
    ParamSpec::required_int("kernel", Min::Positive),
    ParamSpec::same_as("stride", "kernel", Min::Positive),
    ParamSpec::int("padding", 0, Min::NonNegative),
    ParamSpec::int("at", 0, Min::NonNegative),
];

/// `window_pick`'s typed arguments.
#[derive(Debug, Clone, Copy)]
pub struct PickArgs {
    pub window: Window,
    pub at: usize,
}

impl Args for PickArgs {
    fn parse(a: &Attrs) -> std::result::Result<Self, ShapeError> {
        let Window { kernel, stride, padding } = Window::parse(a)?;
        let at = a.get_usize("at")?;
        if at >= kernel * kernel {
            return Err(ShapeError::BadValue {
                param: "at",
                detail: format!("`at` ({at}) must be below kernel² ({})", kernel * kernel),
            });
        }
        if padding >= kernel {
            return Err(ShapeError::BadValue {
                param: "padding",
                detail: format!("padding {padding} must be below the kernel {kernel} (a window must hold the image)"),
            });
        }
        Ok(PickArgs { window: Window { kernel, stride, padding }, at })
    }
}

impl Op for WindowPick {
    fn name(&self) -> &'static str {
        "window_pick"
    }
    fn summary(&self) -> &'static str {
        "the element at one position of every pooling window"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn parse_args(&self, a: &Attrs) -> std::result::Result<(), ShapeError> {
        PickArgs::parse(a).map(|_| ())
    }
    fn infer_shape(&self, a: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        let Window { kernel: k, stride: s, padding: p } = PickArgs::parse(a)?.window;
        let (c, h, w) = shape::image(inputs[0])?;
        Ok(vec![c, shape::window_out(h, k, s, p, "height")?, shape::window_out(w, k, s, p, "width")?])
    }
    fn dual_name(&self) -> Option<&'static str> {
        Some("conv_transpose2d")
    }
    fn dual_text(&self, t: &DualText) -> String {
        match PickArgs::parse(t.attrs) {
            Ok(p) if p.window.padding == 0 => {
                super::conv2d::transpose_text(t, &p.window, &format!("one-hot at {}", p.at))
            }
            Ok(p) => format!(
                "unpad_edges(conv_transpose2d({}; one-hot at {}, stride={}, padding=0); {})",
                t.nu, p.at, p.window.stride, p.window.padding
            ),
            Err(e) => format!("conv_transpose2d({}; bad arguments: {e:?})", t.nu),
        }
    }
}

fn kernel(c: usize, p: &PickArgs, dtype: candle_core::DType, device: &Device) -> candle_core::Result<Tensor> {
    let k = p.window.kernel;
    let mut data = vec![0f64; c * c * k * k];
    for ch in 0..c {
        data[(ch * c + ch) * k * k + p.at] = 1.0;
    }
    Tensor::from_vec(data, (c, c, k, k), device)?.to_dtype(dtype)
}

/// The adjoint of `pad_with_same(dim, pad, pad)` on an axis of length `n`: `t` has `n + 2·pad` entries along
/// `dim`; the first `pad` are added onto entry 0 and the last `pad` onto entry `n − 1`.
fn unpad_edges(t: &Tensor, dim: usize, pad: usize, n: usize) -> candle_core::Result<Tensor> {
    let mid = t.narrow(dim, pad, n)?;
    let first = t.narrow(dim, 0, pad)?.sum_keepdim(dim)?;
    let last = t.narrow(dim, pad + n, pad)?.sum_keepdim(dim)?;
    if n == 1 {
        return (mid + first)? + last;
    }
    let head = (mid.narrow(dim, 0, 1)? + first)?;
    let tail = (mid.narrow(dim, n - 1, 1)? + last)?;
    Tensor::cat(&[head, mid.narrow(dim, 1, n - 2)?, tail], dim)
}

impl OpExec for WindowPick {
    /// The one-hot kernel is its own all-ones pattern restricted to where the op is non-zero.
    fn groupable(&self) -> bool {
        true
    }
    fn role(&self) -> Role {
        Role::Affine
    }
    /// One coefficient 1 per entry of the forward: exact. The dual sums, onto an edge entry, the `ν` of the
    /// padded positions that copy it: at most `(P + 1)²` values (a corner), each picked by one window.
    fn terms(&self, ctx: &NodeCtx) -> usize {
        match ctx.args::<PickArgs>() {
            Ok(p) if p.window.padding > 0 => (p.window.padding + 1).pow(2) + 1,
            _ => 0,
        }
    }
    fn linear(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        let (x, p) = (&inputs[0], ctx.args::<PickArgs>()?);
        let pad = p.window.padding;
        let go = || {
            let x = if pad > 0 { x.pad_with_same(2, pad, pad)?.pad_with_same(3, pad, pad)? } else { x.clone() };
            crate::kernels::conv2d(&x, &kernel(ctx.out_shape[0], &p, x.dtype(), x.device())?, p.window.stride, 0)
        };
        go().context(|| format!("window_pick `{}`", ctx.name))
    }
    /// A selection: `|A| r = A r`.
    fn linear_abs(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        self.linear(ctx, inputs)
    }
    fn transpose(&self, ctx: &NodeCtx, nu: &Tensor) -> Result<Vec<Tensor>> {
        let p = ctx.args::<PickArgs>()?;
        let pad = p.window.padding;
        let op = super::conv2d::window_output_padding(&p.window, ctx.in_shapes[0], ctx.out_shape);
        let (h, w) = (ctx.in_shapes[0][1], ctx.in_shapes[0][2]);
        let go = || {
            let k = kernel(ctx.out_shape[0], &p, nu.dtype(), nu.device())?;
            let t = crate::kernels::conv_transpose2d(nu, &k, p.window.stride, 0, op)?;
            if pad == 0 {
                return Ok(t);
            }
            unpad_edges(&unpad_edges(&t, 2, pad, h)?, 3, pad, w)?.contiguous()
        };
        Ok(vec![go().context(|| format!("dual of window_pick `{}`", ctx.name))?])
    }
}
