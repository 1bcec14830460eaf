//! `tanh(src)`: the hyperbolic tangent, elementwise, any shape.
//!
//! An S-shaped activation (convex below 0, concave above): its relaxations are those of [`super::sshape`]:
//! `wk` one slope (the chord's) with the exact band around it, `crown` the tangent and chord lines of Zhang et
//! al. 2018, `alpha` the same lines with the tangent points moved within their valid ranges
//! ([`super::sshape::tangents`]), `ibp` the interval `[tanh(l), tanh(u)]` (monotone). The dual rule is
//! `ν_in = slope ⊙ ν` (one slope) or the sign split between the two lines, with their offsets in the objective.

use candle_core::Tensor;

use super::sshape::{self, Kind};
use super::*;
use crate::error::{Context, Result};

pub struct Tanh;

impl Op for Tanh {
    fn name(&self) -> &'static str {
        "tanh"
    }
    fn summary(&self) -> &'static str {
        "hyperbolic tangent"
    }
    fn infer_shape(&self, _a: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        Ok(inputs[0].clone())
    }
    fn dual_name(&self) -> Option<&'static str> {
        Some("tanh_dual")
    }
    fn dual_text(&self, t: &DualText) -> String {
        format!(
            "tanh_dual({}; slopes of the lines on the bounds of {})",
            t.nu,
            t.in_names.first().copied().unwrap_or("?")
        )
    }
}

impl OpExec for Tanh {
    fn role(&self) -> Role {
        Role::Activation
    }
    /// `1.0 e + 8u + η`: the function is 1.0-Lipschitz with values in [−1, 1], and its inference is assumed
    /// accurate to 8 ulps (the assumption of the interval rule, [`crate::dual::rounding`] item 2).
    fn deployed_error(&self, ctx: &NodeCtx, e: &[Tensor], _m: &[Tensor], u: f64) -> Result<Option<Deployed>> {
        let go = || -> candle_core::Result<Deployed> {
            let own = (e[0].ones_like()? * (8.0 * u + crate::float::tiny_unit(u)))?;
            Ok(Deployed { err: ((&e[0] * 1.0)? + &own)?, own: Some(own) })
        };
        Ok(Some(go().context(|| format!("deployed error of tanh `{}`", ctx.name))?))
    }
    fn activate(&self, ctx: &NodeCtx, x: &Tensor) -> Result<Tensor> {
        Kind::Tanh.f(x).context(|| format!("tanh `{}`", ctx.name))
    }
    fn relax(&self, ctx: &NodeCtx, l: &Tensor, u: &Tensor) -> Result<Relaxation> {
        self.relax_family(ctx, l, u, Family::Wk)
    }
    fn relax_family(&self, ctx: &NodeCtx, l: &Tensor, u: &Tensor, family: Family) -> Result<Relaxation> {
        sshape::relax_family(Kind::Tanh, l, u, family).context(|| format!("{family} relaxation of tanh `{}`", ctx.name))
    }
    fn tangents(&self, ctx: &NodeCtx, l: &Tensor, u: &Tensor) -> Result<Option<Tangents>> {
        let t = sshape::tangents(Kind::Tanh, l, u).context(|| format!("tangent points of tanh `{}`", ctx.name))?;
        Ok(Some(t))
    }
    fn tangent_line(&self, ctx: &NodeCtx, t: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        sshape::tangent_line(Kind::Tanh, t).context(|| format!("tangent line of tanh `{}`", ctx.name))
    }
    /// Monotone: `[tanh(l), tanh(u)]`.
    fn interval(&self, ctx: &NodeCtx, l: &Tensor, u: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.activate(ctx, l)?, self.activate(ctx, u)?))
    }
}
