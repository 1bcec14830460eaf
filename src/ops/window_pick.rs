//! `window_pick(src, kernel=K, stride=K, at=A)`: `[C, H, W] -> [C, H', W']`, the element at position
//! `A = dy·K + dx` of every `K×K` window (no padding): `y[c, i, j] = x[c, i·S + dy, j·S + dx]`. A selection,
//! used by `maxpool2d`'s expansion. Computed as a convolution with the one-hot diagonal kernel; the dual rule is
//! the transposed convolution with it (which scatters `ν` back to the picked positions).

use candle_core::{Device, Tensor};

use super::*;
use crate::error::{Context, Result};

pub struct WindowPick;

static PARAMS: &[ParamSpec] = &[
    ParamSpec::required_int("kernel", Min::Positive),
    ParamSpec::same_as("stride", "kernel", Min::Positive),
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
        let (kernel, stride, at) = (a.get_usize("kernel")?, a.get_usize("stride")?, a.get_usize("at")?);
        if at >= kernel * kernel {
            return Err(ShapeError::BadValue {
                param: "at",
                detail: format!("`at` ({at}) must be below kernel² ({})", kernel * kernel),
            });
        }
        Ok(PickArgs { window: Window { kernel, stride, padding: 0 }, at })
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
        let Window { kernel: k, stride: s, .. } = PickArgs::parse(a)?.window;
        let (c, h, w) = shape::image(inputs[0])?;
        Ok(vec![c, shape::window_out(h, k, s, 0, "height")?, shape::window_out(w, k, s, 0, "width")?])
    }
    fn dual_name(&self) -> Option<&'static str> {
        Some("conv_transpose2d")
    }
    fn dual_text(&self, t: &DualText) -> String {
        match PickArgs::parse(t.attrs) {
            Ok(p) => super::conv2d::transpose_text(t, &p.window, &format!("one-hot at {}", p.at)),
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

impl OpExec for WindowPick {
    /// The one-hot kernel is its own all-ones pattern restricted to where the op is non-zero.
    fn groupable(&self) -> bool {
        true
    }
    fn role(&self) -> Role {
        Role::Affine
    }
    /// One coefficient 1 per entry: exact.
    fn terms(&self, _ctx: &NodeCtx) -> usize {
        0
    }
    fn linear(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        let (x, p) = (&inputs[0], ctx.args::<PickArgs>()?);
        let go =
            || crate::kernels::conv2d(x, &kernel(ctx.out_shape[0], &p, x.dtype(), x.device())?, p.window.stride, 0);
        go().context(|| format!("window_pick `{}`", ctx.name))
    }
    /// A selection: `|A| r = A r`.
    fn linear_abs(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        self.linear(ctx, inputs)
    }
    fn transpose(&self, ctx: &NodeCtx, nu: &Tensor) -> Result<Vec<Tensor>> {
        let p = ctx.args::<PickArgs>()?;
        let op = super::conv2d::window_output_padding(&p.window, ctx.in_shapes[0], ctx.out_shape);
        let go = || {
            let w = kernel(ctx.out_shape[0], &p, nu.dtype(), nu.device())?;
            crate::kernels::conv_transpose2d(nu, &w, p.window.stride, 0, op)
        };
        Ok(vec![go().context(|| format!("dual of window_pick `{}`", ctx.name))?])
    }
}
