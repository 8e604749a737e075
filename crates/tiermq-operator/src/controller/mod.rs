//! Reconcile concerns, one module each.

pub mod apply;
pub mod plan;
