//! `relu(src)`: `max(z, 0)` elementwise, any shape.
//!
//! Relaxation on `[l, u]` (paper eq. (3)–(5), Wong & Kolter 2018): active units (`l >= 0`) slope 1, inactive
//! (`u <= 0`) slope 0, crossing units (`l < 0 < u`) the chord slope `d = u / (u - l)` with offset
//! `relu(z) - d z in [0, -d l]`. The dual rule is `nu = d * nu_hat` and the objective term over crossing units
//! `min(nu*0, nu*(-d l))`, which equals the paper's `sum l [nu]_+` with the paper's sign of `nu`.

use candle_core::Tensor;

use super::*;
use crate::error::{Context, Result};

pub struct Relu;

impl Op for Relu {
    fn name(&self) -> &'static str {
        "relu"
    }
    fn summary(&self) -> &'static str {
        "rectified linear unit max(z, 0)"
    }
    fn infer_shape(&self, _a: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        Ok(inputs[0].clone())
    }
    fn dual_name(&self) -> Option<&'static str> {
        Some("relu_dual")
    }
    /// `ν_in = d ⊙ ν` with the relaxation's slope `d` on the input's bounds.
    fn dual_text(&self, t: &DualText) -> String {
        format!("relu_dual({}; slope d_{})", t.nu, t.in_names.first().copied().unwrap_or("?"))
    }
    fn relaxation_text(&self, t: &DualText, nu_in: &str) -> String {
        format!(
            "J += Σ_j min({nu_in},j·lo_j, {nu_in},j·hi_j) over the relaxation of {}  (relu: Σ over crossing j of l_j·[{nu_in},j]₊)",
            t.name
        )
    }
}

/// Width below which a crossing unit takes the constant relaxation (see [`relu_relaxation`]).
pub const NARROW: f64 = 1e-12;

/// The ReLU relaxation from bounds; `l`, `u` of any equal shape.
pub fn relu_relaxation(l: &Tensor, u: &Tensor) -> candle_core::Result<Relaxation> {
    let zero = l.zeros_like()?;
    let one = l.ones_like()?;
    let active = l.ge(&zero)?;
    let straddle = (l.lt(&zero)? * u.gt(&zero)?)?;
    // A crossing unit narrower than `NARROW` (the widening of an exact zero for rounding makes them) takes the
    // constant relaxation `relu(z) ∈ [0, u]` (slope 0, mid = rad = u/2): valid on any `l < 0 < u`, looser by at
    // most `u < NARROW`, and its gradient stays finite where the chord's `−u/(u − l)²` would overflow.
    let narrow = (&straddle * (u - l)?.lt(NARROW)?)?;
    let crossing = (&straddle * narrow.eq(0u8)?)?;
    // Guard the division where the unit is not crossing, so no NaN reaches any gradient.
    let denom = crossing.where_cond(&(u - l)?, &one)?;
    let chord = (u / denom)?;
    let slope = crossing.where_cond(&chord, &active.where_cond(&one, &zero)?)?;
    // offset in [0, -d l] on crossing units: mid = rad = -d l / 2.
    let half = crossing.where_cond(&((&chord * l)? * -0.5)?, &zero)?;
    let half = narrow.where_cond(&(u * 0.5)?, &half)?;
    Ok(Relaxation { slope, mid: half.clone(), rad: half, lower: None, lines: None, constant: false })
}

/// CROWN's relaxation (Zhang et al. 2018): the upper line is the chord, as in [`relu_relaxation`]; the lower line
/// of a crossing unit is `z` where `u >= -l` and `0` elsewhere (of the two, the one with the smaller area
/// between it and the ReLU), both through the origin, so the lower offset `mid − rad` stays 0.
pub fn relu_crown_relaxation(l: &Tensor, u: &Tensor) -> candle_core::Result<Relaxation> {
    let mut r = relu_relaxation(l, u)?;
    let zero = l.zeros_like()?;
    let crossing = (l.lt(&zero)? * u.gt(&zero)?)?;
    let one_side = u.ge(&l.neg()?)?.to_dtype(l.dtype())?;
    r.lower = Some(crossing.where_cond(&one_side, &r.slope)?);
    Ok(r)
}

impl OpExec for Relu {
    fn role(&self) -> Role {
        Role::Activation
    }
    /// Exact in floating point and 1-Lipschitz: the inference's error is its input's.
    fn deployed_error(&self, _ctx: &NodeCtx, e: &[Tensor], _m: &[Tensor], _u: f64) -> Result<Option<Deployed>> {
        Ok(Some(Deployed::exact(&e[0])))
    }
    /// Zero wherever `u ≤ 0`.
    fn flat_on(&self, ctx: &NodeCtx, _l: &Tensor, u: &Tensor) -> Result<Option<Tensor>> {
        let go = || u.le(0.0);
        Ok(Some(go().context(|| format!("relu `{}`", ctx.name))?))
    }
    fn activate(&self, ctx: &NodeCtx, x: &Tensor) -> Result<Tensor> {
        x.relu().context(|| format!("relu `{}`", ctx.name))
    }
    fn relax(&self, ctx: &NodeCtx, l: &Tensor, u: &Tensor) -> Result<Relaxation> {
        relu_relaxation(l, u).context(|| format!("relaxation of relu `{}`", ctx.name))
    }
    fn relax_family(&self, ctx: &NodeCtx, l: &Tensor, u: &Tensor, family: Family) -> Result<Relaxation> {
        match family {
            Family::Wk => self.relax(ctx, l, u),
            Family::Crown | Family::Alpha => {
                relu_crown_relaxation(l, u).context(|| format!("CROWN relaxation of relu `{}`", ctx.name))
            }
            Family::Ibp => {
                let (lo, hi) = self.interval(ctx, l, u)?;
                Relaxation::constant(&lo, &hi).context(|| format!("interval relaxation of relu `{}`", ctx.name))
            }
        }
    }
    /// `a · z <= relu(z)` for every `z` exactly when `0 <= a <= 1`.
    fn lower_slope_range(&self, _ctx: &NodeCtx) -> Option<(f64, f64)> {
        Some((0.0, 1.0))
    }
    /// Monotone: `[relu(l), relu(u)]`.
    fn interval(&self, ctx: &NodeCtx, l: &Tensor, u: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.activate(ctx, l)?, self.activate(ctx, u)?))
    }
    /// One fused kernel on the CPU ([`crate::kernels::interval::relu`]); the composed rule elsewhere.
    fn interval_packed(&self, ctx: &NodeCtx, inputs: &[Tensor], points: usize) -> Result<Tensor> {
        if !crate::kernels::interval::supported(&inputs[0], &inputs[0]) {
            return super::exec::packed_rule(self, ctx, inputs, points);
        }
        crate::kernels::interval::relu(&inputs[0], points).context(|| format!("interval rule of relu `{}`", ctx.name))
    }
}
