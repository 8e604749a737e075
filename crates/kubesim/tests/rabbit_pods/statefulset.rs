//! Real brokers in the simulated cluster: a StatefulSet with a RabbitMQ image (plus the headless
//! and ClusterIP Services, ConfigMap and Secrets shaped like the operator's) yields running
//! `rabbitmq-server` processes reachable through the Service's ClusterIP; deleting a pod kills its
//! broker and the StatefulSet brings it back with its data; a crashed broker is restarted; two
//! replicas form a real RabbitMQ cluster; a 4.x image runs RabbitMQ 4.0 and an unknown tag waits
//! with a reason; with fresh pod IPs a re-created pod comes back on a new IP as the same node with
//! its data, and such moved nodes still form and keep a cluster (in `matrix`, left out of
//! `make test`). The five tests start 1, 2, 2, 1 and 2 brokers.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use kubesim::cluster::{self, Cluster, ClusterConfig, wait_for};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BOOT: Duration = Duration::from_secs(150);

struct Broker {
    name: String,
    admin_pass: String,
    cookie: String,
}

/// The objects the operator creates for a broker cluster, applied with server-side apply.
async fn apply_broker_objects(client: &Client, name: &str, replicas: i32, image: &str) -> Broker {
    let admin_pass: String = format!("pw{}", std::process::id());
    let cookie = format!(
        "COOKIE{}{}",
        name.to_uppercase().replace('-', ""),
        std::process::id()
    );
    let labels = json!({"app.kubernetes.io/name": "rabbitmq", "app.kubernetes.io/instance": name});
    let headless = format!("{name}-nodes");
    let docs: Vec<Value> = vec![
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": format!("{name}-erlang-cookie"), "labels": labels},
               "stringData": {"cookie": cookie}}),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": format!("{name}-admin"), "labels": labels},
               "stringData": {"username": "admin", "password": admin_pass}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": format!("{name}-config"), "labels": labels},
               "data": {
                   "rabbitmq.conf": format!(
                       "cluster_formation.peer_discovery_backend = classic_config\n\
                        cluster_formation.classic_config.nodes.1 = rabbit@{name}-0.{headless}.default.svc\n\
                        cluster_partition_handling = autoheal\n\
                        collect_statistics_interval = 500\n\
                        loopback_users.guest = true\n"),
                   "enabled_plugins": "[rabbitmq_management].\n"}}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": headless, "labels": labels},
               "spec": {"clusterIP": "None", "publishNotReadyAddresses": true, "selector": labels,
                        "ports": [{"name": "amqp", "port": 5672}, {"name": "epmd", "port": 4369},
                                  {"name": "dist", "port": 25672}]}}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "labels": labels},
               "spec": {"selector": labels,
                        "ports": [{"name": "amqp", "port": 5672, "targetPort": "amqp"},
                                  {"name": "management", "port": 15672, "targetPort": "management"}]}}),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas, "serviceName": headless, "podManagementPolicy": "OrderedReady",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {"runAsUser": 999, "fsGroup": 999},
                    "volumes": [{"name": "config", "configMap": {"name": format!("{name}-config"),
                        "items": [{"key": "rabbitmq.conf", "path": "rabbitmq.conf"},
                                  {"key": "enabled_plugins", "path": "enabled_plugins"}]}},
                                {"name": "cookie", "secret": {"secretName": format!("{name}-erlang-cookie"),
                        "items": [{"key": "cookie", "path": ".erlang.cookie"}], "defaultMode": 0o400}}],
                    // The cookie as a file, as the operator's pods get it: fsGroup makes the
                    // Secret's file group-readable, so an init step copies it owner-only.
                    "initContainers": [{
                        "name": "setup-erlang-cookie", "image": image,
                        "command": ["sh", "-c", "rm -f /var/lib/rabbitmq/.erlang.cookie && \
                            cp /tmp/cookie/.erlang.cookie /var/lib/rabbitmq/.erlang.cookie && \
                            chmod 400 /var/lib/rabbitmq/.erlang.cookie"],
                        "volumeMounts": [{"name": "cookie", "mountPath": "/tmp/cookie", "readOnly": true},
                                         {"name": "data", "mountPath": "/var/lib/rabbitmq"}]
                    }],
                    "containers": [{
                        "name": "rabbitmq", "image": image,
                        "ports": [{"name": "amqp", "containerPort": 5672},
                                  {"name": "management", "containerPort": 15672},
                                  {"name": "dist", "containerPort": 25672},
                                  {"name": "epmd", "containerPort": 4369}],
                        "env": [
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "RABBITMQ_USE_LONGNAME", "value": "true"},
                            {"name": "RABBITMQ_NODENAME", "value": format!("rabbit@$(POD_NAME).{headless}.default.svc")},
                            {"name": "RABBITMQ_DEFAULT_USER", "valueFrom": {"secretKeyRef": {"name": format!("{name}-admin"), "key": "username"}}},
                            {"name": "RABBITMQ_DEFAULT_PASS", "valueFrom": {"secretKeyRef": {"name": format!("{name}-admin"), "key": "password"}}}
                        ],
                        "volumeMounts": [{"name": "config", "mountPath": "/etc/rabbitmq/", "readOnly": true},
                                         {"name": "data", "mountPath": "/var/lib/rabbitmq"}],
                        "readinessProbe": {"tcpSocket": {"port": "amqp"}, "periodSeconds": 10}
                    }]
                }
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
        }}),
    ];
    let pp = PatchParams::apply("rabbit-test").force();
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap().to_string();
        let obj_name = doc["metadata"]["name"].as_str().unwrap().to_string();
        let patch = Patch::Apply(&doc);
        let res = match kind.as_str() {
            "Secret" => Api::<Secret>::namespaced(client.clone(), "default")
                .patch(&obj_name, &pp, &patch)
                .await
                .map(|_| ()),
            "ConfigMap" => Api::<ConfigMap>::namespaced(client.clone(), "default")
                .patch(&obj_name, &pp, &patch)
                .await
                .map(|_| ()),
            "Service" => Api::<Service>::namespaced(client.clone(), "default")
                .patch(&obj_name, &pp, &patch)
                .await
                .map(|_| ()),
            _ => Api::<StatefulSet>::namespaced(client.clone(), "default")
                .patch(&obj_name, &pp, &patch)
                .await
                .map(|_| ()),
        };
        res.unwrap_or_else(|e| panic!("apply {kind} {obj_name}: {e}"));
    }
    Broker {
        name: name.to_string(),
        admin_pass,
        cookie,
    }
}

async fn cluster_ip(client: &Client, name: &str) -> Ipv4Addr {
    let svc = Api::<Service>::namespaced(client.clone(), "default")
        .get(name)
        .await
        .unwrap();
    svc.spec.unwrap().cluster_ip.unwrap().parse().unwrap()
}

async fn wait_ready_replicas(client: &Client, name: &str, n: i32) {
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    wait_for(&format!("{name} readyReplicas {n}"), BOOT, || async {
        sets.get(name)
            .await
            .ok()
            .filter(|s| s.status.as_ref().and_then(|st| st.ready_replicas) == Some(n))
    })
    .await
    .unwrap();
}

fn http() -> reqwest::Client {
    tiermq_testkit::tls::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// GET on the management API through the ClusterIP, retried until it answers 2xx.
async fn mgmt_get(b: &Broker, ip: Ipv4Addr, path: &str) -> Value {
    let url = format!("http://{ip}:15672{path}");
    wait_for(&format!("GET {url}"), Duration::from_secs(60), || async {
        let r = http()
            .get(&url)
            .basic_auth("admin", Some(&b.admin_pass))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json::<Value>().await.ok()
    })
    .await
    .unwrap()
}

/// Opens an AMQP connection through `addr` far enough to receive the broker's Connection.Start.
async fn amqp_handshake(addr: SocketAddr) -> std::io::Result<()> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await??;
    s.write_all(b"AMQP\x00\x00\x09\x01").await?;
    let mut head = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head)).await??;
    // Method frame on channel 0, class 10 (connection) method 10 (start).
    let ok = head[0] == 1 && head[1..3] == [0, 0] && head[7..11] == [0, 10, 0, 10];
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "not a Connection.Start frame: {head:?}"
        )))
    }
}

/// An AMQP connection (lapin) to `/` through `addr`, retried until the broker accepts it.
async fn amqp_connect(b: &Broker, addr: SocketAddr) -> lapin::Connection {
    let uri = format!("amqp://admin:{}@{addr}/%2f", b.admin_pass);
    wait_for(
        &format!("AMQP connection via {addr}"),
        Duration::from_secs(60),
        || async {
            lapin::Connection::connect(&uri, lapin::ConnectionProperties::default())
                .await
                .ok()
        },
    )
    .await
    .unwrap()
}

/// The broker container's `imageID`: which RabbitMQ the kubelet ran for its image.
fn image_id(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .map(|c| c.image_id.clone())
        .unwrap_or_default()
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

async fn start_cluster() -> (Cluster, tempfile::TempDir) {
    start_cluster_with(|c| c).await
}

async fn start_cluster_with(
    configure: impl FnOnce(ClusterConfig) -> ClusterConfig,
) -> (Cluster, tempfile::TempDir) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "kubesim=info,tiermq_testkit=info".into()),
        ))
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let c = cluster::start(configure(ClusterConfig::new(dir.path())))
        .await
        .unwrap();
    (c, dir)
}

fn pod_ip(pod: &Pod) -> Ipv4Addr {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_ref())
        .expect("pod IP")
        .parse()
        .unwrap()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_is_reachable_through_cluster_ip_and_survives_pod_deletion_and_crash() {
    let (c, dir) = start_cluster().await;
    let client = c.client();
    let result = tokio::time::timeout(Duration::from_secs(240), async {
        let b = apply_broker_objects(&client, "solo", 1, "rabbitmq:3.10-management").await;
        wait_ready_replicas(&client, &b.name, 1).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let pod = pods.get("solo-0").await.unwrap();
        let pod_ip: Ipv4Addr = pod
            .status
            .as_ref()
            .unwrap()
            .pod_ip
            .as_ref()
            .unwrap()
            .parse()
            .unwrap();
        let vip = cluster_ip(&client, "solo").await;

        // AMQP and the management API answer through the ClusterIP, from the pod's broker.
        wait_for(
            "AMQP handshake via ClusterIP",
            Duration::from_secs(30),
            || async { amqp_handshake((vip, 5672).into()).await.ok() },
        )
        .await
        .unwrap();
        let overview = mgmt_get(&b, vip, "/api/overview").await;
        assert_eq!(
            overview["node"],
            format!("rabbit-{}@{pod_ip}", pod_ip.to_string().replace('.', "-"))
        );
        // A 3.x tag runs the host's RabbitMQ 3.10, and the pod says so.
        let version = overview["rabbitmq_version"].as_str().unwrap_or_default();
        assert!(version.starts_with("3.10."), "{version}");
        assert_eq!(
            image_id(&pod),
            "kubesim://rabbitmq-server/3.10 (host package)"
        );
        let r = http()
            .put(format!("http://{vip}:15672/api/vhosts/keep-me"))
            .basic_auth("admin", Some(&b.admin_pass))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "create vhost: {}", r.status());

        // A persistent message, confirmed by the broker, published through the ClusterIP.
        {
            use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
            let conn = amqp_connect(&b, (vip, 5672).into()).await;
            let ch = conn.create_channel().await.unwrap();
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .unwrap();
            let durable = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.queue_declare("kept".into(), durable, Default::default())
                .await
                .unwrap();
            let confirm = ch
                .basic_publish(
                    "".into(),
                    "kept".into(),
                    BasicPublishOptions::default(),
                    b"survives pod deletion",
                    lapin::BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(confirm.is_ack(), "{confirm:?}");
            conn.close(200, "done".into()).await.unwrap();
        }

        // Deleting the pod kills its broker; the StatefulSet brings it back with its data.
        let old_pid = c.broker_pids()["default/solo-0"];
        assert!(pid_alive(old_pid));
        pods.delete("solo-0", &Default::default()).await.unwrap();
        wait_for(
            "old broker process gone",
            Duration::from_secs(20),
            || async { (!pid_alive(old_pid)).then_some(()) },
        )
        .await
        .unwrap();
        let old_pod_dir = dir
            .path()
            .join(format!("pods/default/solo-0-{}", pod.uid().unwrap()));
        let new_pod = wait_for("solo-0 re-created and Ready", BOOT, || async {
            pods.get_opt("solo-0").await.ok().flatten().filter(|p| {
                p.uid() != pod.uid()
                    && p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
            })
        })
        .await
        .unwrap();
        let new_pod_uid = new_pod.uid();
        assert_eq!(
            new_pod.status.unwrap().pod_ip,
            Some(pod_ip.to_string()),
            "stable pod IP"
        );
        let new_pid = c.broker_pids()["default/solo-0"];
        assert_ne!(new_pid, old_pid);
        let vhost = mgmt_get(&b, vip, "/api/vhosts/keep-me").await;
        assert_eq!(vhost["name"], "keep-me", "data survived the pod's deletion");
        assert!(dir.path().join("pvc/default/data-solo-0/mnesia").is_dir());
        assert!(
            !old_pod_dir.exists(),
            "the deleted pod's folder (with its Secrets) is gone"
        );
        {
            use lapin::options::BasicGetOptions;
            let conn = amqp_connect(&b, (vip, 5672).into()).await;
            let ch = conn.create_channel().await.unwrap();
            let msg = ch
                .basic_get("kept".into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
                .expect("the persistent message survived the pod's deletion");
            assert_eq!(msg.delivery.data, b"survives pod deletion");
            conn.close(200, "done".into()).await.unwrap();
        }

        // A crashed broker is restarted (restartPolicy Always) and counted.
        unsafe_kill(new_pid);
        wait_for("broker restarted after a crash", BOOT, || async {
            let p = pods.get("solo-0").await.ok()?;
            let st = p.status?;
            let cs = st.container_statuses?.into_iter().next()?;
            (cs.restart_count >= 1
                && cs.ready
                && c.broker_pids().get("default/solo-0") != Some(&new_pid))
            .then_some(())
        })
        .await
        .unwrap();
        mgmt_get(&b, vip, "/api/vhosts/keep-me").await;
        assert_eq!(c.running_brokers(), 1);
        // The kubelet recorded the restart, for `kubectl describe pod solo-0`.
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(client.clone(), "default");
        let reasons: Vec<String> = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.uid.clone()) == new_pod_uid)
            .filter_map(|e| e.reason)
            .collect();
        assert!(reasons.iter().any(|r| r == "BackOff"), "{reasons:?}");
        assert!(reasons.iter().any(|r| r == "Started"), "{reasons:?}");
    })
    .await;
    let pids: Vec<u32> = c.broker_pids().into_values().collect();
    c.shutdown().await;
    for pid in pids {
        assert!(!pid_alive(pid), "broker {pid} still running after shutdown");
    }
    result.expect("test took too long");
}

/// SIGKILL to the broker's whole process group: a crash as far as RabbitMQ is concerned.
fn unsafe_kill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_form_a_rabbitmq_cluster() {
    let (c, dir) = start_cluster().await;
    let client = c.client();
    let result = tokio::time::timeout(Duration::from_secs(240), async {
        let b = apply_broker_objects(&client, "duo", 2, "rabbitmq:3.10-management").await;
        wait_ready_replicas(&client, &b.name, 2).await;
        let vip = cluster_ip(&client, "duo").await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let mut expected: Vec<String> = Vec::new();
        for i in 0..2 {
            let p = pods.get(&format!("duo-{i}")).await.unwrap();
            let ip = p.status.unwrap().pod_ip.unwrap();
            expected.push(format!("rabbit-{}@{ip}", ip.replace('.', "-")));
        }
        expected.sort();
        let nodes = wait_for(
            "both nodes running in the cluster",
            Duration::from_secs(60),
            || async {
                let nodes = mgmt_get(&b, vip, "/api/nodes").await;
                let mut running: Vec<String> = nodes
                    .as_array()?
                    .iter()
                    .filter(|n| n["running"] == true)
                    .map(|n| n["name"].as_str().unwrap_or_default().to_string())
                    .collect();
                running.sort();
                (running == expected).then_some(nodes)
            },
        )
        .await
        .unwrap();
        assert_eq!(nodes.as_array().unwrap().len(), 2);
        assert!(c.running_brokers() <= 3);
        // Each node's cookie came from the Secret through the init step: an owner-only file in
        // its data volume.
        for i in 0..2 {
            let f = dir
                .path()
                .join(format!("pvc/default/data-duo-{i}/.erlang.cookie"));
            assert_eq!(std::fs::read_to_string(&f).unwrap(), b.cookie, "{f:?}");
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o400, "{f:?}");
        }
    })
    .await;
    c.shutdown().await;
    result.expect("test took too long");
}

/// A 4.x tag runs RabbitMQ 4.0 from the Debian 13 root: two replicas form a 4.0 cluster (the
/// kubelet's join runs the root's `rabbitmqctl`), the pods name the runtime, and deleting the
/// StatefulSet stops both brokers and leaves nothing in the root. A tag that names no version
/// never starts a broker: the container waits with `ErrImagePull`, a message naming the image
/// and the tags kubesim runs, and a Warning Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4x_tag_runs_rabbitmq_4_0_and_an_unknown_tag_waits_with_a_reason() {
    let (c, dir) = start_cluster().await;
    let client = c.client();
    let root = tiermq_testkit::BrokerRuntime::Debian13V40.root().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(240), async {
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let unknown: Pod = serde_json::from_value(json!({
            "metadata": {"name": "no-version"},
            "spec": {"containers": [{"name": "rabbitmq", "image": "rabbitmq:management"}]}
        }))
        .unwrap();
        pods.create(&Default::default(), &unknown).await.unwrap();

        let b = apply_broker_objects(&client, "four", 2, "rabbitmq:4.0-management").await;
        wait_ready_replicas(&client, &b.name, 2).await;
        let vip = cluster_ip(&client, "four").await;
        let overview = mgmt_get(&b, vip, "/api/overview").await;
        let version = overview["rabbitmq_version"].as_str().unwrap_or_default();
        assert!(version.starts_with("4.0."), "{version}");
        let mut expected: Vec<String> = Vec::new();
        for i in 0..2 {
            let p = pods.get(&format!("four-{i}")).await.unwrap();
            assert_eq!(
                image_id(&p),
                "kubesim://rabbitmq-server/4.0 (Debian 13 root)"
            );
            let ip = p.status.unwrap().pod_ip.unwrap();
            expected.push(format!("rabbit-{}@{ip}", ip.replace('.', "-")));
        }
        expected.sort();
        wait_for(
            "both 4.0 nodes running in one cluster",
            Duration::from_secs(60),
            || async {
                let nodes = mgmt_get(&b, vip, "/api/nodes").await;
                let mut running: Vec<String> = nodes
                    .as_array()?
                    .iter()
                    .filter(|n| n["running"] == true)
                    .map(|n| n["name"].as_str().unwrap_or_default().to_string())
                    .collect();
                running.sort();
                (running == expected).then_some(())
            },
        )
        .await
        .unwrap();

        // The pod whose tag names no version never got a broker, and says why.
        let p = pods.get("no-version").await.unwrap();
        let st = p.status.clone().unwrap();
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        let waiting = st.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("ErrImagePull"));
        let message = waiting.message.unwrap_or_default();
        assert!(
            message.contains("\"rabbitmq:management\"")
                && message.contains("tagged 3.x")
                && message.contains("4.x"),
            "{message}"
        );
        assert!(!c.broker_pids().contains_key("default/no-version"));
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(client.clone(), "default");
        let failed: Vec<String> = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.uid.clone()) == p.uid())
            .filter(|e| {
                e.reason.as_deref() == Some("Failed") && e.type_.as_deref() == Some("Warning")
            })
            .filter_map(|e| e.note)
            .collect();
        assert!(
            failed.iter().any(|n| n.contains("rabbitmq:management")),
            "{failed:?}"
        );

        // Deleting the StatefulSet stops both 4.0 brokers.
        let pids: Vec<u32> = c.broker_pids().values().copied().collect();
        assert_eq!(pids.len(), 2);
        Api::<StatefulSet>::namespaced(client.clone(), "default")
            .delete("four", &Default::default())
            .await
            .unwrap();
        wait_for("the 4.0 brokers gone", Duration::from_secs(30), || async {
            pids.iter().all(|p| !pid_alive(*p)).then_some(())
        })
        .await
        .unwrap();
    })
    .await;
    c.shutdown().await;
    result.expect("test took too long");
    // Nothing of the cluster's folder is left inside the 4.0 root (the nodes' mount points and
    // the folders made for them), and the host sees no mount of it.
    let real = std::fs::canonicalize(dir.path()).unwrap();
    let inside = root.join(real.strip_prefix("/").unwrap());
    assert!(!inside.exists(), "{} left in the root", inside.display());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(root.to_str().unwrap()),
        "mounts inside the root: {mounts}"
    );
}

/// Left out of `make test` (~80 s, six broker boots): run by `make test-faults`. `make test`
/// covers fresh pod IPs end to end (`tests/tests/rabbit_e2e_faults.rs`, clients following a moved
/// broker pod).
mod matrix {
    use super::*;

    /// With `ClusterConfig::with_fresh_pod_ips`, a StatefulSet's broker pod deleted through the API
    /// comes back on a new IP, as in a real cluster, as the same RabbitMQ node with its data: the
    /// persistent message is still there through the new IP, nothing listens on the old one, and the
    /// node (named after its first IP, reached through Erlang distribution there) answers
    /// `rabbitmqctl`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_fresh_pod_ips_a_recreated_broker_pod_gets_a_new_ip_and_keeps_its_data() {
        let (c, dir) = start_cluster_with(ClusterConfig::with_fresh_pod_ips).await;
        let client = c.client();
        let result = tokio::time::timeout(Duration::from_secs(240), async {
            let b = apply_broker_objects(&client, "moving", 1, "rabbitmq:3.10-management").await;
            wait_ready_replicas(&client, &b.name, 1).await;
            let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
            let pod = pods.get("moving-0").await.unwrap();
            let old_ip = pod_ip(&pod);
            let node = format!("rabbit-{}@{old_ip}", old_ip.to_string().replace('.', "-"));
            {
                use lapin::options::{
                    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
                };
                let conn = amqp_connect(&b, (old_ip, 5672).into()).await;
                let ch = conn.create_channel().await.unwrap();
                ch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .unwrap();
                let durable = QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                };
                ch.queue_declare("moved".into(), durable, Default::default())
                    .await
                    .unwrap();
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        "moved".into(),
                        BasicPublishOptions::default(),
                        b"survives a new pod IP",
                        lapin::BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                assert!(confirm.is_ack(), "{confirm:?}");
                conn.close(200, "done".into()).await.unwrap();
            }

            let old_pid = c.broker_pids()["default/moving-0"];
            pods.delete("moving-0", &Default::default()).await.unwrap();
            wait_for(
                "old broker process gone",
                Duration::from_secs(20),
                || async { (!pid_alive(old_pid)).then_some(()) },
            )
            .await
            .unwrap();
            let new_pod = wait_for("moving-0 re-created and Ready", BOOT, || async {
                pods.get_opt("moving-0")
                    .await
                    .ok()
                    .flatten()
                    .filter(|p| p.uid() != pod.uid() && is_ready(p))
            })
            .await
            .unwrap();
            let new_ip = pod_ip(&new_pod);
            assert_ne!(new_ip, old_ip, "a re-created pod gets a new IP");

            // The same node (same name, same data) answers on the new IP.
            let overview = mgmt_get(&b, new_ip, "/api/overview").await;
            assert_eq!(overview["node"], node.as_str(), "the node kept its name");
            {
                use lapin::options::BasicGetOptions;
                let conn = amqp_connect(&b, (new_ip, 5672).into()).await;
                let ch = conn.create_channel().await.unwrap();
                let msg = ch
                    .basic_get("moved".into(), BasicGetOptions { no_ack: true })
                    .await
                    .unwrap()
                    .expect("the persistent message survived the new pod IP");
                assert_eq!(msg.delivery.data, b"survives a new pod IP");
                conn.close(200, "done".into()).await.unwrap();
            }
            // Nothing listens for AMQP on the old address any more.
            let refused = tokio::net::TcpStream::connect((old_ip, 5672)).await;
            assert_eq!(
                refused.map(|_| ()).map_err(|e| e.kind()),
                Err(std::io::ErrorKind::ConnectionRefused),
                "AMQP on the old IP {old_ip}"
            );
            // Erlang distribution reaches the node by its name (on its first IP): rabbitmqctl works.
            let cookie = format!("COOKIEMOVING{}", std::process::id());
            let out = tokio::process::Command::new("rabbitmqctl")
                .args(["--longnames", "--erlang-cookie", &cookie, "-n", &node])
                .args(["eval", "node()."])
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains(&node),
                "rabbitmqctl -n {node}: {}{text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            let identity = std::fs::read_to_string(
                dir.path()
                    .join("pvc/default/data-moving-0")
                    .join(kubesim::sim::rabbit::IDENTITY_FILE),
            )
            .unwrap();
            assert!(
                identity.contains(&format!("name_ip={old_ip}\n")),
                "{identity}"
            );
        })
        .await;
        let pids: Vec<u32> = c.broker_pids().into_values().collect();
        c.shutdown().await;
        for pid in pids {
            assert!(!pid_alive(pid), "broker {pid} still running after shutdown");
        }
        result.expect("test took too long");
    }

    fn node_name_for(ip: Ipv4Addr) -> String {
        format!("rabbit-{}@{ip}", ip.to_string().replace('.', "-"))
    }

    /// Deletes `name` and waits for its successor to be Ready; returns it.
    async fn recreate(c: &Cluster, pods: &Api<Pod>, name: &str) -> Pod {
        let old = pods.get(name).await.unwrap();
        let old_pid = c.broker_pids()[&format!("default/{name}")];
        pods.delete(name, &Default::default()).await.unwrap();
        wait_for(
            &format!("{name}'s old broker gone"),
            Duration::from_secs(20),
            || async { (!pid_alive(old_pid)).then_some(()) },
        )
        .await
        .unwrap();
        wait_for(&format!("{name} re-created and Ready"), BOOT, || async {
            pods.get_opt(name)
                .await
                .ok()
                .flatten()
                .filter(|p| p.uid() != old.uid() && is_ready(p))
        })
        .await
        .unwrap()
    }

    /// Waits until the management API (through `via`) lists exactly `expected` as running nodes.
    async fn wait_running_nodes(b: &Broker, via: Ipv4Addr, mut expected: Vec<String>) {
        expected.sort();
        wait_for(
            &format!("running nodes {expected:?}"),
            Duration::from_secs(90),
            || async {
                let nodes = mgmt_get(b, via, "/api/nodes").await;
                let mut running: Vec<String> = nodes
                    .as_array()?
                    .iter()
                    .filter(|n| n["running"] == true)
                    .map(|n| n["name"].as_str().unwrap_or_default().to_string())
                    .collect();
                running.sort();
                (running == expected).then_some(())
            },
        )
        .await
        .unwrap();
    }

    /// With fresh pod IPs, Erlang distribution between nodes whose names no longer match their pod
    /// IPs works: pod-0 moves to a new IP, then a new pod-1 joins it by its (old-IP) node name; then
    /// pod-1 moves and rejoins by itself with its data.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_fresh_pod_ips_moved_nodes_form_and_keep_a_cluster() {
        let (c, _dir) = start_cluster_with(ClusterConfig::with_fresh_pod_ips).await;
        let client = c.client();
        let result = tokio::time::timeout(Duration::from_secs(360), async {
            let b = apply_broker_objects(&client, "roam", 1, "rabbitmq:3.10-management").await;
            wait_ready_replicas(&client, &b.name, 1).await;
            let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
            let first0 = pod_ip(&pods.get("roam-0").await.unwrap());
            let moved0 = pod_ip(&recreate(&c, &pods, "roam-0").await);
            assert_ne!(moved0, first0);

            Api::<StatefulSet>::namespaced(client.clone(), "default")
                .patch(
                    "roam",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"replicas": 2}})),
                )
                .await
                .unwrap();
            wait_ready_replicas(&client, &b.name, 2).await;
            let first1 = pod_ip(&pods.get("roam-1").await.unwrap());
            let names = vec![node_name_for(first0), node_name_for(first1)];
            wait_running_nodes(&b, moved0, names.clone()).await;

            let moved1 = pod_ip(&recreate(&c, &pods, "roam-1").await);
            assert_ne!(moved1, first1);
            assert!(moved1 != moved0 && moved1 != first0, "{moved1}");
            wait_running_nodes(&b, moved1, names).await;
        })
        .await;
        c.shutdown().await;
        result.expect("test took too long");
    }
}
