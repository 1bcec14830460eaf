//! The deployed network: a certificate that also covers a floating-point inference of the certified network.
//!
//! The bounds of [`super::rounding`] hold for the network in real arithmetic. A user then runs that network in
//! f32 (PyTorch, ONNX Runtime, any summation order, with or without FMA), whose values differ from the real
//! ones by rounding. The inference is the real network with a perturbation added at every node that rounds:
//! `x̂_n = σ_n(x̂_in) + δ_n`, `|δ_n| ≤ Δ_n` (the op's own rounding, [`crate::ops::OpExec::deployed_error`]; the
//! input is exact, the inference reads `x'` itself). Two facts make the bounds hold for it:
//!
//! 1. **Layer bounds contain the inference's values.** `E_n ≥ |x̂_n − x_n|` is pushed forward (an affine node
//!    `|A| E + Δ`, `Δ = γ_k (|A| (m + E) + |b|)` with `m` the sound magnitudes of the real values
//!    ([`super::rounding::Magnitudes`]) and `k` the roundings of one output, counting the parameters' own
//!    rounding to the inference precision; a ReLU or a clamp passes `E` on; a smooth activation is Lipschitz and
//!    adds its evaluation error). A layer bound from the forward representation or from interval propagation
//!    is widened by `E` ([`super::bounds`]); relaxations on the widened bounds hold for `ẑ` as well as `z`.
//! 2. **The dual network pays for the perturbations.** With the adjoint `λ_n` at node `n`, the perturbation
//!    enters the objective as `λ_n · δ_n ≥ −Σ |λ_n| Δ_n`: the charge joins the rounding charges of the dual
//!    network ([`super::objective::dual_pass`], which reads `Magnitudes::own`). Layer bounds computed by the dual
//!    network (backward) pay it there and are not widened.
//!
//! So every margin bound `c · f(x') ≥ lb` of a route with the deployed inference on holds for `f̂(x')` too.
//! The charge is weighted by the dual variables, so errors that cancel through the layers are not added up
//! as `|A| E` would: on the shipped models the certified error does not move ([`docs/results.md`]).
//! [`charge`] is the plain form (`lb − Σ |c| E_out`), for the `ibp` family, whose layer bounds are interval
//! propagation's own. Every quantity is computed in the compute dtype and inflated for that rounding
//! ([`super::rounding::inflate`]); NaN stays NaN, so a non-finite charge never certifies.
//!
//! Shapes: magnitudes and errors `[B, *shape_n]` per node; the charge `[B, K]` for rows `c: [B, K, *out]`.

use candle_core::{DType, Tensor};
use petgraph::graph::NodeIndex;

use super::bounds::Bounds;
use super::model::Model;
use super::rounding::{self, Magnitudes};
use crate::error::{Context, Error, Result};
use crate::ir::NodeKind;

/// `(E_i, Δ_i)` of node `i` for an inference with unit roundoff `u` (inputs' `E` in `err`, sound magnitudes
/// of the real values in `mags`), both inflated for their own rounding in the compute dtype. `layer`: bounds of
/// an activation's input that contain the inference's values as well as the real ones.
pub fn node_error(
    model: &Model,
    i: NodeIndex,
    err: &[Option<Tensor>],
    mags: &Magnitudes,
    u: f64,
    layer: Option<(&Tensor, &Tensor)>,
) -> Result<(Tensor, Option<Tensor>)> {
    let node = model.graph.node(i);
    let ctx_err = || format!("deployed error at `{}`", node.name);
    let missing = || Error::Usage("internal: deployed error or magnitude of an input missing".into());
    let op = match node.kind {
        NodeKind::Input => {
            let m = mags.value[i.index()].as_ref().ok_or_else(missing)?;
            return Ok((m.zeros_like().context(ctx_err)?, None));
        }
        NodeKind::Op(op) => op,
    };
    let es: Vec<Tensor> =
        node.inputs.iter().map(|j| err[j.index()].clone().ok_or_else(missing)).collect::<Result<_>>()?;
    let ms: Vec<Tensor> =
        node.inputs.iter().map(|j| mags.value[j.index()].clone().ok_or_else(missing)).collect::<Result<_>>()?;
    let ctx = model.ctx(i);
    let Some(d) = op.deployed_error(&ctx, &es, &ms, u)? else { return Err(no_rule(&node.name, op.name())) };
    // The estimates' own rounding in the compute dtype: sums of at most `terms + 4` roundings.
    let n = match op.role() {
        crate::ops::Role::Affine => op.terms(&ctx) + 4,
        _ => 4,
    };
    let (mut err, own) = inflated(d, n).context(ctx_err)?;
    // An activation constant on its input's bounds (which contain the inference's input too) errs nowhere.
    if let Some((l, hi)) = layer {
        if let Some(flat) = op.flat_on(&ctx, l, hi)? {
            err = flat.where_cond(&err.zeros_like().context(ctx_err)?, &err).context(ctx_err)?;
        }
    }
    Ok((err, own))
}

/// [`node_error`] at affine node `i` from the products its caller made already: `ae = |A| E_in` and
/// `am = |A| m_in` ([`crate::ops::OpExec::deployed_affine`]: `Δ = γ_k (am + ae + offset)`, `E = ae + Δ`).
pub fn affine_node(model: &Model, i: NodeIndex, ae: &Tensor, am: &Tensor, u: f64) -> Result<(Tensor, Option<Tensor>)> {
    let node = model.graph.node(i);
    let ctx_err = || format!("deployed error at `{}`", node.name);
    let op = node.kind.op().ok_or_else(|| Error::Usage("internal: deployed error of a non-op".into()))?;
    let ctx = model.ctx(i);
    let Some((k, offset)) = op.deployed_affine(&ctx)? else { return Err(no_rule(&node.name, op.name())) };
    let d = match op.terms(&ctx) == 0 && offset.is_none() {
        true => crate::ops::Deployed::exact(ae),
        // `|A| (m + E) = |A| m + |A| E`.
        false => (am + ae)
            .and_then(|s| crate::ops::deployed_from_products(ae, &s, offset.as_ref(), k, u))
            .context(ctx_err)?,
    };
    inflated(d, op.terms(&ctx) + 4).context(ctx_err)
}

/// A node's `(E, Δ)` inflated for their rounding in the compute dtype: sums of at most `n` roundings.
fn inflated(d: crate::ops::Deployed, n: usize) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let err = rounding::inflate(&d.err.detach(), n + 1)?;
    let own = d.own.map(|o| rounding::inflate(&o.detach(), n + 1)).transpose()?;
    Ok((err, own))
}

/// The diagnostic for an op without a rule for the deployed inference.
fn no_rule(node: &str, op: &str) -> Error {
    Error::input(
        crate::diagnostics::Diagnostic::new(
            crate::diagnostics::Code::BadOption,
            format!("`{node}` ({op}) has no rule for the rounding error of a deployed inference"),
        )
        .help("certify the network in real arithmetic only with `--deployed none`"),
    )
}

/// `E` at the output `[B, *out]`: a bound on `|f̂(x') − f(x')|` over the input set for an inference with unit
/// roundoff of `inference`, from the sound magnitudes of `bounds`.
pub fn output_error(model: &Model, bounds: &Bounds, inference: DType) -> Result<Tensor> {
    let g = &model.graph;
    let mags = bounds
        .mags
        .as_ref()
        .ok_or_else(|| Error::Usage("internal: the deployed error needs the sound magnitudes".into()))?;
    let u = crate::float::unit(inference);
    let mut err: Vec<Option<Tensor>> = vec![None; g.dag.node_count()];
    for i in g.order() {
        let node = g.node(i);
        // The layer bounds here are the real network's: widened by the inference's error at the input, they
        // contain its values too (what [`node_error`] asks of them).
        let widened = match (node.kind.op().map(|op| op.role()), node.inputs.first()) {
            (Some(crate::ops::Role::Activation), Some(z)) => match (bounds.of(*z), &err[z.index()]) {
                (Some((l, h)), Some(e)) => {
                    let go = || rounding::widen_interval(&(l - e)?, &(h + e)?);
                    Some(go().context(|| format!("deployed error at `{}`", node.name))?)
                }
                _ => None,
            },
            _ => None,
        };
        let layer = widened.as_ref().map(|(l, h)| (l, h));
        err[i.index()] = Some(node_error(model, i, &err, mags, u, layer)?.0);
    }
    err[g.output.index()].take().ok_or_else(|| Error::Usage("internal: deployed error of the output missing".into()))
}

/// `margin_lb − Σ_o |c_o| E_o`, rounded outward: the lower bounds `[B, K]` of the rows `c: [B, K, *out]` made to
/// hold for the deployed inference too.
pub fn charge(model: &Model, bounds: &Bounds, c: &Tensor, margin_lb: &Tensor, inference: DType) -> Result<Tensor> {
    let e = output_error(model, bounds, inference)?;
    let ctx_err = || "the deployed network's charge".to_string();
    let dt = margin_lb.dtype();
    let go = || -> candle_core::Result<Tensor> {
        let (b, k) = (c.dims()[0], c.dims()[1]);
        let cf = c.detach().abs()?.reshape((b, k, ()))?;
        let ef = e.reshape((b, 1, ()))?;
        let n = cf.dims()[2];
        let d = rounding::inflate(&cf.broadcast_mul(&ef)?.sum(2)?, n + 2)?;
        let slack = (((margin_lb.detach().abs()? + &d)? * (2.0 * rounding::unit(dt)))? + rounding::tiny(dt))?;
        (margin_lb - d)? - slack
    };
    go().context(ctx_err)
}
