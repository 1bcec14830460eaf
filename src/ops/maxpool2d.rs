//! `maxpool2d(src, kernel=K, stride=K, padding=0)`: known, shaped, but without a dual rule yet.

use super::*;

pub struct MaxPool2d;

static PARAMS: &[ParamSpec] = &[
    ParamSpec::required_int("kernel", Min::Positive),
    ParamSpec::same_as("stride", "kernel", Min::Positive),
    ParamSpec::int("padding", 0, Min::NonNegative),
];

impl Op for MaxPool2d {
    fn name(&self) -> &'static str {
        "maxpool2d"
    }
    fn summary(&self) -> &'static str {
        "max pooling (no dual rule)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn parse_args(&self, a: &Attrs) -> std::result::Result<(), ShapeError> {
        Window::parse(a).map(|_| ())
    }
    fn infer_shape(&self, a: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        super::avgpool2d::pool_shape(a, inputs[0])
    }
    fn dual_name(&self) -> Option<&'static str> {
        None
    }
    fn alternatives(&self) -> &'static str {
        "use `avgpool2d` or a strided `conv2d` to downsample"
    }
}

impl OpExec for MaxPool2d {}
