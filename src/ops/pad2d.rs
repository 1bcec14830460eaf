//! `pad2d(src, top=T, bottom=B, left=L, right=R)`: `[C, H, W] -> [C, T + H + B, L + W + R]`, zero padding on the
//! spatial axes: `y[c, T + i, L + j] = x[c, i, j]`, every other entry 0 (ONNX `Pad` in constant mode with value 0,
//! PyTorch's `F.pad` / `nn.ZeroPad2d`). Where a `conv2d` follows, its own `padding` does the same in one op; this
//! op is for the pads that a convolution's symmetric padding cannot express, or that an exporter writes apart.
//!
//! Linear with one coefficient 1 per kept entry: exact in every bound family, no rounding. Dual rule: the crop
//! `ν_in = ν[:, :, T..T+H, L..L+W]` (the adjoint of zero padding drops what lands on the pads).

use candle_core::Tensor;

use super::*;
use crate::error::{Context, Result};

pub struct Pad2d;

static PARAMS: &[ParamSpec] = &[
    ParamSpec::int("top", 0, Min::NonNegative),
    ParamSpec::int("bottom", 0, Min::NonNegative),
    ParamSpec::int("left", 0, Min::NonNegative),
    ParamSpec::int("right", 0, Min::NonNegative),
];

/// `pad2d`'s typed arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pads {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

/// More padding than this per side is refused (a typo, not a network).
const MAX_PAD: usize = 1 << 16;

impl Args for Pads {
    fn parse(a: &Attrs) -> std::result::Result<Self, ShapeError> {
        let p = Pads {
            top: a.get_usize("top")?,
            bottom: a.get_usize("bottom")?,
            left: a.get_usize("left")?,
            right: a.get_usize("right")?,
        };
        if [p.top, p.bottom, p.left, p.right].iter().any(|&v| v > MAX_PAD) {
            return Err(ShapeError::BadValue { param: "top", detail: format!("pads above {MAX_PAD} are refused") });
        }
        Ok(p)
    }
}

impl Op for Pad2d {
    fn name(&self) -> &'static str {
        "pad2d"
    }
    fn summary(&self) -> &'static str {
        "zero padding of an image's height and width"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn parse_args(&self, a: &Attrs) -> std::result::Result<(), ShapeError> {
        Pads::parse(a).map(|_| ())
    }
    fn infer_shape(&self, a: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        let p = Pads::parse(a)?;
        let (c, h, w) = shape::image(inputs[0])?;
        Ok(vec![c, p.top + h + p.bottom, p.left + w + p.right])
    }
    fn dual_name(&self) -> Option<&'static str> {
        Some("crop")
    }
    fn dual_text(&self, t: &DualText) -> String {
        match (Pads::parse(t.attrs), t.in_shapes.first().map(|s| shape::image(s))) {
            (Ok(p), Some(Ok((_, h, w)))) => {
                format!("crop({}; rows {}..{}, columns {}..{})", t.nu, p.top, p.top + h, p.left, p.left + w)
            }
            _ => format!("crop({})", t.nu),
        }
    }
}

impl OpExec for Pad2d {
    /// Ones stay ones where the input lands, zeros elsewhere: the support is exact.
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
        let p = ctx.args::<Pads>()?;
        let go = || inputs[0].pad_with_zeros(2, p.top, p.bottom)?.pad_with_zeros(3, p.left, p.right);
        go().context(|| format!("pad2d `{}`", ctx.name))
    }
    /// Nonnegative coefficients: `|A| r = A r`.
    fn linear_abs(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        self.linear(ctx, inputs)
    }
    /// Points and radius alike: zero padding of the whole packed batch (a point padded with 0, a radius with 0).
    fn interval_packed(&self, ctx: &NodeCtx, inputs: &[Tensor], _points: usize) -> Result<Tensor> {
        self.linear(ctx, inputs)
    }
    fn transpose(&self, ctx: &NodeCtx, nu: &Tensor) -> Result<Vec<Tensor>> {
        let p = ctx.args::<Pads>()?;
        let (h, w) = (ctx.in_shapes[0][1], ctx.in_shapes[0][2]);
        let go = || nu.narrow(2, p.top, h)?.narrow(3, p.left, w)?.contiguous();
        Ok(vec![go().context(|| format!("dual of pad2d `{}`", ctx.name))?])
    }
}
