//! `SharedCluster`: a multi-tenant broker cluster the operator runs and places instances on.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DEFAULT_IMAGE, StorageSpec, TlsSpec};
use super::instance::{Limits, ServiceType};

/// Refused: a SharedCluster's storage changed.
pub const SHARED_STORAGE_MESSAGE: &str = "spec.storage of a SharedCluster cannot change: a \
StatefulSet's volume claims are fixed once created. Create a new SharedCluster with the storage \
you want and move instances to it";

/// Refused: a SharedCluster's replicas went down.
pub const SHARED_SCALE_DOWN_MESSAGE: &str = "spec.replicas of a SharedCluster cannot go down: \
scaling a StatefulSet down removes RabbitMQ nodes without moving the queue replicas they hold. \
Create a smaller SharedCluster and move instances to it";

/// Refused: a SharedCluster's `spec.external` was set, removed or pointed elsewhere.
pub const SHARED_EXTERNAL_MESSAGE: &str = "spec.external of a SharedCluster cannot change: the \
tenants placed on it live on those brokers. Create another SharedCluster for the other brokers \
and move instances to it";

/// Desired state of a shared broker cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tiermq.io",
    version = "v1alpha1",
    kind = "SharedCluster",
    plural = "sharedclusters",
    singular = "sharedcluster",
    shortname = "rmqsc",
    category = "tiermq",
    namespaced,
    status = "SharedClusterStatus",
    derive = "PartialEq",
    doc = "A multi-tenant RabbitMQ cluster on which shared-tier instances get a vhost and user.",
    printcolumn(name = "Ready", type_ = "boolean", json_path = ".status.ready"),
    printcolumn(
        name = "Instances",
        type_ = "integer",
        json_path = ".status.instanceCount"
    ),
    printcolumn(
        name = "Capacity",
        type_ = "integer",
        json_path = ".spec.capacity.maxInstances"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.storage == oldSelf.storage").message(SHARED_STORAGE_MESSAGE))]
#[x_kube(validation = Rule::new("self.replicas >= oldSelf.replicas").message(SHARED_SCALE_DOWN_MESSAGE))]
#[x_kube(validation = Rule::new("has(self.external) == has(oldSelf.external) && (!has(self.external) || self.external == oldSelf.external)").message(SHARED_EXTERNAL_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct SharedClusterSpec {
    /// Number of broker nodes (1 to 7).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 7))]
    pub replicas: i32,
    /// Broker image.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// CPU and memory for each broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Persistent storage for each broker node; fixed once the cluster exists.
    #[serde(default)]
    pub storage: StorageSpec,
    /// How many instances may be placed on the cluster.
    #[serde(default)]
    pub capacity: Capacity,
    /// Lines appended to the brokers' `rabbitmq.conf`, after the operator's own (the later line
    /// wins for a key set twice), e.g. `disk_free_limit.absolute = 2GB`. Listeners, the
    /// management listener, default users and cluster formation are the operator's: lines
    /// setting them are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_config: Option<String>,
    /// Namespaces whose pods may open AMQP connections to these brokers (their NetworkPolicy).
    /// Narrows the operator's `--amqp-allowed-namespaces`: only namespaces in both lists (in
    /// this one, when the operator allows every namespace). Unset: the operator's list. The
    /// operator and other tiermq brokers (shovels) may always connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp_allowed_namespaces: Option<Vec<String>>,
    /// Brokers the operator did not create and does not run ("bring your own cluster"). Set,
    /// the operator creates, changes and deletes no broker object for this SharedCluster
    /// (`replicas`, `image`, `resources`, `storage` and `additionalConfig` are ignored); it only
    /// manages the tenants (vhost and user) placed on those brokers. Fixed once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalCluster>,
    /// TLS for AMQP (AMQPS on 5671) and the management API (HTTPS on 15671). Ignored for an
    /// external cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// What tenants placed here may do: which namespaces may place instances, which Service
    /// types they may expose the brokers with, the vhost limits of tenants that set none, and
    /// which policy keys survive a downgrade onto these brokers.
    #[serde(default)]
    pub tenants: TenantTerms,
}

/// The bounds a SharedCluster sets for its tenants. A refusal is reported on the instance
/// (placement refused, or a downgrade held with `ConversionBlocked`); tenants already placed
/// stay when the namespaces narrow.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantTerms {
    /// Namespaces whose instances may be placed here (new instances and downgrades); `"*"`
    /// allows every namespace. Narrowing the list does not evict tenants already placed.
    #[serde(default = "default_tenant_namespaces")]
    pub namespaces: Vec<String>,
    /// Service types (`spec.access.serviceType`) an instance may have while these brokers serve
    /// it or it converts to or from them. `ClusterIP` only unless widened: a `LoadBalancer` or
    /// `NodePort` would expose the shared brokers outside the cluster.
    #[serde(default = "default_access_types")]
    #[schemars(length(min = 1))]
    pub access_types: Vec<ServiceType>,
    /// Vhost limits for tenants whose `spec.limits` leaves one unset.
    #[serde(default)]
    pub default_limits: Limits,
    /// Policy definition keys a tenant's policies keep when a downgrade copies them here from
    /// its dedicated cluster; other keys are dropped (a policy left with none is not copied)
    /// and the conversion's Warning Event lists them. Tenants cannot write policies on shared
    /// brokers themselves, so this bounds every policy these brokers apply to a tenant.
    #[serde(default = "default_policy_keys")]
    pub policy_keys: Vec<String>,
}

impl Default for TenantTerms {
    fn default() -> Self {
        Self {
            namespaces: default_tenant_namespaces(),
            access_types: default_access_types(),
            default_limits: Limits::default(),
            policy_keys: default_policy_keys(),
        }
    }
}

impl TenantTerms {
    /// Instances of `namespace` may be placed here.
    pub fn admits_namespace(&self, namespace: &str) -> bool {
        self.namespaces.iter().any(|n| n == "*" || n == namespace)
    }

    /// An instance may have a Service of type `t` while on these brokers.
    pub fn admits_access(&self, t: ServiceType) -> bool {
        self.access_types.contains(&t)
    }

    /// A policy key survives a copy onto these brokers.
    pub fn admits_policy_key(&self, key: &str) -> bool {
        self.policy_keys.iter().any(|k| k == "*" || k == key)
    }
}

/// The policy keys tenants keep on shared brokers unless a SharedCluster says otherwise: the
/// per-queue bounds and routing a tenant needs, none that replicates or pins queues onto nodes
/// (classic mirroring's `ha-*`, `queue-master-locator`, `queue-leader-locator`) or moves
/// messages elsewhere (`federation-upstream*`): those spend the shared brokers' capacity on one
/// tenant.
pub const DEFAULT_TENANT_POLICY_KEYS: [&str; 14] = [
    "alternate-exchange",
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "dead-letter-strategy",
    "delivery-limit",
    "expires",
    "max-age",
    "max-length",
    "max-length-bytes",
    "message-ttl",
    "overflow",
    "queue-mode",
    "queue-version",
    "stream-max-segment-size-bytes",
];

fn default_tenant_namespaces() -> Vec<String> {
    vec!["*".to_string()]
}
fn default_access_types() -> Vec<ServiceType> {
    vec![ServiceType::ClusterIP]
}
fn default_policy_keys() -> Vec<String> {
    DEFAULT_TENANT_POLICY_KEYS
        .iter()
        .map(|k| k.to_string())
        .collect()
}

/// Where the brokers of an external SharedCluster are.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalCluster {
    /// A `RabbitmqCluster` of the RabbitMQ cluster operator, in the SharedCluster's namespace.
    /// The operator reaches it through the objects the cluster operator makes for it: the
    /// client Service `<name>`, the Secret `<name>-default-user` (keys `username`, `password`:
    /// the admin the operator logs in as), the StatefulSet `<name>-server` (readiness) and the
    /// pods labelled `app.kubernetes.io/name=<name>` (routing). The `RabbitmqCluster` object
    /// itself is not read.
    pub rabbitmq_cluster_ref: RabbitmqClusterRef,
}

/// Names a `RabbitmqCluster` (`rabbitmq.com/v1beta1`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RabbitmqClusterRef {
    /// The `RabbitmqCluster`'s name.
    #[schemars(length(min = 1, max = 52))]
    pub name: String,
}

/// How many tenants the cluster accepts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    /// Placement (and downgrades onto this cluster) is refused beyond this many instances.
    #[serde(default = "default_max_instances")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_instances: i32,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            max_instances: default_max_instances(),
        }
    }
}

fn default_replicas() -> i32 {
    1
}
fn default_image() -> String {
    DEFAULT_IMAGE.to_string()
}
fn default_max_instances() -> i32 {
    50
}

/// Observed state of a shared cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SharedClusterStatus {
    /// True when every requested broker node is ready.
    #[serde(default)]
    pub ready: bool,
    /// Broker nodes ready, from the StatefulSet's status.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Instances placed here (including ones migrating onto or off it).
    #[serde(default)]
    pub instance_count: i32,
    /// Standard conditions (`Ready`, `Degraded`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
