//! The naming contract: every name the operator derives, in one place (see the table in the
//! module docs of [`super`]), and the checks that a user's name can carry them.

use super::{BuildError, MAX_CLUSTER_NAME_LEN, MAX_INSTANCE_NAME_LEN};

/// Headless Service that gives each broker pod a stable DNS name.
pub fn headless_service_name(cluster: &str) -> String {
    format!("{cluster}-nodes")
}
/// ClusterIP Service in front of a cluster's pods (AMQP and management API).
pub fn cluster_service_name(cluster: &str) -> String {
    cluster.to_string()
}
/// The ConfigMap with `rabbitmq.conf` and `enabled_plugins`.
pub fn config_map_name(cluster: &str) -> String {
    format!("{cluster}-config")
}
/// The Secret holding the cluster's Erlang cookie.
pub fn erlang_cookie_secret_name(cluster: &str) -> String {
    format!("{cluster}-erlang-cookie")
}
/// The Secret holding the cluster's administrator login.
pub fn admin_secret_name(cluster: &str) -> String {
    format!("{cluster}-admin")
}
/// The cluster's PodDisruptionBudget.
pub fn pdb_name(cluster: &str) -> String {
    cluster.to_string()
}
/// The cluster's NetworkPolicy.
pub fn network_policy_name(cluster: &str) -> String {
    cluster.to_string()
}
/// The instance's stable client Service.
pub fn instance_service_name(instance: &str) -> String {
    instance.to_string()
}
/// The EndpointSlice that routes the instance's Service to one serving cluster.
/// `<instance>.<cluster>`: both are DNS labels (no dots), so the dot keeps every pair apart
/// (with a dash, instance `a` on cluster `b-c` and instance `a-b` on cluster `c` collide).
pub fn endpoint_slice_name(instance: &str, cluster: &str) -> String {
    format!("{instance}.{cluster}")
}
/// The instance's service-binding credentials Secret.
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
