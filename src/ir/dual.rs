//! The dual graph, emitted mechanically from the checked primal graph like reverse-mode autodiff
//! (paper Figure 1 / Theorem 1): walk the primal nodes in reverse topological order; the dual variable `ν_n`
//! at node `n`'s output is the sum, over the consumers `m` of `n`, of `m`'s dual rule applied to `ν_m`
//! (linear → transposed linear, conv2d → conv_transpose2d, relu → diagonal slope, flatten → reshape back,
//! batchnorm2d → channel scale, a sum → fan-out to every summand). Biases and relaxation offsets are terms of
//! the objective `J`, not nodes. Edges run from `ν_m` to `ν_n`: every primal edge reversed, skips included.

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};

use super::graph::{Graph, NodeKind};
use crate::ops::{conv2d::output_padding, shape::fmt as fmt_shape, Role};

/// One term of `ν_n`: the dual rule of consumer `from`, applied to `ν_from`.
#[derive(Debug, Clone)]
pub struct DualTerm {
    /// The consumer (primal index) whose dual variable feeds this term.
    pub from: NodeIndex,
    /// Operand position of `n` in `from`.
    pub operand: usize,
    /// The rule as text, e.g. `conv_transpose2d(ν_c2; c2.weight, stride=2, padding=1, output_padding=0)`.
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct DualNode {
    pub primal: NodeIndex,
    pub name: String,
    pub shape: Vec<usize>,
    /// Empty for the output (seeded with `-c`).
    pub terms: Vec<DualTerm>,
    /// Objective terms contributed where this dual variable is formed (bias, relaxation, input set).
    pub objective: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct DualGraph {
    pub dag: DiGraph<DualNode, usize>,
    /// Dual nodes in execution order (output first, input last).
    pub order: Vec<NodeIndex>,
}

pub fn dual_name(g: &Graph, i: NodeIndex) -> String {
    format!("ν_{}", g.node(i).name)
}

fn rule_text(g: &Graph, m: NodeIndex) -> String {
    let node = g.node(m);
    let nu = dual_name(g, m);
    let NodeKind::Op(op) = node.kind else { return nu };
    let rule = op.dual_name().unwrap_or("(no dual rule)");
    match op.name() {
        "linear" => format!("{rule}({nu}; {}.weight)", node.name),
        "conv2d" | "avgpool2d" => {
            let (k, s, p) = (node.attrs.usize("kernel"), node.attrs.usize("stride"), node.attrs.usize("padding"));
            let n_in = g.node(node.inputs[0]).shape.get(1).copied().unwrap_or(0);
            let n_out = node.shape.get(1).copied().unwrap_or(1);
            let op_pad = output_padding(n_in, n_out, k, s, p);
            let w = if op.name() == "conv2d" { format!("{}.weight", node.name) } else { format!("1/{}", k * k) };
            format!("{rule}({nu}; {w}, stride={s}, padding={p}, output_padding={op_pad})")
        }
        "relu" | "hardtanh" => format!("{rule}({nu}; slope d_{})", g.node(node.inputs[0]).name),
        "flatten" => format!("{rule}({nu}; {})", fmt_shape(&g.node(node.inputs[0]).shape)),
        "batchnorm2d" => format!("{rule}({nu}; {0}.weight / sqrt({0}.running_var + eps))", node.name),
        _ => format!("{rule}({nu})"),
    }
}

/// Emit the dual graph of a checked graph.
pub fn build(g: &Graph) -> DualGraph {
    let topo = toposort(&g.dag, None).unwrap_or_else(|_| g.order().collect());
    let mut dag = DiGraph::new();
    let mut map = vec![NodeIndex::end(); g.dag.node_count()];
    let mut order = Vec::new();
    for &n in topo.iter().rev() {
        let node = g.node(n);
        let mut terms = Vec::new();
        for (m, pos) in g.consumers(n) {
            terms.push(DualTerm { from: m, operand: pos, text: rule_text(g, m) });
        }
        let mut objective = Vec::new();
        if let NodeKind::Op(op) = node.kind {
            match op.role() {
                Role::Affine if node.weights.iter().any(|w| w.suffix == "bias") || op.name() == "batchnorm2d" => {
                    let b = if op.name() == "batchnorm2d" { "shift".to_string() } else { "bias".to_string() };
                    objective.push(format!("J -= {}·{}.{}", dual_name(g, n), node.name, b));
                }
                _ => {}
            }
        }
        for (m, _) in g.consumers(n) {
            if g.node(m).kind.op().map(|o| o.role() == Role::Activation).unwrap_or(false) {
                let nu = dual_name(g, n);
                let note = if g.node(m).kind.name() == "relu" {
                    format!("  (relu: Σ over crossing j of l_j·[{nu},j]₊)")
                } else {
                    String::new()
                };
                objective.push(format!(
                    "J += Σ_j min({nu},j·lo_j, {nu},j·hi_j) over the relaxation of {}{note}",
                    g.node(m).name
                ));
            }
        }
        if node.kind.op().is_none() {
            objective.push(format!("J -= x·{0} + ε‖{0}‖_*  (dual norm of the input set)", dual_name(g, n)));
        }
        let d =
            dag.add_node(DualNode { primal: n, name: dual_name(g, n), shape: node.shape.clone(), terms, objective });
        map[n.index()] = d;
        order.push(d);
    }
    for d in order.clone() {
        let terms = dag[d].terms.clone();
        for t in terms {
            let from = map[t.from.index()];
            dag.add_edge(from, d, t.operand);
        }
    }
    DualGraph { dag, order }
}
