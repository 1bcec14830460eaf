//! `avgpool2d(src, kernel=K, stride=K, padding=0)`: average over `K x K` windows per channel, zero padding counted
//! in the average (PyTorch's default `count_include_pad=True`). `[C, H, W] -> [C, H', W']`.
//!
//! Linear, so it is executed as a convolution with the fixed kernel `1/K^2` on the channel diagonal; the dual rule
//! is the matching transposed convolution (as for `conv2d`).

use candle_core::{Device, Tensor};

use super::*;
use crate::error::{Context, Result};

pub struct AvgPool2d;

static PARAMS: &[ParamSpec] = &[
    ParamSpec::required_int("kernel", Min::Positive),
    ParamSpec::same_as("stride", "kernel", Min::Positive),
    ParamSpec::int("padding", 0, Min::NonNegative),
];

impl Op for AvgPool2d {
    fn name(&self) -> &'static str {
        "avgpool2d"
    }
    fn summary(&self) -> &'static str {
        "average pooling over square windows"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn parse_args(&self, a: &Attrs) -> std::result::Result<(), ShapeError> {
        Window::parse(a).map(|_| ())
    }
    fn infer_shape(&self, a: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        pool_shape(a, inputs[0])
    }
    fn dual_name(&self) -> Option<&'static str> {
        Some("conv_transpose2d")
    }
    /// The transposed convolution with the diagonal kernel `1/k²`.
    fn dual_text(&self, t: &DualText) -> String {
        match Window::parse(t.attrs) {
            Ok(w) => super::conv2d::transpose_text(t, &w, &format!("1/{}", w.kernel * w.kernel)),
            Err(e) => format!("conv_transpose2d({}; bad arguments: {e:?})", t.nu),
        }
    }
}

/// Output shape of a pooling window op (shared with `maxpool2d`).
pub fn pool_shape(a: &Attrs, s: &Shape) -> std::result::Result<Shape, ShapeError> {
    let (c, h, w) = shape::image(s)?;
    let Window { kernel: k, stride: st, padding: p } = Window::parse(a)?;
    if 2 * p > k {
        return Err(ShapeError::BadValue {
            param: "padding",
            detail: format!("padding {p} is more than half the kernel {k}"),
        });
    }
    Ok(vec![c, shape::window_out(h, k, st, p, "height")?, shape::window_out(w, k, st, p, "width")?])
}

fn kernel(ctx: &NodeCtx, k: usize, dtype: candle_core::DType, device: &Device) -> candle_core::Result<Tensor> {
    let c = ctx.out_shape[0];
    let mut data = vec![0f64; c * c * k * k];
    for ch in 0..c {
        for i in 0..k * k {
            data[(ch * c + ch) * k * k + i] = 1.0 / (k * k) as f64;
        }
    }
    Tensor::from_vec(data, (c, c, k, k), device)?.to_dtype(dtype)
}

impl OpExec for AvgPool2d {
    /// All-ones weights give positive coefficients wherever the op's can be non-zero.
    fn groupable(&self) -> bool {
        true
    }
    fn role(&self) -> Role {
        Role::Affine
    }
    /// `k²` nonzero products per entry (the kernel's zeros are exact), and the rounded coefficient `1/k²`.
    fn terms(&self, ctx: &NodeCtx) -> usize {
        let k = ctx.args::<Window>().map(|w| w.kernel).unwrap_or(usize::MAX >> 8);
        (k * k).saturating_add(2)
    }
    fn linear(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        let x = &inputs[0];
        let Window { kernel: k, stride: s, padding: p } = ctx.args()?;
        let go = || crate::kernels::conv2d(x, &kernel(ctx, k, x.dtype(), x.device())?, s, p);
        go().context(|| format!("avgpool2d `{}`", ctx.name))
    }
    /// Every coefficient is nonnegative (ones, or `1/k²` for the average), so `|A| r = A r`.
    fn linear_abs(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        self.linear(ctx, inputs)
    }
    fn transpose(&self, ctx: &NodeCtx, nu: &Tensor) -> Result<Vec<Tensor>> {
        let w: Window = ctx.args()?;
        let op = super::conv2d::window_output_padding(&w, ctx.in_shapes[0], ctx.out_shape);
        let (k, s, p) = (w.kernel, w.stride, w.padding);
        let go = || crate::kernels::conv_transpose2d(nu, &kernel(ctx, k, nu.dtype(), nu.device())?, s, p, op);
        Ok(vec![go().context(|| format!("dual of avgpool2d `{}`", ctx.name))?])
    }
}
