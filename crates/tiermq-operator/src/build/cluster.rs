//! Broker clusters: what the builders of a cluster's objects need ([`BrokerCluster`]), the
//! objects themselves ([`ClusterObjects`]) and the kinds the operator manages ([`ManagedKind`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::ApiResource;
use kube::{Resource, ResourceExt};
use tiermq_crd::{ClusterKind, RabbitMQInstance, SharedCluster, StorageSpec};

use super::meta::{kind_label, namespace_of, object_meta, owner_reference};
use super::names::{node_name, validate_cluster_name, validate_instance_name};
use super::network_policy::NetworkAccess;
use super::{
    BuildError, DEFAULT_STATS_INTERVAL_MS, LABEL_CLUSTER, LABEL_CLUSTER_KIND, LABEL_INSTANCE,
    LABEL_MANAGED_BY, LABEL_NAME, LABEL_PART_OF, MANAGED_BY, Secret, admin_secret, cluster_service,
    config_map, dedicated_cluster_name, erlang_cookie, headless_service, network_policy, pdb,
    statefulset,
};

/// Everything the per-cluster builders need; one shape for a `SharedCluster`'s brokers and for a
/// dedicated instance's brokers.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokerCluster {
    /// Cluster name: the StatefulSet's name and the stem of every per-cluster object.
    pub name: String,
    /// Namespace of every per-cluster object.
    pub namespace: String,
    /// A shared cluster or an instance's dedicated one.
    pub kind: ClusterKind,
    /// Number of broker pods.
    pub replicas: i32,
    /// Broker image.
    pub image: String,
    /// CPU and memory of each broker container.
    pub resources: Option<ResourceRequirements>,
    /// Size and StorageClass of each broker's data volume claim.
    pub storage: StorageSpec,
    /// The object whose deletion removes the cluster (the instance or the SharedCluster).
    pub owner: OwnerReference,
    /// `collect_statistics_interval` in milliseconds.
    pub stats_interval_ms: u32,
    /// Lines appended to `rabbitmq.conf` (a SharedCluster's `spec.additionalConfig`).
    pub additional_config: Option<String>,
    /// Who may reach the brokers (the NetworkPolicy; operator-wide settings).
    pub network: NetworkAccess,
    /// The cluster's own narrowing of the AMQP namespaces (a SharedCluster's
    /// `spec.amqpAllowedNamespaces`).
    pub amqp_namespaces: Option<Vec<String>>,
    /// The TLS Secret's name when the brokers serve AMQPS and management HTTPS.
    pub tls_secret: Option<String>,
}

impl BrokerCluster {
    /// The brokers of a `SharedCluster` (named like it, owned by it).
    pub fn for_shared_cluster(sc: &SharedCluster) -> Result<Self, BuildError> {
        let name = sc.name_any();
        validate_cluster_name("SharedCluster", &name)?;
        Ok(Self {
            namespace: namespace_of(sc)?,
            owner: owner_reference(sc)?,
            name,
            kind: ClusterKind::Shared,
            replicas: sc.spec.replicas,
            image: sc.spec.image.clone(),
            resources: sc.spec.resources.clone(),
            storage: sc.spec.storage.clone(),
            stats_interval_ms: DEFAULT_STATS_INTERVAL_MS,
            additional_config: checked_additional_config(sc)?,
            network: NetworkAccess::default(),
            amqp_namespaces: sc.spec.amqp_allowed_namespaces.clone(),
            tls_secret: sc.spec.tls.as_ref().map(|t| t.secret_name.clone()),
        })
    }

    /// The dedicated brokers of an instance (`<instance>-dedicated`, owned by the instance).
    pub fn for_dedicated(instance: &RabbitMQInstance) -> Result<Self, BuildError> {
        let name = instance.name_any();
        validate_instance_name(&name)?;
        let d = &instance.spec.dedicated;
        Ok(Self {
            namespace: namespace_of(instance)?,
            owner: owner_reference(instance)?,
            name: dedicated_cluster_name(&name),
            kind: ClusterKind::Dedicated,
            replicas: d.replicas,
            image: d.image.clone(),
            resources: d.resources.clone(),
            storage: d.storage.clone(),
            stats_interval_ms: DEFAULT_STATS_INTERVAL_MS,
            additional_config: None,
            network: NetworkAccess::default(),
            amqp_namespaces: None,
            tls_secret: d.tls.as_ref().map(|t| t.secret_name.clone()),
        })
    }

    /// A dedicated cluster with default settings, owned by nobody real: for code that needs the
    /// shape of a cluster rather than a real one (the RBAC generator).
    pub fn example() -> Self {
        let spec = tiermq_crd::DedicatedSpec::default();
        Self {
            name: dedicated_cluster_name("example"),
            namespace: "default".into(),
            kind: ClusterKind::Dedicated,
            replicas: spec.replicas,
            image: spec.image,
            resources: spec.resources,
            storage: spec.storage,
            owner: OwnerReference::default(),
            stats_interval_ms: DEFAULT_STATS_INTERVAL_MS,
            additional_config: None,
            network: NetworkAccess::default(),
            amqp_namespaces: None,
            tls_secret: None,
        }
    }

    /// Labels that select the cluster's pods (immutable once the StatefulSet exists).
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        pod_selector(&self.name)
    }

    /// Labels on every per-cluster object and pod.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut l = self.selector_labels();
        l.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
        l.insert(LABEL_PART_OF.into(), "tiermq".into());
        l.insert(LABEL_CLUSTER_KIND.into(), kind_label(self.kind).into());
        l
    }

    pub(super) fn meta(&self, name: String) -> ObjectMeta {
        object_meta(name, &self.namespace, self.labels(), &self.owner)
    }

    /// Erlang node names of every pod, in ordinal order.
    pub fn node_names(&self) -> Vec<String> {
        (0..self.replicas)
            .map(|i| node_name(&self.name, &self.namespace, i))
            .collect()
    }

    /// Every object of the cluster. The Erlang cookie and the admin password are inputs: the
    /// two Secrets are only ever created with them once (see [`erlang_cookie::build`] and
    /// [`admin_secret::build`]).
    pub fn objects(&self, cookie: &Secret, admin_password: &Secret) -> ClusterObjects {
        ClusterObjects {
            erlang_cookie: erlang_cookie::build(self, cookie),
            admin_secret: admin_secret::build(self, admin_password),
            config_map: config_map::build(self),
            headless_service: headless_service::build(self),
            service: cluster_service::build(self),
            statefulset: statefulset::build(self),
            pdb: pdb::build(self),
            network_policy: network_policy::build(self),
        }
    }
}

/// Every object of a broker cluster (see [`BrokerCluster::objects`]). Code that handles a
/// cluster destructures this without `..` (apply, [`ClusterObjects::kinds`]), so an object added
/// here does not compile until it is applied, deleted and granted in RBAC.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterObjects {
    /// Erlang cookie (created once, never changed).
    pub erlang_cookie: k8s_openapi::api::core::v1::Secret,
    /// The operator's management-API user (created once, never changed).
    pub admin_secret: k8s_openapi::api::core::v1::Secret,
    /// `rabbitmq.conf` and `enabled_plugins`.
    pub config_map: k8s_openapi::api::core::v1::ConfigMap,
    /// Stable DNS names of the pods (Erlang node names).
    pub headless_service: k8s_openapi::api::core::v1::Service,
    /// The management API and AMQP of the cluster (ClusterIP).
    pub service: k8s_openapi::api::core::v1::Service,
    /// The brokers.
    pub statefulset: k8s_openapi::api::apps::v1::StatefulSet,
    /// Keeps a voluntary disruption from taking more than one broker at a time.
    pub pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget,
    /// Who may open which broker port; `None` when NetworkPolicies are turned off (apply then
    /// deletes one made before).
    pub network_policy: Option<k8s_openapi::api::networking::v1::NetworkPolicy>,
}

impl ClusterObjects {
    /// The names of the objects written once ([`Write::CreateOnce`]: the Secrets). They are
    /// found by name, never listed: the operator has no right to list Secrets.
    pub fn created_once_names(&self) -> Vec<String> {
        [&self.erlang_cookie, &self.admin_secret]
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect()
    }

    /// The kinds of object a cluster consists of: those above, and the data volume claims its
    /// StatefulSet creates from [`VOLUME_DATA`](super::VOLUME_DATA). Deleting a cluster lists
    /// each kind by the cluster's label (the Secrets by name, see
    /// [`Self::created_once_names`]); the operator's RBAC rules are generated from them.
    pub fn kinds(&self) -> Vec<ManagedKind> {
        let ClusterObjects {
            erlang_cookie,
            admin_secret,
            config_map,
            headless_service,
            service,
            statefulset,
            pdb,
            network_policy: _,
        } = self;
        // Listed whether or not this cluster has one: turning policies off deletes old ones.
        dedup(vec![
            ManagedKind::of::<k8s_openapi::api::networking::v1::NetworkPolicy>(Write::Apply),
            ManagedKind::like(statefulset, Write::Apply),
            ManagedKind::like(pdb, Write::Apply),
            ManagedKind::like(service, Write::Apply),
            ManagedKind::like(headless_service, Write::Apply),
            ManagedKind::like(config_map, Write::Apply),
            ManagedKind::like(erlang_cookie, Write::CreateOnce),
            ManagedKind::like(admin_secret, Write::CreateOnce),
        ])
    }
}

/// How the operator writes the objects of a kind it manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Write {
    /// Server-side applied (created and updated), watched, deleted with their cluster.
    Apply,
    /// Created once, generated values never changed (Secrets), deleted with their cluster; an
    /// instance's credentials are patched only to follow TLS (`uri`, `ca.crt`).
    CreateOnce,
}

/// A kind of object the operator manages, and how it writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ManagedKind {
    /// Group, version, kind and plural of the kind.
    pub resource: ApiResource,
    /// How the operator writes it.
    pub write: Write,
}

impl ManagedKind {
    /// Kind `K`, written as `write` says.
    pub fn of<K: Resource<DynamicType = ()>>(write: Write) -> Self {
        Self {
            resource: ApiResource::erase::<K>(&()),
            write,
        }
    }

    /// The kind of `obj`, written as `write` says.
    fn like<K: Resource<DynamicType = ()>>(_obj: &K, write: Write) -> Self {
        Self::of::<K>(write)
    }
}

/// `kinds` with later duplicates (same kind and write) removed, order kept.
fn dedup(kinds: Vec<ManagedKind>) -> Vec<ManagedKind> {
    let mut out: Vec<ManagedKind> = Vec::new();
    for k in kinds {
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

/// The kinds of an instance's own objects: its client Service and EndpointSlices (applied) and
/// its credentials Secret (created once). Its dedicated cluster's are [`ClusterObjects::kinds`].
pub fn instance_kinds() -> Vec<ManagedKind> {
    vec![
        ManagedKind::of::<k8s_openapi::api::core::v1::Service>(Write::Apply),
        ManagedKind::of::<k8s_openapi::api::discovery::v1::EndpointSlice>(Write::Apply),
        ManagedKind::of::<k8s_openapi::api::core::v1::Secret>(Write::CreateOnce),
    ]
}

/// Keys of `rabbitmq.conf` that belong to the operator: where the brokers listen (clients, the
/// Service, kube-proxy, the operator and the chart's Prometheus monitors depend on it), their
/// TLS (from `spec.tls`), who the administrator is, and how the cluster forms.
const RESERVED_CONFIG_KEYS: [&str; 9] = [
    "listeners.",
    "management.tcp.",
    "management.ssl.",
    "ssl_options.",
    "prometheus.tcp.",
    "default_user",
    "default_pass",
    "loopback_users",
    "cluster_formation.",
];

/// The SharedCluster's `additionalConfig`, refused when a line sets a key the operator owns.
fn checked_additional_config(sc: &SharedCluster) -> Result<Option<String>, BuildError> {
    let Some(text) = sc.spec.additional_config.as_ref() else {
        return Ok(None);
    };
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.split('=').next().unwrap_or("").trim();
        if let Some(reserved) = RESERVED_CONFIG_KEYS.iter().find(|r| key.starts_with(**r)) {
            return Err(BuildError::InvalidConfig {
                kind: "SharedCluster",
                name: sc.name_any(),
                field: "spec.additionalConfig",
                reason: format!("{key:?} is set by the operator ({reserved}*): remove that line"),
            });
        }
        let value = line.split_once('=').map(|(_, v)| v.trim()).unwrap_or("");
        if key == "management_agent.disable_metrics_collector" && value == "true" {
            // Checked on RabbitMQ 4.0.5: without the collector the management API refuses to
            // list channels and consumers, which the operator reads to move clients.
            return Err(BuildError::InvalidConfig {
                kind: "SharedCluster",
                name: sc.name_any(),
                field: "spec.additionalConfig",
                reason: format!(
                    "{key:?} turns off the management statistics; without them RabbitMQ refuses \
                     to list channels and consumers, which the operator reads to tell publishers, \
                     consumers and subscribers apart during a conversion: remove that line"
                ),
            });
        }
        if !line.contains('=') {
            return Err(BuildError::InvalidConfig {
                kind: "SharedCluster",
                name: sc.name_any(),
                field: "spec.additionalConfig",
                reason: format!("{line:?} is not a `key = value` line"),
            });
        }
    }
    Ok(Some(text.clone()))
}

/// The labels that select the broker pods of cluster `name` (a StatefulSet's selector, and the
/// instance Service's while it routes to that cluster by selector).
pub fn pod_selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), "rabbitmq".to_string()),
        (LABEL_INSTANCE.to_string(), name.to_string()),
        (LABEL_CLUSTER.to_string(), name.to_string()),
    ])
}
