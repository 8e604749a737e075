//! The cluster's broker StatefulSet.
//!
//! Pods start in order (pod 0 first, the classic peer-discovery seed), get a stable DNS name under
//! the headless Service, read `rabbitmq.conf`/`enabled_plugins` from the ConfigMap and the
//! admin login from env (`secretKeyRef`), keep data on a `data` volume claim, run as the image's
//! `rabbitmq` user (uid 999) without privileges, and spread over nodes when possible.
//!
//! The Erlang cookie is a file, never an env var (env shows in `kubectl describe`-style
//! dumps and process listings): the cookie Secret is mounted into an init container, which
//! copies it to `/var/lib/rabbitmq/.erlang.cookie` with mode 400. Mounting the Secret there
//! directly does not work: with the pod's `fsGroup` the kubelet makes Secret files
//! group-readable, and Erlang refuses a cookie file that anyone but its owner can read.

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    ExecAction, KeyToPath, Lifecycle, LifecycleHandler, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use tiermq_crd::ClusterKind;

use super::admin_secret::{KEY_PASSWORD, KEY_USERNAME};
use super::config_map::{KEY_ENABLED_PLUGINS, KEY_RABBITMQ_CONF};
use super::erlang_cookie::KEY_COOKIE;
use super::{
    AMQP_PORT, AMQPS_PORT, BrokerCluster, DIST_PORT, EPMD_PORT, KEY_TLS_CA, KEY_TLS_CERT,
    KEY_TLS_KEY, MANAGEMENT_PORT, MANAGEMENT_TLS_PORT, PORT_NAME_AMQP, PORT_NAME_AMQPS,
    PORT_NAME_DIST, PORT_NAME_EPMD, PORT_NAME_MANAGEMENT, PORT_NAME_MANAGEMENT_TLS,
    PORT_NAME_PROMETHEUS, PROMETHEUS_PORT, TLS_MOUNT_PATH, VOLUME_DATA, admin_secret_name,
    config_map_name, erlang_cookie_secret_name, headless_service_name,
};

/// The broker container's name.
pub const CONTAINER_NAME: &str = "rabbitmq";
/// uid and gid of the `rabbitmq` user in the official image.
pub const RABBITMQ_UID: i64 = 999;
/// Where the data volume is mounted (RabbitMQ's home; `mnesia/` lives below it).
pub const DATA_MOUNT_PATH: &str = "/var/lib/rabbitmq";
/// Where the ConfigMap is mounted (`rabbitmq.conf`, `enabled_plugins`).
pub const CONFIG_MOUNT_PATH: &str = "/etc/rabbitmq/";
const VOLUME_CONFIG: &str = "config";
const VOLUME_COOKIE_SECRET: &str = "erlang-cookie-secret";
/// Where the init container sees the cookie Secret.
const COOKIE_SECRET_MOUNT_PATH: &str = "/tmp/erlang-cookie-secret";
/// The cookie file the broker and its CLI tools read (`$HOME/.erlang.cookie` of the image's
/// `rabbitmq` user).
pub const COOKIE_FILE: &str = "/var/lib/rabbitmq/.erlang.cookie";
/// The init container that puts the cookie file in place.
pub const COOKIE_INIT_CONTAINER: &str = "setup-erlang-cookie";
const VOLUME_TLS: &str = "tls";
/// Time a broker gets to stop cleanly (sync queues, close connections).
pub const TERMINATION_GRACE_SECONDS: i64 = 120;
/// Time a broker of a multi-node cluster gets to stop: its pre-stop hook first waits until
/// every quorum queue it holds a replica of has a quorum without it.
pub const CLUSTERED_TERMINATION_GRACE_SECONDS: i64 = 900;

/// The broker StatefulSet, named like the cluster; the module docs say what its pods get.
pub fn build(c: &BrokerCluster) -> StatefulSet {
    let headless = headless_service_name(&c.name);
    StatefulSet {
        metadata: c.meta(c.name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(c.replicas),
            service_name: Some(headless),
            // All pods start (and restart) together: after a full stop, the node that went down
            // last must boot before the others can finish booting, so one-by-one readiness
            // (OrderedReady) deadlocks a full restart of a multi-node cluster.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(c.selector_labels()),
                ..LabelSelector::default()
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            persistent_volume_claim_retention_policy: Some(retention(c.kind)),
            volume_claim_templates: Some(vec![volume_claim(c)]),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(c.labels()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(c)),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// A dedicated cluster is removed only after its tenant was drained (or the instance deleted), so
/// its volumes go with it. A shared cluster holds many tenants: its volumes outlive it, and the
/// operator deletes them itself only on explicit retention rules.
fn retention(kind: ClusterKind) -> StatefulSetPersistentVolumeClaimRetentionPolicy {
    let when_deleted = match kind {
        ClusterKind::Dedicated => "Delete",
        ClusterKind::Shared => "Retain",
    };
    StatefulSetPersistentVolumeClaimRetentionPolicy {
        when_deleted: Some(when_deleted.into()),
        when_scaled: Some("Retain".into()),
    }
}

fn volume_claim(c: &BrokerCluster) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(VOLUME_DATA.into()),
            labels: Some(c.selector_labels()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: c.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    c.storage.size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The Erlang cookie Secret, owner-read-only, for the init container to copy.
fn cookie_volume(c: &BrokerCluster) -> Volume {
    Volume {
        name: VOLUME_COOKIE_SECRET.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(erlang_cookie_secret_name(&c.name)),
            items: Some(vec![KeyToPath {
                key: KEY_COOKIE.into(),
                path: ".erlang.cookie".into(),
                ..KeyToPath::default()
            }]),
            default_mode: Some(0o400),
            optional: Some(false),
        }),
        ..Volume::default()
    }
}

/// `rabbitmq.conf` and `enabled_plugins` from the ConfigMap.
fn config_volume(c: &BrokerCluster) -> Volume {
    Volume {
        name: VOLUME_CONFIG.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map_name(&c.name),
            items: Some(vec![
                KeyToPath {
                    key: KEY_RABBITMQ_CONF.into(),
                    path: KEY_RABBITMQ_CONF.into(),
                    ..KeyToPath::default()
                },
                KeyToPath {
                    key: KEY_ENABLED_PLUGINS.into(),
                    path: KEY_ENABLED_PLUGINS.into(),
                    ..KeyToPath::default()
                },
            ]),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The TLS Secret as files (`spec.tls`); the `rabbitmq` group may read the key (`fsGroup`).
fn tls_volume(secret: &str) -> Volume {
    let item = |key: &str| KeyToPath {
        key: key.into(),
        path: key.into(),
        ..KeyToPath::default()
    };
    Volume {
        name: VOLUME_TLS.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: Some(vec![
                item(KEY_TLS_CA),
                item(KEY_TLS_CERT),
                item(KEY_TLS_KEY),
            ]),
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Volume::default()
    }
}

fn pod_spec(c: &BrokerCluster) -> PodSpec {
    let mut volumes = vec![cookie_volume(c), config_volume(c)];
    volumes.extend(c.tls_secret.as_deref().map(tls_volume));
    PodSpec {
        init_containers: Some(vec![cookie_init_container(c)]),
        containers: vec![container(c)],
        volumes: Some(volumes),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RABBITMQ_UID),
            run_as_group: Some(RABBITMQ_UID),
            fs_group: Some(RABBITMQ_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        affinity: Some(anti_affinity(c)),
        termination_grace_period_seconds: Some(if c.replicas > 1 {
            CLUSTERED_TERMINATION_GRACE_SECONDS
        } else {
            TERMINATION_GRACE_SECONDS
        }),
        automount_service_account_token: Some(false),
        ..PodSpec::default()
    }
}

/// Prefer one broker per node; don't refuse to schedule on small clusters.
fn anti_affinity(c: &BrokerCluster) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(c.selector_labels()),
                            ..LabelSelector::default()
                        }),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// A rolling restart keeps quorum: before a node of a multi-node cluster stops, it waits until
/// every quorum queue (and stream) it holds a replica of would keep a quorum without it
/// (`rabbitmq-upgrade await_online_quorum_plus_one`), bounded by the grace period. A single node
/// has nothing to wait for.
fn pre_stop(c: &BrokerCluster) -> Option<Lifecycle> {
    (c.replicas > 1).then(|| Lifecycle {
        pre_stop: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec![
                    "rabbitmq-upgrade".into(),
                    "await_online_quorum_plus_one".into(),
                    "-t".into(),
                    (CLUSTERED_TERMINATION_GRACE_SECONDS - 60).to_string(),
                ]),
            }),
            ..LifecycleHandler::default()
        }),
        ..Lifecycle::default()
    })
}

/// Copies the cookie from the Secret volume to [`COOKIE_FILE`], readable by the broker user
/// only. The old file is removed first: it is read-only, and the data volume keeps it across
/// restarts.
fn cookie_init_container(c: &BrokerCluster) -> Container {
    let from = format!("{COOKIE_SECRET_MOUNT_PATH}/.erlang.cookie");
    Container {
        name: COOKIE_INIT_CONTAINER.into(),
        image: Some(c.image.clone()),
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            format!("rm -f {COOKIE_FILE} && cp {from} {COOKIE_FILE} && chmod 400 {COOKIE_FILE}"),
        ]),
        volume_mounts: Some(vec![
            VolumeMount {
                name: VOLUME_COOKIE_SECRET.into(),
                mount_path: COOKIE_SECRET_MOUNT_PATH.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: VOLUME_DATA.into(),
                mount_path: DATA_MOUNT_PATH.into(),
                ..VolumeMount::default()
            },
        ]),
        resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("10m".into())),
                ("memory".to_string(), Quantity("16Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity("64Mi".into()),
            )])),
            ..Default::default()
        }),
        security_context: Some(container_security_context()),
        ..Container::default()
    }
}

/// The broker user, no privileges, no capabilities.
fn container_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RABBITMQ_UID),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn container(c: &BrokerCluster) -> Container {
    let port = |name: &str, port: i32| ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    };
    let mut ports = vec![
        port(PORT_NAME_AMQP, AMQP_PORT),
        port(PORT_NAME_MANAGEMENT, MANAGEMENT_PORT),
        port(PORT_NAME_PROMETHEUS, PROMETHEUS_PORT),
        port(PORT_NAME_DIST, DIST_PORT),
        port(PORT_NAME_EPMD, EPMD_PORT),
    ];
    let mut mounts = vec![
        VolumeMount {
            name: VOLUME_CONFIG.into(),
            mount_path: CONFIG_MOUNT_PATH.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: VOLUME_DATA.into(),
            mount_path: DATA_MOUNT_PATH.into(),
            ..VolumeMount::default()
        },
    ];
    if c.tls_secret.is_some() {
        ports.push(port(PORT_NAME_AMQPS, AMQPS_PORT));
        ports.push(port(PORT_NAME_MANAGEMENT_TLS, MANAGEMENT_TLS_PORT));
        mounts.push(VolumeMount {
            name: VOLUME_TLS.into(),
            mount_path: TLS_MOUNT_PATH.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(c.image.clone()),
        ports: Some(ports),
        env: Some(env(c)),
        resources: c.resources.clone(),
        volume_mounts: Some(mounts),
        // Ready once the AMQP listener accepts connections: the broker booted and joined.
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String(PORT_NAME_AMQP.into()),
                ..TCPSocketAction::default()
            }),
            initial_delay_seconds: Some(10),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        // Restart only a broker whose runtime stopped answering; generous, because a node that
        // is syncing queues after a restart must not be killed.
        liveness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec![
                    "rabbitmq-diagnostics".into(),
                    "-q".into(),
                    "ping".into(),
                ]),
            }),
            initial_delay_seconds: Some(60),
            period_seconds: Some(60),
            timeout_seconds: Some(30),
            failure_threshold: Some(5),
            ..Probe::default()
        }),
        lifecycle: pre_stop(c),
        security_context: Some(container_security_context()),
        ..Container::default()
    }
}

fn env(c: &BrokerCluster) -> Vec<EnvVar> {
    let value = |name: &str, v: String| EnvVar {
        name: name.into(),
        value: Some(v),
        ..EnvVar::default()
    };
    let from = |name: &str, source: EnvVarSource| EnvVar {
        name: name.into(),
        value_from: Some(source),
        ..EnvVar::default()
    };
    let secret = |secret: String, key: &str| EnvVarSource {
        secret_key_ref: Some(SecretKeySelector {
            name: secret,
            key: key.into(),
            optional: Some(false),
        }),
        ..EnvVarSource::default()
    };
    let field = |path: &str| EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            field_path: path.into(),
            ..ObjectFieldSelector::default()
        }),
        ..EnvVarSource::default()
    };
    vec![
        // POD_NAME and POD_NAMESPACE come first: RABBITMQ_NODENAME refers to them.
        from("POD_NAME", field("metadata.name")),
        from("POD_NAMESPACE", field("metadata.namespace")),
        value("RABBITMQ_USE_LONGNAME", "true".into()),
        value(
            "RABBITMQ_NODENAME",
            format!(
                "rabbit@$(POD_NAME).{}.$(POD_NAMESPACE).svc",
                headless_service_name(&c.name)
            ),
        ),
        from(
            "RABBITMQ_DEFAULT_USER",
            secret(admin_secret_name(&c.name), KEY_USERNAME),
        ),
        from(
            "RABBITMQ_DEFAULT_PASS",
            secret(admin_secret_name(&c.name), KEY_PASSWORD),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn pod(sts: &StatefulSet) -> &PodSpec {
        sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    fn broker(sts: &StatefulSet) -> &Container {
        &pod(sts).containers[0]
    }

    fn env_of<'a>(c: &'a Container, name: &str) -> &'a EnvVar {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("env {name}"))
    }

    #[test]
    fn statefulset_is_ordered_behind_the_headless_service() {
        let c = dedicated();
        let sts = build(&c);
        assert_eq!(sts.metadata.name.as_deref(), Some("orders-dedicated"));
        assert_eq!(sts.metadata.namespace.as_deref(), Some("team-a"));
        assert_owned(&sts.metadata, "RabbitMQInstance", "orders");
        let labels = sts.metadata.labels.as_ref().unwrap();
        for (k, v) in [
            ("app.kubernetes.io/name", "rabbitmq"),
            ("app.kubernetes.io/instance", "orders-dedicated"),
            ("app.kubernetes.io/managed-by", "tiermq-operator"),
            ("app.kubernetes.io/part-of", "tiermq"),
            ("tiermq.io/cluster", "orders-dedicated"),
        ] {
            assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
        }
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("orders-dedicated-nodes"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(spec.selector.match_labels, Some(c.selector_labels()));
        // The template's labels must match the selector, or the API server rejects the object.
        let tpl = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        for (k, v) in c.selector_labels() {
            assert_eq!(tpl.get(&k), Some(&v));
        }
    }

    #[test]
    fn broker_container_exposes_amqp_management_prometheus_and_inter_node_ports() {
        let sts = build(&dedicated());
        let c = broker(&sts);
        assert_eq!(c.image.as_deref(), Some(tiermq_crd::DEFAULT_IMAGE));
        let ports: Vec<(&str, i32)> = c
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref().unwrap(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [
                ("amqp", 5672),
                ("management", 15672),
                ("prometheus", 15692),
                ("dist", 25672),
                ("epmd", 4369)
            ]
        );
        let ready = c.readiness_probe.as_ref().unwrap();
        assert_eq!(
            ready.tcp_socket.as_ref().unwrap().port,
            IntOrString::String("amqp".into())
        );
        let live = c.liveness_probe.as_ref().unwrap();
        assert!(live.exec.is_some());
        assert!(live.initial_delay_seconds.unwrap() >= 60);
    }

    #[test]
    fn data_volume_claim_uses_storage_size_and_class() {
        let sts = build(&dedicated());
        let spec = sts.spec.as_ref().unwrap();
        let claims = spec.volume_claim_templates.as_ref().unwrap();
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        let cs = claims[0].spec.as_ref().unwrap();
        assert_eq!(cs.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(cs.access_modes, Some(vec!["ReadWriteOnce".into()]));
        assert_eq!(
            cs.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"],
            quantity("5Gi")
        );
        let mounts = broker(&sts).volume_mounts.as_ref().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "data" && m.mount_path == "/var/lib/rabbitmq")
        );
        // Storage class absent in the spec stays absent (the cluster default applies).
        let shared = build(&shared());
        let claim = &shared
            .spec
            .as_ref()
            .unwrap()
            .volume_claim_templates
            .as_ref()
            .unwrap()[0];
        assert_eq!(claim.spec.as_ref().unwrap().storage_class_name, None);
    }

    #[test]
    fn dedicated_volumes_go_with_the_cluster_shared_ones_stay() {
        let policy = |c: &BrokerCluster| {
            build(c)
                .spec
                .unwrap()
                .persistent_volume_claim_retention_policy
                .unwrap()
        };
        assert_eq!(policy(&dedicated()).when_deleted.as_deref(), Some("Delete"));
        assert_eq!(policy(&shared()).when_deleted.as_deref(), Some("Retain"));
        assert_eq!(policy(&shared()).when_scaled.as_deref(), Some("Retain"));
    }

    #[test]
    fn pods_run_unprivileged_as_the_rabbitmq_user() {
        let sts = build(&dedicated());
        let p = pod(&sts);
        let psc = p.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(999));
        assert_eq!(psc.fs_group, Some(999));
        let sc = broker(&sts).security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(p.automount_service_account_token, Some(false));
    }

    #[test]
    fn pods_prefer_distinct_nodes() {
        let c = dedicated();
        let sts = build(&c);
        let anti = pod(&sts)
            .affinity
            .as_ref()
            .unwrap()
            .pod_anti_affinity
            .as_ref()
            .unwrap();
        assert!(
            anti.required_during_scheduling_ignored_during_execution
                .is_none()
        );
        let pref = &anti
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            pref.pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
        assert_eq!(
            pref.pod_affinity_term
                .label_selector
                .as_ref()
                .unwrap()
                .match_labels,
            Some(c.selector_labels())
        );
    }

    #[test]
    fn secrets_reach_the_broker_through_env_refs_only() {
        let sts = build(&dedicated());
        let c = broker(&sts);
        let secret_ref = |name: &str| {
            let e = env_of(c, name);
            assert!(e.value.is_none(), "{name} must not carry a literal value");
            let r = e
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap();
            (r.name.clone(), r.key.clone())
        };
        assert!(
            c.env
                .iter()
                .flatten()
                .all(|e| e.name != "RABBITMQ_ERLANG_COOKIE"),
            "the cookie is a file, not an env var"
        );
        assert_eq!(
            secret_ref("RABBITMQ_DEFAULT_USER"),
            ("orders-dedicated-admin".into(), "username".into())
        );
        assert_eq!(
            secret_ref("RABBITMQ_DEFAULT_PASS"),
            ("orders-dedicated-admin".into(), "password".into())
        );
    }

    #[test]
    fn the_cookie_is_copied_from_its_secret_into_an_owner_only_file() {
        let sts = build(&dedicated());
        let p = pod(&sts);
        let vol = p
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == VOLUME_COOKIE_SECRET)
            .unwrap();
        let sec = vol.secret.as_ref().unwrap();
        assert_eq!(
            sec.secret_name.as_deref(),
            Some("orders-dedicated-erlang-cookie")
        );
        assert_eq!(sec.items.as_ref().unwrap()[0].key, KEY_COOKIE);
        assert_eq!(sec.default_mode, Some(0o400));
        // The broker does not mount the Secret; the init container does, next to the data volume
        // that holds the broker's home.
        assert!(
            broker(&sts)
                .volume_mounts
                .iter()
                .flatten()
                .all(|m| m.name != VOLUME_COOKIE_SECRET)
        );
        let inits = p.init_containers.as_ref().unwrap();
        assert_eq!(inits.len(), 1);
        let init = &inits[0];
        assert_eq!(init.name, COOKIE_INIT_CONTAINER);
        assert_eq!(init.image, broker(&sts).image);
        let script = &init.command.as_ref().unwrap()[2];
        assert!(
            script.ends_with("chmod 400 /var/lib/rabbitmq/.erlang.cookie"),
            "{script}"
        );
        assert!(
            script.starts_with("rm -f /var/lib/rabbitmq/.erlang.cookie && cp "),
            "{script}"
        );
        let mounts: Vec<(&str, &str)> = init
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert_eq!(
            mounts,
            [
                (VOLUME_COOKIE_SECRET, COOKIE_SECRET_MOUNT_PATH),
                (VOLUME_DATA, DATA_MOUNT_PATH)
            ]
        );
        let sc = init.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_user, Some(RABBITMQ_UID));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
    }

    #[test]
    fn node_name_is_the_pods_stable_long_dns_name() {
        let sts = build(&dedicated());
        let c = broker(&sts);
        assert_eq!(
            env_of(c, "RABBITMQ_USE_LONGNAME").value.as_deref(),
            Some("true")
        );
        assert_eq!(
            env_of(c, "RABBITMQ_NODENAME").value.as_deref(),
            Some("rabbit@$(POD_NAME).orders-dedicated-nodes.$(POD_NAMESPACE).svc")
        );
        // $(VAR) expands only variables defined earlier in the list.
        let names: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert!(pos("POD_NAME") < pos("RABBITMQ_NODENAME"));
        assert!(pos("POD_NAMESPACE") < pos("RABBITMQ_NODENAME"));
        let pod_name = env_of(c, "POD_NAME").value_from.as_ref().unwrap();
        assert_eq!(
            pod_name.field_ref.as_ref().unwrap().field_path,
            "metadata.name"
        );
    }

    #[test]
    fn config_map_is_mounted_at_etc_rabbitmq() {
        let sts = build(&shared());
        let p = pod(&sts);
        let vol = p
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == VOLUME_CONFIG)
            .unwrap();
        let cm = vol.config_map.as_ref().unwrap();
        assert_eq!(cm.name, "main-config");
        let keys: Vec<&str> = cm.items.iter().flatten().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["rabbitmq.conf", "enabled_plugins"]);
        let mount = broker(&sts)
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == vol.name)
            .unwrap();
        assert_eq!(mount.mount_path, "/etc/rabbitmq/");
        assert_eq!(mount.read_only, Some(true));
    }

    #[test]
    fn a_tls_cluster_mounts_its_secret_and_opens_the_tls_ports() {
        // Plain: the cookie Secret and the config; TLS adds the TLS Secret after them.
        let plain = build(&shared());
        assert_eq!(pod(&plain).volumes.as_ref().unwrap().len(), 2);
        let mut c = shared();
        c.tls_secret = Some("main-tls".into());
        let sts = build(&c);
        let vol = &pod(&sts).volumes.as_ref().unwrap()[2];
        let secret = vol.secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("main-tls"));
        assert_eq!(secret.optional, Some(false));
        let keys: Vec<&str> = secret
            .items
            .iter()
            .flatten()
            .map(|i| i.key.as_str())
            .collect();
        assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
        let b = broker(&sts);
        let mount = b
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == vol.name)
            .unwrap();
        assert_eq!(mount.mount_path, TLS_MOUNT_PATH);
        let ports: Vec<(&str, i32)> = b
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref().unwrap(), p.container_port))
            .collect();
        assert!(ports.contains(&("amqps", 5671)), "{ports:?}");
        assert!(ports.contains(&("management-tls", 15671)), "{ports:?}");
        // The config file names the files where they are mounted.
        assert!(
            super::super::config_map::tls_conf().contains(&format!("{TLS_MOUNT_PATH}/tls.key"))
        );
    }

    #[test]
    fn resources_are_passed_through() {
        let mut c = dedicated();
        assert_eq!(broker(&build(&c)).resources, None);
        c.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
            limits: Some(BTreeMap::from([("memory".into(), quantity("1Gi"))])),
            ..Default::default()
        });
        assert_eq!(broker(&build(&c)).resources, c.resources);
    }
}
