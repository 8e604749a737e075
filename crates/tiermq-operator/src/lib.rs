//! The tiermq operator as a library: pure planning and building, plus the IO that applies them.
//!
//! - [`controller::plan`]: the tier-conversion state machine, a pure function of (observed, now).
//! - [`build`]: pure builders, one per Kubernetes object the operator owns.

pub mod build;
pub mod controller;
