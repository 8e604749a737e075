//! The cluster's ConfigMap: `rabbitmq.conf` and `enabled_plugins`, mounted at `/etc/rabbitmq/`.
//!
//! Listener addresses are left out on purpose: RabbitMQ listens on all interfaces by default in a
//! pod, and kubesim's kubelet adds the pod-IP listener lines itself.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{
    AMQPS_PORT, BrokerCluster, KEY_TLS_CA, KEY_TLS_CERT, KEY_TLS_KEY, MANAGEMENT_TLS_PORT,
    TLS_MOUNT_PATH, config_map_name,
};

/// The ConfigMap key holding `rabbitmq.conf`.
pub const KEY_RABBITMQ_CONF: &str = "rabbitmq.conf";
/// The ConfigMap key holding `enabled_plugins`.
pub const KEY_ENABLED_PLUGINS: &str = "enabled_plugins";

/// Plugins every cluster runs: the management API the operator drives, shovels for the active
/// drain, federation for dual reads, and `rabbitmq_prometheus` so Prometheus can scrape every
/// broker on [`super::PROMETHEUS_PORT`] (`/metrics`; the chart's broker PodMonitor or
/// ServiceMonitor scrapes it).
pub const PLUGINS: [&str; 6] = [
    "rabbitmq_management",
    "rabbitmq_shovel",
    "rabbitmq_shovel_management",
    "rabbitmq_federation",
    "rabbitmq_federation_management",
    "rabbitmq_prometheus",
];

/// `enabled_plugins` in Erlang term syntax.
pub fn enabled_plugins() -> String {
    format!("[{}].\n", PLUGINS.join(","))
}

/// `rabbitmq.conf` for the cluster.
///
/// Cluster formation uses the classic-config backend with every node's stable DNS name: no API
/// access is needed from the pods, and the StatefulSet's ordered start makes pod 0 the seed.
pub fn rabbitmq_conf(c: &BrokerCluster) -> String {
    let mut s = String::from(
        "# Written by tiermq-operator; edits are overwritten.\n\
         cluster_formation.peer_discovery_backend = classic_config\n",
    );
    for (i, node) in c.node_names().iter().enumerate() {
        s.push_str(&format!(
            "cluster_formation.classic_config.nodes.{} = {node}\n",
            i + 1
        ));
    }
    // With fewer than three nodes there is no majority to keep, so heal instead of pausing.
    let partition = if c.replicas >= 3 {
        "pause_minority"
    } else {
        "autoheal"
    };
    s.push_str(&format!(
        "cluster_partition_handling = {partition}\n\
         # Message counts in the management API lag by this interval; the drain check relies on it.\n\
         collect_statistics_interval = {}\n\
         # The built-in guest user stays limited to localhost; the admin user comes from the admin Secret.\n\
         loopback_users.guest = true\n",
        c.stats_interval_ms
    ));
    // The management database keeps samples in 5 s buckets; with statistics emitted faster than
    // that (tests), two emissions often land in one bucket and every rate reads 0 (measured on
    // 3.10 at 500 ms: the vhost publish rate showed 0 for most of a 90 s load). Buckets as wide
    // as the interval (at least 1 s) keep rates live.
    if c.stats_interval_ms < 5000 {
        let secs = c.stats_interval_ms.div_ceil(1000).max(1);
        for key in ["global.minute", "basic.minute", "detailed.10"] {
            s.push_str(&format!(
                "management.sample_retention_policies.{key} = {secs}\n"
            ));
        }
    }
    if c.tls_secret.is_some() {
        s.push_str(&tls_conf());
    }
    if let Some(extra) = &c.additional_config {
        s.push_str("# From the SharedCluster's spec.additionalConfig:\n");
        s.push_str(extra.trim_end());
        s.push('\n');
    }
    s
}

/// The TLS lines of a cluster with `spec.tls`: AMQPS and management HTTPS beside the plain
/// listeners (which stay on), with the mounted Secret's files. Clients are not asked for a
/// certificate (`verify_none` on the server side means exactly that: the server does not verify
/// clients; clients still verify the server).
pub fn tls_conf() -> String {
    let file = |key: &str| format!("{TLS_MOUNT_PATH}/{key}");
    format!(
        "# TLS from spec.tls (Secret mounted at {TLS_MOUNT_PATH})\n\
         listeners.ssl.default = {AMQPS_PORT}\n\
         ssl_options.cacertfile = {ca}\n\
         ssl_options.certfile = {cert}\n\
         ssl_options.keyfile = {key}\n\
         ssl_options.verify = verify_none\n\
         ssl_options.fail_if_no_peer_cert = false\n\
         management.ssl.port = {MANAGEMENT_TLS_PORT}\n\
         management.ssl.cacertfile = {ca}\n\
         management.ssl.certfile = {cert}\n\
         management.ssl.keyfile = {key}\n",
        ca = file(KEY_TLS_CA),
        cert = file(KEY_TLS_CERT),
        key = file(KEY_TLS_KEY),
    )
}

/// The ConfigMap `<cluster>-config` with [`rabbitmq_conf`] and [`enabled_plugins`].
pub fn build(c: &BrokerCluster) -> ConfigMap {
    ConfigMap {
        metadata: c.meta(config_map_name(&c.name)),
        data: Some(BTreeMap::from([
            (KEY_RABBITMQ_CONF.to_string(), rabbitmq_conf(c)),
            (KEY_ENABLED_PLUGINS.to_string(), enabled_plugins()),
        ])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn conf_lines(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').expect("key = value");
                (k.trim().to_string(), v.trim().to_string())
            })
            .collect()
    }

    #[test]
    fn config_map_holds_conf_and_plugins() {
        let cm = build(&dedicated());
        assert_eq!(cm.metadata.name.as_deref(), Some("orders-dedicated-config"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("team-a"));
        assert_owned(&cm.metadata, "RabbitMQInstance", "orders");
        let data = cm.data.unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(
            data[KEY_ENABLED_PLUGINS],
            "[rabbitmq_management,rabbitmq_shovel,rabbitmq_shovel_management,\
             rabbitmq_federation,rabbitmq_federation_management,rabbitmq_prometheus].\n"
        );
    }

    #[test]
    fn conf_lists_every_node_for_classic_peer_discovery() {
        let conf = conf_lines(&rabbitmq_conf(&dedicated()));
        assert_eq!(
            conf["cluster_formation.peer_discovery_backend"],
            "classic_config"
        );
        for i in 0..3 {
            assert_eq!(
                conf[&format!("cluster_formation.classic_config.nodes.{}", i + 1)],
                format!("rabbit@orders-dedicated-{i}.orders-dedicated-nodes.team-a.svc")
            );
        }
        assert!(!conf.contains_key("cluster_formation.classic_config.nodes.4"));
        assert_eq!(conf["cluster_partition_handling"], "pause_minority");
        assert_eq!(conf["collect_statistics_interval"], "5000");
        // RabbitMQ's own 5 s sample buckets fit its default interval.
        assert!(
            !conf
                .keys()
                .any(|k| k.starts_with("management.sample_retention"))
        );
    }

    #[test]
    fn conf_leaves_listeners_to_the_pod_and_keeps_guest_local() {
        let mut c = shared();
        c.stats_interval_ms = 500;
        let text = rabbitmq_conf(&c);
        let conf = conf_lines(&text);
        assert_eq!(conf["collect_statistics_interval"], "500");
        assert_eq!(
            conf["management.sample_retention_policies.global.minute"],
            "1"
        );
        assert_eq!(
            conf["management.sample_retention_policies.detailed.10"],
            "1"
        );
        assert_eq!(conf["cluster_partition_handling"], "autoheal");
        assert_eq!(conf["loopback_users.guest"], "true");
        assert!(
            conf.keys().all(|k| !k.starts_with("listeners.")
                && !k.starts_with("management.tcp")
                && !k.starts_with("prometheus.tcp")),
            "{text}"
        );
        // No credentials in the ConfigMap: they come from Secrets through env.
        assert!(!conf.contains_key("default_user") && !conf.contains_key("default_pass"));
    }

    #[test]
    fn a_tls_cluster_adds_amqps_and_https_beside_the_plain_listeners() {
        let plain = conf_lines(&rabbitmq_conf(&dedicated()));
        assert!(plain.keys().all(|k| !k.contains("ssl")), "{plain:?}");
        let mut c = dedicated();
        c.tls_secret = Some("orders-tls".into());
        let conf = conf_lines(&rabbitmq_conf(&c));
        assert_eq!(conf["listeners.ssl.default"], "5671");
        assert_eq!(conf["management.ssl.port"], "15671");
        for prefix in ["ssl_options", "management.ssl"] {
            assert_eq!(
                conf[&format!("{prefix}.cacertfile")],
                "/etc/rabbitmq-tls/ca.crt"
            );
            assert_eq!(
                conf[&format!("{prefix}.certfile")],
                "/etc/rabbitmq-tls/tls.crt"
            );
            assert_eq!(
                conf[&format!("{prefix}.keyfile")],
                "/etc/rabbitmq-tls/tls.key"
            );
        }
        // Plain listeners are left alone (RabbitMQ's defaults), so plain clients keep working.
        assert!(!conf.contains_key("listeners.tcp.default"));
    }

    #[test]
    fn a_shared_clusters_additional_config_comes_last_and_cannot_take_the_operators_keys() {
        let mut sc = shared_cluster("main", "tiermq");
        sc.spec.additional_config =
            Some("# slow statistics\ncollect_statistics_interval = 30000\n".into());
        let c = BrokerCluster::for_shared_cluster(&sc).unwrap();
        let text = rabbitmq_conf(&c);
        let last = text
            .lines()
            .rev()
            .find(|l| l.starts_with("collect_statistics_interval"))
            .unwrap();
        assert_eq!(last, "collect_statistics_interval = 30000", "{text}");
        for bad in [
            "listeners.tcp.1 = 0.0.0.0:5673",
            "management.tcp.port = 1",
            "prometheus.tcp.port = 9419",
            "ssl_options.verify = verify_peer",
            "management.ssl.port = 443",
            "default_pass = x",
            "cluster_formation.peer_discovery_backend = k8s",
            "management_agent.disable_metrics_collector = true",
            "just words",
        ] {
            sc.spec.additional_config = Some(bad.into());
            let err = BrokerCluster::for_shared_cluster(&sc).unwrap_err();
            assert!(
                err.to_string().contains("spec.additionalConfig"),
                "{bad}: {err}"
            );
        }
        // Statistics on (the default) is fine to say.
        sc.spec.additional_config =
            Some("management_agent.disable_metrics_collector = false".into());
        BrokerCluster::for_shared_cluster(&sc).unwrap();
    }
}
