//! kubesim
pub mod sim;
