//! kubesim
pub mod apiserver;
pub mod sim;
