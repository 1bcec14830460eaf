//! Branch and bound: the one search behind `verify` and `certify --branching`.
//!
//! **The problem.** A network `f`, an input box `X` and a list of disjuncts `D_1 … D_m`, each a conjunction of
//! linear output constraints `c·f(x) + d ≥ 0`. The property is violated when some `x ∈ X` satisfies some
//! disjunct; [`search`] answers [`Verdict::Proved`] (no `x` does), [`Verdict::Counterexample`] (one does, shown by
//! a point), or leaves it open ([`Verdict::Unknown`], [`Verdict::Timeout`]) with the worst bound of the parts it
//! did not settle.
//!
//! **Domains.** A domain is a part of the problem: a sub-box of `X` (input splitting, `--branching input`) or `X`
//! with split constraints on activation inputs, `z_j ≤ s_j` or `z_j ≥ s_j` (ReLU splitting, `--branching relu`;
//! `s_j = 0` for ReLU and leaky ReLU, where the unit's relaxation becomes exact: the identity or the lower line).
//! Splitting a domain gives two domains whose union is the domain (`[lo, m] ∪ [m, hi]`, or
//! `{z ≤ s} ∪ {z ≥ s}`). Every domain keeps, per disjunct, whether it is already refuted on it.
//!
//! **Bounds of a domain.** The bound family (`crown` by default) is run with the domain as its input set: a split
//! enters as layer bounds, `[l, min(u, s)]` or `[max(l, s), u]` ([`crate::dual::bounds::Given`]), intersected
//! with the bounds the domain's parent computed (they hold on the parent, hence on the domain). Layers before the
//! newest split keep the parent's bounds; later layers are computed again and intersected with the parent's
//! (`recompute`, the default; without it every layer keeps the parent's bounds and only the margins are
//! computed). Domains are the batch dimension of the bound code: one pass bounds many.
//!
//! **The root and warm starts** (ReLU splitting, `alpha_root`, the default). The root's layer bounds are
//! optimised once (α-CROWN, [`crate::dual::alpha::tighten`]) and its margins with optimised lower slopes; every
//! split domain then runs the ascent of the split multipliers and lower slopes (β-CROWN) from its parent's
//! parameters ([`crate::dual::alpha::Warm`]), and hands its best parameters to its children. Any parameter in
//! range gives a valid bound, so a warm start changes the speed of the search, never its soundness.
//!
//! **Soundness.** Every bound holds in real arithmetic on its domain (the issue *Sound floating point*:
//! input boxes rounded outward, every rounding charged); the split bounds hold on the domain by its definition;
//! intersections of sound bounds are sound. A domain is *pruned* only when
//! - a layer's bounds cross (`l > u`, both finite): no point of the box satisfies the domain's splits, or
//! - every layer bound and every margin of the domain is finite and, for every disjunct, some constraint has a
//!   sound margin bound (the rounding of the specification rows charged, [`sound_row_margin`]) above the safety
//!   margin: no point of the domain satisfies that disjunct.
//!
//! The domains in the queue and the pruned ones always cover `X`. [`Verdict::Proved`] is returned only when the
//! queue is empty and no domain was dropped (for lack of memory, or because it cannot be split further): every
//! leaf was pruned, so no point of `X` satisfies any disjunct. A counterexample is returned only after the check
//! of [`confirm`] (a sound float64 enclosure of the network at the point satisfies a disjunct).
//!
//! **Branching.** ReLU splitting picks, in the domain's worst open disjunct, the unit with the largest BaBSR
//! intercept score `[λ_j]₋ · u_j (−l_j) / (u_j − l_j)` (Bunel et al. 2020): `λ_j` is the dual variable of the
//! unit's output in the margin's dual network, and the score is what the bound loses to the unit's upper line.
//! `Heuristic::Widest` (the simplest alternative) takes the widest unstable unit. Input splitting bisects the
//! box along the dimension with the largest `|λ_x,i| · (hi_i − lo_i)` (gradient × width).
//!
//! **Attacks.** After the root bound, and then every few batches, PGD runs on the worst domain's box, started
//! from the points its dual bound suggests (`x* = argmin_x λ_x · x` over the box); those points are also checked
//! directly after every batch.

use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Tensor};
use petgraph::graph::NodeIndex;

use super::falsify::{candidates_from, AttackConfig};
use crate::dual::bounds::{Given, Options};
use crate::dual::robust::lower_bounds_given;
use crate::dual::{InputSet, Model};
use crate::error::{Context, Error, Result};
use crate::ir::NodeKind;
use crate::ops::Family;
use crate::vnnlib::Constraint;

/// What is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Branching {
    /// The root bound only.
    None,
    /// Split activation inputs (ReLU splitting).
    Relu,
    /// Bisect the input box.
    Input,
    /// Input splitting for networks with at most [`AUTO_INPUT_DIMS`] inputs, ReLU splitting otherwise.
    Auto,
}

/// `auto` picks input splitting up to this many inputs.
pub const AUTO_INPUT_DIMS: usize = 16;

/// Which unit a ReLU split takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heuristic {
    /// The BaBSR intercept score from the dual variables (the default).
    Babsr,
    /// The widest unstable unit.
    Widest,
}

#[derive(Debug, Clone)]
pub struct SearchOptions {
    pub family: Family,
    pub alpha: (usize, f64),
    pub branching: Branching,
    pub heuristic: Heuristic,
    /// Most domains per bound pass.
    pub batch: usize,
    /// Bytes the queue of domains may take on the host.
    pub max_memory: f64,
    /// An extra margin a bound must clear (0: the bounds pay for their own rounding).
    pub safety_margin: f64,
    pub attack: AttackConfig,
    /// Recompute the layers after a split (else they keep the parent's bounds).
    pub recompute: bool,
    /// ReLU splitting: optimise the root's layers and margin slopes (α-CROWN), and start every child's ascent
    /// from its parent's slopes and multipliers.
    pub alpha_root: bool,
    /// Ascent steps on the split multipliers and lower slopes of a split domain (0: none) and their step.
    pub beta_iters: usize,
    pub beta_lr: f64,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            family: Family::Crown,
            alpha: (crate::dual::bounds::DEFAULT_ALPHA_ITERS, crate::dual::bounds::DEFAULT_ALPHA_LR),
            branching: Branching::Auto,
            heuristic: Heuristic::Babsr,
            batch: 64,
            max_memory: DEFAULT_MAX_MEMORY,
            safety_margin: 0.0,
            attack: AttackConfig::default(),
            recompute: true,
            alpha_root: true,
            beta_iters: DEFAULT_BETA_ITERS,
            beta_lr: DEFAULT_BETA_LR,
        }
    }
}

/// Default ascent steps and step of the split multipliers.
pub const DEFAULT_BETA_ITERS: usize = 20;
pub const DEFAULT_BETA_LR: f64 = 0.1;

/// The default cap of `--max-memory`: 8 GB, a third of a 24 GB machine.
pub const DEFAULT_MAX_MEMORY: f64 = 8e9;

/// The answer of a search.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// No point of the box satisfies a disjunct.
    Proved,
    /// A confirmed point: the inputs and the float64 outputs there.
    Counterexample { x: Vec<f64>, y: Vec<f64> },
    /// Open: the worst margin bound among the parts left (−∞ where a part could not be bounded).
    Unknown { worst: f64 },
    /// The time ran out first.
    Timeout { worst: f64 },
}

/// What the search did.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Domains bounded (the root included).
    pub domains: usize,
    /// Domains pruned.
    pub pruned: usize,
    /// Domains given up (no split left, or no memory).
    pub dropped: usize,
    pub batches: usize,
    /// The worst margin bound of the root.
    pub root_worst: f64,
    pub seconds: f64,
}

/// A problem for [`search`]: the network in the compute dtype and in float64 (for the counterexample check),
/// the input box (flat, as the user wrote it: moved outward before bounding) and the disjuncts.
pub struct Problem<'a> {
    pub model: &'a Model,
    pub exact: &'a Model,
    pub lo: &'a [f64],
    pub hi: &'a [f64],
    pub disjuncts: &'a [Vec<Constraint>],
}

/// One part of the problem.
struct Domain {
    /// The box, already moved outward (the root's: one ulp outside the user's decimals).
    lo: Arc<[f64]>,
    hi: Arc<[f64]>,
    /// The parent's layer bounds (host, per activation input in order; computed on the parent, as computed:
    /// the splits are applied on top).
    layers: Option<Arc<Vec<(Vec<f64>, Vec<f64>)>>>,
    /// Every split of the domain, the newest last: `(layer, unit, point, upper side)` (`z ≤ point` on the
    /// upper side, `z ≥ point` on the other).
    splits: Arc<Vec<(usize, usize, f64, bool)>>,
    /// The parent's sound margin bound per specification row (they hold on the domain too).
    margins: Option<Arc<Vec<f64>>>,
    /// The parent's optimised margin parameters (shared by the two children).
    warm: Option<Arc<HostWarm>>,
    /// Per disjunct: still open here.
    open: Vec<bool>,
    /// The parent's worst open margin (the queue's order).
    bound: f64,
    depth: usize,
}

impl Domain {
    fn bytes(&self) -> usize {
        // The layer bounds are shared by the two children of a parent: half each.
        let layers = self.layers.as_ref().map(|l| l.iter().map(|(a, b)| a.len() + b.len()).sum::<usize>() * 4);
        let warm = self.warm.as_ref().map(|w| w.bytes() / 2).unwrap_or(0);
        layers.unwrap_or(0) + warm + 160 + self.open.len() + self.splits.len() * 32 + 16 * self.lo.len()
    }
}

/// The queue's order: the worst bound first.
struct ByBound(Domain);

impl PartialEq for ByBound {
    fn eq(&self, o: &Self) -> bool {
        self.0.bound.total_cmp(&o.0.bound).is_eq()
    }
}
impl Eq for ByBound {}
impl PartialOrd for ByBound {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for ByBound {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // A max-heap: the smallest bound is the greatest.
        o.0.bound.total_cmp(&self.0.bound)
    }
}

/// What one bound pass found about one domain.
struct Bounded {
    /// Pruned (crossing layer bounds, or every open disjunct refuted).
    proved: bool,
    open: Vec<bool>,
    worst: f64,
    layers: Vec<(Vec<f64>, Vec<f64>)>,
    /// The split to make next, if there is one.
    branch: Option<Branch>,
    /// The point the worst constraint's dual bound suggests.
    xstar: Vec<f64>,
    /// Sound margin per specification row.
    margins: Vec<f64>,
    /// The optimised parameters of the margin rows, for the children.
    warm: Option<HostWarm>,
}

/// One domain's optimised margin parameters on the host: per node, `[rows, n]` for every specification row
/// (NaN for rows not optimised here), f32 (a start of an ascent needs no more).
#[derive(Debug, Clone)]
struct HostWarm {
    slopes: Vec<(NodeIndex, Vec<f32>)>,
    betas: Vec<(NodeIndex, Vec<f32>)>,
}

impl HostWarm {
    fn bytes(&self) -> usize {
        self.slopes.iter().chain(&self.betas).map(|(_, v)| 4 * v.len()).sum()
    }
}

enum Branch {
    Relu { layer: usize, unit: usize, point: f64 },
    Input { dim: usize },
}

/// Large finite stand-in for "no bound" in given layer bounds (`strict_max` would turn ±∞ into NaN).
const NO_BOUND: f64 = 1e30;

/// The activation inputs `z` in order and, for each, the activation node reading it and its split point rule.
struct Layers {
    z: Vec<NodeIndex>,
    act: Vec<NodeIndex>,
    /// Per layer: the activation's breakpoints (ReLU: `[0]`), or empty (split at the middle).
    kinks: Vec<Vec<f64>>,
    /// Per layer: whether the unit's intercept score applies (piecewise-linear with a kink).
    pwl: Vec<bool>,
    /// Per layer: the activation is a ReLU (its active split has the exact relaxation of
    /// [`crate::dual::bounds::Splits`]).
    relu: Vec<bool>,
}

fn layers_of(model: &Model) -> Layers {
    let g = &model.graph;
    let z = g.activation_inputs();
    let mut out = Layers { z: Vec::new(), act: Vec::new(), kinks: Vec::new(), pwl: Vec::new(), relu: Vec::new() };
    for zi in z {
        let act = g
            .consumers(zi)
            .into_iter()
            .map(|(m, _)| m)
            .find(|m| g.node(*m).kind.op().map(|op| op.role() == crate::ops::Role::Activation).unwrap_or(false));
        let Some(act) = act else { continue };
        let name = match g.node(act).kind {
            NodeKind::Op(op) => op.name(),
            NodeKind::Input => "",
        };
        let kinks = match name {
            "relu" | "leaky_relu" => vec![0.0],
            "hardtanh" => vec![-1.0, 1.0],
            _ => Vec::new(),
        };
        out.pwl.push(!kinks.is_empty());
        out.relu.push(name == "relu");
        out.kinks.push(kinks);
        out.z.push(zi);
        out.act.push(act);
    }
    out
}

/// The specification rows of the disjuncts: one row `−c` per constraint, `(disjunct, constraint)` for each.
fn spec_rows(disjuncts: &[Vec<Constraint>], k: usize) -> (Vec<(usize, &Constraint)>, Vec<f64>) {
    let rows: Vec<(usize, &Constraint)> =
        disjuncts.iter().enumerate().flat_map(|(i, d)| d.iter().map(move |c| (i, c))).collect();
    let mut data = vec![0f64; rows.len() * k];
    for (row, (_, c)) in rows.iter().enumerate() {
        for &(j, v) in &c.coef {
            if j < k {
                data[row * k + j] -= v;
            }
        }
    }
    (rows, data)
}

/// What rounding the specification rows cost: for row `−c·y − d`, the margin bound `L` computed for the rows
/// `c` as rounded to the compute dtype bounds the real `−c_dec·y − d_dec` (the decimals of the file) only after
/// `Σ_j |c_dec,j − c_dt,j| M_j` (`M_j` a sound bound on `|y_j|` over the box), the offset's parsing
/// (`|d| u`) and the f64 subtraction `L − d` (`|L − d| u`) are taken off. Returns `fl(L − d)` less that, rounded
/// down by a factor on the charge.
pub fn sound_row_margin(l: f64, c: &Constraint, m_out: &[f64], dtype: DType) -> f64 {
    let u = f64::EPSILON / 2.0;
    let m = l - c.offset;
    let mut charge = (c.offset.abs() + m.abs()) * u;
    for &(j, v) in &c.coef {
        // The row holds `−v`: parsed within `|v| u` of the decimal, then rounded to the compute dtype.
        let v_dt = if dtype == DType::F64 { v } else { v as f32 as f64 };
        let dc = (v - v_dt).abs() + v.abs() * u;
        charge += dc * m_out.get(j).copied().unwrap_or(f64::INFINITY);
    }
    let n = c.coef.len() as f64 + 4.0;
    m - (charge * (1.0 + 4.0 * n * u) + f64::MIN_POSITIVE)
}

/// Sound interval bounds `(lower, upper)` `[B][K]` on the outputs over `set` (every rounding paid for).
pub fn output_interval(model: &Model, set: &InputSet) -> Result<(Vec<Vec<f64>>, Vec<Vec<f64>>)> {
    let iv = crate::dual::ibp::interval_bounds(model, set)?;
    let (l, u) = iv
        .get(model.graph.output.index())
        .and_then(|b| b.as_ref())
        .ok_or_else(|| Error::Usage("internal: no interval bounds at the output".into()))?;
    let read = |t: &Tensor| t.to_dtype(DType::F64).and_then(|t| t.flatten_from(1)).and_then(|t| t.to_vec2::<f64>());
    let ctx = || "the outputs' interval bounds".to_string();
    Ok((read(l).context(ctx)?, read(u).context(ctx)?))
}

/// `max(|l_j|, |u_j|)` of every output over `set` (one example), from [`output_interval`]; NaN gives ∞.
pub fn output_magnitudes(model: &Model, set: &InputSet) -> Result<Vec<f64>> {
    let (l, u) = output_interval(model, set)?;
    Ok(l.iter()
        .flatten()
        .zip(u.iter().flatten())
        .map(|(a, b)| if a.is_nan() || b.is_nan() { f64::INFINITY } else { a.abs().max(b.abs()) })
        .collect())
}

/// Check candidate inputs in float64 against every disjunct. Each candidate is clipped into the box strictly
/// inside the file's decimals (`[next_up(lo), next_down(hi)]`, where that is not empty: each f64 bound is within
/// half an ulp of its decimal, on either side), and counts only when a disjunct holds for every output in a sound
/// enclosure of its real outputs (interval bounds at the point, in f64 on the weights as stored, every rounding
/// paid for): a counterexample is then a proof.
pub fn confirm(
    exact: &Model,
    lo: &[f64],
    hi: &[f64],
    disjuncts: &[Vec<Constraint>],
    cands: Vec<Vec<f64>>,
) -> Result<Option<(Vec<f64>, Vec<f64>)>> {
    if cands.is_empty() {
        return Ok(None);
    }
    let inner = |a: f64, b: f64| if a.next_up() <= b.next_down() { (a.next_up(), b.next_down()) } else { (a, b) };
    let clipped: Vec<Vec<f64>> = cands
        .into_iter()
        .filter(|x| x.len() == lo.len())
        .map(|x| {
            x.iter()
                .zip(lo)
                .zip(hi)
                .map(|((v, a), b)| {
                    let (a, b) = inner(*a, *b);
                    v.max(a).min(b)
                })
                .collect()
        })
        .collect();
    if clipped.is_empty() {
        return Ok(None);
    }
    let mut shape = vec![clipped.len()];
    shape.extend_from_slice(exact.graph.input_shape());
    let flat: Vec<f64> = clipped.iter().flatten().copied().collect();
    let ctx = || "the float64 check".to_string();
    let x = Tensor::from_vec(flat.clone(), shape.clone(), &exact.device).context(ctx)?;
    let ys = exact.forward(&x)?.flatten_from(1).and_then(|t| t.to_vec2::<f64>()).context(ctx)?;
    let point = InputSet::from_host_box(&flat, &flat, &shape, DType::F64, &exact.device, false)?;
    let (ylo, yhi) = output_interval(exact, &point)?;
    for (((x, y), yl), yu) in clipped.into_iter().zip(ys).zip(ylo).zip(yhi) {
        if y.iter().all(|v| v.is_finite()) && disjuncts.iter().any(|d| d.iter().all(|c| c.holds_surely(&yl, &yu))) {
            return Ok(Some((x, y)));
        }
    }
    Ok(None)
}

/// The domains of a batch as one input set `[D, *in]`.
fn batch_set(model: &Model, doms: &[&Domain]) -> Result<InputSet> {
    let n = doms.first().map(|d| d.lo.len()).unwrap_or(0);
    let mut shape = vec![doms.len()];
    shape.extend_from_slice(model.graph.input_shape());
    let (mut lo, mut hi) = (Vec::with_capacity(n * doms.len()), Vec::with_capacity(n * doms.len()));
    for d in doms {
        lo.extend_from_slice(&d.lo);
        hi.extend_from_slice(&d.hi);
    }
    InputSet::from_host_box(&lo, &hi, &shape, model.dtype, &model.device, false)
}

/// Host rows `[B][n]` of a tensor `[B, *]`.
fn host_rows(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    crate::dual::robust::rows(t)
}

struct Ctx<'a> {
    p: &'a Problem<'a>,
    opts: &'a SearchOptions,
    layers: Layers,
    rows: Vec<(usize, &'a Constraint)>,
    c_row: Vec<f64>,
    m_out: Vec<f64>,
    input_split: bool,
    deadline: Instant,
}

impl Ctx<'_> {
    fn bound_options(&self) -> Options {
        Options {
            family: self.opts.family,
            alpha_iters: self.opts.alpha.0,
            alpha_lr: self.opts.alpha.1,
            crown_layers: true,
            deadline: Some(self.deadline),
            ..Default::default()
        }
    }

    /// The batch's warm start (`[nd, rows, *shape]` per node, NaN where a domain has none), if any domain has
    /// one.
    fn warm_of(&self, doms: &[&Domain], active: &[usize]) -> Result<Option<crate::dual::alpha::Warm>> {
        if doms.iter().all(|d| d.warm.is_none()) {
            return Ok(None);
        }
        let model = self.p.model;
        let (nd, r, all) = (doms.len(), active.len(), self.rows.len());
        let ctx = || "the warm start of the domains".to_string();
        let mut nodes: Vec<(NodeIndex, bool)> = Vec::new();
        for d in doms.iter().filter_map(|d| d.warm.as_ref()) {
            for (node, beta) in d.slopes.iter().map(|s| (s.0, false)).chain(d.betas.iter().map(|s| (s.0, true))) {
                if !nodes.contains(&(node, beta)) {
                    nodes.push((node, beta));
                }
            }
        }
        let mut w = crate::dual::alpha::Warm::default();
        for (node, beta) in nodes {
            // The slopes belong to activations (shaped as their input), the multipliers to activation inputs.
            let z = if beta { node } else { model.graph.node(node).inputs[0] };
            let shape = model.batch_shape(z, 1);
            let n: usize = shape.iter().skip(1).product();
            let mut buf = vec![f32::NAN; nd * r * n];
            for (di, d) in doms.iter().enumerate() {
                let Some(hw) = &d.warm else { continue };
                let list = if beta { &hw.betas } else { &hw.slopes };
                let Some((_, v)) = list.iter().find(|(m, _)| *m == node) else { continue };
                if v.len() != all * n {
                    continue;
                }
                for (p, ri) in active.iter().enumerate() {
                    buf[(di * r + p) * n..][..n].copy_from_slice(&v[ri * n..][..n]);
                }
            }
            let mut dims = vec![nd, r];
            dims.extend_from_slice(&shape[1..]);
            let t = Tensor::from_vec(buf, dims, &model.device).and_then(|t| t.to_dtype(model.dtype)).context(ctx)?;
            match beta {
                true => w.betas.insert(node, t),
                false => w.slopes.insert(node, t),
            };
        }
        Ok(Some(w))
    }

    /// Each domain's share of the optimised parameters, on the host, for every specification row.
    fn warm_to_host(&self, w: &crate::dual::alpha::Warm, nd: usize, active: &[usize]) -> Result<Vec<Option<HostWarm>>> {
        let (r, all) = (active.len(), self.rows.len());
        let ctx = || "the optimised parameters of the domains".to_string();
        let mut out: Vec<HostWarm> = (0..nd).map(|_| HostWarm { slopes: Vec::new(), betas: Vec::new() }).collect();
        for (beta, map) in [(false, &w.slopes), (true, &w.betas)] {
            for (node, t) in map {
                let v: Vec<f32> =
                    t.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).context(ctx)?;
                let n = v.len() / (nd * r).max(1);
                for (di, o) in out.iter_mut().enumerate() {
                    let mut h = vec![f32::NAN; all * n];
                    for (p, ri) in active.iter().enumerate() {
                        h[ri * n..][..n].copy_from_slice(&v[(di * r + p) * n..][..n]);
                    }
                    match beta {
                        true => o.betas.push((*node, h)),
                        false => o.slopes.push((*node, h)),
                    }
                }
            }
        }
        Ok(out.into_iter().map(Some).collect())
    }

    /// Bound a batch of domains in one pass.
    fn bound(&self, doms: &[&Domain]) -> Result<Vec<Bounded>> {
        let model = self.p.model;
        let dt = model.dtype;
        let dev = &model.device;
        let nd = doms.len();
        let k = model.graph.num_classes();
        let ctx_err = || "bounding the domains".to_string();
        let set = batch_set(model, doms)?;
        // Given layer bounds: the parents' (as computed), and every domain's splits.
        let mut given = Given::default();
        let any_parent = doms.iter().any(|d| d.layers.is_some());
        let any_split = doms.iter().any(|d| !d.splits.is_empty());
        for (li, z) in self.layers.z.iter().enumerate() {
            let shape = model.batch_shape(*z, nd);
            let n: usize = shape.iter().skip(1).product();
            let t = |v: Vec<f64>| Tensor::from_vec(v, shape.clone(), dev).and_then(|t| t.to_dtype(dt));
            // The given values are f64 copies of bounds in the compute dtype (exact), sentinels, or split points
            // exact in the compute dtype.
            if any_parent {
                let (mut gl, mut gu) = (Vec::with_capacity(n * nd), Vec::with_capacity(n * nd));
                for d in doms {
                    match &d.layers {
                        Some(ls) => {
                            gl.extend(ls[li].0.iter().map(|v| v.max(-NO_BOUND)));
                            gu.extend(ls[li].1.iter().map(|v| v.min(NO_BOUND)));
                        }
                        None => {
                            gl.extend(std::iter::repeat_n(-NO_BOUND, n));
                            gu.extend(std::iter::repeat_n(NO_BOUND, n));
                        }
                    }
                }
                given.layers.insert(*z, (t(gl).context(ctx_err)?, t(gu).context(ctx_err)?));
            }
            if any_split && doms.iter().any(|d| d.splits.iter().any(|s| s.0 == li)) {
                let (mut sl, mut su) = (vec![-NO_BOUND; n * nd], vec![NO_BOUND; n * nd]);
                let relu = self.layers.kinks[li] == [0.0] && self.layers.relu[li];
                let mut act = vec![0f64; n * nd];
                for (di, d) in doms.iter().enumerate() {
                    for &(sli, unit, point, upper) in d.splits.iter().filter(|s| s.0 == li) {
                        let e = di * n + unit;
                        if upper {
                            su[e] = su[e].min(point);
                        } else {
                            sl[e] = sl[e].max(point);
                            if relu && point == 0.0 {
                                act[e] = 1.0;
                            }
                        }
                        let _ = sli;
                    }
                }
                let relu_active = match relu {
                    true => Some(t(act).context(ctx_err)?),
                    false => None,
                };
                given.splits.insert(
                    *z,
                    crate::dual::bounds::Splits {
                        lower: t(sl).context(ctx_err)?,
                        upper: t(su).context(ctx_err)?,
                        relu_active,
                    },
                );
            }
        }
        // ReLU splitting: layers up to the newest split of every domain keep the given bounds (nothing before
        // them changed); input splitting changes the box, so every layer is computed again.
        if doms.iter().all(|d| d.layers.is_some()) && !self.input_split {
            let first = match self.opts.recompute {
                true => doms.iter().map(|d| d.splits.last().map(|s| s.0).unwrap_or(0)).min().unwrap_or(0),
                false => usize::MAX,
            };
            for (li, z) in self.layers.z.iter().enumerate() {
                if li <= first {
                    given.keep.insert(*z);
                }
            }
        }
        // Only the rows of disjuncts still open in some domain of the batch (the others keep their parent's
        // margins): after the first splits most disjuncts are refuted, and the passes' cost is per row.
        let active: Vec<usize> =
            (0..self.rows.len()).filter(|ri| doms.iter().any(|d| d.open[self.rows[*ri].0])).collect();
        let mut pos = vec![None; self.rows.len()];
        for (p, ri) in active.iter().enumerate() {
            pos[*ri] = Some(p);
        }
        let r = active.len();
        let mut c = Vec::with_capacity(nd * r * k);
        for _ in 0..nd {
            for ri in &active {
                c.extend_from_slice(&self.c_row[ri * k..(ri + 1) * k]);
            }
        }
        let c = Tensor::from_vec(c, (nd, r, k), dev).context(ctx_err)?;
        let mut record = Vec::new();
        let (mut bounds, lb) = lower_bounds_given(model, &set, &c, &self.bound_options(), &given, Some(&mut record))?;
        // The root of a ReLU search (α-CROWN, then β-CROWN on its layer bounds): every layer optimised once,
        // and the margins' slopes with them; the children keep these layers and start from these slopes.
        let root = doms.iter().all(|d| d.layers.is_none());
        let alpha_root = root && self.opts.alpha_root && !self.input_split && self.opts.alpha.0 > 0;
        if alpha_root {
            // At most a fifth of the time left: on a network whose per-unit passes are slow (wide convolutions)
            // the search keeps the rest. Layers tightened before the budget ran out keep their bounds (every
            // bound is valid; a layer cut short keeps CROWN's).
            let left = self.deadline.saturating_duration_since(Instant::now());
            let budget = Instant::now() + left / 5;
            match crate::dual::alpha::tighten_until(
                model,
                &set,
                &mut bounds,
                self.opts.alpha.0,
                self.opts.alpha.1,
                Some(budget.min(self.deadline)),
            ) {
                Err(Error::Deadline) if Instant::now() < self.deadline => {}
                r => r?,
            }
        }
        // The rows the ascent optimises: at the root every active row; below it, per open disjunct of every
        // domain, the row whose margin was best on the domain's parent. A disjunct is refuted by any one of its
        // rows, so the others (of a conjunction of many output constraints) keep their one-pass and parent's
        // margins, both sound; the ascent's cost is per row.
        let asc: Vec<usize> = match doms.iter().all(|d| d.margins.is_some()) {
            false => active.clone(),
            true => {
                let mut keep = vec![false; self.rows.len()];
                let mut best: Vec<Option<usize>> = vec![None; self.p.disjuncts.len()];
                for d in doms {
                    let Some(pm) = &d.margins else { continue };
                    // One pass over the rows: per open disjunct, the last of its best rows.
                    best.iter_mut().for_each(|b| *b = None);
                    for (ri, (di, _)) in self.rows.iter().enumerate().filter(|(_, (di, _))| d.open[*di]) {
                        if best[*di].is_none_or(|b| pm[ri].total_cmp(&pm[b]).is_ge()) {
                            best[*di] = Some(ri);
                        }
                    }
                    best.iter().flatten().for_each(|ri| keep[*ri] = true);
                }
                let asc: Vec<usize> = active.iter().copied().filter(|ri| keep[*ri]).collect();
                if asc.is_empty() {
                    active.clone()
                } else {
                    asc
                }
            }
        };
        let asc_pos: Vec<usize> = asc.iter().filter_map(|ri| pos[*ri]).collect();
        let warm_in = self.warm_of(doms, &asc)?;
        // Split multipliers (β-CROWN) with the lower slopes, on the domains' ReLU splits at 0.
        let (lb_opt, warm_out) = match (self.opts.beta_iters, self.input_split, any_split || alpha_root) {
            (iters, false, true) if iters > 0 => {
                let iters = if alpha_root { self.opts.alpha.0.max(iters) } else { iters };
                let mut signs = std::collections::HashMap::new();
                for (li, z) in self.layers.z.iter().enumerate() {
                    if !self.layers.relu[li] {
                        continue;
                    }
                    let shape = model.batch_shape(*z, nd);
                    let n: usize = shape.iter().skip(1).product();
                    let mut sg = vec![0f64; n * nd];
                    let mut any = false;
                    for (di, d) in doms.iter().enumerate() {
                        for &(_, unit, _, upper) in d.splits.iter().filter(|s| s.0 == li && s.2 == 0.0) {
                            sg[di * n + unit] = if upper { -1.0 } else { 1.0 };
                            any = true;
                        }
                    }
                    if any {
                        let t = Tensor::from_vec(sg, shape, dev).and_then(|t| t.to_dtype(dt)).context(ctx_err)?;
                        signs.insert(*z, t);
                    }
                }
                let (c, lb_a) = match asc.len() == active.len() {
                    true => (c.clone(), lb.clone()),
                    false => {
                        let idx: Vec<u32> = asc_pos.iter().map(|p| *p as u32).collect();
                        let idx = Tensor::from_vec(idx, asc.len(), dev).context(ctx_err)?;
                        (c.index_select(&idx, 1).context(ctx_err)?, lb.index_select(&idx, 1).context(ctx_err)?)
                    }
                };
                let c = c.to_dtype(dt).context(ctx_err)?;
                crate::dual::alpha::optimised_split_margins(
                    model,
                    &set,
                    &bounds,
                    &c,
                    &lb_a,
                    &signs,
                    iters,
                    self.opts.beta_lr,
                    warm_in.as_ref(),
                    Some(self.deadline),
                )?
            }
            _ => (lb.clone(), None),
        };
        let mut warm_host = match (&warm_out, self.opts.alpha_root) {
            (Some(w), true) => self.warm_to_host(w, nd, &asc)?,
            _ => vec![None; nd],
        };
        // The one-pass margins, with the ascent's (each at least as good on its row) in their places.
        let lb = match lb_opt.dims()[1] == active.len() {
            true => host_rows(&lb_opt)?,
            false => {
                let mut all = host_rows(&lb)?;
                for (row, opt) in all.iter_mut().zip(host_rows(&lb_opt)?) {
                    for (p, v) in asc_pos.iter().zip(opt) {
                        row[*p] = v;
                    }
                }
                all
            }
        };
        let mut lay: Vec<Vec<(Vec<f64>, Vec<f64>)>> = vec![Vec::new(); nd];
        for z in &self.layers.z {
            let (l, u) = bounds.of(*z).ok_or_else(|| Error::Usage("internal: layer bounds missing".into()))?;
            for (d, (lr, ur)) in host_rows(l)?.into_iter().zip(host_rows(u)?).enumerate() {
                lay[d].push((lr, ur));
            }
        }
        let lam_x = match record.get(model.graph.input.index()).and_then(|t| t.as_ref()) {
            Some(t) => Some(t.to_dtype(DType::F64).and_then(|t| t.flatten_from(2)).context(ctx_err)?),
            None => None,
        };
        let mut out = Vec::with_capacity(nd);
        for (d, dom) in doms.iter().enumerate() {
            let layers = std::mem::take(&mut lay[d]);
            // Crossing bounds (with the splits applied): no point of the box is in the domain.
            let crossing = |(l, u): (&f64, &f64)| l.is_finite() && u.is_finite() && l > u;
            let mut empty = layers.iter().any(|(l, u)| l.iter().zip(u).any(crossing));
            for &(li, unit, point, upper) in dom.splits.iter() {
                let (l, u) = (layers[li].0[unit], layers[li].1[unit]);
                let (l, u) = if upper { (l, u.min(point)) } else { (l.max(point), u) };
                empty |= crossing((&l, &u));
            }
            // Per row: the sound margin (the parent's, where better: it holds here too).
            let margins: Vec<f64> = self
                .rows
                .iter()
                .enumerate()
                .map(|(ri, (_, con))| {
                    let m = match pos[ri] {
                        Some(p) => sound_row_margin(lb[d][p], con, &self.m_out, dt),
                        None => f64::NEG_INFINITY,
                    };
                    let m = if m.is_nan() { f64::NEG_INFINITY } else { m };
                    match &dom.margins {
                        Some(pm) => m.max(pm[ri]),
                        None => m,
                    }
                })
                .collect();
            // Per disjunct: the best sound margin of its constraints.
            let mut best = vec![f64::NEG_INFINITY; self.p.disjuncts.len()];
            let mut best_row = vec![usize::MAX; self.p.disjuncts.len()];
            for (ri, (di, _)) in self.rows.iter().enumerate() {
                let m = margins[ri];
                if m.is_finite() && m > best[*di] {
                    best[*di] = m;
                    best_row[*di] = ri;
                }
            }
            // The domain's own bounds must be finite for any of its margins to count (a parent's finite margin
            // would do, but a non-finite layer here means something went wrong: never prune on it).
            let finite = bounds.finite[d] && lb[d].iter().all(|v| v.is_finite());
            let open: Vec<bool> =
                dom.open.iter().zip(&best).map(|(o, m)| *o && !(finite && *m > self.opts.safety_margin)).collect();
            let proved = empty || open.iter().all(|o| !o);
            // The worst open disjunct and its best row: where the next split should help.
            let worst_d = (0..open.len()).filter(|i| open[*i]).min_by(|a, b| best[*a].total_cmp(&best[*b]));
            let worst = match worst_d {
                Some(i) if finite => best[i],
                Some(_) => f64::NEG_INFINITY,
                None => f64::INFINITY,
            };
            let row = worst_d
                .map(|i| best_row[i])
                .filter(|r| *r != usize::MAX)
                .or_else(|| worst_d.and_then(|i| self.rows.iter().position(|(di, _)| *di == i)))
                .and_then(|r| pos[r]);
            let lx: Option<Vec<f64>> = match (&lam_x, row) {
                (Some(t), Some(r)) => Some(t.get(d).and_then(|t| t.get(r)).and_then(|t| t.to_vec1()).context(ctx_err)?),
                _ => None,
            };
            let xstar: Vec<f64> = match &lx {
                Some(lx) => dom
                    .lo
                    .iter()
                    .zip(dom.hi.iter())
                    .zip(lx)
                    .map(|((a, b), g)| {
                        if *g > 0.0 {
                            *a
                        } else if *g < 0.0 {
                            *b
                        } else {
                            0.5 * (a + b)
                        }
                    })
                    .collect(),
                None => Vec::new(),
            };
            let branch = match (proved, row) {
                (true, _) | (_, None) => None,
                (false, Some(r)) => match self.input_split {
                    true => self.input_branch(dom, lx.as_deref()),
                    false => self.relu_branch(&record, d, r, &layers, &dom.splits)?,
                },
            };
            let warm = warm_host[d].take();
            out.push(Bounded { proved, open, worst, layers, branch, xstar, margins, warm });
        }
        Ok(out)
    }

    /// The unit to split (ReLU splitting): the best score among the units whose interval holds a split point.
    fn relu_branch(
        &self,
        record: &[Option<Tensor>],
        d: usize,
        row: usize,
        layers: &[(Vec<f64>, Vec<f64>)],
        splits: &[(usize, usize, f64, bool)],
    ) -> Result<Option<Branch>> {
        let mut best: Option<(f64, f64, Branch)> = None;
        let split: std::collections::HashSet<(usize, usize)> = splits.iter().map(|s| (s.0, s.1)).collect();
        for (li, (l, u)) in layers.iter().enumerate() {
            let lam: Option<Vec<f64>> = match (self.opts.heuristic, record.get(self.layers.act[li].index())) {
                (Heuristic::Babsr, Some(Some(t))) => Some(
                    t.get(d)
                        .and_then(|t| t.get(row))
                        .and_then(|t| t.flatten_all())
                        .and_then(|t| t.to_dtype(DType::F64))
                        .and_then(|t| t.to_vec1())
                        .context(|| "reading the dual variables".to_string())?,
                ),
                _ => None,
            };
            for (j, (&a, &b)) in l.iter().zip(u).enumerate() {
                if !(a.is_finite() && b.is_finite() && a < b) || split.contains(&(li, j)) {
                    continue;
                }
                let kinks = &self.layers.kinks[li];
                let point = match kinks.iter().copied().filter(|s| a < *s && *s < b).next() {
                    Some(s) => s,
                    None if kinks.is_empty() => {
                        let m = 0.5 * a + 0.5 * b;
                        // A split point exact in the compute dtype, strictly inside.
                        let m = if self.p.model.dtype == DType::F64 { m } else { m as f32 as f64 };
                        if !(a < m && m < b) {
                            continue;
                        }
                        m
                    }
                    None => continue,
                };
                let width = b - a;
                let score = match (&lam, self.layers.pwl[li]) {
                    (Some(lam), true) => {
                        let neg = (-lam.get(j).copied().unwrap_or(0.0)).max(0.0);
                        neg * (b - point) * (point - a) / width
                    }
                    (Some(lam), false) => lam.get(j).copied().unwrap_or(0.0).abs() * width,
                    (None, _) => width,
                };
                let better = match &best {
                    None => true,
                    Some((s, w, _)) => score > *s || (score == *s && width > *w),
                };
                if better {
                    best = Some((score, width, Branch::Relu { layer: li, unit: j, point }));
                }
            }
        }
        Ok(best.map(|b| b.2))
    }

    /// The dimension to bisect (input splitting): the largest `(|λ_x,i| + g/20) · width_i` (`g` the largest
    /// `|λ_x|`: a floor, so that a dimension the linear bound happens to ignore is split once the others are
    /// narrow), else the widest.
    fn input_branch(&self, dom: &Domain, lx: Option<&[f64]>) -> Option<Branch> {
        let floor = lx.map(|g| g.iter().fold(0.0f64, |m, v| m.max(v.abs())) / 20.0).unwrap_or(0.0);
        let mut best: Option<(f64, f64, usize)> = None;
        for i in 0..dom.lo.len() {
            let (a, b) = (dom.lo[i], dom.hi[i]);
            let m = 0.5 * a + 0.5 * b;
            if !(a < m && m < b) {
                continue;
            }
            let w = b - a;
            let s = lx.and_then(|g| g.get(i)).map(|g| (g.abs() + floor) * w).unwrap_or(w);
            if best.as_ref().is_none_or(|(bs, bw, _)| s > *bs || (s == *bs && w > *bw)) {
                best = Some((s, w, i));
            }
        }
        best.map(|b| Branch::Input { dim: b.2 })
    }
}

/// Search the problem until it is settled or `deadline` passes. `progress` (a spinner) shows the domains left,
/// the domains done and the worst open bound.
pub fn search(
    p: &Problem,
    opts: &SearchOptions,
    deadline: Instant,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<(Verdict, Stats)> {
    let start = Instant::now();
    let model = p.model;
    let k = model.graph.num_classes();
    let mut stats = Stats { root_worst: f64::NEG_INFINITY, ..Default::default() };
    if p.disjuncts.iter().any(|d| d.is_empty()) {
        // A disjunct with no constraint is satisfied everywhere: any point of the box shows it.
        let mid: Vec<f64> = p.lo.iter().zip(p.hi).map(|(a, b)| 0.5 * (a + b)).collect();
        if let Some((x, y)) = confirm(p.exact, p.lo, p.hi, p.disjuncts, vec![mid])? {
            return Ok((Verdict::Counterexample { x, y }, stats));
        }
        return Ok((Verdict::Unknown { worst: f64::NEG_INFINITY }, stats));
    }
    let n_in: usize = model.graph.input_shape().iter().product();
    if p.lo.len() != n_in || p.hi.len() != n_in {
        return Err(Error::Usage(format!("internal: a box of {} values for {n_in} inputs", p.lo.len())));
    }
    let branching = match opts.branching {
        Branching::Auto if n_in <= AUTO_INPUT_DIMS => Branching::Input,
        Branching::Auto => Branching::Relu,
        b => b,
    };
    // The root box, one ulp outside the decimals the user wrote (each parsed to the nearest f64).
    let lo: Arc<[f64]> = p.lo.iter().map(|a| a.next_down()).collect();
    let hi: Arc<[f64]> = p.hi.iter().map(|b| b.next_up()).collect();
    let root_set = InputSet::from_host_box(
        &lo,
        &hi,
        &{
            let mut s = vec![1];
            s.extend_from_slice(model.graph.input_shape());
            s
        },
        model.dtype,
        &model.device,
        false,
    )?;
    if model.device.is_cpu() {
        crate::memory::ensure_fits(
            crate::dual::bounds::exact_bytes_per_example(model) as f64,
            &format!("the bounds of `{}` on one input box", model.graph.name),
            "verify a smaller network, or on a machine with more memory",
        )?;
    }
    let (rows, c_row) = spec_rows(p.disjuncts, k);
    let cx = Ctx {
        p,
        opts,
        layers: layers_of(model),
        rows,
        c_row,
        // A sound bound on every output's magnitude over the box (and so over every domain), for the rounding
        // of the specification rows.
        m_out: output_magnitudes(model, &root_set)?,
        input_split: branching == Branching::Input,
        deadline,
    };
    let root = Domain {
        lo: lo.clone(),
        hi: hi.clone(),
        layers: None,
        splits: Arc::new(Vec::new()),
        margins: None,
        warm: None,
        open: vec![true; p.disjuncts.len()],
        bound: f64::NEG_INFINITY,
        depth: 0,
    };
    let t0 = Instant::now();
    let mut res = match cx.bound(&[&root]) {
        Err(Error::Deadline) => {
            stats.seconds = start.elapsed().as_secs_f64();
            return Ok((Verdict::Timeout { worst: f64::NEG_INFINITY }, stats));
        }
        r => r?,
    };
    let per_domain = t0.elapsed().as_secs_f64();
    stats.domains = 1;
    stats.batches = 1;
    let r0 = res.pop().ok_or_else(|| Error::Usage("internal: no root bound".into()))?;
    stats.root_worst = r0.worst;
    let done = |v: Verdict, mut s: Stats| {
        s.seconds = start.elapsed().as_secs_f64();
        Ok((v, s))
    };
    if r0.proved {
        stats.pruned = 1;
        return done(Verdict::Proved, stats);
    }
    if branching == Branching::None {
        return done(Verdict::Unknown { worst: r0.worst }, stats);
    }
    // The full attack on the whole box, from the dual's point, before any split.
    let ds: Vec<&[Constraint]> = p.disjuncts.iter().map(|d| d.as_slice()).collect();
    let starts = if r0.xstar.is_empty() { Vec::new() } else { vec![r0.xstar.clone()] };
    let cands = candidates_from(model, p.lo, p.hi, &ds, &opts.attack, deadline, &starts)?;
    if let Some((x, y)) = confirm(p.exact, p.lo, p.hi, p.disjuncts, cands)? {
        return done(Verdict::Counterexample { x, y }, stats);
    }
    let mut queue: BinaryHeap<ByBound> = BinaryHeap::new();
    let mut queue_bytes = 0usize;
    let mut seeds = 1u64;
    let push = |queue: &mut BinaryHeap<ByBound>, bytes: &mut usize, stats: &mut Stats, parent: &Domain, b: Bounded| {
        let Some(branch) = b.branch else {
            // Nothing left to split: the part stays open.
            stats.dropped += 1;
            return b.worst;
        };
        let layers = Arc::new(b.layers);
        let margins = Arc::new(b.margins);
        let warm = b.warm.map(Arc::new);
        for side in [true, false] {
            let (lo, hi, splits) = match branch {
                Branch::Relu { layer, unit, point } => {
                    let mut s = parent.splits.to_vec();
                    s.push((layer, unit, point, side));
                    (parent.lo.clone(), parent.hi.clone(), Arc::new(s))
                }
                Branch::Input { dim } => {
                    let m = 0.5 * parent.lo[dim] + 0.5 * parent.hi[dim];
                    let (mut lo, mut hi) = (parent.lo.to_vec(), parent.hi.to_vec());
                    if side {
                        hi[dim] = m;
                    } else {
                        lo[dim] = m;
                    }
                    (lo.into(), hi.into(), parent.splits.clone())
                }
            };
            let d = Domain {
                lo,
                hi,
                layers: Some(layers.clone()),
                splits,
                margins: Some(margins.clone()),
                warm: warm.clone(),
                open: b.open.clone(),
                bound: b.worst,
                depth: parent.depth + 1,
            };
            *bytes += d.bytes();
            queue.push(ByBound(d));
        }
        b.worst
    };
    let mut open_worst = f64::INFINITY;
    let w = push(&mut queue, &mut queue_bytes, &mut stats, &root, r0);
    open_worst = open_worst.min(w);
    let mut dropped_worst = if stats.dropped > 0 { w } else { f64::INFINITY };
    // Domains per pass: what fits the layer bounds' memory, and about half a second of work (so the timeout is
    // kept within a second).
    let mem_cap = model
        .graph
        .activation_inputs()
        .into_iter()
        .map(|z| crate::dual::bounds::crown_bytes(model, z, 1))
        .fold(1.0f64, f64::max);
    let mem_batch = ((crate::dual::bounds::CROWN_LAYER_BYTES / mem_cap).floor() as usize).max(1);
    let mut per = per_domain.max(1e-4);
    let mut last_attack = Instant::now();
    loop {
        if queue.is_empty() {
            break;
        }
        let remaining = deadline.saturating_duration_since(Instant::now()).as_secs_f64();
        let time_batch = ((0.5f64.min(remaining) / per).floor() as usize).max(1);
        let nb = opts.batch.max(1).min(mem_batch).min(time_batch).min(queue.len());
        if remaining <= 0.0 || (remaining < per * nb as f64 && stats.batches > 1) {
            let worst = queue.peek().map(|d| d.0.bound).unwrap_or(open_worst).min(dropped_worst);
            return done(Verdict::Timeout { worst }, stats);
        }
        let batch: Vec<Domain> = (0..nb).filter_map(|_| queue.pop().map(|d| d.0)).collect();
        for d in &batch {
            queue_bytes = queue_bytes.saturating_sub(d.bytes());
        }
        let refs: Vec<&Domain> = batch.iter().collect();
        let t = Instant::now();
        let results = match cx.bound(&refs) {
            Err(Error::Deadline) => {
                // The batch was not bounded: its domains are as open as the queue's.
                let worst = batch
                    .iter()
                    .map(|d| d.bound)
                    .chain(queue.peek().map(|d| d.0.bound))
                    .fold(open_worst.min(dropped_worst), f64::min);
                return done(Verdict::Timeout { worst }, stats);
            }
            r => r?,
        };
        per = 0.7 * per + 0.3 * (t.elapsed().as_secs_f64() / nb as f64);
        stats.batches += 1;
        stats.domains += nb;
        let mut xs: Vec<(f64, Vec<f64>, Arc<[f64]>, Arc<[f64]>)> = Vec::new();
        for (dom, b) in batch.iter().zip(results) {
            if std::env::var_os("DUALNET_TRACE_SEARCH").is_some() && !b.proved && b.worst < dom.bound - 1e-6 {
                eprintln!(
                    "  worse: parent {:.5} -> {:.5} (depth {}, split {:?})",
                    dom.bound,
                    b.worst,
                    dom.depth,
                    dom.splits.last()
                );
            }
            if b.proved {
                stats.pruned += 1;
                continue;
            }
            if !b.xstar.is_empty() {
                xs.push((b.worst, b.xstar.clone(), dom.lo.clone(), dom.hi.clone()));
            }
            let before = stats.dropped;
            // Memory: a full queue keeps the domain unsplit, given up.
            if queue_bytes as f64 + 2.0 * dom.bytes() as f64 > opts.max_memory {
                stats.dropped += 1;
                dropped_worst = dropped_worst.min(b.worst);
                continue;
            }
            let w = push(&mut queue, &mut queue_bytes, &mut stats, dom, b);
            if stats.dropped > before {
                dropped_worst = dropped_worst.min(w);
            }
        }
        // The dual's points of the worst domains, checked directly.
        xs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let pts: Vec<Vec<f64>> = xs.iter().take(8).map(|x| x.1.clone()).collect();
        if let Some((x, y)) = confirm(p.exact, p.lo, p.hi, p.disjuncts, pts)? {
            return done(Verdict::Counterexample { x, y }, stats);
        }
        // PGD on the worst domain's box every two seconds or so, from its dual point.
        if last_attack.elapsed().as_secs_f64() > 2.0 && !xs.is_empty() {
            last_attack = Instant::now();
            let (_, x0, dlo, dhi) = &xs[0];
            let ulo: Vec<f64> = dlo.iter().zip(p.lo).map(|(a, b)| a.max(*b)).collect();
            let uhi: Vec<f64> = dhi.iter().zip(p.hi).map(|(a, b)| a.min(*b)).collect();
            seeds += 1;
            let a = AttackConfig { seed: opts.attack.seed.wrapping_add(seeds * 7919), restarts: 3, ..opts.attack };
            let starts: Vec<Vec<f64>> = xs.iter().take(2).map(|x| x.1.clone()).collect();
            let _ = x0;
            let cands = candidates_from(model, &ulo, &uhi, &ds, &a, deadline, &starts)?;
            if let Some((x, y)) = confirm(p.exact, p.lo, p.hi, p.disjuncts, cands)? {
                return done(Verdict::Counterexample { x, y }, stats);
            }
        }
        if std::env::var_os("DUALNET_TRACE_SEARCH").is_some() && stats.batches % 100 == 0 {
            if let Some(d) = queue.peek() {
                let w: Vec<String> =
                    d.0.lo.iter().zip(d.0.hi.iter()).map(|(a, b)| format!("[{a:.4},{b:.4}]")).collect();
                eprintln!("  top box {}", w.join(" "));
            }
        }
        if std::env::var_os("DUALNET_TRACE_SEARCH").is_some() {
            let worst = queue.peek().map(|d| d.0.bound).unwrap_or(f64::INFINITY).min(dropped_worst);
            eprintln!(
                "batch {} of {nb}: {:.3} s per domain, {} left, {} done, {} pruned, {} dropped, worst {:.4}, depth {}",
                stats.batches,
                per,
                queue.len(),
                stats.domains,
                stats.pruned,
                stats.dropped,
                worst,
                queue.peek().map(|d| d.0.depth).unwrap_or(0)
            );
        }
        if let Some(pb) = progress {
            let worst = queue.peek().map(|d| d.0.bound).unwrap_or(f64::INFINITY).min(dropped_worst);
            pb.set_message(format!("{} domains left, {} done, worst bound {:.4}", queue.len(), stats.domains, worst));
        }
    }
    if stats.dropped > 0 {
        return done(Verdict::Unknown { worst: dropped_worst }, stats);
    }
    done(Verdict::Proved, stats)
}
