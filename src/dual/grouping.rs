//! Compressed input directions for exact bounds (column grouping of a sparse Jacobian, Curtis–Powell–Reid).
//!
//! Exact layer bounds push the `n_in` input directions `e_i` forward to every forward-bounded activation input
//! `z` (`A_z = [n_in, n_z]` per example, see [`super::bounds`]). In a conv net each `e_i` reaches only a small
//! window of `z` (its *support*, `S_z(i)`), so directions whose supports are disjoint at every such `z` can be
//! pushed forward **together**: with groups `g ⊂ {0..n_in}` of pairwise disjoint supports,
//!
//! ```text
//!   Y_z[g, j] = Σ_{i ∈ g} A_z[i, j] = A_z[owner_z(g, j), j]     (the one i ∈ g with j ∈ S_z(i), else 0)
//! ```
//!
//! so every entry of `A_z` is read back from `Y_z`, and the ℓ1 term of the bound is
//! `Σ_i |A_z[i, j]| r_i = Σ_g |Y_z[g, j]| r_{owner_z(g, j)}` (with `r_none = 0`); the ℓ2 term
//! `Σ_i A_z[i, j]²` equals `Σ_g Y_z[g, j]²`. This is exact, not an estimate: it only changes how many
//! directions are pushed (`G` groups instead of `n_in`; 784 → 100 for `mnist_small`, `tests/grouping.rs`).
//!
//! Supports are structural, taken from the graph and not from the weight values (weights change during
//! training and may be zero by chance): every weight is replaced by ones, every activation by the identity, and
//! `[n_in, *in]` indicator rows are pushed forward; an entry is in the support when the result is > 0. This is
//! a superset of the true support of every example because every affine op's linear part with all-ones
//! weights has non-negative coefficients wherever the real op can have a non-zero one (linear, conv2d,
//! batchnorm `γ/√(var+ε)`, avgpool, flatten, identity, sums), and an activation's relaxation only scales a unit
//! by a slope `d ∈ [0, 1]`. Each affine op declares this property ([`crate::ops::OpExec::groupable`], default
//! `false`); a graph with an op that does not is bounded without grouping. Groups come from a greedy colouring of the conflict graph (two directions conflict
//! when their supports meet at some target).

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use petgraph::graph::NodeIndex;

use super::model::Model;
use crate::error::{Context, Result};
use crate::ir::NodeKind;
use crate::ops::{NodeCtx, Role};
use crate::weights::NodeWeights;

/// A grouping of the input directions, valid for the targets it was planned for.
pub struct Grouping {
    /// Number of groups `G`.
    pub groups: usize,
    /// `colour[i]`: the group of input direction `i`.
    pub colour: Vec<usize>,
    /// Per target `z`: `owner_z[g * n_z + j]`, the input direction of group `g` whose support holds unit `j`,
    /// or `n_in` when none does (index of a zero radius).
    pub owners: HashMap<NodeIndex, std::sync::Arc<Vec<u32>>>,
}

/// Input directions pushed per chunk while finding supports (bounds the planning memory).
const CHUNK: usize = 256;

/// Plan a grouping for bounds at `targets` (activation inputs, sorted by node index). `None` when it would not
/// save enough (dense layers reach every unit from every input: `G` close to `n_in`).
pub fn plan(model: &Model, targets: &[NodeIndex]) -> Result<Option<Grouping>> {
    let g = &model.graph;
    let Some(last) = targets.iter().map(|t| t.index()).max() else { return Ok(None) };
    let in_shape = g.input_shape().to_vec();
    let n_in: usize = in_shape.iter().product();
    if n_in < 16 {
        return Ok(None);
    }
    // Every affine op the supports pass through must declare that all-ones weights reveal its supports.
    let undeclared = g
        .order()
        .take_while(|i| i.index() <= last)
        .any(|i| g.node(i).kind.op().is_some_and(|op| op.role() == Role::Affine && !op.groupable()));
    if undeclared {
        return Ok(None);
    }
    let ones: Vec<_> = model
        .weights
        .per_node
        .iter()
        .map(|m| m.iter().map(|(k, t)| Ok((k.clone(), t.ones_like()?))).collect::<candle_core::Result<NodeWeights>>())
        .collect::<candle_core::Result<Vec<_>>>()
        .context(|| "planning input groups".to_string())?;
    // supports[t][i]: sorted units of target t reached from input i.
    let mut supports: Vec<Vec<Vec<u32>>> = vec![Vec::with_capacity(n_in); targets.len()];
    let ctx_err = || "planning input groups".to_string();
    for start in (0..n_in).step_by(CHUNK) {
        let m = CHUNK.min(n_in - start);
        let mut vals: Vec<Option<Tensor>> = vec![None; g.dag.node_count()];
        for i in g.order() {
            if i.index() > last {
                break;
            }
            let node = g.node(i);
            let v = match node.kind {
                NodeKind::Input => {
                    let mut s = vec![m];
                    s.extend_from_slice(&in_shape);
                    Tensor::eye(n_in, model.dtype, &model.device)
                        .and_then(|e| e.narrow(0, start, m))
                        .and_then(|e| e.reshape(s))
                        .context(ctx_err)?
                }
                NodeKind::Op(op) => {
                    let ins: Vec<Tensor> = node.inputs.iter().filter_map(|j| vals[j.index()].clone()).collect();
                    match op.role() {
                        Role::Affine => {
                            let base = model.ctx(i);
                            let ctx = NodeCtx { weights: &ones[i.index()], ..base };
                            // Indicator of the support (keeps values bounded through deep nets).
                            let y = op.linear(&ctx, &ins)?;
                            y.gt(0.0).and_then(|t| t.to_dtype(model.dtype)).context(ctx_err)?
                        }
                        Role::Activation => ins
                            .first()
                            .cloned()
                            .ok_or_else(|| crate::error::Error::Usage("internal: activation without input".into()))?,
                        Role::Unsupported => return Ok(None),
                    }
                }
            };
            vals[i.index()] = Some(v);
        }
        for (t, z) in targets.iter().enumerate() {
            let Some(v) = &vals[z.index()] else { return Ok(None) };
            let rows: Vec<Vec<f32>> =
                v.flatten_from(1).and_then(|v| v.to_dtype(DType::F32)).and_then(|v| v.to_vec2()).context(ctx_err)?;
            for row in rows {
                supports[t].push(row.iter().enumerate().filter(|(_, x)| **x > 0.0).map(|(j, _)| j as u32).collect());
            }
        }
    }
    let sizes: Vec<usize> = targets.iter().map(|z| g.node(*z).shape.iter().product()).collect();
    let colour = colour(&supports, &sizes);
    let groups = colour.iter().max().map(|c| c + 1).unwrap_or(0);
    if 4 * groups > 3 * n_in {
        return Ok(None);
    }
    let mut owners = HashMap::new();
    for (t, z) in targets.iter().enumerate() {
        let mut own = vec![n_in as u32; groups * sizes[t]];
        for (i, supp) in supports[t].iter().enumerate() {
            for &j in supp {
                own[colour[i] * sizes[t] + j as usize] = i as u32;
            }
        }
        owners.insert(*z, std::sync::Arc::new(own));
    }
    Ok(Some(Grouping { groups, colour, owners }))
}

/// Greedy colouring: direction `i` takes the smallest colour that no earlier direction sharing a unit with it
/// (at any target) has.
fn colour(supports: &[Vec<Vec<u32>>], sizes: &[usize]) -> Vec<usize> {
    let n_in = supports.first().map(|s| s.len()).unwrap_or(0);
    // used[t][j]: colours already present at unit j of target t.
    let mut used: Vec<Vec<Vec<usize>>> = sizes.iter().map(|&n| vec![Vec::new(); n]).collect();
    let mut colour = vec![0usize; n_in];
    let mut forbidden: Vec<bool> = Vec::new();
    for i in 0..n_in {
        forbidden.iter_mut().for_each(|f| *f = false);
        for (t, sup) in supports.iter().enumerate() {
            for &j in &sup[i] {
                for &c in &used[t][j as usize] {
                    if c >= forbidden.len() {
                        forbidden.resize(c + 1, false);
                    }
                    forbidden[c] = true;
                }
            }
        }
        let c = forbidden.iter().position(|f| !f).unwrap_or(forbidden.len());
        colour[i] = c;
        for (t, sup) in supports.iter().enumerate() {
            for &j in &sup[i] {
                used[t][j as usize].push(c);
            }
        }
    }
    colour
}

impl Grouping {
    /// The group indicator rows `[1, G, *in_shape]` that replace the identity.
    pub fn rows(&self, in_shape: &[usize], like: &Tensor) -> candle_core::Result<Tensor> {
        let n_in = self.colour.len();
        let mut data = vec![0f32; self.groups * n_in];
        for (i, &c) in self.colour.iter().enumerate() {
            data[c * n_in + i] = 1.0;
        }
        let mut s = vec![1, self.groups];
        s.extend_from_slice(in_shape);
        Tensor::from_vec(data, s, like.device())?.to_dtype(like.dtype())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1-D chain where input i reaches units {i, i+1} of a 5-unit target: directions 0 and 2 and 4 share no
    /// unit (0→{0,1}, 2→{2,3}), 1 and 3 neither, so two colours suffice.
    #[test]
    fn greedy_colouring_of_a_band() {
        let supports = vec![(0..5u32).map(|i| if i < 4 { vec![i, i + 1] } else { vec![i] }).collect::<Vec<_>>()];
        let c = colour(&supports, &[5]);
        assert_eq!(c, vec![0, 1, 0, 1, 0]);
    }
}
