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
//! | NetworkPolicy | `c` | [`network_policy_name`] |
//! | volume claim of pod `n` | `data-c-n` | [`VOLUME_DATA`] (StatefulSet naming) |
//! | client Service of instance `i` (no selector) | `i` | [`instance_service_name`] |
//! | EndpointSlice of `i` for serving cluster `c` | `i.c` | [`endpoint_slice_name`] |
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
pub mod network_policy;
pub mod pdb;
pub mod statefulset;

mod cluster;
mod instance;
mod meta;
mod names;

pub use cluster::{
    BrokerCluster, ClusterObjects, ManagedKind, Write, instance_kinds, pod_selector,
};
pub use instance::InstanceTarget;
pub use meta::owner_reference;
pub(crate) use meta::read_key;
pub use names::*;

use k8s_openapi::ByteString;

/// AMQP 0-9-1 client port.
pub const AMQP_PORT: i32 = 5672;
/// RabbitMQ management HTTP API port.
pub const MANAGEMENT_PORT: i32 = 15672;
/// AMQP 0-9-1 over TLS (AMQPS), on clusters with `spec.tls`.
pub const AMQPS_PORT: i32 = 5671;
/// The management API over HTTPS, on clusters with `spec.tls`.
pub const MANAGEMENT_TLS_PORT: i32 = 15671;
/// Where a TLS cluster's brokers mount its TLS Secret (`tls.crt`, `tls.key`, `ca.crt`).
pub const TLS_MOUNT_PATH: &str = "/etc/rabbitmq-tls";
/// The TLS Secret's key holding the brokers' certificate (chain), PEM.
pub const KEY_TLS_CERT: &str = "tls.crt";
/// The TLS Secret's key holding the certificate's private key, PEM.
pub const KEY_TLS_KEY: &str = "tls.key";
/// The TLS Secret's key holding the CA that signs the brokers' certificate, PEM.
pub const KEY_TLS_CA: &str = "ca.crt";
/// `rabbitmq_prometheus`'s port (`/metrics`, `/metrics/per-object`, `/metrics/detailed`).
pub const PROMETHEUS_PORT: i32 = 15692;
/// Erlang distribution (inter-node) port.
pub const DIST_PORT: i32 = 25672;
/// Erlang port mapper daemon.
pub const EPMD_PORT: i32 = 4369;

/// Port names. kubesim and kube-proxy match Service and EndpointSlice ports by these names.
pub const PORT_NAME_AMQP: &str = "amqp";
/// Name of the management API port.
pub const PORT_NAME_MANAGEMENT: &str = "management";
/// Name of the AMQPS port.
pub const PORT_NAME_AMQPS: &str = "amqps";
/// Name of the management HTTPS port.
pub const PORT_NAME_MANAGEMENT_TLS: &str = "management-tls";
/// The broker's Prometheus endpoint; the chart's monitors select the port by this name.
pub const PORT_NAME_PROMETHEUS: &str = "prometheus";
/// Name of the Erlang distribution port.
pub const PORT_NAME_DIST: &str = "dist";
/// Name of the epmd port.
pub const PORT_NAME_EPMD: &str = "epmd";

/// Name of the StatefulSet's volume claim template (mounted at `/var/lib/rabbitmq`).
pub const VOLUME_DATA: &str = "data";

/// `app.kubernetes.io/managed-by` value and EndpointSlice manager.
pub const MANAGED_BY: &str = "tiermq-operator";
/// Recommended label: the application (`rabbitmq`).
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Recommended label: the object's cluster or instance name.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// Recommended label: the tool that manages the object ([`MANAGED_BY`]).
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Recommended label: the higher-level application (`tiermq`).
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
    /// A field the API server always sets (uid, namespace) is missing.
    #[error(
        "{kind} {name:?} has no {field}; builders need objects read from the API server (get or list it first)"
    )]
    MissingField {
        /// The object's kind.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// The missing field's path (`metadata.uid`).
        field: &'static str,
    },
    /// The object's name cannot be used to derive the names of its children.
    #[error("{kind} name {name:?} is not usable: {reason}; rename the object")]
    InvalidName {
        /// The object's kind.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A spec field holds a value the operator refuses.
    #[error("{field} of {kind} {name:?}: {reason}")]
    InvalidConfig {
        /// The object's kind.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// The field, as the spec spells it.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
}

/// Secret values (Erlang cookie, passwords): the project's one redacting type and generator.
pub use tiermq_broker::{Secret, generate_secret};

/// A secret value as the bytes of a Secret's `data` entry.
fn secret_bytes(s: &Secret) -> ByteString {
    ByteString(s.expose().as_bytes().to_vec())
}

#[cfg(test)]
pub(crate) mod testing {
    //! Fixtures shared by the builder tests.
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use tiermq_crd::{RabbitMQInstance, RabbitMQInstanceSpec, SharedCluster, SharedClusterSpec};

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
    use tiermq_crd::ClusterKind;

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
        assert_eq!(endpoint_slice_name("orders", "main"), "orders.main");
        assert_ne!(
            endpoint_slice_name("a", "b-c"),
            endpoint_slice_name("a-b", "c")
        );
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
            &o.network_policy.as_ref().unwrap().metadata,
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
