//! The dual network and certified bounds (paper Section 3): the executable model, input sets, layer-wise bounds
//! (forward propagation of each free direction), the dual objective (backward pass of the dual network), and the
//! robust loss and error built on them.

pub mod alpha;
pub mod bounds;
pub mod deployed;
pub mod estimator;
mod gpu;
pub mod grouping;
pub mod ibp;
pub mod input_set;
pub mod model;
pub mod objective;
pub mod robust;
pub mod rounding;

pub use input_set::{InputSet, Norm};
pub use model::Model;
