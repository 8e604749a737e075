//! kubesim
pub mod apiserver;
pub mod sim;
pub mod cluster;
