//! `hardtanh(src, min_val=-1.0, max_val=1.0)`: `clamp(z, min_val, max_val)` elementwise.
//!
//! Relaxation (the paper's Appendix B treats hardtanh as two ReLU-like kinks; we derive the two-sided chord
//! relaxation directly). On `[l, u]` take the chord slope `d = (h(u) - h(l)) / (u - l)` (1 or 0 when `u == l`
//! lies on a linear piece). Then `h(z) - d z` is piecewise linear on `[l, u]`, so its extremes lie at the points
//! `{l, u} ∪ ({min_val, max_val} ∩ (l, u))`; `lo`/`hi` are the min/max over those points. This is sound for every
//! `z in [l, u]` and exact (`lo == hi`) when `[l, u]` lies on one linear piece.

use candle_core::Tensor;

use super::*;
use crate::error::{Context, Result};

pub struct Hardtanh;

static PARAMS: &[ParamSpec] = &[ParamSpec::float("min_val", -1.0), ParamSpec::float("max_val", 1.0)];

impl Op for Hardtanh {
    fn name(&self) -> &'static str {
        "hardtanh"
    }
    fn summary(&self) -> &'static str {
        "clamp(z, min_val, max_val)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn parse_args(&self, a: &Attrs) -> std::result::Result<(), ShapeError> {
        HardtanhArgs::parse(a).map(|_| ())
    }
    fn infer_shape(&self, a: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        HardtanhArgs::parse(a)?;
        Ok(inputs[0].clone())
    }
    fn dual_name(&self) -> Option<&'static str> {
        Some("hardtanh_dual")
    }
    fn dual_text(&self, t: &DualText) -> String {
        format!("hardtanh_dual({}; slope d_{})", t.nu, t.in_names.first().copied().unwrap_or("?"))
    }
}

/// The chord relaxation of `clamp(z, lo_v, hi_v)` on `[l, u]`.
/// `hardtanh`'s typed arguments: `min_val < max_val`, both finite.
#[derive(Debug, Clone, Copy)]
pub struct HardtanhArgs {
    pub min_val: f64,
    pub max_val: f64,
}

impl Args for HardtanhArgs {
    fn parse(a: &Attrs) -> std::result::Result<Self, ShapeError> {
        let (min_val, max_val) = (a.get_float("min_val")?, a.get_float("max_val")?);
        if min_val >= max_val || !min_val.is_finite() || !max_val.is_finite() {
            return Err(ShapeError::BadValue {
                param: "max_val",
                detail: format!("`max_val` ({max_val}) must be greater than `min_val` ({min_val})"),
            });
        }
        Ok(HardtanhArgs { min_val, max_val })
    }
}

pub fn hardtanh_relaxation(l: &Tensor, u: &Tensor, lo_v: f64, hi_v: f64) -> candle_core::Result<Relaxation> {
    let h = |z: &Tensor| z.clamp(lo_v, hi_v);
    let (hl, hu) = (h(l)?, h(u)?);
    let width = (u - l)?;
    // u == l (the unit is fixed), or so narrow that the chord's gradient would overflow: the piece's slope (any
    // slope is valid: the band below is exact for it).
    let flat = width.lt(super::relu::NARROW)?;
    let one = l.ones_like()?;
    let safe = flat.where_cond(&one, &width)?;
    let chord = ((&hu - &hl)? / safe)?;
    // Degenerate interval: slope of the piece containing l (1 inside (lo_v, hi_v), else 0).
    let inside = (l.gt(lo_v)? * l.lt(hi_v)?)?;
    let flat_slope = inside.where_cond(&one, &l.zeros_like()?)?;
    let slope = flat.where_cond(&flat_slope, &chord)?;
    // g(z) = h(z) - slope z at the candidate points.
    let g = |z: &Tensor| -> candle_core::Result<Tensor> { h(z)? - (&slope * z)? };
    let gl = g(l)?;
    let gu = g(u)?;
    let mut lo = gl.minimum(&gu)?;
    let mut hi = gl.maximum(&gu)?;
    for v in [lo_v, hi_v] {
        let kink = (l.lt(v)? * u.gt(v)?)?;
        let gv = (h(&l.ones_like()?.affine(v, 0.0)?)? - (&slope * v)?)?;
        lo = kink.where_cond(&lo.minimum(&gv)?, &lo)?;
        hi = kink.where_cond(&hi.maximum(&gv)?, &hi)?;
    }
    let mid = ((&lo + &hi)? * 0.5)?;
    let rad = ((&hi - &lo)? * 0.5)?;
    Ok(Relaxation { slope, mid, rad, lower: None, lines: None, constant: false })
}

impl OpExec for Hardtanh {
    fn role(&self) -> Role {
        Role::Activation
    }
    /// A clamp: exact in floating point and 1-Lipschitz: the inference's error is its input's.
    fn deployed_error(&self, _ctx: &NodeCtx, e: &[Tensor], _m: &[Tensor], _u: f64) -> Result<Option<Deployed>> {
        Ok(Some(Deployed::exact(&e[0])))
    }
    /// Constant where `u ≤ min_val` or `l ≥ max_val`.
    fn flat_on(&self, ctx: &NodeCtx, l: &Tensor, u: &Tensor) -> Result<Option<Tensor>> {
        let a: HardtanhArgs = ctx.args()?;
        let go = || u.le(a.min_val)?.maximum(&l.ge(a.max_val)?);
        Ok(Some(go().context(|| format!("hardtanh `{}`", ctx.name))?))
    }
    fn activate(&self, ctx: &NodeCtx, x: &Tensor) -> Result<Tensor> {
        let a: HardtanhArgs = ctx.args()?;
        x.clamp(a.min_val, a.max_val).context(|| format!("hardtanh `{}`", ctx.name))
    }
    fn relax(&self, ctx: &NodeCtx, l: &Tensor, u: &Tensor) -> Result<Relaxation> {
        let a: HardtanhArgs = ctx.args()?;
        hardtanh_relaxation(l, u, a.min_val, a.max_val).context(|| format!("relaxation of hardtanh `{}`", ctx.name))
    }
    /// Monotone: `[hardtanh(l), hardtanh(u)]`.
    fn interval(&self, ctx: &NodeCtx, l: &Tensor, u: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.activate(ctx, l)?, self.activate(ctx, u)?))
    }
}
