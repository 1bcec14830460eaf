//! Margin lower bounds, robust cross-entropy and robust error for a batch (paper eq. (13) and Section 4).
//!
//! `margin_lb[b][j]` lower-bounds `f_{y_b}(x') - f_j(x')` over the input set (0 on the diagonal);
//! `robust_ce = mean_b CE(-margin_lb[b], y_b) = mean_b log Σ_j exp(-margin_lb[b][j])`;
//! an example is certified when every `margin_lb[b][j]`, `j != y_b`, is finite and above the safety margin, and
//! every layer bound of the example is finite ([`Certificate::certified`]: the one place that decides).

use candle_core::{DType, Tensor};

use super::bounds::{self, Bounds};
use petgraph::graph::NodeIndex;

use super::input_set::InputSet;
use super::model::Model;
use super::objective::{margin_objectives, objective};
use crate::error::{Context, Error, Result};
use crate::ir::NodeKind;
use crate::ops::{Family, Relaxation, Role};

pub struct Certificate {
    pub bounds: Bounds,
    /// `[B, K]`.
    pub margin_lb: Tensor,
}

impl Certificate {
    /// `margin_lb` as host rows `[B][K]`.
    pub fn margin_rows(&self) -> Result<Vec<Vec<f64>>> {
        rows(&self.margin_lb)
    }

    /// Per example: whether every layer bound and every margin bound is finite.
    pub fn finite(&self, margins: &[Vec<f64>]) -> Vec<bool> {
        margins.iter().zip(&self.bounds.finite).map(|(row, &f)| f && row.iter().all(|m| m.is_finite())).collect()
    }

    /// Per example: certified for its label (see [`certified`]).
    pub fn certified(&self, margins: &[Vec<f64>], labels: &[u32], safety_margin: f64) -> Vec<bool> {
        certified(margins, &self.finite(margins), labels, safety_margin)
    }
}

/// Exact bounds and margins for inputs with labels `y`.
pub fn certify_batch(model: &Model, set: &InputSet, labels: &[u32]) -> Result<Certificate> {
    certify_batch_with(model, set, labels, &bounds::Options::default())
}

/// Bounds (exact or projected, see [`bounds::Options`]) and the exact dual objective for the margins.
pub fn certify_batch_with(
    model: &Model,
    set: &InputSet,
    labels: &[u32],
    opts: &bounds::Options,
) -> Result<Certificate> {
    let k = model.graph.num_classes();
    let c = margin_objectives(labels, k, set.center())?;
    let (bounds, margin_lb) = lower_bounds_with(model, set, &c, opts)?;
    Ok(Certificate { bounds, margin_lb })
}

/// Lower bounds of `c_r · f(x')` over the input set for arbitrary specification rows `c: [B, K, out]` (a
/// property's linear output constraints; the label margins are `c = e_y − e_j`), with the family of `opts`:
/// the layer bounds and `[B, K]`. The margins of [`certify_batch_with`] are this with the margin objectives.
pub fn lower_bounds_with(
    model: &Model,
    set: &InputSet,
    c: &Tensor,
    opts: &bounds::Options,
) -> Result<(Bounds, Tensor)> {
    lower_bounds_given(model, set, c, opts, &bounds::Given::default(), None)
}

/// [`lower_bounds_with`] with layer bounds known beforehand ([`bounds::Given`], for branch and bound), keeping
/// the dual variables of the margins' dual network in `record` where given
/// ([`super::objective::dual_pass_recording`]).
pub fn lower_bounds_given(
    model: &Model,
    set: &InputSet,
    c: &Tensor,
    opts: &bounds::Options,
    given: &bounds::Given,
    record: Option<&mut Vec<Option<Tensor>>>,
) -> Result<(Bounds, Tensor)> {
    let bounds = bounds::compute_given(model, set, opts, given)?;
    let c = &c.to_dtype(set.center().dtype()).context(|| "specification matrix".to_string())?;
    let (lin, rad) = super::objective::dual_pass_recording(
        model,
        set,
        &bounds.relax,
        bounds.mags.as_ref(),
        model.graph.output,
        c,
        record,
        None,
    )?;
    let margin_lb = (lin - rad).context(|| "dual objective".to_string())?;
    let margin_lb = match opts.family {
        Family::Wk | Family::Ibp => margin_lb,
        // Both are valid lower bounds on the same margins, so their maximum is: the CROWN lines on the layer
        // bounds, and the interval objective (a margin bound never below the interval one).
        // The interval objective uses the constant relaxations on the layer bounds just computed (already
        // intersected with the interval bounds, so at least as tight as plain interval propagation).
        Family::Crown | Family::Alpha => {
            let iv = Bounds {
                layers: Vec::new(),
                relax: relaxations(model, &bounds, Family::Ibp)?,
                finite: Vec::new(),
                mags: bounds.mags.clone(),
            };
            let ibp = objective(model, set, &iv, &c)?;
            let crown = bounds::strict_max(&margin_lb, &ibp).context(|| "combining the margin bounds".to_string())?;
            match opts.family {
                Family::Alpha => {
                    super::alpha::optimised_margins(model, set, &bounds, &c, &crown, opts.alpha_iters, opts.alpha_lr)?
                }
                _ => crown,
            }
        }
    };
    // The `ibp` family's layer bounds are interval propagation's (not widened): the plain charge. The other
    // families' dual networks paid for the deployed inference already ([`super::deployed`]).
    let margin_lb = match (opts.deployed, opts.family) {
        (Some(dt), Family::Ibp) => super::deployed::charge(model, &bounds, c, &margin_lb, dt)?,
        _ => margin_lb,
    };
    Ok((bounds, margin_lb))
}

/// CROWN-IBP margin bounds (Zhang et al. 2020) for training: every layer bound from interval propagation, the
/// margins from the dual network run back from the output once, with the CROWN relaxations on those interval
/// bounds (`crown`), and from the interval objective (`ibp`: the constant relaxations on the same bounds, the
/// last affine layer folded into the margin). The certificate's margins are `β · crown + (1 − β) · ibp`: a convex
/// mix of two lower bounds on the same margins, so itself one. `β = 0` skips the CROWN pass (plain IBP).
/// Cost: the two interval passes, plus for `β > 0` one backward pass of `K` rows per example.
pub fn crown_ibp_batch(model: &Model, set: &InputSet, labels: &[u32], beta: f64) -> Result<Certificate> {
    // Outside [0, 1] (or NaN) the mix extrapolates past one of the two bounds and bounds nothing.
    if !(0.0..=1.0).contains(&beta) {
        return Err(Error::Usage(format!("internal: CROWN-IBP mix β = {beta} is outside [0, 1]")));
    }
    let k = model.graph.num_classes();
    let c = margin_objectives(labels, k, set.center())?;
    let opts = bounds::Options { family: Family::Ibp, ..Default::default() };
    let bounds = bounds::compute_with(model, set, &opts)?;
    let c = &c.to_dtype(set.center().dtype()).context(|| "specification matrix".to_string())?;
    let ibp = objective(model, set, &bounds, c)?;
    if beta == 0.0 {
        return Ok(Certificate { bounds, margin_lb: ibp });
    }
    let lines = Bounds {
        layers: bounds.layers.clone(),
        relax: relaxations(model, &bounds, Family::Crown)?,
        finite: bounds.finite.clone(),
        mags: bounds.mags.clone(),
    };
    let crown = objective(model, set, &lines, c)?;
    let margin_lb = ((crown * beta).and_then(|a| a + (ibp * (1.0 - beta))?))
        .context(|| "mixing the CROWN and interval margins".to_string())?;
    Ok(Certificate { bounds, margin_lb })
}

/// What [`packed_certificate`] returns.
pub struct PackedCertificate {
    /// The margins; the layer bounds only for `β > 0` (the CROWN pass needs them), every example finite.
    pub cert: Certificate,
    /// The clean inputs' logits `[B, K]`, when they came along.
    pub logits: Option<Tensor>,
    /// Every activation input's packed box (see [`super::ibp::Packed`]), in topological order, when asked for.
    pub boxes: Vec<Tensor>,
    /// Point slices of `boxes`.
    pub points: usize,
}

/// Interval (`β = 0`) or CROWN-IBP margins for training from [`super::ibp::packed_bounds`]: the same bounds as
/// [`certify_batch_with`] with the `ibp` family and [`crown_ibp_batch`], computed with one fused op per node,
/// with the `clean` inputs (if any) pushed through the network in the same pass; their logits `[B, K]` come
/// back too, and with `boxes` every activation input's packed box (for the warm-up regulariser). Every example
/// counts as finite here: a non-finite bound reaches the margins (the fused relu keeps NaN), and training stops
/// on the non-finite loss. `None` for an ℓ2 ball (its input term is a dual norm, not a box): use the unpacked
/// functions.
pub fn packed_certificate(
    model: &Model,
    set: &InputSet,
    labels: &[u32],
    clean: Option<&Tensor>,
    beta: f64,
    boxes: bool,
) -> Result<Option<PackedCertificate>> {
    let InputSet::Box { center, radius } = set else { return Ok(None) };
    if !(0.0..=1.0).contains(&beta) {
        return Err(Error::Usage(format!("internal: CROWN-IBP mix β = {beta} is outside [0, 1]")));
    }
    let g = &model.graph;
    let k = g.num_classes();
    let b = labels.len();
    let extra: Vec<&Tensor> = clean.into_iter().collect();
    let packed = super::ibp::packed_bounds(model, center, radius, &extra)?;
    let c =
        margin_objectives(labels, k, center)?.to_dtype(model.dtype).context(|| "specification matrix".to_string())?;
    let ibp = packed.margins(model, &c)?;
    let mut bounds =
        Bounds { layers: Vec::new(), relax: std::collections::HashMap::new(), finite: vec![true; b], mags: None };
    let margin_lb = match beta > 0.0 {
        false => ibp,
        true => {
            for z in g.activation_inputs() {
                let (l, u) = packed.bounds(z)?;
                bounds.layers.push((z, l, u));
            }
            let lines = Bounds {
                layers: bounds.layers.clone(),
                relax: relaxations(model, &bounds, Family::Crown)?,
                finite: bounds.finite.clone(),
                // A training loss: the rounding charges are skipped ([`super::objective::dual_pass`]).
                mags: None,
            };
            let crown = objective(model, set, &lines, &c)?;
            ((crown * beta).and_then(|a| a + (ibp * (1.0 - beta))?))
                .context(|| "mixing the CROWN and interval margins".to_string())?
        }
    };
    let logits = match clean {
        Some(_) => Some(packed.slice(g.output, 1)?),
        None => None,
    };
    let boxes = match boxes {
        true => g
            .activation_inputs()
            .into_iter()
            .map(|z| {
                packed.vals[z.index()].clone().ok_or_else(|| Error::Usage("internal: packed value missing".into()))
            })
            .collect::<Result<_>>()?,
        false => Vec::new(),
    };
    Ok(Some(PackedCertificate { cert: Certificate { bounds, margin_lb }, logits, boxes, points: packed.points }))
}

/// The relaxation of every activation in `family` (the interval family's is the constant `σ(z) ∈ [σ(l), σ(u)]`),
/// on the layer bounds of `bounds`.
fn relaxations(
    model: &Model,
    bounds: &Bounds,
    family: Family,
) -> Result<std::collections::HashMap<NodeIndex, Relaxation>> {
    let g = &model.graph;
    let mut out = std::collections::HashMap::new();
    for i in g.order() {
        let node = g.node(i);
        let NodeKind::Op(op) = node.kind else { continue };
        if op.role() != Role::Activation {
            continue;
        }
        let (l, u) = bounds.of(node.inputs[0]).ok_or_else(|| Error::Usage("internal: layer bounds missing".into()))?;
        let _ = op;
        out.insert(i, super::rounding::relax_sound(model, i, l, u, family)?);
    }
    Ok(out)
}

/// `[B, *]` as host rows `[B][n]` in f64.
pub fn rows(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    let d = t.dims();
    let b = d.first().copied().unwrap_or(0);
    let n: usize = d.iter().skip(1).product();
    t.reshape((b, n))
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec2())
        .context(|| "reading results".to_string())
}

/// Per-example robust cross-entropy `log Σ_j exp(-margin_lb[b][j])`, `[B]`.
pub fn robust_ce_per_example(margin_lb: &Tensor) -> Result<Tensor> {
    let neg = margin_lb.neg().context(|| "robust loss".to_string())?;
    let m = neg.max_keepdim(1).context(|| "robust loss".to_string())?;
    let lse = neg
        .broadcast_sub(&m)
        .and_then(|t| t.exp())
        .and_then(|t| t.sum_keepdim(1))
        .and_then(|t| t.log())
        .and_then(|t| t + m)
        .and_then(|t| t.squeeze(1))
        .context(|| "robust loss".to_string())?;
    Ok(lse)
}

/// Whether each example is certified: all its bounds are finite (`finite[b]`) and every off-diagonal margin bound
/// is finite and `> safety_margin` (`>= 0`). Written so that a NaN anywhere fails: `m > s` is false for NaN.
pub fn certified(margin_lb: &[Vec<f64>], finite: &[bool], labels: &[u32], safety_margin: f64) -> Vec<bool> {
    let s = if safety_margin.is_finite() && safety_margin > 0.0 { safety_margin } else { 0.0 };
    margin_lb
        .iter()
        .zip(finite)
        .zip(labels)
        .map(|((row, &f), &y)| {
            f && row.iter().all(|m| m.is_finite()) && row.iter().enumerate().all(|(j, &m)| j == y as usize || m > s)
        })
        .collect()
}

/// The smallest off-diagonal margin bound of a row; NaN if any entry is NaN (`f64::min` would drop it).
pub fn min_margin(row: &[f64], y: u32) -> f64 {
    let off = row.iter().enumerate().filter(|(j, _)| *j != y as usize).map(|(_, m)| *m);
    let mut lo = f64::INFINITY;
    for m in off {
        if m.is_nan() {
            return f64::NAN;
        }
        lo = lo.min(m);
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_infinite_and_small_margins_never_certify() {
        let labels = [0u32, 0, 0, 0, 1];
        let rows = vec![
            vec![0.0, 0.5, 0.2],           // certified
            vec![0.0, f64::NAN, 0.2],      // NaN: not
            vec![0.0, f64::INFINITY, 0.2], // +inf is not a bound: not
            vec![0.0, 0.5, 5e-5],          // below the safety margin 1e-4: not
            vec![f64::NAN, 0.0, 1.0],      // NaN even on another class's entry: not
        ];
        let finite = [true; 5];
        assert_eq!(certified(&rows, &finite, &labels, 1e-4), vec![true, false, false, false, false]);
        // A non-finite layer bound vetoes an otherwise good row.
        assert_eq!(certified(&rows[..1], &[false], &labels[..1], 0.0), vec![false]);
        // A negative or NaN safety margin is treated as 0 (the CLI refuses both).
        assert_eq!(certified(&[vec![0.0, -1.0]], &[true], &[0], -5.0), vec![false]);
        assert_eq!(certified(&[vec![0.0, 0.5]], &[true], &[0], f64::NAN), vec![true]);
        assert!(min_margin(&[0.0, f64::NAN, -1.0], 0).is_nan());
        assert_eq!(min_margin(&[0.0, 3.0, -1.0], 0), -1.0);
        assert_eq!(min_margin(&[7.0, 3.0, 2.0], 0), 2.0);
    }
}
