//! `leaky_relu(src, slope=0.01)`: `z` for `z >= 0`, `slope · z` below, elementwise, any shape; `0 <= slope <= 1`
//! (convex, as the ReLU, which is `slope = 0`).
//!
//! Relaxed like the ReLU (paper eq. (3)–(5)): active units (`l >= 0`) slope 1, inactive (`u <= 0`) slope `s`,
//! crossing units the chord `d = (u − s l) / (u − l)` through `(u, u)`, and `leaky(z) − d z ∈ [0, u (1 − d)]`
//! (the smallest value at 0, by convexity). CROWN's lower line of a crossing unit is `z` where `u >= −l`, else
//! `s z`; any `a ∈ [s, 1]` gives a valid lower line `a z`, the range `alpha` optimises in.

use candle_core::Tensor;

use super::*;
use crate::error::{Context, Result};

pub struct LeakyRelu;

static PARAMS: &[ParamSpec] = &[ParamSpec::float("slope", 0.01)];

/// `leaky_relu`'s typed arguments.
#[derive(Debug, Clone, Copy)]
pub struct LeakyArgs {
    pub slope: f64,
}

impl Args for LeakyArgs {
    fn parse(a: &Attrs) -> std::result::Result<Self, ShapeError> {
        let slope = a.get_float("slope")?;
        if !(0.0..=1.0).contains(&slope) {
            return Err(ShapeError::BadValue {
                param: "slope",
                detail: format!("`slope` must be in [0, 1] (a convex leaky ReLU), got {slope}"),
            });
        }
        Ok(LeakyArgs { slope })
    }
}

impl Op for LeakyRelu {
    fn name(&self) -> &'static str {
        "leaky_relu"
    }
    fn summary(&self) -> &'static str {
        "leaky rectified linear unit max(z, slope·z)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn parse_args(&self, a: &Attrs) -> std::result::Result<(), ShapeError> {
        LeakyArgs::parse(a).map(|_| ())
    }
    fn infer_shape(&self, a: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        LeakyArgs::parse(a)?;
        Ok(inputs[0].clone())
    }
    fn dual_name(&self) -> Option<&'static str> {
        Some("leaky_relu_dual")
    }
    fn dual_text(&self, t: &DualText) -> String {
        format!("leaky_relu_dual({}; slope d_{})", t.nu, t.in_names.first().copied().unwrap_or("?"))
    }
}

/// The paper-style relaxation of a leaky ReLU with slope `s` on `[l, u]`.
pub fn leaky_relaxation(l: &Tensor, u: &Tensor, s: f64) -> candle_core::Result<Relaxation> {
    let zero = l.zeros_like()?;
    let one = l.ones_like()?;
    let active = l.ge(&zero)?;
    let straddle = (l.lt(&zero)? * u.gt(&zero)?)?;
    // A narrow crossing unit takes the constant relaxation `[min(s l, 0), max(u, s l)]` (as for ReLU:
    // [`super::relu::NARROW`]), so no gradient overflows.
    let narrow = (&straddle * (u - l)?.lt(super::relu::NARROW)?)?;
    let crossing = (&straddle * narrow.eq(0u8)?)?;
    let denom = crossing.where_cond(&(u - l)?, &one)?;
    let chord = ((u - (l * s)?)? / denom)?;
    let slope = crossing.where_cond(&chord, &active.where_cond(&one, &(&one * s)?)?)?;
    let slope = narrow.where_cond(&zero, &slope)?;
    let half = crossing.where_cond(&((u * (1.0 - &chord)?)? * 0.5)?, &zero)?;
    let (lo, hi) = ((l * s)?.minimum(&zero)?, u.maximum(&(l * s)?)?);
    let mid = narrow.where_cond(&((&lo + &hi)? * 0.5)?, &half)?;
    let rad = narrow.where_cond(&((&hi - &lo)? * 0.5)?, &half)?;
    Ok(Relaxation { slope, mid, rad, lower: None, lines: None, constant: false })
}

impl OpExec for LeakyRelu {
    fn role(&self) -> Role {
        Role::Activation
    }
    /// `max(1, s) e + γ_2 s (m + e)`: the function is `max(1, s)`-Lipschitz and its inference rounds the product
    /// `s · ẑ` (and `s` itself) once each.
    fn deployed_error(&self, ctx: &NodeCtx, e: &[Tensor], m: &[Tensor], u: f64) -> Result<Option<Deployed>> {
        let s = ctx.args::<LeakyArgs>()?.slope.abs();
        let go = || -> candle_core::Result<Deployed> {
            let own = ((&m[0] + &e[0])? * (s * crate::float::gamma_unit(2, u)))?;
            Ok(Deployed { err: ((&e[0] * s.max(1.0))? + &own)?, own: Some(own) })
        };
        Ok(Some(go().context(|| format!("deployed error of leaky_relu `{}`", ctx.name))?))
    }
    fn activate(&self, ctx: &NodeCtx, x: &Tensor) -> Result<Tensor> {
        let s = ctx.args::<LeakyArgs>()?.slope;
        x.maximum(&(x * s).context(|| format!("leaky_relu `{}`", ctx.name))?)
            .context(|| format!("leaky_relu `{}`", ctx.name))
    }
    fn relax(&self, ctx: &NodeCtx, l: &Tensor, u: &Tensor) -> Result<Relaxation> {
        let s = ctx.args::<LeakyArgs>()?.slope;
        leaky_relaxation(l, u, s).context(|| format!("relaxation of leaky_relu `{}`", ctx.name))
    }
    fn relax_family(&self, ctx: &NodeCtx, l: &Tensor, u: &Tensor, family: Family) -> Result<Relaxation> {
        let s = ctx.args::<LeakyArgs>()?.slope;
        let err = || format!("relaxation of leaky_relu `{}`", ctx.name);
        match family {
            Family::Wk => self.relax(ctx, l, u),
            Family::Crown | Family::Alpha => {
                let go = || -> candle_core::Result<Relaxation> {
                    let mut r = leaky_relaxation(l, u, s)?;
                    let zero = l.zeros_like()?;
                    let crossing = (l.lt(&zero)? * u.gt(&zero)?)?;
                    let one_side = u.ge(&l.neg()?)?.where_cond(&l.ones_like()?, &(l.ones_like()? * s)?)?;
                    r.lower = Some(crossing.where_cond(&one_side, &r.slope)?);
                    Ok(r)
                };
                go().context(err)
            }
            Family::Ibp => {
                let (lo, hi) = self.interval(ctx, l, u)?;
                Relaxation::constant(&lo, &hi).context(err)
            }
        }
    }
    /// `a · z <= leaky(z)` for every `z` exactly when `s <= a <= 1`.
    fn lower_slope_range(&self, ctx: &NodeCtx) -> Option<(f64, f64)> {
        ctx.args::<LeakyArgs>().ok().map(|a| (a.slope, 1.0))
    }
    /// Monotone (`s >= 0`): `[leaky(l), leaky(u)]`.
    fn interval(&self, ctx: &NodeCtx, l: &Tensor, u: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.activate(ctx, l)?, self.activate(ctx, u)?))
    }
}
