//! `maxpool2d(src, kernel=K, stride=K, padding=0)`: `[C, H, W] -> [C, H', W']`, the largest element of every
//! `K×K` window.
//!
//! Relaxation: a rewrite through ReLUs, `max(a, b) = a + relu(b − a)`. Lowering builds, in the call's place,
//! the `K²` window picks `p_0 … p_{K²−1}` ([`super::window_pick`]) and the chain `m_0 = p_0`,
//! `m_i = m_{i−1} + relu(p_i − m_{i−1})`; the last `m` takes the call's name. Its forward is the max exactly (in
//! real arithmetic), and its interval rule, relaxations in every family (`wk`, `crown`, `alpha`'s free slopes,
//! `ibp`) and dual rule are those of `window_pick`, `sub`, `relu` and `add`, already checked op by op. Why this
//! one: it needs no rule of its own, so every family and every bound route (forward, backward, grouping,
//! training) gets it for free, and the chain is exact where the maximum is known: if `p_0` is provably the
//! largest (`l_0 >= u_i`), every `p_i − m_{i−1}` has upper bound `<= u_i − l_0 <= 0`, each ReLU is inactive and
//! `m = p_0` exactly; more generally a window whose first position dominates relaxes exactly, and a stable
//! `p_i − m_{i−1}` (either sign) adds no looseness. (DeepPoly's relaxation, lower line the input with the
//! largest lower bound and upper line the largest upper bound, would need a window op in every bound route.)
//!
//! Padding: PyTorch pads with −∞, so padded positions take no part in the max. The picks of a padded pool copy
//! the nearest edge of the image instead ([`super::window_pick`]): a value the window holds anyway, so the max
//! is the same. `padding` is at most half the kernel (PyTorch's own limit), so every window holds the image.

use super::window_pick::WindowPick;
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
        "max pooling over square windows (as window picks and ReLUs)"
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
        Some("max_as_relus")
    }
    fn expand(&self, a: &Attrs, _inputs: &[&Shape]) -> Option<Vec<Step>> {
        let w = Window::parse(a).ok()?;
        let n = w.kernel * w.kernel;
        let mut steps = Vec::new();
        for at in 0..n {
            let mut attrs = Attrs::default();
            attrs.0.insert("kernel".into(), Value::Int(w.kernel as i64));
            attrs.0.insert("stride".into(), Value::Int(w.stride as i64));
            attrs.0.insert("padding".into(), Value::Int(w.padding as i64));
            attrs.0.insert("at".into(), Value::Int(at as i64));
            steps.push(Step { suffix: format!("pick{at}"), op: &WindowPick, attrs, inputs: vec![StepInput::Call(0)] });
        }
        // m_0 = p_0 (step 0); m_i = m_{i-1} + relu(p_i - m_{i-1}).
        let mut m = 0;
        for i in 1..n {
            let d = steps.len();
            steps.push(Step {
                suffix: format!("diff{i}"),
                op: &super::sub::Sub,
                attrs: Attrs::default(),
                inputs: vec![StepInput::Step(i), StepInput::Step(m)],
            });
            steps.push(Step {
                suffix: format!("relu{i}"),
                op: &super::relu::Relu,
                attrs: Attrs::default(),
                inputs: vec![StepInput::Step(d)],
            });
            steps.push(Step {
                suffix: format!("max{i}"),
                op: &super::add::Add,
                attrs: Attrs::default(),
                inputs: vec![StepInput::Step(m), StepInput::Step(d + 1)],
            });
            m = d + 2;
        }
        Some(steps)
    }
}

impl OpExec for MaxPool2d {}
