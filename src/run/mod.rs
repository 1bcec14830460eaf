//! Running the models: attacks, certification over data sets (and, later, training and cascades).
pub mod attack;
pub mod cascade;
pub mod certify;
pub mod falsify;
pub use crate::memory;
pub mod search;
pub mod train;
pub mod verify;
