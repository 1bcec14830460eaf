//! Sound floating point: what every bound pays for rounding, so that it holds in real arithmetic for the network
//! whose weights are the stored values exactly.
//!
//! Notation: `u` is the unit roundoff of the compute dtype (`2⁻²⁴` in f32, `2⁻⁵³` in f64), `η` its smallest
//! normal number, and `γ_n = n·u / (1 − n·u)`. The model of arithmetic (IEEE 754, round to nearest, with or
//! without FMA, any summation order) gives for a sum of `n` products computed in any order
//! `|fl(Σ a_i b_i) − Σ a_i b_i| ≤ γ_n Σ |a_i||b_i| + n·η` (the `η` term covers underflow), and
//! `γ_a (1 + γ_b) ≤ γ_{a+b}`, so an upper estimate computed in floating point is made an upper bound by
//! charging it with a doubled count ([`charge_gamma`]).
//!
//! Where each rounding enters the proof and how it is paid:
//! 1. **The input set** ([`super::input_set`]) is rounded outward from the user's values: ε and the box bounds
//!    one ulp outward in f64 (a decimal's nearest f64 is within half an ulp of it), then outward to the compute
//!    dtype; the box's centre and radius are chosen so that `centre ± radius` contains it.
//! 2. **Interval bounds** ([`super::ibp`]): an affine node `y = A x + b` over `x ∈ c ± r` gets
//!    `fl(A c + b) ± (fl(|A| r) + γ_{2t+8} · fl(|A|(|c| + r) + |b|) + bias error)`, `t` the op's
//!    [`crate::ops::OpExec::terms`]; activations widen their interval rule by `8u` relative plus `η`
//!    ([`widen_interval`]), which covers correctly rounded and few-ulp elementwise functions.
//! 3. **Relaxations** ([`harden`]): an activation's lines are valid in real arithmetic for the slopes as
//!    computed once their offsets are widened by `16u (|slope| m_z + m_σ + |mid| + rad) + η`, `m_z` the largest
//!    `|z|` on the unit's interval and `m_σ` the largest `|σ|`: each op computes its offsets from the computed
//!    slope with a handful of roundings of quantities of that size (ReLU: the chord misses `u` by at most
//!    `3u·max(|l|, |u|)`).
//! 4. **The dual network** ([`super::objective::dual_pass`], the Neumaier–Shcherbina correction): the computed
//!    adjoints `λ̃` are taken as given dual variables. At an affine node `λ̃ · y = fl(Aᵀλ̃) · x + r · x + λ̃ · b`
//!    with `|r| ≤ γ_t |A|ᵀ|λ̃|` (`t` the transpose's fan-in, [`crate::ops::OpExec::transpose_terms`]), so the
//!    bound is charged `γ Σ |λ̃| (|A| m_x + |b|)`, `m_x ≥ |x|` from the sound
//!    node magnitudes ([`Magnitudes`]); an activation is charged `γ Σ |λ̃| (slopes · m_z + |offsets|)` for its
//!    scaling and its offset sums, the input `γ Σ |λ̃| (|centre| + radius)`, a node where several adjoints meet
//!    `γ Σ |λ̃| m`, and the sums of the objective's terms `γ Σ |term|`. The charge is added to the dual-norm part,
//!    so `lin − rad` and `lin + rad` are both widened, and the last subtraction is rounded outward. The charge
//!    weights join a sum over `|λ̃|` the pass makes anyway (the input's radius, a relaxation's `rad`); an affine
//!    node whose one consumer is an activation is charged there, through `|λ̃_z| ≤ (1 + 2u) max|slope| |λ̃|`.
//!    Relaxations that are exact pieces (slope 0 or 1, no offset) compute nothing and are not widened.
//! 5. **Forward-propagated layer bounds** ([`super::bounds`]): the computed representation
//!    `c̃ + Σ_s Ã_s ξ_s` of a node differs from the real value by at most `E`, pushed forward as
//!    `E' = |A| E + γ (|A| M + |b|)` (affine) and `E' = |d| E + γ (|d| M + |mid|)` (activations), where `M`
//!    bounds `|c̃| + Σ |Ã_s| |ξ_s|` and is pushed forward the same way without cancellation. A layer bound is
//!    widened by `E + γ_{2m+8} M`, `m` the number of terms of its dual-norm sum.
//!
//! 6. **Specifications** ([`crate::run::verify`]): a VNN-LIB row `c·y + d` is bounded for `c` rounded to the
//!    compute dtype; the difference to the file's decimals, `Σ |c − c̃| M_y` with `M_y` sound interval bounds on
//!    the outputs, the offset's parsing and the f64 subtraction are taken off before a disjunct counts as
//!    refuted. A counterexample counts only when a disjunct holds for every output in a sound f64 enclosure of
//!    the network at the point ([`crate::vnnlib::Constraint::holds_surely`]).
//! 7. **Weights as stored**: float64 values that float32 does not hold are refused for an f32 computation
//!    (safetensors) or computed in f64 (ONNX, [`crate::run::verify::load_onnx_model`]).
//!
//! 8. **A deployed inference** ([`super::deployed`], `Options::deployed`): each node's own rounding in an f32 (or
//!    f64) inference, `Δ`, joins the node's charge in the dual network (`Σ |λ| Δ`, [`Magnitudes::own`]), and the
//!    layer bounds from the forward representation or from interval propagation are widened by the inference's
//!    error `E`, so that every relaxation holds for the inference's values too.
//!
//! Random projections (training) are estimates, not bounds; the rest of their computation is still charged.
//! The packed training loss (`packed_certificate`) is a training objective and charges nothing; every
//! certificate training reports is computed by the charged path.

use candle_core::Tensor;
use petgraph::graph::NodeIndex;

use super::input_set::InputSet;
use super::model::Model;
use crate::error::{Context, Error, Result};
use crate::ir::NodeKind;
use crate::ops::{Family, Relaxation, Role};

pub use crate::float::{charge_gamma, gamma, tiny, unit};

/// `(lo, hi)` widened outward by `8u |·| + η`: an interval rule computed in floating point (monotone
/// elementwise functions accurate to a few ulps) made to contain the real one.
pub fn widen_interval(lo: &Tensor, hi: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let dt = lo.dtype();
    let (k, t) = (8.0 * unit(dt), tiny(dt));
    let lo2 = (lo - ((lo.abs()? * k)? + t)?)?;
    let hi2 = (hi + ((hi.abs()? * k)? + t)?)?;
    Ok((lo2, hi2))
}

/// A nonnegative upper estimate `w` made a bound on the real quantity it estimates to within `n` roundings:
/// `w (1 + γ_{2n+8}) + η`.
pub fn inflate(w: &Tensor, n: usize) -> candle_core::Result<Tensor> {
    let dt = w.dtype();
    (w * (1.0 + charge_gamma(n, dt)))? + tiny(dt)
}

/// Centre and radius `(c, r)` of a box `[lo, hi]` such that `c ± r` contains it in real arithmetic.
pub fn center_radius(lo: &Tensor, hi: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let dt = lo.dtype();
    let c = ((lo + hi)? * 0.5)?;
    // fl((hi − lo)/2) and fl((lo + hi)/2) are each within u·(|lo| + |hi|) of their real values.
    let slack = (((lo.abs()? + hi.abs()?)? * (4.0 * unit(dt)))? + tiny(dt))?;
    let r = (((hi - lo)? * 0.5)?.relu()? + slack)?;
    Ok((c, r))
}

/// The relaxation made valid in real arithmetic (item 3 of the module doc): every offset band widened by
/// `16u (|slope| m_z + m_σ + |mid| + rad) + η` on each side, where `m_z = max(|l|, |u|)` and `m_σ` is the largest
/// `|σ|` of the interval rule `(s_lo, s_hi)` on `[l, u]`.
pub fn harden(r: Relaxation, l: &Tensor, u: &Tensor, s_lo: &Tensor, s_hi: &Tensor) -> candle_core::Result<Relaxation> {
    let dt = l.dtype();
    let k = 16.0 * unit(dt);
    let m_z = l.abs()?.maximum(&u.abs()?)?;
    let m_s = s_lo.abs()?.maximum(&s_hi.abs()?)?;
    let mut slope_mag = r.slope.abs()?;
    if let Some(lw) = &r.lower {
        if lw.rank() == slope_mag.rank() {
            slope_mag = slope_mag.maximum(&lw.abs()?)?;
        }
    }
    let base = ((slope_mag.mul(&m_z)? + &m_s)? + (r.mid.abs()? + &r.rad)?)?;
    let w = ((base * k)? + tiny(dt))?.detach();
    // A unit whose relaxation is an exact piece (`σ(z) = z` or `0` on `[l, u]`: slope 0 or 1, lower slope 0 or
    // 1, no offset) computed nothing that rounds: it keeps its band of width 0 (and the dual network its
    // sparsity: only the other units carry offsets).
    let piece = |a: &Tensor| -> candle_core::Result<Tensor> { a.eq(0.0)?.maximum(&a.eq(1.0)?) };
    let mut exact = ((piece(&r.slope)? * r.mid.eq(0.0)?)? * r.rad.eq(0.0)?)?;
    if let Some(lw) = &r.lower {
        if lw.dims() == r.slope.dims() {
            exact = (exact * piece(lw)?)?;
        } else {
            exact = exact.zeros_like()?;
        }
    }
    let w = if r.lines.is_some() { w } else { exact.where_cond(&w.zeros_like()?, &w)? };
    let lines = match r.lines {
        Some(ln) => {
            let mag = ln.lo_slope.abs()?.maximum(&ln.up_slope.abs()?)?;
            let offs = ln.lo_off.abs()?.maximum(&ln.up_off.abs()?)?;
            let wl = (((mag.mul(&m_z)? + &m_s)? + offs)? * k)? + tiny(dt);
            let wl = wl?.detach();
            Some(crate::ops::Lines {
                lo_off: (&ln.lo_off - &wl)?,
                up_off: (&ln.up_off + &wl)?,
                lo_slope: ln.lo_slope,
                up_slope: ln.up_slope,
            })
        }
        None => None,
    };
    // A constant relaxation keeps its slope 0; its band widens like the others.
    Ok(Relaxation { rad: (&r.rad + &w)?, lines, ..r })
}

/// Sound upper bounds on `|value|` of every node over the input set (index = node index), for the charges of
/// the dual network: the input's `|centre| + radius`; an activation's largest `|σ|` on its input's layer bounds;
/// an affine node's `|A| m_x + |b|` (inflated), or at an activation input the largest `|z|` of its layer bounds
/// where that is smaller. `image[n]` keeps `|A| m_x + |b| + bias error` itself for an affine node, which is what
/// its charge needs (the magnitude of the products, not of their sum).
#[derive(Clone, Default)]
pub struct Magnitudes {
    pub value: Vec<Option<Tensor>>,
    pub image: Vec<Option<Tensor>>,
    /// With a deployed inference ([`super::deployed`]): each node's own rounding in that inference, a bound
    /// on `|σ̂(x̂) − σ(x̂)|`, which the dual network charges like its own (`Σ |λ| own`); `None`: exact.
    pub own: Vec<Option<Tensor>>,
}

/// The relaxation of activation node `i` in `family` on `[l, u]`, made valid in real arithmetic ([`harden`]).
pub fn relax_sound(model: &Model, i: NodeIndex, l: &Tensor, u: &Tensor, family: Family) -> Result<Relaxation> {
    let node = model.graph.node(i);
    let op = node.kind.op().ok_or_else(|| Error::Usage("internal: relaxation of a non-op".into()))?;
    let ctx = model.ctx(i);
    let r = op.relax_family(&ctx, l, u, family)?;
    let (lo, hi) = op.interval(&ctx, l, u)?;
    harden(r, l, u, &lo, &hi).context(|| format!("rounding widening of `{}`", node.name))
}

/// A sound interval rule: `op.interval` on the outward-rounded `[l, u]`, widened ([`widen_interval`]).
pub fn interval_sound(model: &Model, i: NodeIndex, l: &Tensor, u: &Tensor) -> Result<(Tensor, Tensor)> {
    let node = model.graph.node(i);
    let op = node.kind.op().ok_or_else(|| Error::Usage("internal: interval of a non-op".into()))?;
    let (lo, hi) = op.interval(&model.ctx(i), l, u)?;
    widen_interval(&lo, &hi).context(|| format!("rounding widening of `{}`", node.name))
}

impl Magnitudes {
    pub fn new(n: usize) -> Self {
        Magnitudes { value: vec![None; n], image: vec![None; n], own: vec![None; n] }
    }

    /// Fill node `i` (every input of `i` already filled). `layer` gives the sound layer bounds of an
    /// activation input, where known: an activation needs its input's; an activation input uses them to cap its
    /// magnitude.
    pub fn fill<'a>(
        &mut self,
        model: &Model,
        set: &InputSet,
        i: NodeIndex,
        layer: impl Fn(NodeIndex) -> Option<(&'a Tensor, &'a Tensor)>,
    ) -> Result<()> {
        let node = model.graph.node(i);
        let ctx_err = || format!("rounding magnitudes at `{}`", node.name);
        let v = match node.kind {
            NodeKind::Input => {
                let c = set.center();
                let m = match set {
                    InputSet::Box { radius, .. } => (c.abs().context(ctx_err)? + radius).context(ctx_err)?,
                    InputSet::L2 { eps, .. } => {
                        let mut shape = vec![c.dims()[0]];
                        shape.extend(std::iter::repeat_n(1, c.rank() - 1));
                        c.abs().and_then(|a| a.broadcast_add(&eps.reshape(shape)?)).context(ctx_err)?
                    }
                };
                inflate(&m, 1).context(ctx_err)?
            }
            NodeKind::Op(op) => {
                let ins: Vec<Tensor> = node
                    .inputs
                    .iter()
                    .map(|j| self.value[j.index()].clone())
                    .collect::<Option<_>>()
                    .ok_or_else(|| Error::Usage("internal: magnitude of an input missing".into()))?;
                match op.role() {
                    Role::Affine => {
                        let prod = op.linear_abs(&model.ctx(i), &ins)?;
                        return self.fill_affine(model, i, prod, layer);
                    }
                    Role::Activation => {
                        let (l, u) = layer(node.inputs[0])
                            .ok_or_else(|| Error::Usage("internal: layer bounds missing for magnitudes".into()))?;
                        let (lo, hi) = interval_sound(model, i, l, u)?;
                        lo.abs().and_then(|a| a.maximum(&hi.abs()?)).context(ctx_err)?
                    }
                    Role::Unsupported => return Err(Error::Usage(format!("`{}` has no dual rule", op.name()))),
                }
            }
        };
        self.value[i.index()] = Some(v.detach());
        Ok(())
    }

    /// [`Magnitudes::fill`] at affine node `i`, given the product `|A| m_x` of its inputs' magnitudes (a caller
    /// that makes other `|A|` products at this node stacks them into one call).
    pub fn fill_affine<'a>(
        &mut self,
        model: &Model,
        i: NodeIndex,
        prod: Tensor,
        layer: impl Fn(NodeIndex) -> Option<(&'a Tensor, &'a Tensor)>,
    ) -> Result<()> {
        let node = model.graph.node(i);
        let ctx_err = || format!("rounding magnitudes at `{}`", node.name);
        let op = node.kind.op().ok_or_else(|| Error::Usage("internal: magnitude of a non-op".into()))?;
        let ctx = model.ctx(i);
        let mut m = prod;
        if let Some(b) = op.bias(&ctx)? {
            m = m.broadcast_add(&b.abs().context(ctx_err)?).context(ctx_err)?;
        }
        if let Some(e) = op.bias_error(&ctx)? {
            m = m.broadcast_add(&e).context(ctx_err)?;
        }
        let m = inflate(&m, op.terms(&ctx) + 1).context(ctx_err)?;
        self.image[i.index()] = Some(m.detach());
        let v = match layer(i) {
            Some((l, u)) => {
                let cap = inflate(&l.abs().and_then(|a| a.maximum(&u.abs()?)).context(ctx_err)?, 1).context(ctx_err)?;
                m.minimum(&cap).context(ctx_err)?
            }
            None => m,
        };
        self.value[i.index()] = Some(v.detach());
        Ok(())
    }

    /// The magnitudes of examples `start..start + len`.
    pub fn narrow(&self, start: usize, len: usize) -> candle_core::Result<Self> {
        let cut = |v: &Vec<Option<Tensor>>| -> candle_core::Result<Vec<Option<Tensor>>> {
            v.iter().map(|t| t.as_ref().map(|t| t.narrow(0, start, len)).transpose()).collect()
        };
        Ok(Magnitudes { value: cut(&self.value)?, image: cut(&self.image)?, own: cut(&self.own)? })
    }

    /// Cap an activation input's magnitude by its (sound) layer bounds once they are known.
    pub fn cap(&mut self, z: NodeIndex, l: &Tensor, u: &Tensor) -> candle_core::Result<()> {
        let cap = inflate(&l.abs()?.maximum(&u.abs()?)?, 1)?;
        if let Some(v) = self.value[z.index()].take() {
            self.value[z.index()] = Some(v.minimum(&cap)?);
        }
        Ok(())
    }

    /// All nodes in order, from finished layer bounds.
    pub fn of_bounds(model: &Model, set: &InputSet, layers: &[(NodeIndex, Tensor, Tensor)]) -> Result<Self> {
        let mut m = Magnitudes::new(model.graph.dag.node_count());
        let find = |z: NodeIndex| layers.iter().find(|(n, _, _)| *n == z).map(|(_, l, u)| (l, u));
        for i in model.graph.order() {
            m.fill(model, set, i, find)?;
        }
        Ok(m)
    }
}

/// Number of roundings a weighted row sum of `n` terms can carry, with the product and a final addition.
pub fn sum_terms(n: usize) -> usize {
    n + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The box `[lo, hi] = [0.1, 0.3]` (as f32 values): `c ± r` contains both ends when computed in f64.
    #[test]
    fn center_radius_contains_the_box() {
        let dev = candle_core::Device::Cpu;
        let lo = Tensor::new(&[0.1f32, -3.0, 1e-30], &dev).unwrap();
        let hi = Tensor::new(&[0.3f32, 16777217.0, 2e-30], &dev).unwrap();
        let (c, r) = center_radius(&lo, &hi).unwrap();
        let (c, r): (Vec<f32>, Vec<f32>) = (c.to_vec1().unwrap(), r.to_vec1().unwrap());
        let (lo, hi): (Vec<f32>, Vec<f32>) = (lo.to_vec1().unwrap(), hi.to_vec1().unwrap());
        for i in 0..3 {
            assert!(c[i] as f64 - r[i] as f64 <= lo[i] as f64, "{i}");
            assert!(c[i] as f64 + r[i] as f64 >= hi[i] as f64, "{i}");
        }
    }
}
