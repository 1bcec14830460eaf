//! `tanh(src)`: hyperbolic tangent; known, shaped, but without a dual rule yet.

use super::*;

pub struct Tanh;

impl Op for Tanh {
    fn name(&self) -> &'static str {
        "tanh"
    }
    fn summary(&self) -> &'static str {
        "hyperbolic tangent (no dual rule)"
    }
    fn infer_shape(&self, _a: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        Ok(inputs[0].clone())
    }
    fn dual_name(&self) -> Option<&'static str> {
        None
    }
    fn alternatives(&self) -> &'static str {
        "use `hardtanh`, its piecewise-linear counterpart"
    }
}

impl OpExec for Tanh {}
