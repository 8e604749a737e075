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

/// YAML of the objects the RabbitMQ cluster operator makes for a one-node `RabbitmqCluster`
/// `name` in `tiermq-system`, written by hand (no cluster operator runs here): Secrets
/// `<name>-default-user` (keys `username`, `password`, `host`, `port`, `default_user.conf`) and
/// `<name>-erlang-cookie`, ConfigMaps `<name>-server-conf` and `<name>-plugins-conf`, the
/// headless Service `<name>-nodes`, the client Service `<name>` and the StatefulSet
/// `<name>-server`, all labelled as that operator labels them. Its configuration is kubesim's
/// way in: `default_user.conf` in `conf.d` makes `username` the broker's administrator, and
/// `enabled_plugins` turns on what tiermq needs (as `spec.rabbitmq.additionalPlugins` would).
/// The node's data is on the claim `persistence-<name>-server-0`, so it survives the pod. The
/// Erlang cookie is copied by an init container from the Secret into the RabbitMQ home (an
/// emptyDir) and made owner-only, as that operator does: Erlang refuses a cookie file others
/// can read, and a Secret volume's files are readable by others by default.
pub fn rabbitmq_cluster_objects_yaml(
    name: &str,
    image: &str,
    admin: (&str, &str),
    stats_interval_ms: u32,
) -> String {
    let (user, pass) = admin;
    let ns = "tiermq-system";
    let labels = format!(
        "    app.kubernetes.io/name: {name}\n    app.kubernetes.io/component: rabbitmq\n    \
         app.kubernetes.io/part-of: rabbitmq\n"
    );
    let pod_labels = labels
        .replace("\n    ", "\n        ")
        .replacen("    ", "        ", 1);
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: Secret
metadata:
  name: {name}-default-user
  namespace: {ns}
  labels:
{labels}type: Opaque
stringData:
  username: {user}
  password: {pass}
  host: {name}.{ns}.svc
  port: "5672"
  provider: rabbitmq
  type: rabbitmq
  default_user.conf: |
    default_user = {user}
    default_pass = {pass}
---
apiVersion: v1
kind: Secret
metadata:
  name: {name}-erlang-cookie
  namespace: {ns}
  labels:
{labels}type: Opaque
stringData:
  .erlang.cookie: byo-test-cookie-{name}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}-plugins-conf
  namespace: {ns}
  labels:
{labels}data:
  enabled_plugins: |
    [rabbitmq_peer_discovery_k8s,rabbitmq_prometheus,rabbitmq_management,rabbitmq_shovel,rabbitmq_shovel_management,rabbitmq_federation,rabbitmq_federation_management].
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}-server-conf
  namespace: {ns}
  labels:
{labels}data:
  operatorDefaults.conf: |
    cluster_partition_handling = pause_minority
    cluster_name = {name}
  userDefinedConfiguration.conf: |
    collect_statistics_interval = {stats_interval_ms}
---
apiVersion: v1
kind: Service
metadata:
  name: {name}-nodes
  namespace: {ns}
  labels:
{labels}spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector:
    app.kubernetes.io/name: {name}
  ports:
  - name: epmd
    port: 4369
  - name: cluster-rpc
    port: 25672
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
  labels:
{labels}spec:
  type: ClusterIP
  selector:
    app.kubernetes.io/name: {name}
  ports:
  - name: amqp
    port: 5672
    targetPort: 5672
    appProtocol: amqp
  - name: management
    port: 15672
    targetPort: 15672
    appProtocol: http
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name}-server
  namespace: {ns}
  labels:
{labels}spec:
  replicas: 1
  serviceName: {name}-nodes
  podManagementPolicy: Parallel
  selector:
    matchLabels:
      app.kubernetes.io/name: {name}
  template:
    metadata:
      labels:
{pod_labels}    spec:
      initContainers:
      - name: setup-container
        image: {image}
        command:
        - sh
        - -c
        - cp /tmp/erlang-cookie-secret/.erlang.cookie /var/lib/rabbitmq/.erlang.cookie && chmod 600 /var/lib/rabbitmq/.erlang.cookie
        volumeMounts:
        - name: erlang-cookie-secret
          mountPath: /tmp/erlang-cookie-secret/
        - name: rabbitmq-erlang-cookie
          mountPath: /var/lib/rabbitmq/
      containers:
      - name: rabbitmq
        image: {image}
        env:
        - name: RABBITMQ_ENABLED_PLUGINS_FILE
          value: /operator/enabled_plugins
        ports:
        - name: amqp
          containerPort: 5672
        - name: management
          containerPort: 15672
        - name: epmd
          containerPort: 4369
        readinessProbe:
          tcpSocket:
            port: amqp
        volumeMounts:
        - name: plugins-conf
          mountPath: /operator
        - name: rabbitmq-confd
          mountPath: /etc/rabbitmq/conf.d/
        - name: rabbitmq-erlang-cookie
          mountPath: /var/lib/rabbitmq/
        - name: persistence
          mountPath: /var/lib/rabbitmq/mnesia/
      volumes:
      - name: plugins-conf
        configMap:
          name: {name}-plugins-conf
      - name: rabbitmq-confd
        projected:
          sources:
          - configMap:
              name: {name}-server-conf
              items:
              - key: operatorDefaults.conf
                path: operatorDefaults.conf
              - key: userDefinedConfiguration.conf
                path: userDefinedConfiguration.conf
          - secret:
              name: {name}-default-user
              items:
              - key: default_user.conf
                path: default_user.conf
      - name: erlang-cookie-secret
        secret:
          secretName: {name}-erlang-cookie
      - name: rabbitmq-erlang-cookie
        emptyDir: {{}}
  volumeClaimTemplates:
  - metadata:
      name: persistence
      labels:
        app.kubernetes.io/name: {name}
        app.kubernetes.io/component: rabbitmq
        app.kubernetes.io/part-of: rabbitmq
    spec:
      accessModes:
      - ReadWriteOnce
      resources:
        requests:
          storage: 1Gi
"#
    )
}

/// YAML of a SharedCluster `name` in `tiermq-system` whose brokers are `RabbitmqCluster`
/// `rabbitmq_cluster` (see [`rabbitmq_cluster_objects_yaml`]).
pub fn external_shared_cluster_yaml(
    name: &str,
    rabbitmq_cluster: &str,
    max_instances: u32,
) -> String {
    format!(
        "apiVersion: tiermq.io/v1alpha1\nkind: SharedCluster\nmetadata:\n  name: {name}\n  \
         namespace: tiermq-system\nspec:\n  capacity:\n    maxInstances: {max_instances}\n  \
         external:\n    rabbitmqClusterRef:\n      name: {rabbitmq_cluster}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn rabbitmq_cluster_objects_carry_the_cluster_operators_names_and_labels() {
        let yaml = rabbitmq_cluster_objects_yaml("prod", IMAGE_3_10, ("admin", "pw"), 500);
        let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|d| serde_json::Value::deserialize(d).unwrap())
            .collect();
        let names: Vec<(String, String)> = docs
            .iter()
            .map(|d| {
                (
                    d["kind"].as_str().unwrap().to_string(),
                    d["metadata"]["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want = [
            ("Namespace", "tiermq-system"),
            ("Secret", "prod-default-user"),
            ("Secret", "prod-erlang-cookie"),
            ("ConfigMap", "prod-plugins-conf"),
            ("ConfigMap", "prod-server-conf"),
            ("Service", "prod-nodes"),
            ("Service", "prod"),
            ("StatefulSet", "prod-server"),
        ];
        assert_eq!(
            names,
            want.map(|(k, n)| (k.to_string(), n.to_string())).to_vec()
        );
        let sts = &docs[7];
        let pod_labels = &sts["spec"]["template"]["metadata"]["labels"];
        for (k, v) in [
            ("app.kubernetes.io/name", "prod"),
            ("app.kubernetes.io/component", "rabbitmq"),
            ("app.kubernetes.io/part-of", "rabbitmq"),
        ] {
            assert_eq!(pod_labels[k], v, "{k}");
            assert_eq!(docs[1]["metadata"]["labels"][k], v, "{k}");
        }
        for (k, v) in sts["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&pod_labels[k], v, "the selector matches the pods");
        }
        let secret = &docs[1]["stringData"];
        assert_eq!(
            (secret["username"].as_str(), secret["password"].as_str()),
            (Some("admin"), Some("pw"))
        );
        assert!(
            secret["default_user.conf"]
                .as_str()
                .unwrap()
                .contains("default_user = admin\ndefault_pass = pw\n")
        );
        assert!(
            docs[4]["data"]["userDefinedConfiguration.conf"]
                .as_str()
                .unwrap()
                .contains("collect_statistics_interval = 500")
        );
        let sc: tiermq_crd::SharedCluster =
            serde_yaml::from_str(&external_shared_cluster_yaml("main", "prod", 4)).unwrap();
        let external = sc.spec.external.expect("external");
        assert_eq!(external.rabbitmq_cluster_ref.name, "prod");
        assert_eq!(sc.spec.capacity.max_instances, 4);
    }
}
