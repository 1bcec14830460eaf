//! `linear(src, out=N)`: `y = W x + b`, `x: [N_in]`, `W: [out, N_in]` (PyTorch layout), `b: [out]`.
//!
//! Dual rule (paper eq. (7), `nu_hat_i = W_i^T nu_{i+1}`): the transposed matrix, `[L, out] -> [L, N_in]`;
//! the bias enters the objective as `nu^T b`.

use candle_core::Tensor;

use super::*;
use crate::error::{Context, Result};

pub struct Linear;

static PARAMS: &[ParamSpec] = &[ParamSpec::required_int("out", Min::Positive)];

/// `linear`'s typed arguments.
pub struct LinearArgs {
    pub out: usize,
}

impl Args for LinearArgs {
    fn parse(a: &Attrs) -> std::result::Result<Self, ShapeError> {
        Ok(LinearArgs { out: a.get_usize("out")? })
    }
}

impl Op for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn summary(&self) -> &'static str {
        "fully connected layer y = W x + b on a vector"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn parse_args(&self, a: &Attrs) -> std::result::Result<(), ShapeError> {
        LinearArgs::parse(a).map(|_| ())
    }
    fn infer_shape(&self, attrs: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        let out = LinearArgs::parse(attrs)?.out;
        match inputs[0].as_slice() {
            [_] => Ok(vec![out]),
            _ => Err(ShapeError::NeedsVector { got: inputs[0].clone() }),
        }
    }
    fn weights(&self, _attrs: &Attrs, inputs: &[&Shape], out: &Shape) -> Vec<WeightSpec> {
        let n_in = inputs[0].iter().product();
        let n_out = out.iter().product();
        vec![
            WeightSpec {
                suffix: "weight",
                shape: vec![n_out, n_in],
                init: Init::FanIn(n_in),
                trainable: true,
                nonneg: false,
            },
            WeightSpec { suffix: "bias", shape: vec![n_out], init: Init::FanIn(n_in), trainable: true, nonneg: false },
        ]
    }
    fn dual_name(&self) -> Option<&'static str> {
        Some("linear_T")
    }
    /// `ν_in = Wᵀ ν`, i.e. `ν W` for row vectors ([`OpExec::transpose`]).
    fn dual_text(&self, t: &DualText) -> String {
        format!("linear_T({}; {}.weight)", t.nu, t.name)
    }
}

impl OpExec for Linear {
    /// All-ones weights give positive coefficients wherever the op's can be non-zero.
    fn groupable(&self) -> bool {
        true
    }
    fn role(&self) -> Role {
        Role::Affine
    }
    /// A forward entry sums `in` products (and the bias).
    fn terms(&self, ctx: &NodeCtx) -> usize {
        ctx.in_shapes[0].iter().product::<usize>() + 1
    }
    /// A transposed entry sums `out` products.
    fn transpose_terms(&self, ctx: &NodeCtx) -> usize {
        ctx.out_shape.iter().product::<usize>() + 1
    }
    fn linear(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        let w = ctx.weight("weight")?;
        inputs[0]
            .matmul(&w.t().context(|| format!("linear `{}`", ctx.name))?)
            .context(|| format!("linear `{}`", ctx.name))
    }
    fn transpose(&self, ctx: &NodeCtx, nu: &Tensor) -> Result<Vec<Tensor>> {
        let w = ctx.weight("weight")?;
        Ok(vec![nu.matmul(w).context(|| format!("dual of linear `{}`", ctx.name))?])
    }
    /// One fused kernel on the CPU ([`crate::kernels::interval::linear`]); the composed rule elsewhere.
    fn interval_packed(&self, ctx: &NodeCtx, inputs: &[Tensor], points: usize) -> Result<Tensor> {
        let (w, b) = (ctx.weight("weight")?, ctx.weight("bias")?);
        if !crate::kernels::interval::supported(&inputs[0], w) || inputs[0].rank() != 2 {
            return super::exec::packed_rule(self, ctx, inputs, points);
        }
        crate::kernels::interval::linear(&inputs[0], w, b, points)
            .context(|| format!("interval rule of linear `{}`", ctx.name))
    }
    /// `r |W|ᵀ`.
    fn linear_abs(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        let w = ctx.weight("weight")?;
        let ctx_err = || format!("interval rule of linear `{}`", ctx.name);
        inputs[0].matmul(&w.abs().and_then(|a| a.t()).context(ctx_err)?).context(ctx_err)
    }
    fn bias(&self, ctx: &NodeCtx) -> Result<Option<Tensor>> {
        Ok(Some(ctx.weight("bias")?.clone()))
    }
}
