//! A whole test world in a few calls: a kubesim cluster with the CRDs applied by real kubectl, the
//! real `tiermq-operator` binary as a child process (killed with its process group on drop), and
//! helpers to read an instance's status, watch its migration phases and reach its Service.
//!
//! Object names follow the operator's naming contract (`crates/tiermq-operator/src/build/mod.rs`);
//! the tests check that contract from the outside, as a user would.

mod binary;
mod kubectl;
mod manifests;
mod operator;
mod phases;
mod world;

pub use binary::{operator_binary, workspace_root};
pub use kubectl::{Kubectl, KubectlOutput, flip_tier, patch_instance};
pub use manifests::{
    IMAGE_3_10, IMAGE_4_0, InstanceSpec, external_shared_cluster_yaml,
    rabbitmq_cluster_objects_yaml, shared_cluster_yaml, shared_cluster_yaml_with,
};
pub use operator::{OperatorProcess, Supervision};
pub use phases::{
    CONVERSION_PHASES, PhaseChange, PhaseRecorder, collapse_drain_retries, conversion_sequence,
    reached_phase,
};
pub use world::{World, management_client};
