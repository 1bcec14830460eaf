//! `softmax(src)`: normalised exponentials over a vector; known and shaped, but without a dual rule: it is not a
//! hidden-layer activation here (the margins are bounded on the logits, and a softmax before them changes
//! no prediction).

use super::*;

pub struct Softmax;

impl Op for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }
    fn summary(&self) -> &'static str {
        "normalised exponentials over a vector (no dual rule)"
    }
    fn infer_shape(&self, _a: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        Ok(inputs[0].clone())
    }
    fn dual_name(&self) -> Option<&'static str> {
        None
    }
    fn alternatives(&self) -> &'static str {
        "softmax is not a hidden-layer activation here; leave the output as logits (the margin bounds and robust cross-entropy work on logits), and use `sigmoid`, `tanh` or `relu` inside the network"
    }
}

impl OpExec for Softmax {}
