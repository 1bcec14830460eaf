//! The checked network as a petgraph DAG. Nodes are in definition order, which is a topological order
//! (every node is defined before use). Edges carry the operand position: `a -> s` with weight `i` means `a` is
//! the `i`-th input of `s`. A node may feed many later nodes (residual and dense skips).

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::ops::{Attrs, Op, Shape, WeightSpec};
use crate::syntax::ast::Span;

#[derive(Clone, Copy)]
pub enum NodeKind {
    Input,
    Op(&'static dyn Op),
}

impl std::fmt::Debug for NodeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl NodeKind {
    pub fn name(&self) -> &'static str {
        match self {
            NodeKind::Input => "input",
            NodeKind::Op(op) => op.name(),
        }
    }
    pub fn op(&self) -> Option<&'static dyn Op> {
        match self {
            NodeKind::Input => None,
            NodeKind::Op(op) => Some(*op),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    /// Fully qualified name: `c1`, or `b1.conv_a` inside block instance `b1`. Also the weight-key prefix.
    pub name: String,
    pub kind: NodeKind,
    pub attrs: Attrs,
    pub shape: Shape,
    /// Inputs in operand order.
    pub inputs: Vec<NodeIndex>,
    /// The statement that defined the node.
    pub span: Span,
    /// Parameter tensors the node owns.
    pub weights: Vec<WeightSpec>,
}

#[derive(Debug, Clone)]
pub struct Graph {
    pub name: String,
    pub dag: DiGraph<Node, usize>,
    pub input: NodeIndex,
    pub output: NodeIndex,
}

impl Graph {
    pub fn node(&self, i: NodeIndex) -> &Node {
        &self.dag[i]
    }
    /// All nodes in definition (topological) order.
    pub fn order(&self) -> impl Iterator<Item = NodeIndex> + '_ {
        self.dag.node_indices()
    }
    pub fn find(&self, name: &str) -> Option<NodeIndex> {
        self.dag.node_indices().find(|&i| self.dag[i].name == name)
    }
    /// Consumers of `i` with the operand position they read it at, in definition order.
    pub fn consumers(&self, i: NodeIndex) -> Vec<(NodeIndex, usize)> {
        let mut v: Vec<_> =
            self.dag.edges_directed(i, Direction::Outgoing).map(|e| (e.target(), *e.weight())).collect();
        v.sort();
        v
    }
    pub fn input_shape(&self) -> &Shape {
        &self.dag[self.input].shape
    }
    pub fn num_classes(&self) -> usize {
        self.dag[self.output].shape.iter().product()
    }
    /// Every parameter tensor as (`NODE.suffix`, spec), in node order.
    /// Number of parameters (every weight tensor's elements).
    pub fn parameter_count(&self) -> u64 {
        self.order()
            .flat_map(|i| self.dag[i].weights.iter())
            .map(|w| w.shape.iter().map(|&d| d as u64).product::<u64>())
            .sum()
    }
    pub fn weight_specs(&self) -> Vec<(String, &WeightSpec)> {
        self.order()
            .flat_map(|i| self.dag[i].weights.iter().map(move |w| (format!("{}.{}", self.dag[i].name, w.suffix), w)))
            .collect()
    }
    /// Nodes that feed an activation (ReLU, hardtanh): the nodes whose bounds the dual network computes.
    pub fn activation_inputs(&self) -> Vec<NodeIndex> {
        let mut v: Vec<NodeIndex> = self
            .order()
            .filter(|&i| self.dag[i].kind.op().map(|op| op.role() == crate::ops::Role::Activation).unwrap_or(false))
            .filter_map(|i| self.dag[i].inputs.first().copied())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}
