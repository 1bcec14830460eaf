//! `sub(a, b)`: elementwise difference `a − b` of two nodes of equal shape (used by `maxpool2d`'s expansion,
//! and usable directly). Dual rule: `ν` goes to `a` and `−ν` to `b`. Not groupable: the coefficient of `b` is
//! negative.

use candle_core::Tensor;

use super::*;
use crate::error::{Context, Result};

pub struct Sub;

impl Op for Sub {
    fn name(&self) -> &'static str {
        "sub"
    }
    fn summary(&self) -> &'static str {
        "elementwise difference a − b of two nodes of equal shape"
    }
    fn arity(&self) -> Arity {
        Arity::Exactly(2)
    }
    fn infer_shape(&self, _a: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        if inputs[0] != inputs[1] {
            return Err(ShapeError::Mismatch { shapes: inputs.iter().map(|s| (*s).clone()).collect() });
        }
        Ok(inputs[0].clone())
    }
    fn dual_name(&self) -> Option<&'static str> {
        Some("fan_out_negated")
    }
    /// `ν` to the first operand, `−ν` to the second.
    fn dual_text(&self, t: &DualText) -> String {
        match t.operand {
            0 => t.nu.to_string(),
            _ => format!("−{}", t.nu),
        }
    }
}

fn two(ctx: &NodeCtx, inputs: &[Tensor]) -> crate::error::Error {
    crate::error::Error::Usage(format!("internal: `{}` got {} operands, not 2", ctx.name, inputs.len()))
}

impl OpExec for Sub {
    fn role(&self) -> Role {
        Role::Affine
    }
    /// One subtraction.
    fn terms(&self, _ctx: &NodeCtx) -> usize {
        2
    }
    fn linear(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        let [a, b] = inputs else { return Err(two(ctx, inputs)) };
        (a - b).context(|| format!("difference `{}`", ctx.name))
    }
    /// `|A| r = r_a + r_b`.
    fn linear_abs(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        let [a, b] = inputs else { return Err(two(ctx, inputs)) };
        (a + b).context(|| format!("interval rule of `{}`", ctx.name))
    }
    fn transpose(&self, ctx: &NodeCtx, nu: &Tensor) -> Result<Vec<Tensor>> {
        Ok(vec![nu.clone(), nu.neg().context(|| format!("dual of `{}`", ctx.name))?])
    }
}
