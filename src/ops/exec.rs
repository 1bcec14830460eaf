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
use crate::error::{Context, Error, Result};

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
    /// The node's typed arguments (lowering has parsed them once already, so an error here is internal).
    pub fn args<A: super::Args>(&self) -> Result<A> {
        A::parse(self.attrs).map_err(|e| Error::Usage(format!("internal: arguments of node `{}`: {e:?}", self.name)))
    }
    pub fn weight(&self, suffix: &str) -> Result<&Tensor> {
        self.weights.get(suffix).ok_or_else(|| {
            Error::Usage(format!(
                "internal: weights of node `{}` have no `{suffix}` (the loader checks this)",
                self.name
            ))
        })
    }
}

/// The relaxation of an activation on `[l, u]`, elementwise over `[B, *shape]`: linear lower and upper bounds
/// `lower · z + (mid − rad) <= σ(z) <= slope · z + (mid + rad)`. With `lower: None` both lines have the slope
/// `slope` (the paper's form `a = slope · z + δ`, `δ ∈ [mid − rad, mid + rad]`, which the forward propagation of
/// the layer bounds needs). With `lower: Some(a_l)` (CROWN) the lower line has its own slope: the dual rule
/// then picks, per unit and per sign of the adjoint, the line that bounds the objective from below
/// ([`crate::dual::objective`]); forward propagation keeps using `slope` and `[mid − rad, mid + rad]`, which
/// stay valid. Cloning is cheap (tensors are reference counted).
///
/// `lines: Some` (CROWN's relaxation of an S-shaped activation) gives two independent lines with their own
/// offsets, `lo_slope · z + lo_off <= σ(z) <= up_slope · z + up_off`; the dual rule then uses them instead of
/// `slope`, `lower`, `mid` and `rad`, which keep the one-slope band forward propagation needs.
#[derive(Clone)]
pub struct Relaxation {
    pub slope: Tensor,
    pub mid: Tensor,
    pub rad: Tensor,
    pub lower: Option<Tensor>,
    pub lines: Option<Lines>,
    /// `slope` is zero everywhere and there is no other line ([`Relaxation::constant`], the `ibp` family's): the
    /// dual rule sends nothing back through the activation, so the dual network stops there.
    pub constant: bool,
}

/// Two lines bounding an activation on `[l, u]`, each `[B, *shape]`.
#[derive(Clone)]
pub struct Lines {
    pub lo_slope: Tensor,
    pub lo_off: Tensor,
    pub up_slope: Tensor,
    pub up_off: Tensor,
}

impl Lines {
    fn narrow(&self, start: usize, len: usize) -> candle_core::Result<Lines> {
        Ok(Lines {
            lo_slope: self.lo_slope.narrow(0, start, len)?,
            lo_off: self.lo_off.narrow(0, start, len)?,
            up_slope: self.up_slope.narrow(0, start, len)?,
            up_off: self.up_off.narrow(0, start, len)?,
        })
    }
}

/// The free tangent points of a relaxation whose two lines may touch the activation anywhere in a range
/// (`tanh`, `sigmoid`; [`OpExec::tangents`]), elementwise over `[B, *shape]`. Where `lo_free` is 1 the lower line
/// may be the tangent at any `t ∈ [lo_from, lo_from + lo_width]` ([`OpExec::tangent_line`]) and stays below the
/// activation on `[l, u]`; where it is 0 the relaxation's own lower line stays. Likewise the upper line. The
/// relaxation's own tangent points are `from + init · width` (`init ∈ [0, 1]`), so the `alpha` family starts
/// from CROWN's lines.
#[derive(Clone)]
pub struct Tangents {
    pub lo_from: Tensor,
    pub lo_width: Tensor,
    pub lo_free: Tensor,
    pub lo_init: Tensor,
    pub up_from: Tensor,
    pub up_width: Tensor,
    pub up_free: Tensor,
    pub up_init: Tensor,
}

/// A family of relaxations (`--bound`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// The paper's: the lower line parallel to the upper chord (reproduces the reference implementation).
    #[default]
    Wk,
    /// CROWN: the lower slope chosen per unit (ReLU: 1 where `u >= -l`, else 0); layer bounds intersected with
    /// the interval bounds; the margin is the best of the CROWN, `wk` and interval objectives.
    Crown,
    /// Interval bound propagation: constant relaxations `σ(z) ∈ [σ(l), σ(u)]` on interval layer bounds.
    Ibp,
    /// `crown` with the lower slopes and tangent points optimised per example, objective row and unit by
    /// projected gradient ascent, first on the bounds of the narrow layers, then on the margin bounds
    /// ([`crate::dual::alpha`]); never below `crown`, nor below the `wk` objective on its own layer bounds
    /// (the `wk` family's layer bounds are its own: either family may be the tighter).
    Alpha,
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Wk => "wk",
            Family::Crown => "crown",
            Family::Ibp => "ibp",
            Family::Alpha => "alpha",
        })
    }
}

impl Relaxation {
    /// The same relaxation with one slope for both lines (the lower line parallel to the upper one, as in the
    /// paper). It is valid: `slope · z + [mid − rad, mid + rad]` must contain `σ(z)` whatever `lower` says
    /// (forward propagation relies on it), and `lower` only adds a second valid lower line.
    pub fn single_slope(&self) -> Relaxation {
        Relaxation { lower: None, lines: None, ..self.clone() }
    }

    /// The relaxation of examples `start..start + len`.
    pub fn narrow(&self, start: usize, len: usize) -> candle_core::Result<Relaxation> {
        Ok(Relaxation {
            slope: self.slope.narrow(0, start, len)?,
            mid: self.mid.narrow(0, start, len)?,
            rad: self.rad.narrow(0, start, len)?,
            lower: self.lower.as_ref().map(|l| l.narrow(0, start, len)).transpose()?,
            lines: self.lines.as_ref().map(|l| l.narrow(start, len)).transpose()?,
            constant: self.constant,
        })
    }

    /// The constant relaxation of a monotone activation on an interval whose outputs lie in `[lo, hi]`:
    /// slope 0, `σ(z) ∈ [lo, hi]`.
    pub fn constant(lo: &Tensor, hi: &Tensor) -> candle_core::Result<Relaxation> {
        let mid = ((lo + hi)? * 0.5)?;
        let rad = ((hi - lo)? * 0.5)?.relu()?;
        Ok(Relaxation { slope: lo.zeros_like()?, mid, rad, lower: None, lines: None, constant: true })
    }
}

fn no_rule(what: &str) -> Error {
    Error::Usage(format!("internal: {what} called on an op without that rule"))
}

/// What [`OpExec::deployed_error`] gives: the error of the inference's value against the real one, and the
/// part of it the op's own evaluation adds (`None`: the op is exact in floating point).
pub struct Deployed {
    pub err: Tensor,
    pub own: Option<Tensor>,
}

impl Deployed {
    /// An op exact in floating point and 1-Lipschitz (elementwise or a selection): the input's error.
    pub fn exact(e: &Tensor) -> Self {
        Deployed { err: e.clone(), own: None }
    }
}

/// `|A| e + γ_k (|A| (m + e) + offset)` (γ for the unit roundoff `u`): the deployed error of an affine op
/// `y = A x + b` whose inference rounds each output with at most `k` roundings of terms of total magnitude
/// `|A| |x̂| + offset` (`offset ≥ |b|`, more where the op computes its constant from several parameters), for
/// `|x̂ − x| ≤ e`, `|x| ≤ m`: `|ŷ − y| ≤ |A| |x̂ − x| + |fl(A x̂ + b) − (A x̂ + b)|` (Higham, eq. (3.5)). An op
/// with no terms and no constant (a reshape, a permutation, a zero padding) moves values: `|A| e`.
pub fn affine_deployed_error<O: OpExec + ?Sized>(
    op: &O,
    ctx: &NodeCtx,
    e: &[Tensor],
    m: &[Tensor],
    u: f64,
    k: usize,
    offset: Option<&Tensor>,
) -> Result<Deployed> {
    let ctx_err = || format!("deployed error of `{}`", ctx.name);
    if op.terms(ctx) == 0 && offset.is_none() {
        return Ok(Deployed { err: op.linear_abs(ctx, e)?, own: None });
    }
    let b = lead(&e[0]);
    let stacked: Vec<Tensor> = e
        .iter()
        .zip(m)
        .map(|(e, m)| Tensor::cat(&[e, &(m + e)?], 0))
        .collect::<candle_core::Result<_>>()
        .map_err(|s| Error::Tensor { context: ctx_err(), source: s })?;
    let all = op.linear_abs(ctx, &stacked)?;
    let go = || deployed_from_products(&all.narrow(0, 0, b)?, &all.narrow(0, b, b)?, offset, k, u);
    go().map_err(|s| Error::Tensor { context: ctx_err(), source: s })
}

/// [`affine_deployed_error`] from its two products, `ae = |A| e` and `am = |A| (m + e)`:
/// `own = γ_k (am + offset)`, `err = ae + own`.
pub fn deployed_from_products(
    ae: &Tensor,
    am: &Tensor,
    offset: Option<&Tensor>,
    k: usize,
    u: f64,
) -> candle_core::Result<Deployed> {
    let am = match offset {
        Some(o) => am.broadcast_add(o)?,
        None => am.clone(),
    };
    let own = (am * crate::float::gamma_unit(k, u))?;
    Ok(Deployed { err: (ae + &own)?, own: Some(own) })
}

pub trait OpExec {
    fn role(&self) -> Role {
        Role::Unsupported
    }
    /// Affine ops: the linear part, `[N, *in_i]... -> [N, *out]`.
    fn linear(&self, _ctx: &NodeCtx, _inputs: &[Tensor]) -> Result<Tensor> {
        Err(no_rule("linear"))
    }
    /// Affine ops with several operands: `linear` where the absent operands (`None`) are zero. The default passes
    /// zeros of each absent operand's shape (`[N, *in_i]`, `N` from a present one) in its place; a sum overrides
    /// it to add only what is there.
    fn linear_partial(&self, ctx: &NodeCtx, inputs: &[Option<Tensor>]) -> Result<Tensor> {
        let Some(like) = inputs.iter().flatten().next() else {
            return Err(Error::Usage(format!("internal: `{}` got no operand", ctx.name)));
        };
        let full: Vec<Tensor> = inputs
            .iter()
            .zip(&ctx.in_shapes)
            .map(|(t, shape)| match t {
                Some(t) => Ok(t.clone()),
                None => {
                    let mut dims = vec![lead(like)];
                    dims.extend_from_slice(shape);
                    Tensor::zeros(dims, like.dtype(), like.device())
                }
            })
            .collect::<candle_core::Result<_>>()
            .map_err(|e| Error::Tensor { context: format!("operands of `{}`", ctx.name), source: e })?;
        self.linear(ctx, &full)
    }
    /// Affine ops: the dual rule (adjoint of `linear`), `[N, *out] -> [N, *in_i]` for each input.
    fn transpose(&self, _ctx: &NodeCtx, _nu: &Tensor) -> Result<Vec<Tensor>> {
        Err(no_rule("transpose"))
    }
    /// Affine ops: the constant term, `[*out]`, if any.
    fn bias(&self, _ctx: &NodeCtx) -> Result<Option<Tensor>> {
        Ok(None)
    }
    /// Affine ops: an upper bound on the number of roundings that enter any one entry of `linear`'s or of
    /// `transpose`'s output (its products and sums, plus those of any coefficient computed from the stored
    /// weights), for the rounding charges of [`crate::dual::rounding`]. The default counts every input and output
    /// entry, which bounds both directions of any affine op; ops override it with their fan-in.
    fn terms(&self, ctx: &NodeCtx) -> usize {
        let n_in: usize = ctx.in_shapes.iter().map(|s| s.iter().product::<usize>()).sum();
        n_in + ctx.out_shape.iter().product::<usize>() + 2
    }
    /// Affine ops: the same count for `transpose` alone (the dual network's charge); the default is
    /// [`OpExec::terms`], which bounds both directions.
    fn transpose_terms(&self, ctx: &NodeCtx) -> usize {
        self.terms(ctx)
    }
    /// Affine ops whose constant term is computed from the stored weights (not stored itself): a bound
    /// `[*out]` on `|fl(b) − b|`. `None` (the default): the bias is a stored value, exact.
    fn bias_error(&self, _ctx: &NodeCtx) -> Result<Option<Tensor>> {
        Ok(None)
    }
    /// The deployed inference ([`crate::dual::deployed`]): this op evaluated in floating point with unit
    /// roundoff `u` (any order of its sums, with or without FMA, its parameters rounded to that precision), on
    /// inputs `x̂_i` that the inference computed, with `|x̂_i − x_i| ≤ e_i` and `|x_i| ≤ m_i` for the real values
    /// (each `[B, *in_i]`, nonnegative). Returns the bound on `|σ̂(x̂) − σ(x)|` and the op's own rounding, a bound
    /// on `|σ̂(x̂) − σ(x̂)|` (`None`: exact). Computed in the compute dtype: the caller inflates both. The default
    /// serves affine ops whose parameters are stored values ([`affine_deployed_error`] with `t + 2` roundings,
    /// `t` = [`OpExec::terms`]: one more for the weight's and one for the bias's rounding to the inference
    /// precision); `None`: no rule, and a certificate for the deployed network is refused.
    fn deployed_error(&self, ctx: &NodeCtx, e: &[Tensor], m: &[Tensor], u: f64) -> Result<Option<Deployed>> {
        match self.deployed_affine(ctx)? {
            Some((k, offset)) => affine_deployed_error(self, ctx, e, m, u, k, offset.as_ref()).map(Some),
            None => Ok(None),
        }
    }
    /// Affine ops: the deployed inference's rounding as `(k, offset)` for [`affine_deployed_error`]: each output
    /// rounds at most `k` times, on terms of total size `|A| |x̂| + offset`. The default serves ops whose
    /// parameters are stored values: `k = t + 2`, `offset = |b|`; `None` for the others (an op whose constant is
    /// computed from several parameters declares its own).
    fn deployed_affine(&self, ctx: &NodeCtx) -> Result<Option<(usize, Option<Tensor>)>> {
        if self.role() != Role::Affine || self.bias_error(ctx)?.is_some() {
            return Ok(None);
        }
        let offset = self
            .bias(ctx)?
            .map(|b| b.abs())
            .transpose()
            .map_err(|e| Error::Tensor { context: format!("deployed error of `{}`", ctx.name), source: e })?;
        Ok(Some((self.terms(ctx) + 2, offset)))
    }
    /// Activation ops: a `u8` mask `[B, *shape]`, 1 where the op is constant on the input bounds `[l, u]` (a ReLU with
    /// `u ≤ 0`), so that any two inputs in them give the same output and a deployed inference's error there is 0
    /// ([`crate::dual::deployed`]). `None` (the default): nowhere known.
    fn flat_on(&self, _ctx: &NodeCtx, _l: &Tensor, _u: &Tensor) -> Result<Option<Tensor>> {
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
    /// Activation ops: the relaxation of `family`. The default is [`OpExec::relax`] for `wk` and `crown` (an op
    /// without a per-unit lower slope relaxes the same way in both) and the constant relaxation on the interval
    /// rule for `ibp`.
    fn relax_family(&self, ctx: &NodeCtx, l: &Tensor, u: &Tensor, family: Family) -> Result<Relaxation> {
        match family {
            Family::Wk | Family::Crown | Family::Alpha => self.relax(ctx, l, u),
            Family::Ibp => {
                let (lo, hi) = self.interval(ctx, l, u)?;
                Relaxation::constant(&lo, &hi)
                    .map_err(|e| Error::Tensor { context: format!("interval relaxation of `{}`", ctx.name), source: e })
            }
        }
    }
    /// Affine ops: whether the input grouping of exact bounds ([`crate::dual::grouping`]) may rely on this op:
    /// with every weight set to one, its linear part must have a positive coefficient wherever the real op can
    /// have a non-zero one (so pushing indicator rows through it finds a superset of the true supports). The
    /// default is `false`: a graph with an op that does not declare it is bounded without grouping (exact, the
    /// same bounds, slower) rather than with groups that could overlap.
    fn groupable(&self) -> bool {
        false
    }
    /// Affine ops: the interval rule's radius part, `|A| r` for nonnegative radii `r` (a box `c ± r` maps into
    /// `A c + b ± |A| r`). No default: an op with a negative coefficient must not inherit [`OpExec::linear`].
    fn linear_abs(&self, _ctx: &NodeCtx, _inputs: &[Tensor]) -> Result<Tensor> {
        Err(no_rule("linear_abs"))
    }
    /// Activation ops whose relaxation has its own lower line (`lower: Some`): the slopes `[lo, hi]` for which
    /// the line `a · z` through the origin stays below `σ(z)` on every crossing unit, whatever its bounds; the
    /// `alpha` family optimises the slopes in this range. `None` (the default): the lower line is fixed.
    fn lower_slope_range(&self, _ctx: &NodeCtx) -> Option<(f64, f64)> {
        None
    }
    /// Activation ops whose relaxation has two lines (`lines: Some`) that may touch the curve at free points:
    /// the ranges of those points on `[l, u]` (see [`Tangents`]); the `alpha` family optimises them. `None`
    /// (the default): the lines are fixed.
    fn tangents(&self, _ctx: &NodeCtx, _l: &Tensor, _u: &Tensor) -> Result<Option<Tangents>> {
        Ok(None)
    }
    /// Ops with [`OpExec::tangents`]: the tangent line at `t` (any shape), as its slope, its offset, and the
    /// widening (`>= 0`) that the offset needs against rounding: the lower line is `slope · z + offset −
    /// widening`, the upper `slope · z + offset + widening`. Differentiable in `t`.
    fn tangent_line(&self, _ctx: &NodeCtx, _t: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        Err(no_rule("tangent_line"))
    }
    /// Activation ops: the interval rule, bounds `[lo, hi]` of `σ(z)` for `z ∈ [l, u]` elementwise.
    fn interval(&self, _ctx: &NodeCtx, _l: &Tensor, _u: &Tensor) -> Result<(Tensor, Tensor)> {
        Err(no_rule("interval"))
    }
    /// The interval rule and the forward pass together on **packed** inputs `[S·B, *in_i]` (see
    /// [`crate::kernels::interval`]: `points` slices of points, slice 0 the box centre, then the radius slice)
    /// to the packed `[S·B, *out]`. The default composes the op's own rules ([`packed_rule`]); an op with a fused
    /// kernel overrides it and must give the same values.
    fn interval_packed(&self, ctx: &NodeCtx, inputs: &[Tensor], points: usize) -> Result<Tensor> {
        packed_rule(self, ctx, inputs, points)
    }
}

/// [`OpExec::interval_packed`] composed from the op's rules: affine ops map the points with `linear` and `bias`
/// and the radius with `linear_abs`; activations map the centre and radius through `interval` (`c' = (lo +
/// hi)/2`, `r' = (hi − lo)/2`) and the other points through `activate`.
pub fn packed_rule<O: OpExec + ?Sized>(op: &O, ctx: &NodeCtx, inputs: &[Tensor], points: usize) -> Result<Tensor> {
    let ctx_err = || format!("interval rule of `{}` on packed bounds", ctx.name);
    let n = inputs.first().map(lead).unwrap_or(0);
    if points == 0 || n % (points + 1) != 0 {
        return Err(Error::Usage(format!(
            "internal: `{}` got a packed batch of {n} rows for {points} points",
            ctx.name
        )));
    }
    let b = n / (points + 1);
    let part = |t: &Tensor, start: usize, len: usize| t.narrow(0, start, len).context(ctx_err);
    match op.role() {
        Role::Affine => {
            let pts: Vec<Tensor> = inputs.iter().map(|t| part(t, 0, points * b)).collect::<Result<_>>()?;
            let rad: Vec<Tensor> = inputs.iter().map(|t| part(t, points * b, b)).collect::<Result<_>>()?;
            let mut y = op.linear(ctx, &pts)?;
            if let Some(bias) = op.bias(ctx)? {
                y = y.broadcast_add(&bias).context(ctx_err)?;
            }
            let r = op.linear_abs(ctx, &rad)?;
            Tensor::cat(&[&y, &r], 0).context(ctx_err)
        }
        Role::Activation => {
            let x = &inputs[0];
            let (c, r) = (part(x, 0, b)?, part(x, points * b, b)?);
            let (l, u) = ((&c - &r).context(ctx_err)?, (&c + &r).context(ctx_err)?);
            let (lo, hi) = op.interval(ctx, &l, &u)?;
            let c2 = ((&lo + &hi).and_then(|s| s * 0.5)).context(ctx_err)?;
            let r2 = ((&hi - &lo).and_then(|d| d * 0.5)).and_then(|d| d.relu()).context(ctx_err)?;
            let mut parts = vec![c2];
            if points > 1 {
                parts.push(op.activate(ctx, &part(x, b, (points - 1) * b)?)?);
            }
            parts.push(r2);
            Tensor::cat(&parts, 0).context(ctx_err)
        }
        Role::Unsupported => Err(Error::Usage(format!("`{}` has no interval rule", ctx.name))),
    }
}

/// The leading (batch) dimension `N` of a `[N, *s]` tensor.
pub fn lead(t: &Tensor) -> usize {
    t.dims().first().copied().unwrap_or(1)
}
