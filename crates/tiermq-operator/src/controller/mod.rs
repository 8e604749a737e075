//! Reconcile concerns, one module each.

pub mod plan;
