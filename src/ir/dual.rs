//! The dual graph, emitted mechanically from the checked primal graph like reverse-mode autodiff
//! (paper Figure 1 / Theorem 1): walk the primal nodes in reverse topological order; the dual variable `ν_n`
//! at node `n`'s output is the sum, over the consumers `m` of `n`, of `m`'s dual rule applied to `ν_m`
//! (linear → transposed linear, conv2d → conv_transpose2d, relu → diagonal slope, flatten → reshape back,
//! batchnorm2d → channel scale, a sum → fan-out to every summand). Biases and relaxation offsets are terms of
//! the objective `J`, not nodes. Edges run from `ν_m` to `ν_n`: every primal edge reversed, skips included.

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};

use super::graph::{Graph, NodeKind};
use crate::ops::{DualText, Role};

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

/// What op `m`'s rule texts are made of: its node, names and shapes.
fn text_ctx<'g>(g: &'g Graph, m: NodeIndex, nu: &'g str, operand: usize) -> DualText<'g> {
    let node = g.node(m);
    DualText {
        name: &node.name,
        attrs: &node.attrs,
        nu,
        operand,
        in_names: node.inputs.iter().map(|&i| g.node(i).name.as_str()).collect(),
        in_shapes: node.inputs.iter().map(|&i| &g.node(i).shape).collect(),
        out_shape: &node.shape,
        weights: node.weights.iter().map(|w| w.suffix).collect(),
    }
}

/// The dual rule of consumer `m` applied to `ν_m`, as the op's own file writes it ([`crate::ops::Op::dual_text`]).
fn rule_text(g: &Graph, m: NodeIndex, operand: usize) -> String {
    let nu = dual_name(g, m);
    match g.node(m).kind {
        NodeKind::Op(op) => op.dual_text(&text_ctx(g, m, &nu, operand)),
        _ => nu,
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
            terms.push(DualTerm { from: m, operand: pos, text: rule_text(g, m, pos) });
        }
        let mut objective = Vec::new();
        let nu = dual_name(g, n);
        if let NodeKind::Op(op) = node.kind {
            objective.extend(op.objective_text(&text_ctx(g, n, &nu, 0)));
        }
        for (m, _) in g.consumers(n) {
            if let Some(op) = g.node(m).kind.op().filter(|o| o.role() == Role::Activation) {
                let nu_m = dual_name(g, m);
                objective.push(op.relaxation_text(&text_ctx(g, m, &nu_m, 0), &nu));
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
