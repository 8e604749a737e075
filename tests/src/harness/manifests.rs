//! YAML of the objects scenarios apply.

/// The broker image of RabbitMQ 3.10 (kubesim runs the host's 3.10 for any 3.x tag).
pub const IMAGE_3_10: &str = "rabbitmq:3.10-management";
/// The broker image of RabbitMQ 4.0 (kubesim runs 4.0.5 from the Debian 13 root for any 4.x tag).
pub const IMAGE_4_0: &str = "rabbitmq:4.0-management";

/// YAML of a SharedCluster `main` in `tiermq-system` with one RabbitMQ 3.10 broker.
pub fn shared_cluster_yaml(max_instances: u32) -> String {
    shared_cluster_yaml_with("main", IMAGE_3_10, max_instances)
}

/// YAML of a SharedCluster `name` in `tiermq-system` with one broker running `image`.
pub fn shared_cluster_yaml_with(name: &str, image: &str, max_instances: u32) -> String {
    [
        "apiVersion: v1",
        "kind: Namespace",
        "metadata:",
        "  name: tiermq-system",
        "---",
        "apiVersion: tiermq.io/v1alpha1",
        "kind: SharedCluster",
        "metadata:",
        &format!("  name: {name}"),
        "  namespace: tiermq-system",
        "spec:",
        "  replicas: 1",
        &format!("  image: {image}"),
        "  capacity:",
        &format!("    maxInstances: {max_instances}"),
        "",
    ]
    .join("\n")
}

/// Knobs of a scenario instance.
#[derive(Clone, Debug)]
pub struct InstanceSpec<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub tier: &'a str,
    pub drain_strategy: &'a str,
    pub grace_period_seconds: u32,
    /// `None`: the direction's default.
    pub connection_policy: Option<&'a str>,
}

impl InstanceSpec<'_> {
    /// The instance YAML (with its namespace) for `kubectl apply`; its dedicated cluster runs
    /// RabbitMQ 3.10.
    pub fn yaml(&self) -> String {
        self.yaml_with(IMAGE_3_10)
    }

    /// [`InstanceSpec::yaml`] with the dedicated cluster running `image`.
    pub fn yaml_with(&self, image: &str) -> String {
        let policy = self
            .connection_policy
            .map(|p| format!("    connectionPolicy: {p}\n"))
            .unwrap_or_default();
        let lines = [
            "apiVersion: v1".to_string(),
            "kind: Namespace".into(),
            "metadata:".into(),
            format!("  name: {}", self.namespace),
            "---".into(),
            "apiVersion: tiermq.io/v1alpha1".into(),
            "kind: RabbitMQInstance".into(),
            "metadata:".into(),
            format!("  name: {}", self.name),
            format!("  namespace: {}", self.namespace),
            "spec:".into(),
            "  series: Subscription".into(),
            format!("  tier: {}", self.tier),
            "  dedicated:".into(),
            "    replicas: 1".into(),
            format!("    image: {image}"),
            "  shared:".into(),
            "    clusterRef:".into(),
            "      name: main".into(),
            "      namespace: tiermq-system".into(),
            "  migration:".into(),
            format!("    drainStrategy: {}", self.drain_strategy),
            "    drainTimeoutSeconds: 120".into(),
            format!("    gracePeriodSeconds: {}", self.grace_period_seconds),
        ];
        format!("{}\n{policy}", lines.join("\n"))
    }
}
