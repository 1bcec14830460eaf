//! The execution side of an op: its forward rule and its dual rule, on candle tensors.
//!
//! Conventions (all tensors carry one leading dimension `N` that the op treats as a batch):
//! - affine ops: `linear(inputs)` maps `[N, *in_i]` to `[N, *out]` **without** the bias; `bias()` is `[*out]`;
//!   `transpose(nu)` is the dual rule, the adjoint map `[N, *out] -> [N, *in_i]` for every input `i`, so that
//!   `<linear(x), nu> = <x, transpose(nu)>` (tests check this identity for every op);
//! - activation ops: `activate(x)` is the primal function; `relax(l, u)` gives the relaxation
//!   `a = slope * z + delta`, `delta in [lo, hi]`, valid for every `z in [l, u]` (the dual rule is then
//!   `nu_in = slope * nu_out` plus the objective term `min(nu*lo, nu*hi)`, Section 3.1 / Appendix B of the paper).

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::{Attrs, Shape};
use crate::error::{Error, Result};

/// What an op's dual rule looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `y = A(x) + b`: linear, conv2d, batchnorm2d, flatten, identity, avgpool2d, add.
    Affine,
    /// An elementwise nonlinearity with a linear relaxation: relu, hardtanh.
    Activation,
    /// Known to the registry but without a dual rule.
    Unsupported,
}

/// Everything an op needs to execute one node.
pub struct NodeCtx<'a> {
    pub name: &'a str,
    pub attrs: &'a Attrs,
    /// The node's parameters by suffix (`weight`, `bias`, ...), already of the compute dtype.
    pub weights: &'a BTreeMap<String, Tensor>,
    pub in_shapes: Vec<&'a Shape>,
    pub out_shape: &'a Shape,
}

impl NodeCtx<'_> {
    pub fn weight(&self, suffix: &str) -> Result<&Tensor> {
        self.weights.get(suffix).ok_or_else(|| {
            Error::Usage(format!(
                "internal: weights of node `{}` have no `{suffix}` (the loader checks this)",
                self.name
            ))
        })
    }
}

/// The relaxation `a = slope * z + delta`, `delta in [lo, hi]`, elementwise over `[B, *shape]`, stored as the
/// midpoint and radius of the offset interval.
pub struct Relaxation {
    pub slope: Tensor,
    pub mid: Tensor,
    pub rad: Tensor,
}

fn no_rule(what: &str) -> Error {
    Error::Usage(format!("internal: {what} called on an op without that rule"))
}

pub trait OpExec {
    fn role(&self) -> Role {
        Role::Unsupported
    }
    /// Affine ops: the linear part, `[N, *in_i]... -> [N, *out]`.
    fn linear(&self, _ctx: &NodeCtx, _inputs: &[Tensor]) -> Result<Tensor> {
        Err(no_rule("linear"))
    }
    /// Affine ops: the dual rule (adjoint of `linear`), `[N, *out] -> [N, *in_i]` for each input.
    fn transpose(&self, _ctx: &NodeCtx, _nu: &Tensor) -> Result<Vec<Tensor>> {
        Err(no_rule("transpose"))
    }
    /// Affine ops: the constant term, `[*out]`, if any.
    fn bias(&self, _ctx: &NodeCtx) -> Result<Option<Tensor>> {
        Ok(None)
    }
    /// Activation ops: the primal function, elementwise.
    fn activate(&self, _ctx: &NodeCtx, _x: &Tensor) -> Result<Tensor> {
        Err(no_rule("activate"))
    }
    /// Activation ops: the relaxation on `[l, u]` (both `[B, *shape]`).
    fn relax(&self, _ctx: &NodeCtx, _l: &Tensor, _u: &Tensor) -> Result<Relaxation> {
        Err(no_rule("relax"))
    }
}

/// The leading (batch) dimension `N` of a `[N, *s]` tensor.
pub fn lead(t: &Tensor) -> usize {
    t.dims().first().copied().unwrap_or(1)
}
