//! The operator against real brokers, one test binary (its name starts with `rabbit_`, so
//! nextest runs its tests one at a time, see `.config/nextest.toml`):
//!
//! - [`admission`]: day-two changes refused at admission (CEL, no broker);
//! - [`broker_config`]: the builders' broker configuration boots a real RabbitMQ;
//! - [`reconcilers`]: the real reconcilers in-process against kubesim and real brokers;
//! - [`leader`]: leader election against kubesim (no broker);
//! - [`health`]: `/healthz` when the watches die (kubesim, no broker);
//! - [`network_policy`]: a broker cluster's NetworkPolicy in kubesim (no broker);
//! - [`metrics_auth`]: `/metrics` behind TokenReview and SubjectAccessReview (kubesim, no broker).

mod admission;
mod broker_config;
mod health;
mod leader;
mod metrics_auth;
mod network_policy;
mod reconcilers;

/// The ServiceAccount `ns/name`, created by `admin`, and the operator's generated ClusterRole
/// rules as the JSON a Role or ClusterRole takes: how tests run the operator (or act as it)
/// with exactly the rights the chart grants.
async fn operator_identity(admin: &kube::Client, ns: &str, name: &str) -> Vec<serde_json::Value> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": ns}}))
            .unwrap();
    kube::Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create(&Default::default(), &sa)
        .await
        .unwrap();
    tiermq_operator::rbac::cluster_rules()
        .into_iter()
        .map(|r| {
            serde_json::json!({"apiGroups": r.api_groups, "resources": r.resources, "verbs": r.verbs})
        })
        .collect()
}
