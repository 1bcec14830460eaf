//! `a + b + ...` (or `add(a, b, ...)`): elementwise sum of two or more earlier nodes of equal shape; residual and
//! dense skip connections. Dual rule: the dual variable at the sum fans out unchanged to every summand (the skip
//! edge reversed); a node with several consumers sums their dual variables (done by the dual network).

use candle_core::Tensor;

use super::*;
use crate::error::{Context, Result};

pub struct Add;

impl Op for Add {
    fn name(&self) -> &'static str {
        "add"
    }
    fn summary(&self) -> &'static str {
        "elementwise sum of nodes of equal shape (`a + b`)"
    }
    fn arity(&self) -> Arity {
        Arity::AtLeast(2)
    }
    fn infer_shape(&self, _a: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        let first = inputs[0];
        if inputs.iter().any(|s| *s != first) {
            return Err(ShapeError::Mismatch { shapes: inputs.iter().map(|s| (*s).clone()).collect() });
        }
        Ok(first.clone())
    }
    fn dual_name(&self) -> Option<&'static str> {
        Some("fan_out")
    }
}

impl OpExec for Add {
    /// All-ones weights give positive coefficients wherever the op's can be non-zero.
    fn groupable(&self) -> bool {
        true
    }
    fn role(&self) -> Role {
        Role::Affine
    }
    /// One addition per operand.
    fn terms(&self, ctx: &NodeCtx) -> usize {
        ctx.in_shapes.len()
    }
    fn linear(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        let mut acc = inputs[0].clone();
        for t in &inputs[1..] {
            acc = acc.broadcast_add(t).context(|| format!("sum `{}`", ctx.name))?;
        }
        Ok(acc)
    }
    /// A sum: an absent operand adds nothing, so only the present ones are summed.
    fn linear_partial(&self, ctx: &NodeCtx, inputs: &[Option<Tensor>]) -> Result<Tensor> {
        let present: Vec<Tensor> = inputs.iter().flatten().cloned().collect();
        if present.is_empty() {
            return Err(crate::error::Error::Usage(format!("internal: `{}` got no operand", ctx.name)));
        }
        self.linear(ctx, &present)
    }
    /// Every coefficient is nonnegative (ones, or `1/k²` for the average), so `|A| r = A r`.
    fn linear_abs(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        self.linear(ctx, inputs)
    }
    fn transpose(&self, ctx: &NodeCtx, nu: &Tensor) -> Result<Vec<Tensor>> {
        Ok(vec![nu.clone(); ctx.in_shapes.len()])
    }
}
