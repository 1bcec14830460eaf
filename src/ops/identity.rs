//! `identity(src)`: `y = x`, any shape. Dual rule: identity.

use candle_core::Tensor;

use super::*;
use crate::error::Result;

pub struct Identity;

impl Op for Identity {
    fn name(&self) -> &'static str {
        "identity"
    }
    fn summary(&self) -> &'static str {
        "y = x"
    }
    fn infer_shape(&self, _a: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        Ok(inputs[0].clone())
    }
    fn dual_name(&self) -> Option<&'static str> {
        Some("identity")
    }
}

impl OpExec for Identity {
    /// All-ones weights give positive coefficients wherever the op's can be non-zero.
    fn groupable(&self) -> bool {
        true
    }
    fn role(&self) -> Role {
        Role::Affine
    }
    /// Exact.
    fn terms(&self, _ctx: &NodeCtx) -> usize {
        0
    }
    fn linear(&self, _ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        Ok(inputs[0].clone())
    }
    /// Every coefficient is nonnegative (ones, or `1/k²` for the average), so `|A| r = A r`.
    fn linear_abs(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        self.linear(ctx, inputs)
    }
    fn transpose(&self, _ctx: &NodeCtx, nu: &Tensor) -> Result<Vec<Tensor>> {
        Ok(vec![nu.clone()])
    }
}
