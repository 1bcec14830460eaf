//! Intermediate representation: the checked graph and the lowering from the AST (block expansion included).
pub mod dual;
pub mod graph;
pub mod lower;

pub use graph::{Graph, Node, NodeKind};
