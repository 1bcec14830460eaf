//! The op registry: one file per op (forward, shape rule, dual rule, tests); this file is the table.
//!
//! Adding an op: write `src/ops/<op>.rs` implementing [`Op`], then add one line to [`REGISTRY`].
//! The grammar never lists op names: every call is looked up here by the checker.

use std::collections::BTreeMap;
use std::fmt;

pub mod add;
pub mod avgpool2d;
pub mod batchnorm2d;
pub mod conv2d;
pub mod flatten;
pub mod hardtanh;
pub mod identity;
pub mod leaky_relu;
pub mod linear;
pub mod maxpool2d;
pub mod pad2d;
pub mod relu;
pub mod scale_shift;
pub mod sigmoid;
pub mod softmax;
pub mod sshape;
pub mod sub;
pub mod tanh;
pub mod transpose;
pub mod window_pick;

mod exec;
pub use exec::*;

/// Shape of one example (no batch dimension): `[N]` for vectors, `[C, H, W]` for images.
pub type Shape = Vec<usize>;

/// Every op known to dualnet, supported or not. The order is the order of `dualnet ops` and of help texts.
pub static REGISTRY: &[&dyn Op] = &[
    &linear::Linear,
    &conv2d::Conv2d,
    &relu::Relu,
    &leaky_relu::LeakyRelu,
    &hardtanh::Hardtanh,
    &flatten::Flatten,
    &batchnorm2d::BatchNorm2d,
    &avgpool2d::AvgPool2d,
    &identity::Identity,
    &add::Add,
    &sub::Sub,
    &window_pick::WindowPick,
    &scale_shift::ScaleShift,
    &maxpool2d::MaxPool2d,
    &sigmoid::Sigmoid,
    &tanh::Tanh,
    &softmax::Softmax,
    &transpose::Transpose,
    &pad2d::Pad2d,
];

pub fn lookup(name: &str) -> Option<&'static dyn Op> {
    REGISTRY.iter().copied().find(|op| op.name() == name)
}

/// Names of the ops that have a dual rule, for help texts.
pub fn supported_names() -> Vec<&'static str> {
    REGISTRY.iter().filter(|op| op.has_dual()).map(|op| op.name()).collect()
}

/// A resolved argument value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
}

impl Value {
    pub fn as_f64(&self) -> f64 {
        match self {
            Value::Int(i) => *i as f64,
            Value::Float(x) => *x,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Int,
    Float,
}

impl ParamKind {
    pub fn describe(self) -> &'static str {
        match self {
            ParamKind::Int => "an integer",
            ParamKind::Float => "a number",
        }
    }
}

/// Where a parameter's value comes from when the call leaves it out.
#[derive(Debug, Clone, Copy)]
pub enum Default {
    /// The parameter must be given.
    Required,
    Int(i64),
    Float(f64),
    /// The value of another parameter (e.g. pooling `stride` defaults to `kernel`).
    SameAs(&'static str),
}

/// The smallest value a numeric parameter may take.
#[derive(Debug, Clone, Copy)]
pub enum Min {
    Any,
    /// `>= 0`
    NonNegative,
    /// `>= 1`
    Positive,
}

#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub kind: ParamKind,
    pub default: Default,
    pub min: Min,
}

impl ParamSpec {
    pub const fn required_int(name: &'static str, min: Min) -> Self {
        ParamSpec { name, kind: ParamKind::Int, default: Default::Required, min }
    }
    pub const fn int(name: &'static str, default: i64, min: Min) -> Self {
        ParamSpec { name, kind: ParamKind::Int, default: Default::Int(default), min }
    }
    pub const fn float(name: &'static str, default: f64) -> Self {
        ParamSpec { name, kind: ParamKind::Float, default: Default::Float(default), min: Min::Any }
    }
    pub const fn same_as(name: &'static str, other: &'static str, min: Min) -> Self {
        ParamSpec { name, kind: ParamKind::Int, default: Default::SameAs(other), min }
    }
}

/// Resolved arguments of one node, defaults filled in.
#[derive(Debug, Clone, PartialEq, std::default::Default)]
pub struct Attrs(pub BTreeMap<String, Value>);

impl Attrs {
    /// An integer parameter. Lowering fills in every declared parameter, so a name that is missing here is one
    /// the op does not declare (a misspelling in its file): an error, never a silent 0.
    pub fn get_int(&self, name: &str) -> std::result::Result<i64, ShapeError> {
        match self.0.get(name) {
            Some(Value::Int(i)) => Ok(*i),
            Some(Value::Float(x)) => Err(ShapeError::Other { detail: format!("`{name}` must be an integer, got {x}") }),
            None => Err(undeclared(name)),
        }
    }
    /// A nonnegative integer parameter.
    pub fn get_usize(&self, name: &str) -> std::result::Result<usize, ShapeError> {
        let i = self.get_int(name)?;
        usize::try_from(i)
            .map_err(|_| ShapeError::BadValue { param: "", detail: format!("`{name}` must be >= 0, got {i}") })
    }
    /// A numeric parameter.
    pub fn get_float(&self, name: &str) -> std::result::Result<f64, ShapeError> {
        self.0.get(name).map(Value::as_f64).ok_or_else(|| undeclared(name))
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn undeclared(name: &str) -> ShapeError {
    ShapeError::Other {
        detail: format!("internal: the op reads `{name}`, which is not one of its declared parameters"),
    }
}

/// The arguments of one op, typed: each op with parameters defines a struct and parses it from [`Attrs`] in
/// one function, which lowering runs ([`Op::parse_args`]) and execution reuses ([`NodeCtx::args`]).
pub trait Args: Sized {
    fn parse(a: &Attrs) -> std::result::Result<Self, ShapeError>;
}

/// The window of a convolution or pooling op: `kernel`, `stride`, `padding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Args for Window {
    fn parse(a: &Attrs) -> std::result::Result<Self, ShapeError> {
        Ok(Window { kernel: a.get_usize("kernel")?, stride: a.get_usize("stride")?, padding: a.get_usize("padding")? })
    }
}

impl fmt::Display for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// How many node inputs an op takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    Exactly(usize),
    AtLeast(usize),
}

impl Arity {
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::AtLeast(k) => n >= k,
        }
    }
    pub fn describe(self) -> String {
        match self {
            Arity::Exactly(1) => "exactly 1 input".into(),
            Arity::Exactly(k) => format!("exactly {k} inputs"),
            Arity::AtLeast(k) => format!("at least {k} inputs"),
        }
    }
}

/// Why an op rejects its input shapes; the checker turns each kind into its own diagnostic code.
#[derive(Debug, Clone, PartialEq)]
pub enum ShapeError {
    /// A vector op (linear) got an image `[C, H, W]`.
    NeedsVector { got: Shape },
    /// An image op (conv, pooling, batchnorm) got a vector.
    NeedsImage { got: Shape },
    /// The output would have a zero or negative size.
    EmptyOutput { detail: String },
    /// Operand shapes of a sum differ.
    Mismatch { shapes: Vec<Shape> },
    /// An argument value is invalid given the others (e.g. `min_val >= max_val`).
    BadValue { param: &'static str, detail: String },
    /// Anything else about the input shape.
    Other { detail: String },
}

/// Initialisation of one weight tensor (PyTorch's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`: PyTorch's kaiming_uniform(a=sqrt(5)) for weights and its bias rule.
    FanIn(usize),
    Ones,
    Zeros,
}

/// One parameter tensor of a node: stored as `NODE.<suffix>` in safetensors, PyTorch layout.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightSpec {
    pub suffix: &'static str,
    pub shape: Vec<usize>,
    pub init: Init,
    /// Trained by gradient descent (false for batchnorm running statistics).
    pub trainable: bool,
    /// Must be `>= 0` (a variance); loading refuses a negative entry.
    pub nonneg: bool,
}

/// What an op is, for the front end: its name, parameters, shape rule and whether it has a dual rule.
/// The execution side (forward, dual rule) is [`OpExec`], implemented in the same file.
pub trait Op: Sync + Send + OpExec {
    fn name(&self) -> &'static str;
    /// One line for help texts: what it computes.
    fn summary(&self) -> &'static str;
    fn params(&self) -> &'static [ParamSpec] {
        &[]
    }
    fn arity(&self) -> Arity {
        Arity::Exactly(1)
    }
    /// An op defined by other ops: the nodes lowering builds in its place (the last one takes the call's name,
    /// the others `<name>.<suffix>`), so that its forward, interval rule, relaxations and dual rule are theirs.
    /// Called after [`Op::infer_shape`] succeeded. The default, `None`, builds the op's own node.
    fn expand(&self, _attrs: &Attrs, _inputs: &[&Shape]) -> Option<Vec<Step>> {
        None
    }
    /// Parse the typed arguments ([`Args`]); lowering calls it before [`Op::infer_shape`], so an op that reads a
    /// name it does not declare fails at lowering. Ops without parameters keep the default.
    fn parse_args(&self, _attrs: &Attrs) -> std::result::Result<(), ShapeError> {
        Ok(())
    }
    /// Output shape from input shapes; validates the inputs where it infers (tract's habit).
    fn infer_shape(&self, attrs: &Attrs, inputs: &[&Shape]) -> Result<Shape, ShapeError>;
    /// Parameter tensors this node owns.
    fn weights(&self, _attrs: &Attrs, _inputs: &[&Shape], _out: &Shape) -> Vec<WeightSpec> {
        Vec::new()
    }
    /// The dual rule's name as `compile --emit dual` shows it, or `None` when the op has no dual rule yet.
    fn dual_name(&self) -> Option<&'static str>;
    fn has_dual(&self) -> bool {
        self.dual_name().is_some()
    }
    /// For ops without a dual rule: what to use instead.
    fn alternatives(&self) -> &'static str {
        ""
    }
    /// This node's dual rule as `compile --emit dual` prints it: the map from `ν` at the node's output to the
    /// dual variables of its inputs, with the arguments the rule that runs ([`OpExec::transpose`] or the
    /// relaxation's slope) uses. The default names the rule and its argument only.
    fn dual_text(&self, t: &DualText) -> String {
        format!("{}({})", self.dual_name().unwrap_or("(no dual rule)"), t.nu)
    }
    /// The objective term contributed where `ν` at this node's output is formed: an affine op's constant
    /// (`J -= ν·b`, the same constant [`OpExec::bias`] returns). The default names the `bias` weight if the node
    /// has one.
    fn objective_text(&self, t: &DualText) -> Option<String> {
        (self.role() == Role::Affine && t.weights.contains(&"bias")).then(|| format!("J -= {}·{}.bias", t.nu, t.name))
    }
    /// An activation's objective term on the dual variable `nu_in` of its input: the relaxation's offsets
    /// (`Σ_j min(ν_j·lo_j, ν_j·hi_j)`, [`OpExec::relax`]).
    fn relaxation_text(&self, t: &DualText, nu_in: &str) -> String {
        format!("J += Σ_j min({nu_in},j·lo_j, {nu_in},j·hi_j) over the relaxation of {}", t.name)
    }
}

/// One node of an op's expansion ([`Op::expand`]).
pub struct Step {
    pub suffix: String,
    pub op: &'static dyn Op,
    pub attrs: Attrs,
    pub inputs: Vec<StepInput>,
}

/// Where a step's input comes from.
#[derive(Debug, Clone, Copy)]
pub enum StepInput {
    /// The `i`-th input of the call.
    Call(usize),
    /// An earlier step.
    Step(usize),
}

/// What a node's lines of `compile --emit dual` are made of ([`Op::dual_text`]).
pub struct DualText<'a> {
    /// The node's name.
    pub name: &'a str,
    pub attrs: &'a Attrs,
    /// The dual variable at the node's output, `ν_<name>`.
    pub nu: &'a str,
    /// For [`Op::dual_text`]: which input the term goes to (operand position).
    pub operand: usize,
    /// The names of the node's inputs.
    pub in_names: Vec<&'a str>,
    pub in_shapes: Vec<&'a Shape>,
    pub out_shape: &'a Shape,
    /// The suffixes of the node's weights.
    pub weights: Vec<&'a str>,
}

/// Shape helpers shared by the image ops.
pub mod shape {
    use super::{Shape, ShapeError};

    pub fn image(s: &Shape) -> Result<(usize, usize, usize), ShapeError> {
        match s.as_slice() {
            [c, h, w] => Ok((*c, *h, *w)),
            _ => Err(ShapeError::NeedsImage { got: s.clone() }),
        }
    }

    /// `floor((n + 2p - k) / s) + 1`, the output size of a convolution or pooling window, if positive.
    pub fn window_out(n: usize, k: usize, s: usize, p: usize, what: &str) -> Result<usize, ShapeError> {
        let padded = n + 2 * p;
        if k > padded || s == 0 {
            return Err(ShapeError::EmptyOutput {
                detail: format!("{what}: kernel {k} is larger than the padded input size {padded} (= {n} + 2*{p})"),
            });
        }
        Ok((padded - k) / s + 1)
    }

    pub fn fmt(s: &Shape) -> String {
        format!("[{}]", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
    }
}
