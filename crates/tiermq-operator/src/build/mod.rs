//! Pure builders, one per child object: each turns its inputs into a k8s-openapi object and does
//! no IO. Apply code (elsewhere) writes what these return with server-side apply.
//!
//! # Naming contract
//!
//! Other code (apply, observe, cleanup, the end-to-end tests) finds objects by these names, so they
//! live in the functions of this module and nowhere else:
//!
//! | object | name | function |
//! |---|---|---|
//! | dedicated cluster of instance `i` | `i-dedicated` | [`dedicated_cluster_name`] |
//! | shared cluster | the `SharedCluster`'s name | — |
//! | StatefulSet of cluster `c` | `c` | [`BrokerCluster::name`] |
//! | headless Service (pod DNS) | `c-nodes` | [`headless_service_name`] |
//! | client/management Service (ClusterIP, selects the pods) | `c` | [`cluster_service_name`] |
//! | ConfigMap (`rabbitmq.conf`, `enabled_plugins`) | `c-config` | [`config_map_name`] |
//! | Erlang-cookie Secret (key `cookie`) | `c-erlang-cookie` | [`erlang_cookie_secret_name`] |
//! | admin Secret (keys `username`, `password`) | `c-admin` | [`admin_secret_name`] |
//! | PodDisruptionBudget | `c` | [`pdb_name`] |
//! | volume claim of pod `n` | `data-c-n` | [`VOLUME_DATA`] (StatefulSet naming) |
//! | client Service of instance `i` (no selector) | `i` | [`instance_service_name`] |
//! | EndpointSlice of `i` for serving cluster `c` | `i-c` | [`endpoint_slice_name`] |
//! | credentials Secret (service binding) | `i-credentials` | [`credentials_secret_name`] |
//! | tenant vhost and username, on either tier | `<namespace>.<instance>` | [`tenant_name`] |
//!
//! A cluster's management API is reached through its client Service on [`MANAGEMENT_PORT`] (see
//! `controller::clusters` for the address modes).
//!
//! # Ownership
//!
//! Every object carries a controller owner reference (`controller` and `blockOwnerDeletion` set):
//! a dedicated cluster's objects and every per-instance object point at the `RabbitMQInstance`,
//! a shared cluster's objects at the `SharedCluster`, so deleting either cascades.
//!
//! # Secrets are generated once
//!
//! Random values (Erlang cookie, admin password, tenant password) are inputs to the builders,
//! never produced inside them. Apply creates each Secret once from [`generate_secret`] and
//! afterwards reads the value back from the existing Secret (`*::read_*` helpers); it never
//! regenerates one, because the brokers' state (cluster membership, users) depends on them.
//! [`Secret`] never shows its content in `Debug`; the built Kubernetes `Secret` objects hold the
//! values, so callers must not log them.

pub mod admin_secret;
pub mod cluster_service;
pub mod config_map;
pub mod credentials;
pub mod endpoint_slice;
pub mod erlang_cookie;
pub mod headless_service;
pub mod instance_service;
pub mod pdb;
pub mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::ApiResource;
use kube::{Resource, ResourceExt};
use tiermq_crd::{ClusterKind, RabbitMQInstance, SharedCluster, StorageSpec};

/// AMQP 0-9-1 client port.
pub const AMQP_PORT: i32 = 5672;
/// RabbitMQ management HTTP API port.
pub const MANAGEMENT_PORT: i32 = 15672;
/// Erlang distribution (inter-node) port.
pub const DIST_PORT: i32 = 25672;
/// Erlang port mapper daemon.
pub const EPMD_PORT: i32 = 4369;

/// Port names. kubesim and kube-proxy match Service and EndpointSlice ports by these names.
pub const PORT_NAME_AMQP: &str = "amqp";
pub const PORT_NAME_MANAGEMENT: &str = "management";
pub const PORT_NAME_DIST: &str = "dist";
pub const PORT_NAME_EPMD: &str = "epmd";

/// Name of the StatefulSet's volume claim template (mounted at `/var/lib/rabbitmq`).
pub const VOLUME_DATA: &str = "data";

/// `app.kubernetes.io/managed-by` value and EndpointSlice manager.
pub const MANAGED_BY: &str = "tiermq-operator";
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
/// The broker cluster an object belongs to (StatefulSet, pods, Services, EndpointSlices).
pub const LABEL_CLUSTER: &str = "tiermq.io/cluster";
/// `shared` or `dedicated`.
pub const LABEL_CLUSTER_KIND: &str = "tiermq.io/cluster-kind";
/// The `RabbitMQInstance` a per-instance object belongs to.
pub const LABEL_TIERMQ_INSTANCE: &str = "tiermq.io/instance";

/// Default `collect_statistics_interval` (RabbitMQ's own default). Tests lower it: message counts
/// in the management API lag by this much.
pub const DEFAULT_STATS_INTERVAL_MS: u32 = 5000;

pub use tiermq_crd::names::{MAX_CLUSTER_NAME_LEN, MAX_INSTANCE_NAME_LEN, dedicated_cluster_name};

/// Why a builder could not build.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error(
        "{kind} {name:?} has no {field}; builders need objects read from the API server (get or list it first)"
    )]
    MissingField {
        kind: &'static str,
        name: String,
        field: &'static str,
    },
    #[error("{kind} name {name:?} is not usable: {reason}; rename the object")]
    InvalidName {
        kind: &'static str,
        name: String,
        reason: String,
    },
}

/// Secret values (Erlang cookie, passwords): the project's one redacting type and generator.
pub use tiermq_broker::{Secret, generate_secret};

/// A secret value as the bytes of a Secret's `data` entry.
fn secret_bytes(s: &Secret) -> ByteString {
    ByteString(s.expose().as_bytes().to_vec())
}

// ---- names ----------------------------------------------------------------------------------

/// Headless Service that gives each broker pod a stable DNS name.
pub fn headless_service_name(cluster: &str) -> String {
    format!("{cluster}-nodes")
}
/// ClusterIP Service in front of a cluster's pods (AMQP and management API).
pub fn cluster_service_name(cluster: &str) -> String {
    cluster.to_string()
}
pub fn config_map_name(cluster: &str) -> String {
    format!("{cluster}-config")
}
pub fn erlang_cookie_secret_name(cluster: &str) -> String {
    format!("{cluster}-erlang-cookie")
}
pub fn admin_secret_name(cluster: &str) -> String {
    format!("{cluster}-admin")
}
pub fn pdb_name(cluster: &str) -> String {
    cluster.to_string()
}
/// The instance's stable client Service.
pub fn instance_service_name(instance: &str) -> String {
    instance.to_string()
}
/// The EndpointSlice that routes the instance's Service to one serving cluster.
pub fn endpoint_slice_name(instance: &str, cluster: &str) -> String {
    format!("{instance}-{cluster}")
}
pub fn credentials_secret_name(instance: &str) -> String {
    format!("{instance}-credentials")
}
/// The tenant's vhost and username: the same on both tiers, so clients never change settings.
pub fn tenant_name(namespace: &str, instance: &str) -> String {
    format!("{namespace}.{instance}")
}
/// In-cluster DNS name of a Service.
pub fn service_host(service: &str, namespace: &str) -> String {
    format!("{service}.{namespace}.svc")
}
/// Erlang node name of pod `ordinal` (long names: the pod's DNS name under the headless Service).
pub fn node_name(cluster: &str, namespace: &str, ordinal: i32) -> String {
    format!(
        "rabbit@{cluster}-{ordinal}.{}",
        service_host(&headless_service_name(cluster), namespace)
    )
}

/// Checks that `name` can name a cluster: a DNS-1035 label short enough for every derived name.
pub fn validate_cluster_name(kind: &'static str, name: &str) -> Result<(), BuildError> {
    validate_label(kind, name, MAX_CLUSTER_NAME_LEN)
}
/// Checks that `name` can name an instance (its Service and its dedicated cluster).
pub fn validate_instance_name(name: &str) -> Result<(), BuildError> {
    validate_label("RabbitMQInstance", name, MAX_INSTANCE_NAME_LEN)
}

fn validate_label(kind: &'static str, name: &str, max: usize) -> Result<(), BuildError> {
    let bad = |reason: String| {
        Err(BuildError::InvalidName {
            kind,
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > max {
        return bad(format!("it must have 1 to {max} characters"));
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let starts = name.starts_with(|c: char| c.is_ascii_lowercase());
    if !ok_chars || !starts || name.ends_with('-') {
        return bad(
            "it must be lowercase letters, digits and '-', start with a letter and end with a \
             letter or digit (it names Services)"
                .into(),
        );
    }
    Ok(())
}

// ---- owners and metadata --------------------------------------------------------------------

/// A controller owner reference to `owner` (`controller` and `blockOwnerDeletion` set).
pub fn owner_reference<K>(owner: &K) -> Result<OwnerReference, BuildError>
where
    K: Resource<DynamicType = ()>,
{
    let name = owner.name_any();
    let uid = owner.meta().uid.clone().ok_or(BuildError::MissingField {
        kind: kind_str::<K>(),
        name: name.clone(),
        field: "metadata.uid",
    })?;
    Ok(OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name,
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

fn kind_str<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "RabbitMQInstance" => "RabbitMQInstance",
        "SharedCluster" => "SharedCluster",
        _ => "object",
    }
}

fn namespace_of<K>(obj: &K) -> Result<String, BuildError>
where
    K: Resource<DynamicType = ()>,
{
    obj.namespace().ok_or(BuildError::MissingField {
        kind: kind_str::<K>(),
        name: obj.name_any(),
        field: "metadata.namespace",
    })
}

fn object_meta(
    name: String,
    namespace: &str,
    labels: BTreeMap<String, String>,
    owner: &OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_string()),
        labels: Some(labels),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

fn kind_label(kind: ClusterKind) -> &'static str {
    match kind {
        ClusterKind::Shared => "shared",
        ClusterKind::Dedicated => "dedicated",
    }
}

/// A non-empty UTF-8 value of `key` in a Secret's `data` (or `stringData`, as written by hand).
fn read_key(secret: &k8s_openapi::api::core::v1::Secret, key: &str) -> Option<Secret> {
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|b| String::from_utf8(b.0.clone()).ok());
    let from_string_data = || {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .cloned()
    };
    from_data
        .or_else(from_string_data)
        .filter(|v| !v.is_empty())
        .map(Secret::new)
}

// ---- broker clusters ------------------------------------------------------------------------

/// Everything the per-cluster builders need; one shape for a `SharedCluster`'s brokers and for a
/// dedicated instance's brokers.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokerCluster {
    /// Cluster name: the StatefulSet's name and the stem of every per-cluster object.
    pub name: String,
    pub namespace: String,
    pub kind: ClusterKind,
    pub replicas: i32,
    pub image: String,
    pub resources: Option<ResourceRequirements>,
    pub storage: StorageSpec,
    /// The object whose deletion removes the cluster (the instance or the SharedCluster).
    pub owner: OwnerReference,
    /// `collect_statistics_interval` in milliseconds.
    pub stats_interval_ms: u32,
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
        }
    }

    /// Labels that select the cluster's pods (immutable once the StatefulSet exists).
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_NAME.to_string(), "rabbitmq".to_string()),
            (LABEL_INSTANCE.to_string(), self.name.clone()),
            (LABEL_CLUSTER.to_string(), self.name.clone()),
        ])
    }

    /// Labels on every per-cluster object and pod.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut l = self.selector_labels();
        l.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
        l.insert(LABEL_PART_OF.into(), "tiermq".into());
        l.insert(LABEL_CLUSTER_KIND.into(), kind_label(self.kind).into());
        l
    }

    fn meta(&self, name: String) -> ObjectMeta {
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
}

impl ClusterObjects {
    /// The kinds of object a cluster consists of: those above, and the data volume claims its
    /// StatefulSet creates from [`VOLUME_DATA`]. Deleting a cluster lists each kind by the
    /// cluster's label; the operator's RBAC rules are generated from them.
    pub fn kinds(&self) -> Vec<ManagedKind> {
        let ClusterObjects {
            erlang_cookie,
            admin_secret,
            config_map,
            headless_service,
            service,
            statefulset,
            pdb,
        } = self;
        let claims =
            ManagedKind::of::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(Write::DeleteOnly);
        dedup(vec![
            ManagedKind::like(statefulset, Write::Apply),
            ManagedKind::like(pdb, Write::Apply),
            ManagedKind::like(service, Write::Apply),
            ManagedKind::like(headless_service, Write::Apply),
            ManagedKind::like(config_map, Write::Apply),
            ManagedKind::like(erlang_cookie, Write::CreateOnce),
            ManagedKind::like(admin_secret, Write::CreateOnce),
            claims,
        ])
    }
}

/// How the operator writes the objects of a kind it manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Write {
    /// Server-side applied (created and updated), watched, deleted with their cluster.
    Apply,
    /// Created once and never changed (generated Secrets), watched, deleted with their cluster.
    CreateOnce,
    /// Created by another controller from a template (volume claims); only deleted.
    DeleteOnly,
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

// ---- instances ------------------------------------------------------------------------------

/// The parts of a `RabbitMQInstance` the per-instance builders use.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceTarget {
    pub name: String,
    pub namespace: String,
    pub owner: OwnerReference,
}

impl InstanceTarget {
    pub fn of(instance: &RabbitMQInstance) -> Result<Self, BuildError> {
        let name = instance.name_any();
        validate_instance_name(&name)?;
        Ok(Self {
            namespace: namespace_of(instance)?,
            owner: owner_reference(instance)?,
            name,
        })
    }

    /// The tenant's vhost and username.
    pub fn tenant(&self) -> String {
        tenant_name(&self.namespace, &self.name)
    }

    /// The DNS name clients connect to.
    pub fn host(&self) -> String {
        service_host(&instance_service_name(&self.name), &self.namespace)
    }

    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_NAME.to_string(), "rabbitmq".to_string()),
            (LABEL_INSTANCE.to_string(), self.name.clone()),
            (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
            (LABEL_PART_OF.to_string(), "tiermq".to_string()),
            (LABEL_TIERMQ_INSTANCE.to_string(), self.name.clone()),
        ])
    }

    fn meta(&self, name: String, extra: &[(&str, &str)]) -> ObjectMeta {
        let mut labels = self.labels();
        for (k, v) in extra {
            labels.insert((*k).to_string(), (*v).to_string());
        }
        object_meta(name, &self.namespace, labels, &self.owner)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Fixtures shared by the builder tests.
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use tiermq_crd::{RabbitMQInstanceSpec, SharedClusterSpec};

    pub fn instance(name: &str, ns: &str) -> RabbitMQInstance {
        let spec: RabbitMQInstanceSpec = serde_json::from_value(serde_json::json!({
            "series": "Subscription", "tier": "Dedicated",
            "dedicated": {"replicas": 3, "storage": {"size": "5Gi", "storageClassName": "fast"}}
        }))
        .unwrap();
        let mut i = RabbitMQInstance::new(name, spec);
        i.metadata.namespace = Some(ns.into());
        i.metadata.uid = Some("uid-instance".into());
        i
    }

    pub fn shared_cluster(name: &str, ns: &str) -> SharedCluster {
        let spec: SharedClusterSpec = serde_json::from_value(serde_json::json!({
            "replicas": 1, "storage": {"size": "2Gi"}
        }))
        .unwrap();
        let mut s = SharedCluster::new(name, spec);
        s.metadata.namespace = Some(ns.into());
        s.metadata.uid = Some("uid-shared".into());
        s
    }

    pub fn dedicated() -> BrokerCluster {
        BrokerCluster::for_dedicated(&instance("orders", "team-a")).unwrap()
    }

    pub fn shared() -> BrokerCluster {
        BrokerCluster::for_shared_cluster(&shared_cluster("main", "tiermq")).unwrap()
    }

    pub fn quantity(s: &str) -> Quantity {
        Quantity(s.into())
    }

    /// Asserts the single owner reference is a blocking controller reference to `kind`/`name`.
    pub fn assert_owned(meta: &ObjectMeta, kind: &str, name: &str) {
        let refs = meta.owner_references.as_ref().expect("owner references");
        assert_eq!(refs.len(), 1);
        let r = &refs[0];
        assert_eq!((r.kind.as_str(), r.name.as_str()), (kind, name));
        assert_eq!(r.api_version, "tiermq.io/v1alpha1");
        assert_eq!(r.controller, Some(true));
        assert_eq!(r.block_owner_deletion, Some(true));
        assert!(!r.uid.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn names_follow_the_contract() {
        assert_eq!(dedicated_cluster_name("orders"), "orders-dedicated");
        assert_eq!(headless_service_name("main"), "main-nodes");
        assert_eq!(cluster_service_name("main"), "main");
        assert_eq!(config_map_name("main"), "main-config");
        assert_eq!(erlang_cookie_secret_name("main"), "main-erlang-cookie");
        assert_eq!(admin_secret_name("main"), "main-admin");
        assert_eq!(pdb_name("main"), "main");
        assert_eq!(instance_service_name("orders"), "orders");
        assert_eq!(endpoint_slice_name("orders", "main"), "orders-main");
        assert_eq!(credentials_secret_name("orders"), "orders-credentials");
        assert_eq!(tenant_name("team-a", "orders"), "team-a.orders");
        assert_eq!(
            node_name("main", "tiermq", 2),
            "rabbit@main-2.main-nodes.tiermq.svc"
        );
    }

    #[test]
    fn dedicated_cluster_comes_from_the_instance_spec() {
        let c = dedicated();
        assert_eq!(c.name, "orders-dedicated");
        assert_eq!(c.namespace, "team-a");
        assert_eq!(c.kind, ClusterKind::Dedicated);
        assert_eq!(c.replicas, 3);
        assert_eq!(c.storage.size, quantity("5Gi"));
        assert_eq!(c.owner.kind, "RabbitMQInstance");
        assert_eq!(c.owner.name, "orders");
        assert_eq!(c.owner.block_owner_deletion, Some(true));
        assert_eq!(c.node_names().len(), 3);
        assert_eq!(c.labels()[LABEL_CLUSTER_KIND], "dedicated");
    }

    #[test]
    fn shared_cluster_is_named_and_owned_by_the_shared_cluster() {
        let c = shared();
        assert_eq!(c.name, "main");
        assert_eq!(c.kind, ClusterKind::Shared);
        assert_eq!(c.owner.kind, "SharedCluster");
        assert_eq!(c.labels()[LABEL_CLUSTER_KIND], "shared");
    }

    #[test]
    fn objects_not_read_from_the_api_server_are_refused() {
        let mut i = instance("orders", "team-a");
        i.metadata.uid = None;
        let err = BrokerCluster::for_dedicated(&i).unwrap_err();
        assert!(err.to_string().contains("metadata.uid"), "{err}");
        let mut i = instance("orders", "team-a");
        i.metadata.namespace = None;
        let err = InstanceTarget::of(&i).unwrap_err();
        assert!(err.to_string().contains("metadata.namespace"), "{err}");
    }

    #[test]
    fn names_that_cannot_name_services_are_refused() {
        let long = "a".repeat(MAX_INSTANCE_NAME_LEN + 1);
        assert!(validate_instance_name(&"a".repeat(MAX_INSTANCE_NAME_LEN)).is_ok());
        for bad in [long.as_str(), "", "Orders", "1st", "a.b", "trailing-"] {
            let err = validate_instance_name(bad).unwrap_err();
            assert!(err.to_string().contains("rename"), "{bad}: {err}");
        }
        let err = BrokerCluster::for_dedicated(&instance("a.b", "ns")).unwrap_err();
        assert!(matches!(err, BuildError::InvalidName { .. }));
        // The longest allowed instance still gives a StatefulSet name that fits.
        let name = dedicated_cluster_name(&"a".repeat(MAX_INSTANCE_NAME_LEN));
        assert!(validate_cluster_name("x", &name).is_ok());
    }

    #[test]
    fn cluster_objects_share_namespace_owner_and_cluster_label() {
        let c = dedicated();
        let o = c.objects(&Secret::new("c"), &Secret::new("p"));
        let metas = [
            &o.erlang_cookie.metadata,
            &o.admin_secret.metadata,
            &o.config_map.metadata,
            &o.headless_service.metadata,
            &o.service.metadata,
            &o.statefulset.metadata,
            &o.pdb.metadata,
        ];
        let names: Vec<&str> = metas.iter().map(|m| m.name.as_deref().unwrap()).collect();
        assert_eq!(
            names,
            [
                "orders-dedicated-erlang-cookie",
                "orders-dedicated-admin",
                "orders-dedicated-config",
                "orders-dedicated-nodes",
                "orders-dedicated",
                "orders-dedicated",
                "orders-dedicated"
            ]
        );
        for m in metas {
            assert_eq!(m.namespace.as_deref(), Some("team-a"));
            assert_owned(m, "RabbitMQInstance", "orders");
            assert_eq!(
                m.labels.as_ref().unwrap()[LABEL_CLUSTER],
                "orders-dedicated"
            );
        }
    }

    #[test]
    fn generated_secret_values_are_random_alphanumeric_and_redacted() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let a = generate_secret(&mut rng);
        let b = generate_secret(&mut rng);
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), tiermq_broker::GENERATED_LEN);
        assert!(a.expose().chars().all(|c| c.is_ascii_alphanumeric()));
        let dbg = format!("{a:?}");
        assert!(
            !dbg.contains(a.expose()) && dbg.contains("redacted"),
            "{dbg}"
        );
    }
}
