//! `batchnorm2d(src, eps=1e-5)` in evaluation mode: per channel `y = w (x - mean) / sqrt(var + eps) + b`,
//! `[C, H, W] -> [C, H, W]`; parameters `weight`, `bias`, `running_mean`, `running_var`, each `[C]`.
//!
//! As a fixed affine map: `y = s x + t` with `s = w / sqrt(var + eps)`, `t = b - mean s`. Dual rule: the
//! diagonal map `nu -> s nu` (it is symmetric); `t` enters the objective like a bias.

use candle_core::Tensor;

use super::*;
use crate::error::{Context, Result};

pub struct BatchNorm2d;

static PARAMS: &[ParamSpec] = &[ParamSpec::float("eps", 1e-5)];

/// `batchnorm2d`'s typed arguments.
pub struct BatchNormArgs {
    pub eps: f64,
}

impl Args for BatchNormArgs {
    fn parse(a: &Attrs) -> std::result::Result<Self, ShapeError> {
        let eps = a.get_float("eps")?;
        if !(eps > 0.0) || !eps.is_finite() {
            return Err(ShapeError::BadValue { param: "eps", detail: "`eps` must be positive".into() });
        }
        Ok(BatchNormArgs { eps })
    }
}

impl Op for BatchNorm2d {
    fn name(&self) -> &'static str {
        "batchnorm2d"
    }
    fn summary(&self) -> &'static str {
        "batch normalisation in evaluation mode (running statistics), per channel"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn parse_args(&self, a: &Attrs) -> std::result::Result<(), ShapeError> {
        BatchNormArgs::parse(a).map(|_| ())
    }
    fn infer_shape(&self, a: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        BatchNormArgs::parse(a)?;
        shape::image(inputs[0])?;
        Ok(inputs[0].clone())
    }
    fn weights(&self, _a: &Attrs, inputs: &[&Shape], _out: &Shape) -> Vec<WeightSpec> {
        let c = inputs[0].first().copied().unwrap_or(1);
        let w = |suffix, init, trainable| WeightSpec {
            suffix,
            shape: vec![c],
            init,
            trainable,
            nonneg: suffix == "running_var",
        };
        vec![
            w("weight", Init::Ones, true),
            w("bias", Init::Zeros, true),
            w("running_mean", Init::Zeros, false),
            w("running_var", Init::Ones, false),
        ]
    }
    fn dual_name(&self) -> Option<&'static str> {
        Some("channel_scale")
    }
    fn dual_text(&self, t: &DualText) -> String {
        format!("channel_scale({}; {1}.weight / sqrt({1}.running_var + eps))", t.nu, t.name)
    }
    /// The constant is the shift `bias − running_mean · scale` ([`OpExec::bias`]).
    fn objective_text(&self, t: &DualText) -> Option<String> {
        Some(format!("J -= {}·{}.shift", t.nu, t.name))
    }
}

/// Per-channel scale `s` and shift `t` as `[C, 1, 1]` tensors.
fn scale_shift(ctx: &NodeCtx) -> Result<(Tensor, Tensor)> {
    let eps = ctx.args::<BatchNormArgs>()?.eps;
    let c = ctx.out_shape[0];
    let go = || -> candle_core::Result<(Tensor, Tensor)> {
        let w = ctx.weight("weight").map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let b = ctx.weight("bias").map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let m = ctx.weight("running_mean").map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let v = ctx.weight("running_var").map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let s = w.div(&(v + eps)?.sqrt()?)?;
        let t = (b - m.mul(&s)?)?;
        Ok((s.reshape((c, 1, 1))?, t.reshape((c, 1, 1))?))
    };
    go().context(|| format!("batchnorm2d `{}`", ctx.name))
}

/// `|β| + |mean| |s|` per channel `[C, 1, 1]`: the size of the terms of the shift `β − mean · s`.
fn shift_size(ctx: &NodeCtx) -> Result<Tensor> {
    let (s, _) = scale_shift(ctx)?;
    let go = || -> candle_core::Result<Tensor> {
        let b = ctx.weight("bias").map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let m = ctx.weight("running_mean").map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let c = ctx.out_shape[0];
        b.abs()?.reshape((c, 1, 1))? + m.abs()?.reshape((c, 1, 1))?.mul(&s.abs()?)?
    };
    go().context(|| format!("shift of batchnorm2d `{}`", ctx.name))
}

impl OpExec for BatchNorm2d {
    /// All-ones weights give positive coefficients wherever the op's can be non-zero.
    fn groupable(&self) -> bool {
        true
    }
    fn role(&self) -> Role {
        Role::Affine
    }
    /// The inference computes `(x − mean) / √(var + eps) · γ + β`, or folds the scale and shift first: either
    /// way each output carries at most a dozen roundings of terms of size `|s| (|x̂| + |mean|) + |β|`; `k = 20`
    /// also covers the computed `s` (within `γ_4 |s|`) that `linear_abs` multiplies by.
    fn deployed_affine(&self, ctx: &NodeCtx) -> Result<Option<(usize, Option<Tensor>)>> {
        let o = shift_size(ctx)?;
        let o = o.broadcast_as(ctx.out_shape.as_slice()).and_then(|o| o.contiguous());
        Ok(Some((20, Some(o.context(|| format!("deployed error of batchnorm2d `{}`", ctx.name))?))))
    }
    /// One product per entry by the computed scale `s = γ / √(var + eps)`, itself within `3u |s|` of the real one
    /// (an addition, a correctly rounded square root and a division).
    fn terms(&self, _ctx: &NodeCtx) -> usize {
        4
    }
    /// The shift `β − mean · s` is computed: within `γ_5 (|β| + |mean| |s|)` of the real one.
    fn bias_error(&self, ctx: &NodeCtx) -> Result<Option<Tensor>> {
        let e = shift_size(ctx)?;
        let go = || -> candle_core::Result<Tensor> {
            let g = crate::float::charge_gamma(5, e.dtype());
            (&e * g)?.broadcast_as(ctx.out_shape.as_slice())?.contiguous()
        };
        Ok(Some(go().context(|| format!("rounding of batchnorm2d `{}`", ctx.name))?))
    }
    fn linear(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        let (s, _) = scale_shift(ctx)?;
        inputs[0].broadcast_mul(&s).context(|| format!("batchnorm2d `{}`", ctx.name))
    }
    fn transpose(&self, ctx: &NodeCtx, nu: &Tensor) -> Result<Vec<Tensor>> {
        Ok(vec![self.linear(ctx, std::slice::from_ref(nu))?])
    }
    /// `|s| r` per channel.
    fn linear_abs(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        let (s, _) = scale_shift(ctx)?;
        let ctx_err = || format!("interval rule of batchnorm2d `{}`", ctx.name);
        inputs[0].broadcast_mul(&s.abs().context(ctx_err)?).context(ctx_err)
    }
    fn bias(&self, ctx: &NodeCtx) -> Result<Option<Tensor>> {
        let (_, t) = scale_shift(ctx)?;
        let out = t.broadcast_as(ctx.out_shape.as_slice()).and_then(|t| t.contiguous());
        Ok(Some(out.context(|| format!("batchnorm2d `{}`", ctx.name))?))
    }
}
