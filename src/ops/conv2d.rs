//! `conv2d(src, out=C, kernel=K, stride=S, padding=P)`: `[C_in, H, W] -> [C, H', W']`,
//! `H' = floor((H + 2P - K) / S) + 1`; weight `[C, C_in, K, K]`, bias `[C]` (PyTorch layout).
//!
//! Dual rule: the transposed convolution with the same kernel, stride and padding, and the output padding
//! `H - ((H' - 1) S - 2P + K)` that restores the input size exactly (it is `< S`).

use candle_core::Tensor;

use super::*;
use crate::error::{Context, Result};

pub struct Conv2d;

static PARAMS: &[ParamSpec] = &[
    ParamSpec::required_int("out", Min::Positive),
    ParamSpec::required_int("kernel", Min::Positive),
    ParamSpec::int("stride", 1, Min::Positive),
    ParamSpec::int("padding", 0, Min::NonNegative),
];

/// `conv2d`'s typed arguments.
pub struct ConvArgs {
    pub out: usize,
    pub window: Window,
}

impl Args for ConvArgs {
    fn parse(a: &Attrs) -> std::result::Result<Self, ShapeError> {
        Ok(ConvArgs { out: a.get_usize("out")?, window: Window::parse(a)? })
    }
}

/// The output padding of the dual of a window op (conv2d, avgpool2d) on input `[_, n_in, _]` and output
/// `[_, n_out, _]`.
pub fn window_output_padding(w: &Window, in_shape: &Shape, out_shape: &Shape) -> usize {
    let (n_in, n_out) = (in_shape.get(1).copied().unwrap_or(0), out_shape.get(1).copied().unwrap_or(1));
    output_padding(n_in, n_out, w.kernel, w.stride, w.padding)
}

/// The text of the transposed convolution that is the dual of a window op with kernel `weight`.
pub fn transpose_text(t: &DualText, w: &Window, weight: &str) -> String {
    let op_pad = t.in_shapes.first().map(|s| window_output_padding(w, s, t.out_shape)).unwrap_or(0);
    format!("conv_transpose2d({}; {weight}, stride={}, padding={}, output_padding={op_pad})", t.nu, w.stride, w.padding)
}

/// Output padding that makes the transposed convolution return exactly `n_in`.
pub fn output_padding(n_in: usize, n_out: usize, k: usize, s: usize, p: usize) -> usize {
    (n_in + 2 * p).saturating_sub((n_out - 1) * s + k)
}

impl Op for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn summary(&self) -> &'static str {
        "2-d convolution with square kernel, stride and zero padding"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn parse_args(&self, a: &Attrs) -> std::result::Result<(), ShapeError> {
        ConvArgs::parse(a).map(|_| ())
    }
    fn infer_shape(&self, a: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        let ConvArgs { out, window: Window { kernel: k, stride: s, padding: p } } = ConvArgs::parse(a)?;
        let (_, h, w) = shape::image(inputs[0])?;
        let ho = shape::window_out(h, k, s, p, "height")?;
        let wo = shape::window_out(w, k, s, p, "width")?;
        Ok(vec![out, ho, wo])
    }
    fn weights(&self, a: &Attrs, inputs: &[&Shape], out: &Shape) -> Vec<WeightSpec> {
        let k = ConvArgs::parse(a).map(|c| c.window.kernel).unwrap_or(1);
        let (c_in, c) = (inputs[0].first().copied().unwrap_or(1), out.first().copied().unwrap_or(1));
        let fan_in = c_in * k * k;
        vec![
            WeightSpec {
                suffix: "weight",
                shape: vec![c, c_in, k, k],
                init: Init::FanIn(fan_in),
                trainable: true,
                nonneg: false,
            },
            WeightSpec { suffix: "bias", shape: vec![c], init: Init::FanIn(fan_in), trainable: true, nonneg: false },
        ]
    }
    fn dual_name(&self) -> Option<&'static str> {
        Some("conv_transpose2d")
    }
    fn dual_text(&self, t: &DualText) -> String {
        match ConvArgs::parse(t.attrs) {
            Ok(c) => transpose_text(t, &c.window, &format!("{}.weight", t.name)),
            Err(e) => format!("conv_transpose2d({}; bad arguments: {e:?})", t.nu),
        }
    }
}

impl OpExec for Conv2d {
    /// All-ones weights give positive coefficients wherever the op's can be non-zero.
    fn groupable(&self) -> bool {
        true
    }
    fn role(&self) -> Role {
        Role::Affine
    }
    /// A forward entry sums `C_in k²` products (and the bias).
    fn terms(&self, ctx: &NodeCtx) -> usize {
        let k = ctx.args::<ConvArgs>().map(|a| a.window.kernel).unwrap_or(usize::MAX >> 8);
        let c = ctx.in_shapes[0].first().copied().unwrap_or(1);
        c.saturating_mul(k * k).saturating_add(1)
    }
    /// A transposed entry sums at most `C_out k²` products (fewer with a stride).
    fn transpose_terms(&self, ctx: &NodeCtx) -> usize {
        let k = ctx.args::<ConvArgs>().map(|a| a.window.kernel).unwrap_or(usize::MAX >> 8);
        let c = ctx.out_shape.first().copied().unwrap_or(1);
        c.saturating_mul(k * k).saturating_add(1)
    }
    fn linear(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        let w = ctx.weight("weight")?;
        let Window { stride: s, padding: p, .. } = ctx.args::<ConvArgs>()?.window;
        crate::kernels::conv2d(&inputs[0], w, s, p).context(|| format!("conv2d `{}`", ctx.name))
    }
    /// One fused kernel on the CPU ([`crate::kernels::interval::conv2d`]); the composed rule elsewhere.
    fn interval_packed(&self, ctx: &NodeCtx, inputs: &[Tensor], points: usize) -> Result<Tensor> {
        let (w, b) = (ctx.weight("weight")?, ctx.weight("bias")?);
        if !crate::kernels::interval::supported(&inputs[0], w) {
            return super::exec::packed_rule(self, ctx, inputs, points);
        }
        let Window { stride: s, padding: p, .. } = ctx.args::<ConvArgs>()?.window;
        crate::kernels::interval::conv2d(&inputs[0], w, b, s, p, points)
            .context(|| format!("interval rule of conv2d `{}`", ctx.name))
    }
    fn transpose(&self, ctx: &NodeCtx, nu: &Tensor) -> Result<Vec<Tensor>> {
        let w = ctx.weight("weight")?;
        let win = ctx.args::<ConvArgs>()?.window;
        let op = window_output_padding(&win, ctx.in_shapes[0], ctx.out_shape);
        let out = crate::kernels::conv_transpose2d(nu, w, win.stride, win.padding, op)
            .context(|| format!("dual of conv2d `{}`", ctx.name))?;
        Ok(vec![out])
    }
    /// `r ⋆ |W|`.
    fn linear_abs(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        let w = ctx.weight("weight")?;
        let Window { stride: s, padding: p, .. } = ctx.args::<ConvArgs>()?.window;
        let ctx_err = || format!("interval rule of conv2d `{}`", ctx.name);
        crate::kernels::conv2d(&inputs[0], &w.abs().context(ctx_err)?, s, p).context(ctx_err)
    }
    fn bias(&self, ctx: &NodeCtx) -> Result<Option<Tensor>> {
        let b = ctx.weight("bias")?;
        let c = ctx.out_shape[0];
        let out =
            b.reshape((c, 1, 1)).and_then(|b| b.broadcast_as(ctx.out_shape.as_slice())).and_then(|b| b.contiguous());
        Ok(Some(out.context(|| format!("bias of conv2d `{}`", ctx.name))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_padding_restores_size() {
        // n_in = 28, k = 4, s = 2, p = 1: n_out = (28 + 2 - 4)/2 + 1 = 14; (14-1)*2 - 2 + 4 = 28 → 0.
        assert_eq!(output_padding(28, 14, 4, 2, 1), 0);
        // n_in = 7, k = 3, s = 2, p = 0: n_out = (7 - 3)/2 + 1 = 3; (3-1)*2 + 3 = 7 → 0.
        assert_eq!(output_padding(7, 3, 3, 2, 0), 0);
        // n_in = 8, k = 3, s = 2, p = 0: n_out = 3; (3-1)*2 + 3 = 7 → 1.
        assert_eq!(output_padding(8, 3, 3, 2, 0), 1);
    }
}
