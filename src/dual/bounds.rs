//! Layer-by-layer bounds on every activation input (paper Section 3.1, Algorithm 1 with exact terms).
//!
//! For each activation input `z` in topological order we need `l <= z(x') <= u` over the input set, using the
//! relaxations of all earlier activations (`a = d z + δ`, `δ ∈ [lo, hi]`, see [`crate::ops::Relaxation`]).
//! `z` is an affine function of the free quantities — the input `x'` and every earlier offset `δ` — so
//! `z = center + Σ_sources A_s · free_s`, and
//! `l, u = center ∓ Σ_sources dual_norm(A_s)`. These are exactly the bounds the dual network of the graph up to
//! `z` gives for `c = ±e_i` (Theorem 1), computed for all `i` at once, the way the reference implementation does:
//! instead of pushing an identity backwards through the transposed network we push each source's identity
//! **forward** through the (relaxed, bias-free) primal ops, which for exact bounds is the same matrix.
//!
//! Shapes: a source's value at node `n` is `[Bs, m, *shape_n]` where `m` counts its free directions (input
//! pixels, or one per crossing unit) and `Bs` is 1 while the value is the same for every example (the input
//! identity before the first activation) and `B` afterwards. Dense values are stored merged, `[Bs·m, *shape_n]`
//! (rows `b·m .. (b+1)·m` belong to example `b`): that is the batch layout the ops take, so the propagation,
//! the slope scaling and the median read and write it directly and no reshape node enters autograd (each one
//! would cost a zero fill and an add of its full size in the backward pass). A source carries its dual-norm
//! weights: `[B, m]` radii for ℓ1-type terms (ℓ∞/box input and activation offsets) or `[B]` ε for the ℓ2 input
//! ball.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use petgraph::graph::NodeIndex;

use super::input_set::InputSet;
use super::model::Model;
use super::rounding::{self, Magnitudes};
use crate::error::{Context, Result};
use crate::ir::NodeKind;
use crate::ops::{Family, Relaxation, Role};

/// How a source's matrix enters the bound.
enum Weight {
    /// `Σ_r |A_{b,r,j}| w_{b,r}`, `w: [B, m]`.
    L1(Tensor),
    /// `eps_b · sqrt(Σ_r A_{b,r,j}^2)`, `eps: [B]`.
    L2(Tensor),
    /// Grouped input directions ([`super::grouping`]): `Σ_g |A_{b,g,j}| radius_{b, owner(g, j)}`,
    /// `radius: [B, n_in]`.
    Grouped { radius: Tensor, grouping: std::sync::Arc<super::grouping::Grouping> },
    /// Random projection (paper Theorem 2): the rows are `k` random combinations already scaled by the
    /// weights, and the term is `scale · median_q |A_{b,q,j}|` — Cauchy rows estimate an ℓ1 norm (scale 1),
    /// Gaussian rows an ℓ2 norm (scale `1/Φ⁻¹(3/4)`).
    /// `cauchy`: the rows are Cauchy (ℓ1 terms), else Gaussian (ℓ2). With [`Options::high_prob`] the term is
    /// the corrected geometric mean of [`super::estimator`] instead (an upper bound with probability `1 − δ`).
    Median { scale: f64, cauchy: bool },
}

/// How the layer bounds are computed.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// `Some(k)`: estimate the dual-norm terms with `k` random projections (linear cost, for training), for the
    /// input when it has more than `k` entries and for an activation layer when it has more than `k` crossing
    /// units over the batch (the reference's rule). `None`: exact bounds.
    pub proj: Option<usize>,
    pub seed: u64,
    /// Exact bounds push every input direction separately instead of in groups of disjoint support
    /// ([`super::grouping`]; same result, slower). For tests and comparisons.
    pub ungrouped: bool,
    /// `Some(δ)`: projected terms use the geometric-mean estimator corrected so that each estimate bounds its
    /// norm with probability at least `1 − δ` (the paper's Appendix E.1; for certification with projections).
    /// `None`: the median estimator (training).
    pub high_prob: Option<f64>,
    /// Test hook: overwrite one element of one layer's bounds (see [`Poison`]).
    #[doc(hidden)]
    pub poison: Option<Poison>,
    /// The relaxation family ([`Family`]): `wk` (default, the paper's), `crown` (its own lower slopes, layer
    /// bounds intersected with the interval bounds) or `ibp` (interval bounds and constant relaxations).
    pub family: Family,
    /// `alpha`: gradient steps on the lower slopes (0 gives `crown`'s margins, or better) and their Adam step.
    pub alpha_iters: usize,
    pub alpha_lr: f64,
    /// `crown`/`alpha`: bound every layer (not only the margins) with the family's own lower lines, by two
    /// backward passes of the dual network per layer (CROWN proper). Tighter than the default single-slope
    /// layer bounds, at the cost of the backward passes (cheap for fully connected networks; `verify` uses it).
    pub crown_layers: bool,
    /// Stop with [`crate::error::Error::Deadline`] once this instant has passed (checked before every node's
    /// bounds), so that a caller with a time limit keeps it on deep networks whose single bound takes long.
    pub deadline: Option<std::time::Instant>,
    /// `Some(dt)`: the margins also hold for an inference of the network in `dt` ([`super::deployed`]): the
    /// forward rounding error of that inference is taken off every bound. `None`: real arithmetic only.
    pub deployed: Option<DType>,
}

impl Options {
    /// `Err(Deadline)` once the deadline has passed.
    pub fn check_deadline(&self) -> Result<()> {
        match self.deadline {
            Some(d) if std::time::Instant::now() >= d => Err(crate::error::Error::Deadline),
            _ => Ok(()),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            proj: None,
            seed: 0,
            ungrouped: false,
            high_prob: None,
            poison: None,
            family: Family::Wk,
            alpha_iters: DEFAULT_ALPHA_ITERS,
            alpha_lr: DEFAULT_ALPHA_LR,
            crown_layers: false,
            deadline: None,
            deployed: None,
        }
    }
}

/// Default gradient steps of the `alpha` family.
pub const DEFAULT_ALPHA_ITERS: usize = 20;
/// Default Adam step of the `alpha` family (slopes live in [0, 1]).
pub const DEFAULT_ALPHA_LR: f64 = 0.1;

/// Test hook: after the bounds of the `layer`-th activation input (in topological order) are computed, element
/// `element` (flat over `[B, n]`, taken modulo its size) of the lower (or `upper`) bound is set to `value`. The
/// property tests inject NaN and ±∞ this way and check that no certificate comes out.
#[derive(Debug, Clone, Copy)]
pub struct Poison {
    pub layer: usize,
    pub element: usize,
    pub upper: bool,
    pub value: f64,
}

impl Poison {
    fn apply(&self, t: &Tensor) -> candle_core::Result<Tensor> {
        let mut v: Vec<f64> = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        if !v.is_empty() {
            let i = self.element % v.len();
            v[i] = self.value;
        }
        Tensor::from_vec(v, t.shape(), t.device())?.to_dtype(t.dtype())
    }
}

/// Elementwise `max(a, b)` that keeps a non-finite entry non-finite (NaN): a plain maximum returns the other
/// operand when one is NaN, which would hide it from the finiteness check. `x − x` is 0 for finite `x` and NaN
/// otherwise.
pub fn strict_max(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    a.maximum(b)? + ((a - a)? + (b - b)?)?
}

/// Elementwise `min(a, b)`, non-finite entries kept as NaN (see [`strict_max`]).
pub fn strict_min(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    a.minimum(b)? + ((a - a)? + (b - b)?)?
}

/// Per example, whether every entry of `l` and `u` (`[B, *shape]`) is finite: the row sums of `u − l` are
/// finite exactly when every entry is (or, conservatively, not when a sum overflows).
fn rows_finite(l: &Tensor, u: &Tensor, b: usize) -> candle_core::Result<Vec<bool>> {
    let s: Vec<f64> = (u - l)?.reshape((b, ()))?.sum(1)?.to_dtype(DType::F64)?.to_vec1()?;
    Ok(s.iter().map(|v| v.is_finite()).collect())
}

/// `1 / Φ⁻¹(3/4)`: median of `|N(0, σ²)|` is `0.6745 σ`.
const GAUSS_MEDIAN_SCALE: f64 = 1.482_602_218_505_602;

/// `[B·k, *shape]` random projections (merged layout; `shape = [B, k, *shape]` gives the sizes): standard Cauchy
/// ([`cauchy_draw`]) or standard normal entries, zero where `keep[b, j]` is false (`keep: [B, n]`, `None` =
/// everywhere). Each example draws from its own generator, seeded from `rng`, so the result depends only on the
/// seed and is generated in parallel, directly in the compute dtype.
fn random_tensor(
    shape: &[usize],
    cauchy: bool,
    keep: Option<&[bool]>,
    rng: &mut rand::rngs::StdRng,
    like: &Tensor,
) -> candle_core::Result<Tensor> {
    if !like.device().is_cpu() {
        // The device draws from its own generator; `keep` only zeroes entries the caller multiplies by 0.
        let mut merged = vec![shape[0] * shape[1]];
        merged.extend_from_slice(&shape[2..]);
        return super::gpu::random_tensor(&merged, cauchy, like);
    }
    use rand::{Rng, SeedableRng};
    use rayon::prelude::*;
    let (b, k) = (shape[0], shape[1]);
    let n: usize = shape[2..].iter().product();
    let seeds: Vec<u64> = (0..b).map(|_| rng.random()).collect();
    fn fill<T: crate::kernels::Float + Default>(
        b: usize,
        k: usize,
        n: usize,
        seeds: &[u64],
        cauchy: bool,
        keep: Option<&[bool]>,
        conv: fn(f64) -> T,
    ) -> Vec<T> {
        // Every element is written: the chunks cover `b · k · n`, each row `n` elements.
        crate::kernels::output_vec(b * k * n, |v| {
            v.par_chunks_mut((k * n).max(1)).enumerate().for_each(|(e, out)| {
                let mut r = rand::rngs::SmallRng::seed_from_u64(seeds[e]);
                let keep = keep.map(|m| &m[e * n..][..n]);
                for row in out.chunks_mut(n.max(1)) {
                    for (j, x) in row.iter_mut().enumerate() {
                        x.write(match keep.map(|m| m[j]).unwrap_or(true) {
                            true if cauchy => conv(cauchy_draw(&mut r)),
                            true => conv(r.sample::<f64, _>(rand_distr::StandardNormal)),
                            false => T::default(),
                        });
                    }
                }
            })
        })
    }
    let mut merged = vec![b * k];
    merged.extend_from_slice(&shape[2..]);
    match like.dtype() {
        DType::F64 => Tensor::from_vec(fill(b, k, n, &seeds, cauchy, keep, |x| x), merged, like.device()),
        dt => Tensor::from_vec(fill(b, k, n, &seeds, cauchy, keep, |x| x as f32), merged, like.device())?.to_dtype(dt),
    }
}

/// A standard Cauchy draw as the ratio `u / v` of a point uniform in the unit disk (its angle is uniform, and
/// the cotangent of a uniform angle is Cauchy): two 32-bit uniforms from one `u64`, accepted with probability
/// π/4 — several times cheaper than `tan(π(U − ½))`.
fn cauchy_draw(r: &mut impl rand::Rng) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << 31) as f64;
    loop {
        let bits = r.next_u64();
        let u = (bits as u32 as i32) as f64 * SCALE;
        let v = ((bits >> 32) as u32 as i32) as f64 * SCALE;
        if v != 0.0 && u * u + v * v <= 1.0 {
            return u / v;
        }
    }
}

/// Median over dim 1 of `|a|`, `a: [B, k, n] -> [B, n]` (the lower middle for even `k`, like `torch.median`);
/// differentiable through the selected entries.
pub fn median_abs(a: &Tensor) -> candle_core::Result<Tensor> {
    if a.device().is_cpu() && matches!(a.dtype(), DType::F32 | DType::F64) {
        return crate::kernels::median::median_abs(a);
    }
    // Other devices and dtypes: a sort on the tensor's own device.
    super::gpu::median_abs(a)
}

/// [`median_abs`] of a merged value `[B·k, *shape]` → `[B, n]`.
fn median_abs_merged(a: &Tensor, b: usize) -> candle_core::Result<Tensor> {
    if a.device().is_cpu() && matches!(a.dtype(), DType::F32 | DType::F64) {
        return crate::kernels::median::median_abs_merged(a, b);
    }
    let n = a.elem_count() / a.dims()[0].max(1);
    super::gpu::median_abs(&a.reshape((b, a.dims()[0] / b.max(1), n))?)
}

/// A source's value at one node.
#[derive(Clone)]
enum Val {
    /// `[bs·m, *shape]`, merged (see the module doc).
    Dense { t: Tensor, bs: usize, m: usize },
    /// Rows that are unit vectors `e_{idx[b*m + r]}` of the node's flattened shape (an activation's offsets at
    /// their injection point). Kept implicit: the next affine op reads the rows of its own matrix instead of
    /// being applied to `B*m` one-hot tensors.
    OneHot { idx: Tensor, host: std::sync::Arc<Vec<u32>>, b: usize, m: usize },
    /// Rows `mat[idx[b*m + r]]` of an op's matrix `[n_in, n_out]` (one-hot rows after the op), kept implicit
    /// until something needs them dense: a bound reads them with the fused
    /// [`crate::kernels::l1::gathered_abs_rows`] without building `[B, m, n_out]`.
    Rows { mat: Tensor, idx: Tensor, host: std::sync::Arc<Vec<u32>>, b: usize, m: usize },
}

struct Source {
    vals: HashMap<NodeIndex, Val>,
    weight: Weight,
}

/// Dense merged form `([bs·m, *shape], bs, m)` of a value at a node of `shape`.
fn dense(v: &Val, shape: &[usize], like: &Tensor) -> candle_core::Result<(Tensor, usize, usize)> {
    match v {
        Val::Dense { t, bs, m } => Ok((t.clone(), *bs, *m)),
        Val::OneHot { idx, b, m, .. } => {
            let n: usize = shape.iter().product();
            let eye = Tensor::eye(n, like.dtype(), like.device())?;
            let mut s = vec![*b * *m];
            s.extend_from_slice(shape);
            Ok((eye.index_select(idx, 0)?.reshape(s)?, *b, *m))
        }
        Val::Rows { mat, idx, b, m, .. } => {
            let mut s = vec![*b * *m];
            s.extend_from_slice(shape);
            Ok((mat.index_select(idx, 0)?.reshape(s)?, *b, *m))
        }
    }
}

/// `[bs·m, *shape]` → `[bs, m, *shape]` (a view).
fn split_lead(t: &Tensor, bs: usize, m: usize) -> candle_core::Result<Tensor> {
    let mut shape = vec![bs, m];
    shape.extend_from_slice(&t.dims()[1..]);
    t.reshape(shape)
}

/// `[bs, m, *shape]` → `[bs·m, *shape]` (a view of a contiguous tensor).
fn merge_lead(t: &Tensor) -> candle_core::Result<Tensor> {
    let d = t.dims();
    let mut shape = vec![d[0] * d[1]];
    shape.extend_from_slice(&d[2..]);
    t.reshape(shape)
}

/// Largest op matrix (`n_in * n_out` entries, 1 GB in f32) built for the one-hot shortcut; beyond it the one-hot
/// rows are pushed through the op densely.
const MAX_MATRIX: usize = 1 << 28;

/// Rows of the identity pushed through the op per chunk while building its matrix (bounds the transient input).
const MATRIX_CHUNK: usize = 512;

/// The matrix `[n_in, n_out]` of a single-input affine op's linear part (row `i` = the op applied to `e_i`).
fn op_matrix(model: &Model, i: NodeIndex) -> Result<Option<Tensor>> {
    let g = &model.graph;
    let node = g.node(i);
    let Some(op) = node.kind.op() else { return Ok(None) };
    let in_shape = &g.node(node.inputs[0]).shape;
    let (n_in, n_out) = (in_shape.iter().product::<usize>(), node.shape.iter().product::<usize>());
    if n_in * n_out > MAX_MATRIX {
        return Ok(None);
    }
    if let Some(cache) = &model.matrix_cache {
        if let Some(t) = cache.lock().ok().and_then(|c| c.get(&i.index()).cloned()) {
            return Ok(Some(t));
        }
    }
    let ctx_err = || format!("matrix of `{}`", node.name);
    let mut parts = Vec::new();
    for start in (0..n_in).step_by(MATRIX_CHUNK) {
        let rows = MATRIX_CHUNK.min(n_in - start);
        let mut s = vec![rows];
        s.extend_from_slice(in_shape);
        // Rows start..start+rows of the identity, without building the whole n_in × n_in identity.
        let mut one_hot = vec![0f32; rows * n_in];
        for r in 0..rows {
            one_hot[r * n_in + start + r] = 1.0;
        }
        let e = Tensor::from_vec(one_hot, s, &model.device).and_then(|e| e.to_dtype(model.dtype)).context(ctx_err)?;
        parts.push(op.linear(&model.ctx(i), &[e])?.reshape((rows, n_out)).context(ctx_err)?);
    }
    let mat = Tensor::cat(&parts, 0).context(ctx_err)?;
    if let Some(cache) = &model.matrix_cache {
        if let Ok(mut c) = cache.lock() {
            c.insert(i.index(), mat.clone());
        }
    }
    Ok(Some(mat))
}

/// Bounds of every activation input and the relaxation of every activation.
#[derive(Clone)]
pub struct Bounds {
    /// `(activation input node, lower [B, *shape], upper [B, *shape])`, in topological order.
    pub layers: Vec<(NodeIndex, Tensor, Tensor)>,
    /// Relaxation of each activation node (keyed by the activation node itself).
    pub relax: HashMap<NodeIndex, Relaxation>,
    /// `[B]`: whether every layer bound of the example is finite. An example with a non-finite bound is never
    /// certified (a NaN bound would otherwise read as an inactive ReLU, and the margin downstream would look
    /// finite).
    pub finite: Vec<bool>,
    /// Sound magnitudes of every node, for the rounding charges of the dual network ([`super::rounding`]);
    /// `None` only for training losses.
    pub mags: Option<Magnitudes>,
}

impl Bounds {
    /// Record the bounds `l, u` of activation input `z` (after the test hook `poison`, if it aims at this
    /// layer) and fold their per-example finiteness into [`Bounds::finite`].
    fn push_layer(
        &mut self,
        z: NodeIndex,
        l: Tensor,
        u: Tensor,
        poison: Option<Poison>,
        b: usize,
    ) -> candle_core::Result<()> {
        let (l, u) = match poison {
            Some(p) if p.layer == self.layers.len() => match p.upper {
                false => (p.apply(&l)?, u),
                true => (l, p.apply(&u)?),
            },
            _ => (l, u),
        };
        for (f, ok) in self.finite.iter_mut().zip(rows_finite(&l, &u, b)?) {
            *f &= ok;
        }
        self.layers.push((z, l, u));
        Ok(())
    }

    pub fn of(&self, z: NodeIndex) -> Option<(&Tensor, &Tensor)> {
        self.layers.iter().find(|(n, _, _)| *n == z).map(|(_, l, u)| (l, u))
    }
}

/// Compute all layer bounds for `set` (exact: every source is pushed forward in full).
pub fn compute(model: &Model, set: &InputSet) -> Result<Bounds> {
    compute_with(model, set, &Options::default())
}

/// Layer bounds, exact or with random projections (`opts.proj`).
pub fn compute_with(model: &Model, set: &InputSet, opts: &Options) -> Result<Bounds> {
    compute_given(model, set, opts, &Given::default())
}

/// Layer bounds known beforehand, per example (for branch and bound, [`crate::run::search`]): bounds that hold
/// on the example's part of the input set (its parent domain's bounds, and the split constraints `z ≥ 0` or
/// `z ≤ 0` as bounds `[0, ∞)`, `(−∞, 0]`, written with a large finite sentinel).
#[derive(Clone, Default)]
pub struct Given {
    /// `(lower, upper)` `[B, *shape]` of an activation input: every computed bound is intersected with it.
    pub layers: HashMap<NodeIndex, (Tensor, Tensor)>,
    /// Activation inputs whose given bounds are taken as they are, without computing them (no split before them
    /// changed them since they were computed).
    pub keep: std::collections::HashSet<NodeIndex>,
    /// Split constraints per activation input ([`Splits`]).
    pub splits: HashMap<NodeIndex, Splits>,
}

/// The split constraints on one activation input, per example and unit: `z ≥ lower` and `z ≤ upper` (a large
/// finite sentinel where there is none). They hold on the example's set by its definition, so the activation is
/// relaxed on the clamped interval `[max(l, lower), min(u, upper)]`; the layer bounds themselves are kept as
/// computed (the unclamped ones tell a split unit's lower line, below). `relu_active` (a 0/1 mask, ReLU only)
/// marks the units split active (`z ≥ 0`): their relaxation is `α z ≤ a ≤ z` — exact on the set, and with
/// CROWN's lower slope `α = [u ≥ −l]` on the unclamped bounds, where the identity alone would extend the line
/// `a = z` below 0 over the parts of the box the split excludes.
#[derive(Clone)]
pub struct Splits {
    pub lower: Tensor,
    pub upper: Tensor,
    pub relu_active: Option<Tensor>,
}

/// [`compute_with`], with layer bounds known beforehand ([`Given`]). Each layer's bounds are the intersection of
/// the computed ones and the given ones: both hold on the example's set, so their intersection does. A layer
/// where the intersection is empty (`l > u` somewhere) means the example's set is empty.
pub fn compute_given(model: &Model, set: &InputSet, opts: &Options, given: &Given) -> Result<Bounds> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    let g = &model.graph;
    let x = set.center();
    let b = x.dims()[0];
    let n_nodes = g.dag.node_count();
    // Last consumer position of every node, to free source values as soon as possible.
    let mut last_use = vec![0usize; n_nodes];
    for i in g.order() {
        for (m, _) in g.consumers(i) {
            last_use[i.index()] = last_use[i.index()].max(m.index());
        }
    }
    let mut centers: Vec<Option<Tensor>> = vec![None; n_nodes];
    let mut sources: Vec<Source> = Vec::new();
    let mut out = Bounds { layers: Vec::new(), relax: HashMap::new(), finite: vec![true; b], mags: None };
    let mut mags = Magnitudes::new(n_nodes);
    // Forward rounding error `E` and magnitude `M` of each node's representation (item 5 of
    // [`super::rounding`]).
    let mut fe: Vec<Option<(Tensor, Tensor)>> = vec![None; n_nodes];
    // With a deployed inference ([`super::deployed`]): the error `E` of its value at every node.
    let dep_u = opts.deployed.map(crate::float::unit);
    let mut derr: Vec<Option<Tensor>> = vec![None; n_nodes];
    let deploy = |i: NodeIndex,
                  derr: &mut Vec<Option<Tensor>>,
                  mags: &mut Magnitudes,
                  layer: Option<(&Tensor, &Tensor)>|
     -> Result<()> {
        if let Some(u) = dep_u {
            // Splits are constraints on the real network's values, which the inference's may cross.
            if !given.splits.is_empty() {
                return Err(crate::error::Error::Usage(
                    "internal: a deployed inference's certificate with branch-and-bound splits".into(),
                ));
            }
            let (e, own) = super::deployed::node_error(model, i, derr, mags, u, layer)?;
            derr[i.index()] = Some(e);
            mags.own[i.index()] = own;
        }
        Ok(())
    };
    let intervals = match opts.family {
        Family::Wk => None,
        Family::Crown | Family::Alpha | Family::Ibp => Some(super::ibp::interval_bounds(model, set)?),
    };
    if let (Family::Ibp, Some(iv)) = (opts.family, &intervals) {
        return interval_family(model, set, iv, opts, given, out, b);
    }
    // Exact bounds: a layer much narrower than the free directions that would reach it (the input and the dense
    // offsets of earlier activations) gets its bounds from the dual network run backwards from it (n_z rows)
    // instead; sources are propagated only up to the last layer that needs them.
    let backward: Vec<NodeIndex> = match opts.proj {
        Some(_) => Vec::new(),
        None => backward_layers(model),
    };
    // With CROWN layer bounds on every layer the forward sources would serve no layer: none are propagated.
    let crown_all = opts.crown_layers
        && matches!(opts.family, Family::Crown | Family::Alpha)
        && g.activation_inputs().into_iter().all(|z| crown_bytes(model, z, b) <= CROWN_LAYER_BYTES);
    let last_forward = g
        .activation_inputs()
        .into_iter()
        .filter(|z| !backward.contains(z) && !crown_all && !given.keep.contains(z))
        .map(|z| z.index())
        .max();
    let propagate = |i: NodeIndex| last_forward.map(|l| i.index() <= l).unwrap_or(false);
    let grouping = match opts.proj {
        Some(_) => None,
        None if opts.ungrouped || last_forward.is_none() => None,
        None => {
            let targets: Vec<NodeIndex> = g.activation_inputs().into_iter().filter(|z| !backward.contains(z)).collect();
            match model.grouping.get() {
                Some(p) => p.clone(),
                None => {
                    let p = super::grouping::plan(model, &targets)?.map(std::sync::Arc::new);
                    let _ = model.grouping.set(p.clone());
                    p
                }
            }
        }
    };

    for i in g.order() {
        opts.check_deadline()?;
        let node = g.node(i);
        let ctx_err = || format!("computing bounds at `{}`", node.name);
        match node.kind {
            NodeKind::Input => {
                centers[i.index()] = Some(x.clone());
                mags.fill(model, set, i, |_| None)?;
                deploy(i, &mut derr, &mut mags, None)?;
                let m_in =
                    mags.value[i.index()].clone().ok_or_else(|| crate::error::Error::Usage("internal".into()))?;
                fe[i.index()] = Some((m_in.zeros_like().context(ctx_err)?, m_in));
                let n_in: usize = node.shape.iter().product();
                let mut vals = HashMap::new();
                let weight = match opts.proj {
                    Some(k) if n_in > k => {
                        // k random combinations of the input directions, scaled by the per-pixel radius (ℓ∞/box,
                        // Cauchy) or by ε (ℓ2, Gaussian).
                        let mut shape = vec![b, k];
                        shape.extend_from_slice(&node.shape);
                        let (cauchy, scale) = match set {
                            InputSet::Box { .. } => (true, 1.0),
                            InputSet::L2 { .. } => (false, GAUSS_MEDIAN_SCALE),
                        };
                        let r = random_tensor(&shape, cauchy, None, &mut rng, x).context(ctx_err)?;
                        let r = match set {
                            InputSet::Box { radius, .. } => crate::kernels::scale::scale_rows_merged(&r, radius),
                            InputSet::L2 { eps, .. } => {
                                let mut es = vec![b, 1];
                                es.extend(std::iter::repeat_n(1, node.shape.len()));
                                split_lead(&r, b, k)
                                    .and_then(|r| r.broadcast_mul(&eps.reshape(es)?))
                                    .and_then(|r| merge_lead(&r))
                            }
                        }
                        .context(ctx_err)?;
                        vals.insert(i, Val::Dense { t: r, bs: b, m: k });
                        Weight::Median { scale, cauchy }
                    }
                    None if grouping.is_some() => {
                        let Some(grp) = grouping.clone() else { unreachable!() };
                        let rows = grp.rows(&node.shape, x).and_then(|r| merge_lead(&r)).context(ctx_err)?;
                        vals.insert(i, Val::Dense { t: rows, bs: 1, m: grp.groups });
                        match set {
                            InputSet::Box { radius, .. } => {
                                Weight::Grouped { radius: radius.reshape((b, n_in)).context(ctx_err)?, grouping: grp }
                            }
                            InputSet::L2 { eps, .. } => Weight::L2(eps.clone()),
                        }
                    }
                    _ => {
                        let mut eye_shape = vec![n_in];
                        eye_shape.extend_from_slice(&node.shape);
                        let eye = Tensor::eye(n_in, x.dtype(), x.device())
                            .and_then(|e| e.reshape(eye_shape))
                            .context(ctx_err)?;
                        vals.insert(i, Val::Dense { t: eye, bs: 1, m: n_in });
                        match set {
                            InputSet::Box { radius, .. } => Weight::L1(radius.reshape((b, n_in)).context(ctx_err)?),
                            InputSet::L2 { eps, .. } => Weight::L2(eps.clone()),
                        }
                    }
                };
                sources.push(Source { vals, weight });
            }
            NodeKind::Op(op) => {
                let ctx = model.ctx(i);
                match op.role() {
                    Role::Affine => {
                        let ins: Vec<Tensor> = node.inputs.iter().filter_map(|j| centers[j.index()].clone()).collect();
                        let mut c = op.linear(&ctx, &ins)?;
                        if let Some(bias) = op.bias(&ctx)? {
                            c = c.broadcast_add(&bias).context(ctx_err)?;
                        }
                        centers[i.index()] = Some(c);
                        // The forward error is needed up to the last layer bounded from the forward
                        // representation; its products share one `|A|` call with the magnitudes'.
                        let dep_in = dep_u.map(|_| derr.as_slice());
                        let (e, prod, ae_dep) = forward_error(model, i, &fe, &mags, b, propagate(i), dep_in)?;
                        if let (Some(u), Some(ae)) = (dep_u, &ae_dep) {
                            if !given.splits.is_empty() {
                                return Err(crate::error::Error::Usage(
                                    "internal: a deployed inference's certificate with branch-and-bound splits".into(),
                                ));
                            }
                            let (e, own) = super::deployed::affine_node(model, i, ae, &prod, u)?;
                            derr[i.index()] = Some(e);
                            mags.own[i.index()] = own;
                        }
                        mags.fill_affine(model, i, prod, |_| None)?;
                        fe[i.index()] = e;
                        for s in sources.iter_mut().filter(|_| propagate(i)) {
                            let present: Vec<(NodeIndex, Val)> =
                                node.inputs.iter().filter_map(|j| s.vals.get(j).map(|v| (*j, v.clone()))).collect();
                            if present.is_empty() {
                                continue;
                            }
                            let v = if node.inputs.len() > 1 {
                                // Several operands (a sum, a difference): an operand the source does not reach is
                                // zero there ([`OpExec::linear_partial`]). Operands shared by the batch (bs = 1) are
                                // broadcast to the others' `bs` (all have the source's `m`).
                                let ds: Vec<(Tensor, usize, usize)> = present
                                    .iter()
                                    .map(|(j, v)| dense(v, &g.node(*j).shape, x))
                                    .collect::<candle_core::Result<_>>()
                                    .context(ctx_err)?;
                                let bs = ds.iter().map(|d| d.1).max().unwrap_or(1);
                                let m = ds[0].2;
                                let ts: Vec<Tensor> = ds
                                    .into_iter()
                                    .map(|(t, tb, tm)| match tb == bs {
                                        true => Ok(t),
                                        false => {
                                            let mut full = vec![bs, tm];
                                            full.extend_from_slice(&t.dims()[1..]);
                                            split_lead(&t, tb, tm)
                                                .and_then(|t| t.broadcast_as(full))
                                                .and_then(|t| t.contiguous())
                                                .and_then(|t| merge_lead(&t))
                                        }
                                    })
                                    .collect::<candle_core::Result<Vec<Tensor>>>()
                                    .context(ctx_err)?;
                                let mut present_ts = ts.into_iter();
                                let ops: Vec<Option<Tensor>> = node
                                    .inputs
                                    .iter()
                                    .map(|j| s.vals.contains_key(j).then(|| present_ts.next()).flatten())
                                    .collect();
                                Val::Dense { t: op.linear_partial(&ctx, &ops)?, bs, m }
                            } else {
                                let (j, v) = &present[0];
                                let mat = match v {
                                    Val::OneHot { .. } => op_matrix(model, i)?,
                                    Val::Dense { .. } | Val::Rows { .. } => None,
                                };
                                match (v, mat) {
                                    (Val::OneHot { idx, host, b, m }, Some(mat)) => {
                                        s.vals.insert(
                                            i,
                                            Val::Rows { mat, idx: idx.clone(), host: host.clone(), b: *b, m: *m },
                                        );
                                        continue;
                                    }
                                    _ => {
                                        let (t, bs, m) = dense(v, &g.node(*j).shape, x).context(ctx_err)?;
                                        Val::Dense { t: op.linear(&ctx, &[t])?, bs, m }
                                    }
                                }
                            };
                            s.vals.insert(i, v);
                        }
                    }
                    Role::Activation => {
                        let z = node.inputs[0];
                        let kept = match (given.keep.contains(&z), given.layers.get(&z)) {
                            (true, Some((l, u))) => Some((l.clone(), u.clone())),
                            _ => None,
                        };
                        if let (None, Some((l, u))) = (out.of(z), kept) {
                            out.push_layer(z, l, u, opts.poison, b).context(ctx_err)?;
                        }
                        if out.of(z).is_none() {
                            // The backward pass holds `2n` adjoints of every node's size per example: within
                            // [`CROWN_LAYER_BYTES`], else the layer keeps the default bounds.
                            let crown = opts.crown_layers
                                && matches!(opts.family, Family::Crown | Family::Alpha)
                                && crown_bytes(model, z, b) <= CROWN_LAYER_BYTES;
                            let (l, u) = if crown {
                                // A ReLU unit stable on the parent stays stable: its rows are skipped.
                                let relu = node.kind.op().is_some_and(|op| op.name() == "relu");
                                let parent = given.layers.get(&z).filter(|_| relu).map(|(l, u)| (l, u));
                                crown_backward_bounds(model, set, &out.relax, &mags, z, b, parent, opts.deadline)?
                            } else if backward.contains(&z) {
                                backward_bounds(model, set, &out.relax, &mags, z, b)?
                            } else {
                                let (l, u, m) = layer_bounds(model, &centers, &sources, z, b, opts.high_prob)?;
                                // The representation's error and the dual-norm sum's rounding.
                                let (e, mz) = fe[z.index()].as_ref().ok_or_else(|| {
                                    crate::error::Error::Usage("internal: forward error missing".into())
                                })?;
                                let go = || -> candle_core::Result<(Tensor, Tensor)> {
                                    let mut w = (e + (mz * rounding::charge_gamma(m + 2, x.dtype()))?)?.detach();
                                    // The deployed inference's value lies within its error of the real one.
                                    if let Some(d) = &derr[z.index()] {
                                        w = (w + d)?;
                                    }
                                    rounding::widen_interval(&(l - &w)?, &(u + &w)?)
                                };
                                go().context(ctx_err)?
                            };
                            // Every family but `wk` (which must reproduce the paper) keeps the tighter of its own
                            // and the interval bound on each side: both hold, so their intersection does.
                            let (l, u) = match intervals.as_ref().and_then(|iv| iv[z.index()].as_ref()) {
                                Some((li, ui)) => {
                                    // Interval bounds are the real network's: widened by the deployed error.
                                    let (li, ui) = match &derr[z.index()] {
                                        Some(d) => rounding::widen_interval(
                                            &(li - d).context(ctx_err)?,
                                            &(ui + d).context(ctx_err)?,
                                        )
                                        .context(ctx_err)?,
                                        None => (li.clone(), ui.clone()),
                                    };
                                    (strict_max(&l, &li).context(ctx_err)?, strict_min(&u, &ui).context(ctx_err)?)
                                }
                                None => (l, u),
                            };
                            let (l, u) = match given.layers.get(&z) {
                                Some((gl, gu)) => {
                                    (strict_max(&l, gl).context(ctx_err)?, strict_min(&u, gu).context(ctx_err)?)
                                }
                                None => (l, u),
                            };
                            out.push_layer(z, l, u, opts.poison, b).context(ctx_err)?;
                        }
                        let (l, u) = match out.of(z) {
                            Some((l, u)) => (l.clone(), u.clone()),
                            None => return Err(crate::error::Error::Usage("internal: bounds missing".into())),
                        };
                        let (l0, u0) = (l.clone(), u.clone());
                        let (l, u) = match given.splits.get(&z) {
                            Some(sp) => (
                                strict_max(&l, &sp.lower).context(ctx_err)?,
                                strict_min(&u, &sp.upper).context(ctx_err)?,
                            ),
                            None => (l, u),
                        };
                        mags.cap(z, &l, &u).context(ctx_err)?;
                        mags.fill(model, set, i, |n| (n == z).then_some((&l, &u)))?;
                        deploy(i, &mut derr, &mut mags, Some((&l, &u)))?;
                        let mut r = rounding::relax_sound(model, i, &l, &u, opts.family)?;
                        if let Some(act) = given.splits.get(&z).and_then(|sp| sp.relu_active.as_ref()) {
                            if r.lines.is_none() {
                                r = split_active(r, act, &l0, &u0).context(ctx_err)?;
                            }
                        }
                        if propagate(i) {
                            fe[i.index()] = Some(activation_error(&r, &fe, z).context(ctx_err)?);
                        }
                        let cz = centers[z.index()].clone().unwrap_or_else(|| x.clone());
                        centers[i.index()] = Some((r.slope.mul(&cz).context(ctx_err)? + &r.mid).context(ctx_err)?);
                        // Dense values are [Bs·m, *shape]; the slopes [B, *shape] scale each example's rows.
                        for s in sources.iter_mut().filter(|_| propagate(i)) {
                            if let Some(v) = s.vals.get(&z) {
                                let (t, bs, m) = dense(v, &g.node(z).shape, x).context(ctx_err)?;
                                let nv = match bs == b {
                                    true => crate::kernels::scale::scale_rows_merged(&t, &r.slope),
                                    false => split_lead(&t, bs, m)
                                        .and_then(|t| t.broadcast_mul(&r.slope.unsqueeze(1)?))
                                        .and_then(|t| merge_lead(&t)),
                                }
                                .context(ctx_err)?;
                                s.vals.insert(i, Val::Dense { t: nv, bs: b, m });
                            }
                        }
                        let src = match opts.proj {
                            _ if !propagate(i) => None,
                            Some(k) => projected_offset_source(i, &r, b, &node.shape, k, &mut rng).context(ctx_err)?,
                            None => None,
                        };
                        let src = match src {
                            Some(s) => Some(s),
                            None if propagate(i) => offset_source(i, &r, b, &node.shape).context(ctx_err)?,
                            None => None,
                        };
                        if let Some(src) = src {
                            sources.push(src);
                        }
                        out.relax.insert(i, r);
                    }
                    Role::Unsupported => {
                        return Err(crate::error::Error::Usage(format!("`{}` has no dual rule", op.name())));
                    }
                }
            }
        }
        // Free values no later node reads.
        for s in sources.iter_mut() {
            s.vals.retain(|n, _| last_use[n.index()] > i.index());
        }
    }
    out.mags = Some(mags);
    Ok(out)
}

/// `(E, M)` of affine node `i` from its inputs' (where `with_error`): `M' = |A| M + |b|`,
/// `E' = |A| E + γ (|A| M + |b|) + bias error`, each inflated for its own rounding (item 5 of
/// [`super::rounding`]), and the product `|A| m_x` of the inputs' sound magnitudes ([`Magnitudes::fill_affine`]).
/// One `linear_abs` call carries all three (stacked on the batch axis).
fn forward_error(
    model: &Model,
    i: NodeIndex,
    fe: &[Option<(Tensor, Tensor)>],
    mags: &Magnitudes,
    b: usize,
    with_error: bool,
    derr: Option<&[Option<Tensor>]>,
) -> Result<(Option<(Tensor, Tensor)>, Tensor, Option<Tensor>)> {
    let node = model.graph.node(i);
    let Some(op) = node.kind.op() else { return Err(crate::error::Error::Usage("internal: not an op".into())) };
    let ctx = model.ctx(i);
    let ctx_err = || format!("rounding error at `{}`", node.name);
    let missing = || crate::error::Error::Usage("internal: no error or magnitude".into());
    let stacked: Vec<Tensor> = node
        .inputs
        .iter()
        .map(|j| {
            let mx = mags.value[j.index()].as_ref().ok_or_else(missing)?;
            let mut parts: Vec<&Tensor> = Vec::with_capacity(4);
            if with_error {
                let (e, m) = fe[j.index()].as_ref().ok_or_else(missing)?;
                parts.extend([e, m]);
            }
            parts.push(mx);
            if let Some(d) = derr {
                parts.push(d[j.index()].as_ref().ok_or_else(missing)?);
            }
            match parts.len() {
                1 => Ok(mx.clone()),
                _ => Tensor::cat(&parts, 0).context(ctx_err),
            }
        })
        .collect::<Result<_>>()?;
    let all = op.linear_abs(&ctx, &stacked)?;
    let part = |k: usize| all.narrow(0, k * b, b).context(ctx_err);
    let off = if with_error { 2 } else { 0 };
    let prod = if stacked_len(with_error, derr.is_some()) == 1 { all.clone() } else { part(off)? };
    let dep = match derr {
        Some(_) => Some(part(off + 1)?),
        None => None,
    };
    if !with_error {
        return Ok((None, prod, dep));
    }
    let (ae, mut am) = (part(0)?, part(1)?);
    if let Some(bias) = op.bias(&ctx)? {
        am = am.broadcast_add(&bias.abs().context(ctx_err)?).context(ctx_err)?;
    }
    let t = op.terms(&ctx) + 1;
    let mut e = (ae + (&am * rounding::charge_gamma(t, model.dtype)).context(ctx_err)?).context(ctx_err)?;
    if let Some(err) = op.bias_error(&ctx)? {
        e = e.broadcast_add(&err).context(ctx_err)?;
    }
    let (e, am) = (e.detach(), am.detach());
    let e = rounding::inflate(&e, 2).context(ctx_err)?;
    Ok((Some((e, rounding::inflate(&am, t).context(ctx_err)?)), prod, dep))
}

/// How many slices [`forward_error`] stacks per input.
fn stacked_len(with_error: bool, deployed: bool) -> usize {
    1 + 2 * usize::from(with_error) + usize::from(deployed)
}

/// `(E, M)` of an activation with relaxation `r` on input `z`: `M' = |d| M_z + |mid| + rad`,
/// `E' = |d| E_z + γ (|d| M_z + |mid|)`.
fn activation_error(
    r: &Relaxation,
    fe: &[Option<(Tensor, Tensor)>],
    z: NodeIndex,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (e, m) = fe[z.index()].as_ref().ok_or_else(|| candle_core::Error::Msg("internal: no error".into()))?;
    let d = r.slope.detach().abs()?;
    let dm = (d.mul(m)? + r.mid.detach().abs()?)?;
    let m2 = rounding::inflate(&(&dm + &r.rad.detach())?, 3)?;
    let e2 = rounding::inflate(&(d.mul(e)? + (dm * rounding::charge_gamma(3, e.dtype()))?)?, 2)?;
    Ok((e2, m2))
}

/// The `ibp` family: the interval bounds of every activation input (`iv`, from [`super::ibp`]) and the constant
/// relaxations on them; the test hook and the finiteness check apply as for the other families.
fn interval_family(
    model: &Model,
    set: &InputSet,
    iv: &[Option<(Tensor, Tensor)>],
    opts: &Options,
    given: &Given,
    mut out: Bounds,
    b: usize,
) -> Result<Bounds> {
    let g = &model.graph;
    for i in g.order() {
        let node = g.node(i);
        let NodeKind::Op(op) = node.kind else { continue };
        if op.role() != Role::Activation {
            continue;
        }
        let ctx_err = || format!("interval bounds at `{}`", node.name);
        let z = node.inputs[0];
        if out.of(z).is_none() {
            let (l, u) =
                iv[z.index()].clone().ok_or_else(|| crate::error::Error::Usage("internal: interval missing".into()))?;
            let (l, u) = match given.layers.get(&z) {
                Some((gl, gu)) => (strict_max(&l, gl).context(ctx_err)?, strict_min(&u, gu).context(ctx_err)?),
                None => (l, u),
            };
            out.push_layer(z, l, u, opts.poison, b).context(ctx_err)?;
        }
        let (l, u) = match out.of(z) {
            Some((l, u)) => (l.clone(), u.clone()),
            None => return Err(crate::error::Error::Usage("internal: bounds missing".into())),
        };
        let _ = op;
        let r = rounding::relax_sound(model, i, &l, &u, Family::Ibp)?;
        out.relax.insert(i, r);
    }
    out.mags = Some(Magnitudes::of_bounds(model, set, &out.layers)?);
    Ok(out)
}

/// The relaxation `r` of a ReLU layer with the units of mask `act` (1 = split active, `z ≥ 0`) relaxed as
/// `α z ≤ a ≤ z`, `α = [u ≥ −l]` on the unclamped bounds `l, u` (see [`Splits`]). Every piece is exact (slopes 0
/// and 1, no offset), so no rounding widening is needed.
fn split_active(r: Relaxation, act: &Tensor, l: &Tensor, u: &Tensor) -> candle_core::Result<Relaxation> {
    let keep = act.affine(-1.0, 1.0)?;
    let pick = |old: &Tensor, new: &Tensor| -> candle_core::Result<Tensor> { old.mul(&keep)? + new.mul(act)? };
    let one = act.ones_like()?;
    let zero = act.zeros_like()?;
    let alpha = u.ge(&l.neg()?)?.to_dtype(act.dtype())?;
    let lower = match &r.lower {
        Some(al) if al.rank() == act.rank() => pick(al, &alpha)?,
        _ => pick(&r.slope, &alpha)?,
    };
    Ok(Relaxation {
        slope: pick(&r.slope, &one)?,
        mid: pick(&r.mid, &zero)?,
        rad: pick(&r.rad, &zero)?,
        lower: Some(lower),
        lines: None,
        constant: false,
    })
}

/// The most memory the CROWN bounds of one layer may take ([`Options::crown_layers`]).
pub const CROWN_LAYER_BYTES: f64 = 512e6;

/// The most adjoint bytes one backward pass of [`crown_backward_bounds`] holds: its rows are split into chunks
/// of this size, with the deadline checked between them.
pub const CROWN_CHUNK_BYTES: f64 = 64e6;

/// Bytes of the backward pass for the CROWN bounds of activation input `z` on `b` examples: `2n` adjoints of
/// every node's size per example.
pub fn crown_bytes(model: &Model, z: NodeIndex, b: usize) -> f64 {
    let g = &model.graph;
    let n_z: usize = g.node(z).shape.iter().product();
    let widest = g.order().map(|j| g.node(j).shape.iter().product::<usize>()).max().unwrap_or(0);
    (b * 2 * n_z * widest * model.dtype.size_in_bytes()) as f64
}

/// Activation inputs whose exact bounds come from the dual network run backwards from them: those much
/// narrower than the free directions that would reach them going forward (the input and the dense offsets of
/// earlier activations; the offsets of the activation just before `z` reach it through one op, read as matrix
/// rows, and do not count).
pub fn backward_layers(model: &Model) -> Vec<NodeIndex> {
    let g = &model.graph;
    let n_in: usize = g.input_shape().iter().product();
    let acts = activation_units(g);
    g.activation_inputs()
        .into_iter()
        .filter(|z| 4 * g.node(*z).shape.iter().product::<usize>() < n_in + dense_offsets(&acts, *z))
        .collect()
}

/// `(node index, units)` of every activation, in topological order.
fn activation_units(g: &crate::ir::Graph) -> Vec<(usize, usize)> {
    g.order()
        .filter(|&i| g.node(i).kind.op().map(|op| op.role() == Role::Activation).unwrap_or(false))
        .map(|i| (i.index(), g.node(i).shape.iter().product()))
        .collect()
}

fn dense_offsets(acts: &[(usize, usize)], z: NodeIndex) -> usize {
    let before: Vec<usize> = acts.iter().filter(|(a, _)| *a < z.index()).map(|(_, n)| *n).collect();
    before.iter().rev().skip(1).sum()
}

/// A rough estimate of the memory projected bounds with `k` projections need per example while training
/// (bytes): every source (the input and each activation's offsets) keeps a `[k, n]` value at every node it
/// reaches, and autograd keeps them, with their gradients, until the backward pass.
pub fn projected_bytes_per_example(model: &Model, k: usize) -> f64 {
    let g = &model.graph;
    let elem = model.dtype.size_in_bytes() as f64;
    let sources = 1.0 + g.activation_inputs().len() as f64;
    let cells: f64 = g.order().map(|i| g.node(i).shape.iter().product::<usize>() as f64).sum();
    2.0 * sources * k as f64 * cells * elem
}

/// A rough upper estimate of the memory exact bounds need per example (bytes): the largest `[directions, n]`
/// value any route builds (forward: the input or its groups plus dense offsets, times the layer's units; backward:
/// the layer's units times the widest node before it), times three live copies (value, scaled, absolute).
pub fn exact_bytes_per_example(model: &Model) -> usize {
    let g = &model.graph;
    let n_in: usize = g.input_shape().iter().product();
    let elem = model.dtype.size_in_bytes();
    let acts = activation_units(g);
    let groups = model.grouping.get().and_then(|p| p.as_ref().map(|p| p.groups)).unwrap_or(n_in);
    let back = backward_layers(model);
    let widest_before = |z: NodeIndex| -> usize {
        g.order()
            .filter(|i| i.index() <= z.index())
            .map(|i| g.node(i).shape.iter().product::<usize>())
            .max()
            .unwrap_or(1)
    };
    g.activation_inputs()
        .into_iter()
        .map(|z| {
            let n_z: usize = g.node(z).shape.iter().product();
            let cells =
                if back.contains(&z) { n_z * widest_before(z) } else { (groups + dense_offsets(&acts, z)) * n_z };
            3 * cells * elem
        })
        .max()
        .unwrap_or(0)
}

/// `center ∓ Σ_s dual_norm(A_s)` at node `z`, each `[B, *shape_z]`.
fn layer_bounds(
    model: &Model,
    centers: &[Option<Tensor>],
    sources: &[Source],
    z: NodeIndex,
    b: usize,
    high_prob: Option<f64>,
) -> Result<(Tensor, Tensor, usize)> {
    let node = model.graph.node(z);
    let ctx_err = || format!("bounds of `{}`", node.name);
    let n: usize = node.shape.iter().product();
    // Terms of the dual-norm sum (its rounding is charged by the caller).
    let mut count = 2usize;
    for s in sources {
        count += match s.vals.get(&z) {
            Some(Val::Dense { m, .. }) | Some(Val::OneHot { m, .. }) | Some(Val::Rows { m, .. }) => *m + 1,
            None => 0,
        };
    }
    let center = centers[z.index()].clone().ok_or_else(|| crate::error::Error::Usage("internal: no center".into()))?;
    let mut radius = Tensor::zeros((b, n), center.dtype(), center.device()).context(ctx_err)?;
    for s in sources {
        let Some(a) = s.vals.get(&z) else { continue };
        if let (Val::Rows { mat, host, .. }, Weight::L1(w)) = (a, &s.weight) {
            let term = crate::kernels::l1::gathered_abs_rows(mat, w, host).context(ctx_err)?;
            radius = radius.broadcast_add(&term).context(ctx_err)?;
            continue;
        }
        let (a, bs, m) = dense(a, &node.shape, &center).context(ctx_err)?;
        if let (Weight::Median { scale, .. }, None) = (&s.weight, high_prob) {
            // The training path: the median reads the merged value itself (no reshape node in autograd).
            let term = (median_abs_merged(&a, bs).context(ctx_err)? * *scale).context(ctx_err)?;
            radius = radius.broadcast_add(&term).context(ctx_err)?;
            continue;
        }
        let a = a.reshape((bs, m, n)).context(ctx_err)?;
        let term = match &s.weight {
            Weight::L1(w) => {
                // [B, 1, m] x [Bs, m, n] -> [B, 1, n]
                let w3 = w.unsqueeze(1).context(ctx_err)?;
                w3.broadcast_matmul(&a.abs().context(ctx_err)?).context(ctx_err)?.squeeze(1).context(ctx_err)?
            }
            Weight::Median { cauchy, .. } => {
                // High-probability certification (the median case returned above).
                let delta = high_prob
                    .ok_or_else(|| crate::error::Error::Usage("internal: median term without its estimator".into()))?;
                let c = super::estimator::correction(m, delta, *cauchy);
                // (Π_q |a_q|)^{1/k} = exp(mean_q ln |a_q|); exact zeros give 0 (their norm is 0).
                let g = a.abs().and_then(|t| t.log()).and_then(|t| t.mean(1)).and_then(|t| t.exp());
                (g.context(ctx_err)? * c).context(ctx_err)?
            }
            Weight::Grouped { radius, grouping } => {
                let owner = grouping
                    .owners
                    .get(&z)
                    .ok_or_else(|| crate::error::Error::Usage("internal: input grouping misses a layer".into()))?;
                crate::kernels::l1::grouped_abs(&a, radius, owner).context(ctx_err)?
            }
            Weight::L2(eps) => {
                let norm = a.sqr().and_then(|q| q.sum(1)).and_then(|q| q.sqrt()).context(ctx_err)?; // [Bs, n]
                norm.broadcast_mul(&eps.unsqueeze(1).context(ctx_err)?).context(ctx_err)?
            }
        };
        radius = radius.broadcast_add(&term).context(ctx_err)?;
    }
    let radius = radius.reshape(center.shape()).context(ctx_err)?;
    let l = (&center - &radius).context(ctx_err)?;
    let u = (&center + &radius).context(ctx_err)?;
    Ok((l, u, count))
}

/// The source of an activation's offsets: one free direction per unit with a non-zero offset radius
/// (for ReLU: the crossing units), injected at the activation's output.
fn offset_source(node: NodeIndex, r: &Relaxation, b: usize, shape: &[usize]) -> candle_core::Result<Option<Source>> {
    let n: usize = shape.iter().product();
    let rad = r.rad.reshape((b, n))?;
    let host: Vec<f64> = rad.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let rows: Vec<Vec<usize>> = (0..b).map(|e| (0..n).filter(|&j| host[e * n + j] > 0.0).collect()).collect();
    let m = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    if m == 0 {
        return Ok(None);
    }
    // Padding rows (examples with fewer than m offsets) point at unit 0 with weight 0.
    let mut idx = vec![0u32; b * m];
    let mut mask = vec![0f64; b * m];
    for (e, row) in rows.iter().enumerate() {
        for (k, &j) in row.iter().enumerate() {
            idx[e * m + k] = j as u32;
            mask[e * m + k] = 1.0;
        }
    }
    let dev = rad.device();
    let host_idx = idx.clone();
    let idx = Tensor::from_vec(idx, (b, m), dev)?;
    let mask = Tensor::from_vec(mask, (b, m), dev)?.to_dtype(rad.dtype())?;
    let w = (rad.gather(&idx, 1)? * mask)?;
    let mut vals = HashMap::new();
    vals.insert(node, Val::OneHot { idx: idx.flatten_all()?, host: std::sync::Arc::new(host_idx), b, m });
    Ok(Some(Source { vals, weight: Weight::L1(w) }))
}

/// Projected offsets: when more than `k` units have a non-zero offset radius over the whole batch, inject `k`
/// Cauchy combinations `C ⊙ rad` (`[B, k, *shape]`) instead of one direction per unit.
fn projected_offset_source(
    node: NodeIndex,
    r: &Relaxation,
    b: usize,
    shape: &[usize],
    k: usize,
    rng: &mut rand::rngs::StdRng,
) -> candle_core::Result<Option<Source>> {
    if !r.rad.device().is_cpu() {
        let Some(t) = super::gpu::projected_offsets(&r.rad, k)? else { return Ok(None) };
        return Ok(Some(Source {
            vals: HashMap::from([(node, Val::Dense { t: merge_lead(&t)?, bs: b, m: k })]),
            weight: Weight::Median { scale: 1.0, cauchy: true },
        }));
    }
    let host: Vec<f64> = r.rad.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let count = host.iter().filter(|v| **v > 0.0).count();
    if count <= k {
        return Ok(None);
    }
    // Cauchy draws only where the radius is non-zero (elsewhere the product is 0 anyway).
    let keep: Vec<bool> = host.iter().map(|v| *v > 0.0).collect();
    let mut s = vec![b, k];
    s.extend_from_slice(shape);
    let c = random_tensor(&s, true, Some(&keep), rng, &r.rad)?;
    let inj = crate::kernels::scale::scale_rows_merged(&c, &r.rad)?;
    let mut vals = HashMap::new();
    vals.insert(node, Val::Dense { t: inj, bs: b, m: k });
    Ok(Some(Source { vals, weight: Weight::Median { scale: 1.0, cauchy: true } }))
}

/// The objective rows `e_j` of every unit of a node of `shape`, for each of `b` examples: `[b, n, *shape]`.
fn unit_rows(like: &Tensor, b: usize, shape: &[usize]) -> candle_core::Result<Tensor> {
    let n: usize = shape.iter().product();
    let e = Tensor::eye(n, like.dtype(), like.device())?;
    let mut full = vec![b, n];
    full.extend_from_slice(shape);
    e.unsqueeze(0)?.broadcast_as((b, n, n))?.contiguous()?.reshape(full)
}

/// Bounds of `z` from the dual network run backwards from it with `c = e_j` for each of its units
/// (`[B, n_z, *shape]` rows): `l, u = lin ∓ rad`.
fn backward_bounds(
    model: &Model,
    set: &InputSet,
    relax: &HashMap<NodeIndex, Relaxation>,
    mags: &Magnitudes,
    z: NodeIndex,
    b: usize,
) -> Result<(Tensor, Tensor)> {
    let node = model.graph.node(z);
    let ctx_err = || format!("bounds of `{}`", node.name);
    let c = unit_rows(set.center(), b, &node.shape).context(ctx_err)?;
    // Layer bounds use one slope per unit (the lines of [`Relaxation::single_slope`]): then the dual of `-c` is
    // minus the dual of `c`, and one pass gives both bounds. (CROWN's own lower slopes would need a second pass,
    // from `-c`, for each layer; measured on `mnist_small`, they certify no more than these bounds intersected
    // with the interval ones, at twice the cost.)
    let single: HashMap<NodeIndex, Relaxation> = relax.iter().map(|(i, r)| (*i, r.single_slope())).collect();
    let (lin, rad) = super::objective::dual_pass(model, set, &single, Some(mags), z, &c)?;
    let mut out_shape = vec![b];
    out_shape.extend_from_slice(&node.shape);
    let l = (&lin - &rad).and_then(|t| t.reshape(out_shape.clone())).context(ctx_err)?;
    let u = (&lin + &rad).and_then(|t| t.reshape(out_shape)).context(ctx_err)?;
    Ok((l, u))
}

/// Bounds of node `z` from the dual network run backwards with the relaxations' own lower lines (CROWN): per
/// example, the rows `e_j` give the lower bounds and the rows `-e_j` the upper ones, for every unit, or with
/// `parent` only for the units it leaves unstable; the rows are built and run a chunk at a time.
#[allow(clippy::too_many_arguments)]
fn crown_backward_bounds(
    model: &Model,
    set: &InputSet,
    relax: &HashMap<NodeIndex, Relaxation>,
    mags: &Magnitudes,
    z: NodeIndex,
    b: usize,
    parent: Option<(&Tensor, &Tensor)>,
    deadline: Option<std::time::Instant>,
) -> Result<(Tensor, Tensor)> {
    let node = model.graph.node(z);
    let ctx_err = || format!("bounds of `{}`", node.name);
    let n: usize = node.shape.iter().product();
    let (dt, dev) = (set.center().dtype(), set.center().device());
    let mut out_shape = vec![b];
    out_shape.extend_from_slice(&node.shape);
    // Per example, the units whose rows are run: all, or with `parent` (bounds that hold on the example's set,
    // of a ReLU's input) only those it leaves unstable (`l < 0 < u`). A unit stable on the parent is stable on
    // the example whatever its new bounds, and its bounds are the parent's (the caller intersects every
    // computed bound with them), so its rows would change nothing but the cost.
    let units: Vec<Vec<usize>> = match parent {
        Some((pl, pu)) => {
            let host = |t: &Tensor| t.to_dtype(DType::F64).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1());
            let (pl, pu): (Vec<f64>, Vec<f64>) = (host(pl).context(ctx_err)?, host(pu).context(ctx_err)?);
            if pl.len() != b * n || pu.len() != b * n {
                return Err(crate::error::Error::Usage("internal: parent bounds of the wrong size".into()));
            }
            // NaN compares false: such a unit is run.
            (0..b).map(|e| (0..n).filter(|&j| !(pl[e * n + j] >= 0.0 || pu[e * n + j] <= 0.0)).collect()).collect()
        }
        None => vec![(0..n).collect(); b],
    };
    // `2m` rows per example: `e_j` for its units, then `−e_j`, each list padded with its first unit (ignored).
    let m = units.iter().map(|v| v.len()).max().unwrap_or(0);
    let rows = |s: usize, len: usize| -> candle_core::Result<Tensor> {
        let mut data = vec![0f64; b * len * n];
        for (e, us) in units.iter().enumerate() {
            for r in s..s + len {
                let (k, sign) = if r < m { (r, 1.0) } else { (r - m, -1.0) };
                if let Some(&j) = us.get(k).or(us.first()) {
                    data[(e * len + r - s) * n + j] = sign;
                }
            }
        }
        let mut shape = vec![b, len];
        shape.extend_from_slice(&node.shape);
        Tensor::from_vec(data, shape, dev)?.to_dtype(dt)
    };
    // The rows in chunks of at most [`CROWN_CHUNK_BYTES`] of adjoints, the deadline checked before each: a wide
    // layer's `2 n_z` rows are one pass of many seconds, and a time limit is kept to within one chunk.
    let per_row = crown_bytes(model, z, b) / (2 * n).max(1) as f64;
    let chunk = ((CROWN_CHUNK_BYTES / per_row.max(1.0)).floor() as usize).clamp(1, (2 * m).max(1));
    // Per example, the `2m` values `lin − rad`, chunk by chunk.
    let mut jh = vec![0f64; b * 2 * m];
    for s in (0..2 * m).step_by(chunk) {
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Err(crate::error::Error::Deadline);
        }
        let len = chunk.min(2 * m - s);
        let cs = rows(s, len).context(ctx_err)?;
        let (lin, rad) = super::objective::dual_pass(model, set, relax, Some(mags), z, &cs)?;
        let part: Vec<f64> =
            (&lin - &rad).and_then(|t| t.to_dtype(DType::F64)).and_then(|t| t.to_vec2()).context(ctx_err)?.concat();
        for e in 0..b {
            jh[e * 2 * m + s..][..len].copy_from_slice(&part[e * len..][..len]);
        }
    }
    // Scattered back; the skipped units get the sentinel (the parent's bounds replace it).
    let (mut l, mut u) = (vec![-SKIPPED; b * n], vec![SKIPPED; b * n]);
    for (e, us) in units.iter().enumerate() {
        for (r, &j) in us.iter().enumerate() {
            l[e * n + j] = jh[e * 2 * m + r];
            u[e * n + j] = -jh[e * 2 * m + m + r];
        }
    }
    let t = |v: Vec<f64>| Tensor::from_vec(v, out_shape.clone(), dev).and_then(|t| t.to_dtype(dt));
    Ok((t(l).context(ctx_err)?, t(u).context(ctx_err)?))
}

/// The bound [`crown_backward_bounds`] gives a unit whose rows it skipped (finite in f32, so that the
/// intersection with the parent's bounds replaces it).
const SKIPPED: f64 = 1e30;

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Standard Cauchy: P(|X| ≤ 1) = 1/2 and P(X ≤ −1) = P(X ≥ 1) = 1/4, P(|X| ≤ tan(π/8)) = 1/4. With 200,000
    /// draws each frequency is within 0.005 of its value (about 5 standard deviations).
    #[test]
    fn cauchy_draws_have_cauchy_quantiles() {
        let mut r = rand::rngs::SmallRng::seed_from_u64(3);
        let v: Vec<f64> = (0..200_000).map(|_| cauchy_draw(&mut r)).collect();
        let freq = |f: &dyn Fn(f64) -> bool| v.iter().filter(|&&x| f(x)).count() as f64 / v.len() as f64;
        assert!((freq(&|x| x.abs() <= 1.0) - 0.5).abs() < 0.005);
        assert!((freq(&|x| x <= -1.0) - 0.25).abs() < 0.005);
        assert!((freq(&|x| x >= 1.0) - 0.25).abs() < 0.005);
        let t = (std::f64::consts::PI / 8.0).tan();
        assert!((freq(&|x| x.abs() <= t) - 0.25).abs() < 0.005);
        assert!(v.iter().all(|x| x.is_finite()));
    }
}
