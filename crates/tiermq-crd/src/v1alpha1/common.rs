//! Types shared by both resources.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Broker image used when a spec names none: RabbitMQ 4.0, the 4.x release the project runs and
/// tests (3.x is out of community support; later 4.x minors are reached from it by the in-place
/// rolling upgrade, one minor at a time). The oldest release tested is
/// [`crate::versions::OLDEST_TESTED`].
pub const DEFAULT_IMAGE: &str = "rabbitmq:4.0-management";

/// Persistent storage of one broker node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each node's volume.
    #[serde(default = "crate::v1alpha1::instance::default_storage_size")]
    pub size: Quantity,
    /// StorageClass of the volume claims; empty uses the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: crate::v1alpha1::instance::default_storage_size(),
            storage_class_name: None,
        }
    }
}

/// Which kind of broker cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ClusterKind {
    /// A `SharedCluster` hosting many tenants.
    Shared,
    /// An instance's own cluster.
    Dedicated,
}

/// A broker cluster that serves (or served) an instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    /// Whether it is a `SharedCluster` or an instance's own cluster.
    pub kind: ClusterKind,
    /// For `Shared`: the SharedCluster's name. For `Dedicated`: the StatefulSet's name.
    pub name: String,
    /// Namespace of that SharedCluster or StatefulSet.
    pub namespace: String,
}

/// TLS for a broker cluster's clients and management API.
///
/// The brokers add an AMQPS listener (5671) and a management HTTPS listener (15671) next to the
/// plain ones, which stay on so clients can move to TLS at their own pace. The operator talks
/// to the management API over HTTPS and verifies the brokers' certificate against `ca.crt`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A Secret in the cluster's namespace with `tls.crt`, `tls.key` and `ca.crt` (the shape
    /// cert-manager writes). The certificate must name the cluster's Service DNS name
    /// (`<cluster>.<namespace>.svc`); `ca.crt` must sign it.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}
