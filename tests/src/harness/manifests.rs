//! YAML of the objects scenarios apply.

/// YAML of a SharedCluster `main` in `tiermq-system` with one broker.
pub fn shared_cluster_yaml(max_instances: u32) -> String {
    [
        "apiVersion: v1",
        "kind: Namespace",
        "metadata:",
        "  name: tiermq-system",
        "---",
        "apiVersion: tiermq.io/v1alpha1",
        "kind: SharedCluster",
        "metadata:",
        "  name: main",
        "  namespace: tiermq-system",
        "spec:",
        "  replicas: 1",
        "  image: rabbitmq:3.10-management",
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
    /// The instance YAML (with its namespace) for `kubectl apply`.
    pub fn yaml(&self) -> String {
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
            "    image: rabbitmq:3.10-management".into(),
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
