//! `flatten(src)`: `[C, H, W] -> [C*H*W]`, row-major (PyTorch's `view(B, -1)`); a vector passes unchanged.
//!
//! Dual rule: the reshape back to `[C, H, W]` (a permutation-free reshape is its own adjoint's inverse).

use candle_core::Tensor;

use super::*;
use crate::error::{Context, Result};

pub struct Flatten;

impl Op for Flatten {
    fn name(&self) -> &'static str {
        "flatten"
    }
    fn summary(&self) -> &'static str {
        "row-major reshape of [C, H, W] to a vector"
    }
    fn infer_shape(&self, _a: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        Ok(vec![inputs[0].iter().product()])
    }
    fn dual_name(&self) -> Option<&'static str> {
        Some("unflatten")
    }
    fn dual_text(&self, t: &DualText) -> String {
        format!("unflatten({}; {})", t.nu, t.in_shapes.first().map(|s| shape::fmt(s)).unwrap_or_default())
    }
}

impl OpExec for Flatten {
    /// All-ones weights give positive coefficients wherever the op's can be non-zero.
    fn groupable(&self) -> bool {
        true
    }
    fn role(&self) -> Role {
        Role::Affine
    }
    /// A reshape: exact.
    fn terms(&self, _ctx: &NodeCtx) -> usize {
        0
    }
    fn linear(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        let n = lead(&inputs[0]);
        inputs[0].reshape((n, ctx.out_shape[0])).context(|| format!("flatten `{}`", ctx.name))
    }
    /// Every coefficient is nonnegative (ones, or `1/k²` for the average), so `|A| r = A r`.
    fn linear_abs(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        self.linear(ctx, inputs)
    }
    /// Points and radius alike: the reshape of the whole packed batch.
    fn interval_packed(&self, ctx: &NodeCtx, inputs: &[Tensor], _points: usize) -> Result<Tensor> {
        self.linear(ctx, inputs)
    }
    fn transpose(&self, ctx: &NodeCtx, nu: &Tensor) -> Result<Vec<Tensor>> {
        let mut dims = vec![lead(nu)];
        dims.extend_from_slice(ctx.in_shapes[0]);
        Ok(vec![nu.reshape(dims).context(|| format!("dual of flatten `{}`", ctx.name))?])
    }
}
