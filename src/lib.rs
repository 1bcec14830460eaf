//! dualnet: a compiler and toolkit for provably robust neural networks.
//!
//! `.net` text → [`syntax`] (pest, spanned AST) → [`ir`] (petgraph DAG, blocks expanded) → [`check`]
//! (diagnostics) → primal execution and the mechanically reversed dual network ([`ir::dual`], [`dual`]) →
//! bounds, certification, attacks and training. Method: Wong, Schmidt, Metzen, Kolter, "Scaling provable
//! adversarial defenses", NeurIPS 2018.

pub mod alloc;
pub mod check;
pub mod cli;
pub mod data;
pub mod device;
pub mod diagnostics;
pub mod dual;
pub mod emit;
pub mod error;
pub mod finite;
pub mod float;
pub mod gz;
pub mod ir;
pub mod kernels;
pub mod memory;
pub mod onnx;
pub mod ops;
pub mod run;
pub mod syntax;
pub mod vnnlib;
pub mod weights;
