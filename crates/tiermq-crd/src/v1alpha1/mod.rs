//! The `v1alpha1` API version. A later version lives beside it in its own module, so adding one
//! (and its conversion) is purely additive.

pub mod common;
pub mod instance;
pub mod shared_cluster;

pub use common::*;
pub use instance::*;
pub use shared_cluster::*;
