//! Relaxations of S-shaped activations (`sigmoid`, `tanh`): increasing, convex for `z < 0`, concave for
//! `z > 0`, with the derivative `σ'` largest at 0 and decreasing in `|z|`. Elementwise over `[B, *shape]`,
//! in candle ops (so that training can differentiate through them).
//!
//! - **`wk` (one slope):** the chord slope `a = (σ(u) − σ(l)) / (u − l)` (the derivative at `l` on a point
//!   interval), and the band `σ(z) − a z ∈ [b_lo, b_hi]`: the extremes of `g(z) = σ(z) − a z` on `[l, u]` lie at
//!   `l`, `u` or where `σ'(z) = a`, which is `±z*(a)` in closed form (sigmoid: `σ = (1 ± sqrt(1 − 4a)) / 2`;
//!   tanh: `σ = ±sqrt(1 − a)`). Exact, no iteration.
//! - **`crown` (two lines, CROWN's general activation bounds, Zhang et al. 2018):**
//!   - `u <= 0` (convex): upper line the chord, lower line the tangent at the midpoint;
//!   - `l >= 0` (concave): lower line the chord, upper line the tangent at the midpoint;
//!   - `l < 0 < u`: the upper line is the tangent at the smallest `t ∈ [0, u]` whose tangent passes above
//!     `(l, σ(l))` (found by [`BISECT`] bisection steps, always keeping a valid end), else the chord; the lower
//!     line likewise with `t ∈ [l, 0]` and `(u, σ(u))`.
//!
//!   Why the tangent at `t ∈ [0, u]` is an upper bound on `[l, u]` when `T_t(l) >= σ(l)`: on `[0, u]` by
//!   concavity; on `[l, 0]`, `T_t − σ` is concave (σ is convex there) and `>= 0` at both ends. `T_t(l)` grows
//!   with `t` (its derivative is `σ''(t)(l − t) >= 0`), so the valid `t` form an interval and bisection
//!   finds its end. When even `t = u` fails, `σ'(u) > ` the chord's slope, and the chord is above `σ` on `[l, u]`
//!   (concave on `[l, 0]` with both ends `>= 0`; convex on `[0, u]` and decreasing to 0 at `u`).
//!
//! - **`alpha` (free tangent points, [`tangents`]):** the same lines, with each tangent point free in the range
//!   where its tangent stays valid: `[l, u]` on a convex (lower line) or concave (upper line) interval, and on a
//!   mixed one `[t_up, u]` for the upper line and `[l, t_lo]` for the lower (the valid points form an interval
//!   out to the end, by the argument above, and the bisection's `t` lies on its valid side). The chords stay
//!   fixed. `crate::dual::alpha` moves the points by projected gradient ascent, from CROWN's.
//!
//! Each line's offset is widened by [`SLACK_ULPS`] units of rounding, far above the rounding of the few operations that
//! compute it.

use candle_core::{Result, Tensor};

use super::{Lines, Relaxation};

/// Bisection steps for the tangent points (the bracket shrinks to `2^-BISECT` of `|l|` or `u`).
pub const BISECT: usize = 24;
/// Widening of every offset, in units of the dtype's rounding (`|x| · SLACK_ULPS · ε_dtype + SLACK_ULPS · ε_dtype`
/// with ε the machine epsilon of f32 or f64): σ's values are in [−1, 1], and each offset is a few operations.
pub const SLACK_ULPS: f64 = 16.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sigmoid,
    Tanh,
}

impl Kind {
    pub fn f(self, z: &Tensor) -> Result<Tensor> {
        match self {
            Kind::Sigmoid => candle_nn::ops::sigmoid(z),
            Kind::Tanh => z.tanh(),
        }
    }
    /// `σ'(z)`.
    pub fn df(self, z: &Tensor) -> Result<Tensor> {
        let s = self.f(z)?;
        match self {
            Kind::Sigmoid => s.clone() * (1.0 - s)?,
            Kind::Tanh => 1.0 - s.sqr()?,
        }
    }
    /// The largest derivative, `σ'(0)`.
    fn df_max(self) -> f64 {
        match self {
            Kind::Sigmoid => 0.25,
            Kind::Tanh => 1.0,
        }
    }
    /// The `z* >= 0` with `σ'(z*) = a`, for `0 < a <= σ'(0)` (clamped into `[1e-30, σ'(0)]`, which keeps
    /// `z*` finite in f32 too: a smaller slope only occurs where σ is flat to below the rounding on `[l, u]`).
    /// Detached: the band's offsets `g(±z*)` have the derivative `−(±z*)` in `a` with `z*` held fixed (the
    /// envelope theorem, `g'(z*) = 0`), and the square root and logarithm here would give infinite ones.
    fn inv_df(self, a: &Tensor) -> Result<Tensor> {
        let a = a.detach().clamp(1e-30, self.df_max())?;
        match self {
            Kind::Sigmoid => {
                // σ(1 − σ) = a → σ = (1 + sqrt(1 − 4a)) / 2, z = ln(σ / (1 − σ)).
                let r = (1.0 - (a * 4.0)?)?.relu()?.sqrt()?;
                let s = ((&r + 1.0)? * 0.5)?;
                let one_minus = ((1.0 - &r)? * 0.5)?.clamp(1e-30, 1.0)?;
                (s / one_minus)?.log()
            }
            Kind::Tanh => {
                // 1 − t² = a → t = sqrt(1 − a), z = atanh(t) = ln((1 + t) / (1 − t)) / 2.
                let t = (1.0 - a)?.relu()?.sqrt()?;
                let den = (1.0 - &t)?.clamp(1e-30, 2.0)?;
                ((&t + 1.0)? / den)?.log()? * 0.5
            }
        }
    }
}

/// `max` (or `min`) of `g(z) = σ(z) − a z` over `[l, u]`: at the ends or at `±z*` inside.
fn band(k: Kind, l: &Tensor, u: &Tensor, a: &Tensor) -> Result<(Tensor, Tensor)> {
    let g = |z: &Tensor| -> Result<Tensor> { k.f(z)? - (a * z)? };
    let (gl, gu) = (g(l)?, g(u)?);
    let mut lo = gl.minimum(&gu)?;
    let mut hi = gl.maximum(&gu)?;
    let zs = k.inv_df(a)?;
    for z in [zs.clone(), zs.neg()?] {
        let inside = (z.ge(l)? * z.le(u)?)?;
        let gz = g(&z)?;
        lo = inside.where_cond(&lo.minimum(&gz)?, &lo)?;
        hi = inside.where_cond(&hi.maximum(&gz)?, &hi)?;
    }
    Ok((lo, hi))
}

/// The widening of an offset `x` ([`SLACK_ULPS`]).
fn slack(x: &Tensor) -> Result<Tensor> {
    let eps = match x.dtype() {
        candle_core::DType::F64 => f64::EPSILON,
        _ => f32::EPSILON as f64,
    } * SLACK_ULPS;
    (x.abs()? * eps)? + eps
}

/// The chord slope on `[l, u]`, and the derivative at `l` on a (near) point interval.
fn chord_slope(k: Kind, l: &Tensor, u: &Tensor) -> Result<Tensor> {
    let w = (u - l)?;
    let point = w.le(1e-12)?;
    let safe = point.where_cond(&w.ones_like()?, &w)?;
    let chord = ((k.f(u)? - k.f(l)?)? / safe)?;
    point.where_cond(&k.df(l)?, &chord)
}

/// The `wk` relaxation: one slope, the chord's, and the exact band around it.
pub fn single(k: Kind, l: &Tensor, u: &Tensor) -> Result<Relaxation> {
    let a = chord_slope(k, l, u)?;
    let (lo, hi) = band(k, l, u, &a)?;
    let (lo, hi) = ((&lo - slack(&lo)?)?, (&hi + slack(&hi)?)?);
    let mid = ((&lo + &hi)? * 0.5)?;
    let rad = ((&hi - &lo)? * 0.5)?;
    Ok(Relaxation { slope: a, mid, rad, lower: None, lines: None, constant: false })
}

/// The tangent line at `t`: slope `σ'(t)`, offset `σ(t) − σ'(t) t`.
fn tangent(k: Kind, t: &Tensor) -> Result<(Tensor, Tensor)> {
    let d = k.df(t)?;
    let off = (k.f(t)? - (&d * t)?)?;
    Ok((d, off))
}

/// The tangent point closest to 0 between `inner` (0) and `outer` whose tangent line `(slope, offset)` passes
/// `valid`, which holds at every point from the first valid one out to `outer` (see the module doc): whether
/// `outer` itself is valid, and the bisection's end on the valid side after [`BISECT`] steps (`outer` where it
/// is not valid; the caller then uses the chord).
fn tangent_point(
    k: Kind,
    inner: &Tensor,
    outer: &Tensor,
    valid: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
) -> Result<(Tensor, Tensor)> {
    let ok_at = |t: &Tensor| -> Result<Tensor> {
        let (d, off) = tangent(k, t)?;
        valid(&d, &off)
    };
    let outer_ok = ok_at(outer)?;
    let (mut bad, mut good) = (inner.clone(), outer.clone());
    for _ in 0..BISECT {
        let mid = ((&bad + &good)? * 0.5)?;
        let ok = ok_at(&mid)?;
        good = ok.where_cond(&mid, &good)?;
        bad = ok.where_cond(&bad, &mid)?;
    }
    Ok((outer_ok, good))
}

/// CROWN's tangent points on `[l, u]` and the cases they depend on (see the module doc).
struct Points {
    /// `u <= 0` and `l >= 0`.
    convex: Tensor,
    concave: Tensor,
    /// The upper-line tangent `t_up ∈ [0, max(u, 0)]` of the mixed case, and whether one is valid (else the chord).
    up_ok: Tensor,
    t_up: Tensor,
    u_pos: Tensor,
    /// The lower-line tangent `t_lo ∈ [min(l, 0), 0]` of the mixed case, and whether one is valid.
    lo_ok: Tensor,
    t_lo: Tensor,
    l_neg: Tensor,
    /// `u − l <= 1e-9`: the band is kept.
    point: Tensor,
}

fn points(k: Kind, l: &Tensor, u: &Tensor) -> Result<Points> {
    let zero = l.zeros_like()?;
    let (fl, fu) = (k.f(l)?, k.f(u)?);
    // Upper tangent from (l, σ(l)) on t ∈ [0, u]: the valid `t` are those towards u (T_t(l) >= σ(l)).
    let u_pos = u.maximum(&zero)?;
    let (up_ok, t_up) = tangent_point(k, &zero, &u_pos, |d, off| ((d * l)? + off)?.ge(&fl))?;
    // Lower tangent towards (u, σ(u)) on t ∈ [l, 0]: the valid `t` are those towards l (T_t(u) <= σ(u)).
    let l_neg = l.minimum(&zero)?;
    let (lo_ok, t_lo) = tangent_point(k, &zero, &l_neg, |d, off| ((d * u)? + off)?.le(&fu))?;
    Ok(Points {
        convex: u.le(&zero)?,
        concave: l.ge(&zero)?,
        up_ok,
        t_up,
        u_pos,
        lo_ok,
        t_lo,
        l_neg,
        point: (u - l)?.le(1e-9)?,
    })
}

/// The `crown` relaxation: the `wk` band (forward propagation uses it) and CROWN's two lines.
pub fn crown(k: Kind, l: &Tensor, u: &Tensor) -> Result<Relaxation> {
    let mut r = single(k, l, u)?;
    let p = points(k, l, u)?;
    let a = chord_slope(k, l, u)?;
    let chord_off = (k.f(l)? - (&a * l)?)?;
    let m = ((l + u)? * 0.5)?;
    let (tm, tm_off) = tangent(k, &m)?;
    let (tu, tu_off) = tangent(k, &p.t_up)?;
    let (tl, tl_off) = tangent(k, &p.t_lo)?;
    let (convex, concave) = (&p.convex, &p.concave);
    // Mixed case lines, then the one-sided cases.
    let up_slope = p.up_ok.where_cond(&tu, &a)?;
    let up_off = p.up_ok.where_cond(&tu_off, &chord_off)?;
    let lo_slope = p.lo_ok.where_cond(&tl, &a)?;
    let lo_off = p.lo_ok.where_cond(&tl_off, &chord_off)?;
    let up_slope = convex.where_cond(&a, &concave.where_cond(&tm, &up_slope)?)?;
    let up_off = convex.where_cond(&chord_off, &concave.where_cond(&tm_off, &up_off)?)?;
    let lo_slope = convex.where_cond(&tm, &concave.where_cond(&a, &lo_slope)?)?;
    let lo_off = convex.where_cond(&tm_off, &concave.where_cond(&chord_off, &lo_off)?)?;
    // A (near) point interval keeps the band: the tangent and chord lines are no better there.
    let point = &p.point;
    let up_slope = point.where_cond(&r.slope, &up_slope)?;
    let up_off = point.where_cond(&(&r.mid + &r.rad)?, &(&up_off + slack(&up_off)?)?)?;
    let lo_slope = point.where_cond(&r.slope, &lo_slope)?;
    let lo_off = point.where_cond(&(&r.mid - &r.rad)?, &(&lo_off - slack(&lo_off)?)?)?;
    r.lines = Some(Lines { lo_slope, lo_off, up_slope, up_off });
    Ok(r)
}

/// The ranges of tangent points that keep each line of [`crown`] valid on `[l, u]` (for `alpha`):
/// - `u <= 0` (convex): every tangent at `t ∈ [l, u]` is below σ there; the upper line (the chord) is fixed.
/// - `l >= 0` (concave): every tangent at `t ∈ [l, u]` is above σ; the lower line (the chord) is fixed.
/// - `l < 0 < u`: the upper tangent at any `t ∈ [t_up, u]` (the valid points form an interval out to `u`, see
///   the module doc, and `t_up` is on its valid side), where one is valid; the lower at `t ∈ [l, t_lo]`.
///
/// CROWN's own points are the midpoint (`init` ½), `t_up` (0) and `t_lo` (1). Point intervals and units with
/// non-finite bounds keep CROWN's lines.
pub fn tangents(k: Kind, l: &Tensor, u: &Tensor) -> Result<super::Tangents> {
    let p = points(k, l, u)?;
    let dt = l.dtype();
    let zero = l.zeros_like()?;
    let finite = (l.abs()?.lt(f64::MAX)? * u.abs()?.lt(f64::MAX)?)?;
    let ok = (finite.to_dtype(dt)? * (1.0 - p.point.to_dtype(dt)?)?)?;
    let (convex, concave) = (p.convex.to_dtype(dt)?, p.concave.to_dtype(dt)?);
    let mixed = ((1.0 - &convex)? * (1.0 - &concave)?)?;
    // Safe values (finite) where a unit is not free: its range is ignored but still evaluated.
    let safe = |t: &Tensor, free: &Tensor| -> Result<Tensor> { free.ne(0.0)?.where_cond(t, &zero) };
    let lo_free = ((&convex + (&mixed * p.lo_ok.to_dtype(dt)?)?)? * &ok)?;
    let up_free = ((&concave + (&mixed * p.up_ok.to_dtype(dt)?)?)? * &ok)?;
    let lo_from = safe(&(&convex * l)?.add(&(&mixed * &p.l_neg)?)?, &lo_free)?;
    let lo_to = safe(&(&convex * u)?.add(&(&mixed * &p.t_lo)?)?, &lo_free)?;
    let up_from = safe(&(&concave * l)?.add(&(&mixed * &p.t_up)?)?, &up_free)?;
    let up_to = safe(&(&concave * u)?.add(&(&mixed * &p.u_pos)?)?, &up_free)?;
    Ok(super::Tangents {
        lo_width: (&lo_to - &lo_from)?.relu()?,
        lo_from,
        lo_init: ((&convex * 0.5)? + &mixed)?,
        lo_free,
        up_width: (&up_to - &up_from)?.relu()?,
        up_from,
        up_init: (&concave * 0.5)?,
        up_free,
    })
}

/// The tangent at `t` with its offset's widening ([`SLACK_ULPS`]), for `alpha`'s tangent points.
pub fn tangent_line(k: Kind, t: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let (d, off) = tangent(k, t)?;
    let s = slack(&off)?;
    Ok((d, off, s))
}

/// The relaxation of `family` for an S-shaped op: `wk` [`single`], `crown` and `alpha` [`crown`] (`alpha` then
/// moves the tangent points within [`tangents`]), `ibp` the constant relaxation on the monotone interval `[σ(l), σ(u)]`.
pub fn relax_family(k: Kind, l: &Tensor, u: &Tensor, family: super::Family) -> Result<Relaxation> {
    match family {
        super::Family::Wk => single(k, l, u),
        super::Family::Crown | super::Family::Alpha => crown(k, l, u),
        super::Family::Ibp => Relaxation::constant(&k.f(l)?, &k.f(u)?),
    }
}
