//! `sigmoid(src)`: logistic function 1/(1+exp(-z)); known, shaped, but without a dual rule yet.

use super::*;

pub struct Sigmoid;

impl Op for Sigmoid {
    fn name(&self) -> &'static str {
        "sigmoid"
    }
    fn summary(&self) -> &'static str {
        "logistic function 1/(1+exp(-z)) (no dual rule)"
    }
    fn infer_shape(&self, _a: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        Ok(inputs[0].clone())
    }
    fn dual_name(&self) -> Option<&'static str> {
        None
    }
    fn alternatives(&self) -> &'static str {
        "use `hardtanh` or `relu` as the nonlinearity"
    }
}

impl OpExec for Sigmoid {}
