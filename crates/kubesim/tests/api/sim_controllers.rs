//! Simulated controllers without brokers: StatefulSet ordering, scale and rolling update,
//! EndpointSlices, and kube-proxy forwarding to plain TCP echo servers. Each test runs its own
//! cluster (API server + controllers) on its own loopback slot.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use kubesim::cluster::{self, Cluster, ClusterConfig, wait_for};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const GATE: &str = "kubesim.test/ready";
const T: Duration = Duration::from_secs(30);

async fn start_cluster() -> (Cluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster::start(ClusterConfig::new(dir.path()))
        .await
        .unwrap();
    (c, dir)
}

fn gated_statefulset(name: &str, replicas: i32, image: &str, policy: &str) -> StatefulSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas, "serviceName": name, "podManagementPolicy": policy,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "readinessGates": [{"conditionType": GATE}],
                    "containers": [{"name": "app", "image": image,
                        "ports": [{"name": "http", "containerPort": 8080}]}]
                }
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
        }
    }))
    .unwrap()
}

fn condition(pod: &Pod, t: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| c.status.clone())
}

/// Sets the readiness gate of one pod to True (what an external controller would do).
async fn open_gate(pods: &Api<Pod>, name: &str) {
    for _ in 0..20 {
        let Ok(pod) = pods.get(name).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if condition(&pod, GATE).as_deref() == Some("True") {
            return;
        }
        let mut conds: Vec<serde_json::Value> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ != GATE)
            .map(|c| serde_json::to_value(c).unwrap())
            .collect();
        conds.push(json!({"type": GATE, "status": "True"}));
        let mut patch = json!({"metadata": {"resourceVersion": pod.resource_version()},
                               "status": {"conditions": conds}});
        if pod.resource_version().is_none() {
            patch["metadata"] = json!({});
        }
        if pods
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not set the readiness gate of {name}");
}

async fn pod_names(pods: &Api<Pod>) -> BTreeSet<String> {
    pods.list(&ListParams::default())
        .await
        .map(|l| l.items.iter().map(|p| p.name_any()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_creates_pods_in_order_scales_down_from_the_top_and_rolls_updates() {
    let (c, _dir) = start_cluster().await;
    tokio::time::timeout(Duration::from_secs(120), async {
        let client = c.client();
        let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        sets.create(&PostParams::default(), &gated_statefulset("web", 3, "example/web:1", "OrderedReady"))
            .await
            .unwrap();

        // OrderedReady: web-1 only after web-0 is Ready, web-2 only after web-1.
        for i in 0..3 {
            let name = format!("web-{i}");
            let pod = wait_for(&format!("{name} with a pod IP"), T, || async {
                pods.get_opt(&name).await.ok().flatten().filter(|p| {
                    p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some()
                })
            })
            .await
            .unwrap();
            assert_eq!(condition(&pod, "Ready").as_deref(), Some("False"), "gate still closed");
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let names = pod_names(&pods).await;
            assert!(
                !names.contains(&format!("web-{}", i + 1)),
                "web-{} created before {name} was Ready: {names:?}",
                i + 1
            );
            open_gate(&pods, &name).await;
        }
        let sts = wait_for("readyReplicas 3", T, || async {
            sets.get("web").await.ok().filter(|s| {
                let st = s.status.clone().unwrap_or_default();
                st.ready_replicas == Some(3) && st.observed_generation == s.metadata.generation
            })
        })
        .await
        .unwrap();
        let st = sts.status.unwrap();
        assert_eq!((st.replicas, st.current_replicas, st.updated_replicas), (3, Some(3), Some(3)));

        // The controller recorded what it did, for `kubectl describe statefulset web`.
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "default");
        let created: Vec<String> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web"))
            .filter_map(|e| e.note)
            .collect();
        assert!(
            created.iter().any(|n| n == "create Pod web-2 in StatefulSet web successful"),
            "{created:?}"
        );

        // Stable names, labels, owner, PVCs, distinct pod IPs in the cluster's /24.
        let list = pods.list(&ListParams::default().labels("app=web")).await.unwrap();
        let mut ips = BTreeSet::new();
        let prefix = c.pod_ip_prefix();
        for p in &list.items {
            let name = p.name_any();
            assert_eq!(p.labels()["statefulset.kubernetes.io/pod-name"], name);
            let owner = &p.owner_references()[0];
            assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("StatefulSet", "web"));
            let ip: std::net::Ipv4Addr = p.status.as_ref().unwrap().pod_ip.as_ref().unwrap().parse().unwrap();
            assert_eq!(ip.octets()[..3], prefix, "{name} has {ip}");
            ips.insert(ip);
            assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
        }
        assert_eq!(ips.len(), 3);
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
        for i in 0..3 {
            let pvc = pvcs.get(&format!("data-web-{i}")).await.unwrap();
            assert_eq!(pvc.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
        }

        // A template change rolls pods from the highest ordinal down, one at a time.
        let old_uids: BTreeMap<String, String> =
            list.items.iter().map(|p| (p.name_any(), p.uid().unwrap())).collect();
        sets.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "example/web:2", "ports": [{"name": "http", "containerPort": 8080}]}]}}}})),
        )
        .await
        .unwrap();
        let mut replaced: Vec<String> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while replaced.len() < 3 {
            assert!(tokio::time::Instant::now() < deadline, "rolling update stuck: {replaced:?}");
            for p in pods.list(&ListParams::default()).await.unwrap().items {
                let name = p.name_any();
                if old_uids.get(&name) != p.uid().as_ref() && !replaced.contains(&name) {
                    replaced.push(name.clone());
                }
                if condition(&p, GATE).as_deref() != Some("True") {
                    open_gate(&pods, &name).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(replaced, vec!["web-2", "web-1", "web-0"]);
        for p in pods.list(&ListParams::default()).await.unwrap().items {
            let image = p.spec.unwrap().containers[0].image.clone();
            assert_eq!(image.as_deref(), Some("example/web:2"));
        }

        // Scale down: web-2 goes before web-1; never the other way round.
        wait_for("readyReplicas 3 after the update", T, || async {
            sets.get("web").await.ok().filter(|s| s.status.as_ref().and_then(|st| st.ready_replicas) == Some(3))
        })
        .await
        .unwrap();
        sets.patch("web", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 1}})))
            .await
            .unwrap();
        wait_for("only web-0 left", T, || async {
            let names = pod_names(&pods).await;
            assert!(
                !names.contains("web-2") || names.contains("web-1"),
                "web-1 removed before web-2: {names:?}"
            );
            (names.len() == 1 && names.contains("web-0")).then_some(())
        })
        .await
        .unwrap();
        wait_for("status.replicas 1", T, || async {
            sets.get("web").await.ok().filter(|s| s.status.as_ref().map(|st| st.replicas) == Some(1))
        })
        .await
        .unwrap();
        // PVCs are retained on scale down.
        assert!(pvcs.get_opt("data-web-2").await.unwrap().is_some());
    })
    .await
    .expect("test took too long");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpointslices_follow_pod_readiness_and_selectorless_services_keep_their_slices() {
    let (c, _dir) = start_cluster().await;
    tokio::time::timeout(Duration::from_secs(90), async {
        let client = c.client();
        let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
        sets.create(&PostParams::default(), &gated_statefulset("api", 2, "example/api:1", "Parallel"))
            .await
            .unwrap();
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "api"},
            "spec": {"selector": {"app": "api"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}
        }))
        .unwrap();
        services.create(&PostParams::default(), &svc).await.unwrap();
        let selectorless: Service = serde_json::from_value(json!({
            "metadata": {"name": "ext"},
            "spec": {"ports": [{"name": "web", "port": 80}]}
        }))
        .unwrap();
        services.create(&PostParams::default(), &selectorless).await.unwrap();
        let manual: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "ext-manual", "labels": {"kubernetes.io/service-name": "ext",
                         "endpointslice.kubernetes.io/managed-by": "tiermq-operator"}},
            "addressType": "IPv4",
            "ports": [{"name": "web", "port": 9999}],
            "endpoints": [{"addresses": ["127.0.0.99"], "conditions": {"ready": true}}]
        }))
        .unwrap();
        let manual = slices.create(&PostParams::default(), &manual).await.unwrap();

        let ready_of = |s: &EndpointSlice| -> BTreeMap<String, bool> {
            s.endpoints
                .iter()
                .map(|e| {
                    let pod = e.target_ref.as_ref().and_then(|r| r.name.clone()).unwrap_or_default();
                    (pod, e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                })
                .collect()
        };
        let managed = || async {
            slices
                .list(&ListParams::default().labels(
                    "kubernetes.io/service-name=api,endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io",
                ))
                .await
                .ok()
                .and_then(|l| l.items.into_iter().next())
        };
        let s = wait_for("slice with two not-ready endpoints", T, || async {
            managed().await.filter(|s| {
                ready_of(s) == BTreeMap::from([("api-0".into(), false), ("api-1".into(), false)])
            })
        })
        .await
        .unwrap();
        // The named targetPort resolves to the container port.
        assert_eq!(s.ports.as_ref().unwrap()[0].port, Some(8080));
        assert_eq!(s.ports.as_ref().unwrap()[0].name.as_deref(), Some("web"));
        let pod0 = pods.get("api-0").await.unwrap();
        let ip0 = pod0.status.unwrap().pod_ip.unwrap();
        assert!(s.endpoints.iter().any(|e| e.addresses == vec![ip0.clone()]));

        open_gate(&pods, "api-0").await;
        wait_for("api-0 ready in the slice", T, || async {
            managed().await.filter(|s| {
                ready_of(s) == BTreeMap::from([("api-0".into(), true), ("api-1".into(), false)])
            })
        })
        .await
        .unwrap();

        // A deleted pod leaves the slice (and comes back through the StatefulSet).
        pods.delete("api-1", &Default::default()).await.unwrap();
        wait_for("api-1 back, not ready, in the slice", T, || async {
            let new = pods.get_opt("api-1").await.ok().flatten()?;
            managed().await.filter(|s| {
                s.endpoints.iter().any(|e| {
                    e.target_ref.as_ref().and_then(|r| r.uid.clone()) == new.uid()
                        && e.conditions.as_ref().and_then(|c| c.ready) == Some(false)
                })
            })
        })
        .await
        .unwrap();

        // The selector-less Service's slice is untouched and no managed slice appears for it.
        let again = slices.get("ext-manual").await.unwrap();
        assert_eq!(again.resource_version(), manual.resource_version());
        let managed_ext = slices
            .list(&ListParams::default().labels(
                "kubernetes.io/service-name=ext,endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io",
            ))
            .await
            .unwrap();
        assert!(managed_ext.items.is_empty());

        // Deleting the Service garbage-collects its managed slices.
        services.delete("api", &Default::default()).await.unwrap();
        wait_for("api slices gone", T, || async { managed().await.is_none().then_some(()) })
            .await
            .unwrap();
    })
    .await
    .expect("test took too long");
    c.shutdown().await;
}

/// A line echo server that prefixes every answer with its name.
async fn echo_server(addr: SocketAddr, name: &'static str) -> tokio::task::JoinHandle<()> {
    let l = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if w.write_all(format!("{name}:{line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    })
}

struct Conn {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect(addr).await?;
        let (r, w) = s.into_split();
        Ok(Conn {
            lines: BufReader::new(r).lines(),
            w,
        })
    }

    /// Sends one line and returns the answer, None if the connection was closed.
    async fn ask(&mut self, line: &str) -> Option<String> {
        self.w
            .write_all(format!("{line}\n").as_bytes())
            .await
            .ok()?;
        tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
            .await
            .ok()?
            .ok()?
    }
}

async fn set_endpoints(slices: &Api<EndpointSlice>, eps: serde_json::Value) {
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "echo-1", "labels": {"kubernetes.io/service-name": "echo"}},
        "addressType": "IPv4",
        "ports": [{"name": "echo", "port": 7000, "protocol": "TCP"}],
        "endpoints": eps
    });
    slices
        .patch(
            "echo-1",
            &PatchParams::apply("sim-test").force(),
            &Patch::Apply(&slice),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_proxy_round_robins_new_connections_and_keeps_established_ones() {
    let (c, _dir) = start_cluster().await;
    tokio::time::timeout(Duration::from_secs(90), async {
        let client = c.client();
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
        let [a, b, p] = c.pod_ip_prefix();
        let addr_a: SocketAddr = (std::net::Ipv4Addr::new(a, b, p, 201), 7000).into();
        let addr_b: SocketAddr = (std::net::Ipv4Addr::new(a, b, p, 202), 7000).into();
        let _sa = echo_server(addr_a, "A").await;
        let _sb = echo_server(addr_b, "B").await;

        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "echo"},
            "spec": {"type": "LoadBalancer", "ports": [{"name": "echo", "port": 80, "targetPort": 7000}]}
        }))
        .unwrap();
        let svc = services.create(&PostParams::default(), &svc).await.unwrap();
        let cluster_ip: std::net::Ipv4Addr = svc.spec.unwrap().cluster_ip.unwrap().parse().unwrap();
        assert_eq!(cluster_ip.octets()[..3], c.service_ip_prefix());
        let vip = SocketAddr::from((cluster_ip, 80));
        // A LoadBalancer Service is published on its ClusterIP.
        wait_for("load-balancer ingress", T, || async {
            let s = services.get("echo").await.ok()?;
            let ingress = s.status?.load_balancer?.ingress?;
            (ingress[0].ip.as_deref() == Some(cluster_ip.to_string().as_str())).then_some(())
        })
        .await
        .unwrap();

        set_endpoints(
            &slices,
            json!([{"addresses": [addr_a.ip().to_string()], "conditions": {"ready": true}}]),
        )
        .await;
        let mut c1 = wait_for("ClusterIP forwarding to A", T, || async {
            let mut conn = Conn::open(vip).await.ok()?;
            (conn.ask("hello").await? == "A:hello").then_some(conn)
        })
        .await
        .unwrap();

        // Endpoints switch to B: new connections follow, the established one stays on A.
        set_endpoints(
            &slices,
            json!([{"addresses": [addr_b.ip().to_string()], "conditions": {"ready": true}}]),
        )
        .await;
        wait_for("new connections reach B", T, || async {
            let mut conn = Conn::open(vip).await.ok()?;
            (conn.ask("x").await? == "B:x").then_some(())
        })
        .await
        .unwrap();
        assert_eq!(c1.ask("still").await.as_deref(), Some("A:still"));

        // Both ready: round robin over A and B.
        set_endpoints(
            &slices,
            json!([{"addresses": [addr_a.ip().to_string()], "conditions": {"ready": true}},
                   {"addresses": [addr_b.ip().to_string()]}]),
        )
        .await;
        // The change reaches kube-proxy within a resync; then 4 connections alternate. A round
        // of 4 that straddles the change does not alternate and is asked again.
        let seen = wait_for("both endpoints in rotation", T, || async {
            let mut answers = vec![];
            for _ in 0..4 {
                let mut conn = Conn::open(vip).await.ok()?;
                answers.push(conn.ask("rr").await?);
            }
            let mut got: BTreeMap<String, usize> = BTreeMap::new();
            for a in &answers {
                *got.entry(a.clone()).or_insert(0) += 1;
            }
            let alternating = answers.windows(2).all(|p| p[0] != p[1]);
            (got.len() == 2 && alternating).then_some(got)
        })
        .await
        .unwrap();
        assert_eq!(
            seen,
            BTreeMap::from([("A:rr".to_string(), 2), ("B:rr".to_string(), 2)])
        );

        // No ready endpoint: a new connection is closed without an answer; c1 is unaffected.
        set_endpoints(
            &slices,
            json!([{"addresses": [addr_a.ip().to_string()], "conditions": {"ready": false}}]),
        )
        .await;
        wait_for("connections refused without ready endpoints", T, || async {
            match Conn::open(vip).await {
                Err(_) => Some(()),
                Ok(mut conn) => {
                    let mut buf = [0u8; 1];
                    let _ = conn.w.write_all(b"q\n").await;
                    let n = tokio::time::timeout(
                        Duration::from_secs(2),
                        conn.lines.get_mut().read(&mut buf),
                    )
                    .await;
                    matches!(n, Ok(Ok(0)) | Ok(Err(_))).then_some(())
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(c1.ask("last").await.as_deref(), Some("A:last"));
    })
    .await
    .expect("test took too long");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_runs_pods_through_replicasets_and_rolls_out_template_changes() {
    use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
    let (c, _dir) = start_cluster().await;
    tokio::time::timeout(Duration::from_secs(90), async {
        let client = c.client();
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
        let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "op"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "op"}},
                     "template": {"metadata": {"labels": {"app": "op"}},
                                  "spec": {"containers": [{"name": "op", "image": "example/tiermq-operator:1"}]}}}
        }))
        .unwrap();
        deployments.create(&PostParams::default(), &d).await.unwrap();
        let available = |image: &'static str| {
            let deployments = deployments.clone();
            let pods = pods.clone();
            move || {
                let deployments = deployments.clone();
                let pods = pods.clone();
                async move {
                    let d = deployments.get("op").await.ok()?;
                    let st = d.status?;
                    let ok = st.observed_generation == d.metadata.generation
                        && st.ready_replicas == Some(2)
                        && st.updated_replicas == Some(2)
                        && st.replicas == Some(2)
                        && st.conditions.iter().flatten().any(|c| c.type_ == "Available" && c.status == "True")
                        && st.conditions.iter().flatten().any(|c| {
                            c.type_ == "Progressing" && c.reason.as_deref() == Some("NewReplicaSetAvailable")
                        });
                    let list = pods.list(&ListParams::default().labels("app=op")).await.ok()?;
                    let images_ok = list.items.len() == 2
                        && list.items.iter().all(|p| {
                            p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some(image)
                                && condition(p, "Ready").as_deref() == Some("True")
                        });
                    (ok && images_ok).then_some(list.items)
                }
            }
        };
        // (name, revision, spec.replicas, status.readyReplicas) of the Deployment's ReplicaSets.
        let replicasets = || async {
            let mut v: Vec<(String, String, i32, i32)> = sets
                .list(&ListParams::default().labels("app=op"))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|rs| {
                    assert_eq!(rs.owner_references()[0].kind, "Deployment");
                    (
                        rs.name_any(),
                        rs.annotations()["deployment.kubernetes.io/revision"].clone(),
                        rs.spec.as_ref().unwrap().replicas.unwrap(),
                        rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0),
                    )
                })
                .collect();
            v.sort_by(|a, b| a.1.cmp(&b.1));
            v
        };
        let first = wait_for("deployment available", T, available("example/tiermq-operator:1")).await.unwrap();
        let rs1 = first[0].owner_references()[0].name.clone();
        for p in &first {
            let owner = &p.owner_references()[0];
            assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("ReplicaSet", rs1.as_str()));
            assert!(p.name_any().starts_with(&format!("{rs1}-")), "{}", p.name_any());
            assert!(p.status.as_ref().unwrap().pod_ip.is_some());
        }
        assert!(rs1.starts_with("op-"), "{rs1}");
        let set_image = |image: &'static str| {
            let deployments = deployments.clone();
            async move {
                deployments
                    .patch(
                        "op",
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"spec": {"template": {"spec": {"containers": [
                            {"name": "op", "image": image}]}}}})),
                    )
                    .await
                    .unwrap();
            }
        };
        set_image("example/tiermq-operator:2").await;
        let second = wait_for("rolled out", T, available("example/tiermq-operator:2")).await.unwrap();
        let old: BTreeSet<String> = first.iter().map(|p| p.name_any()).collect();
        assert!(second.iter().all(|p| !old.contains(&p.name_any())));
        let rs2 = second[0].owner_references()[0].name.clone();
        assert_ne!(rs1, rs2);
        // The old ReplicaSet stays, scaled to 0, as revision 1.
        let history = wait_for("old ReplicaSet scaled down", T, || async {
            let v = replicasets().await;
            (v.len() == 2 && v[0].3 == 0).then_some(v)
        })
        .await
        .unwrap();
        assert_eq!(
            history,
            [(rs1.clone(), "1".into(), 0, 0), (rs2.clone(), "2".into(), 2, 2)]
        );

        // Back to the first template: its ReplicaSet comes back as revision 3.
        set_image("example/tiermq-operator:1").await;
        let third = wait_for("rolled back", T, available("example/tiermq-operator:1")).await.unwrap();
        assert!(third.iter().all(|p| p.owner_references()[0].name == rs1));
        let history = wait_for("second ReplicaSet scaled down", T, || async {
            let v = replicasets().await;
            (v.len() == 2 && v[0].3 == 0).then_some(v)
        })
        .await
        .unwrap();
        assert_eq!(history, [(rs2, "2".into(), 0, 0), (rs1, "3".into(), 2, 2)]);

        deployments
            .patch("op", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 0}})))
            .await
            .unwrap();
        wait_for("no pods left", T, || async {
            pods.list(&ListParams::default().labels("app=op")).await.ok()?.items.is_empty().then_some(())
        })
        .await
        .unwrap();
        // Deleting the Deployment takes its ReplicaSets with it.
        deployments.delete("op", &Default::default()).await.unwrap();
        wait_for("ReplicaSets garbage-collected", T, || async {
            sets.list(&ListParams::default()).await.ok()?.items.is_empty().then_some(())
        })
        .await
        .unwrap();
        assert_eq!(c.running_brokers(), 0);
    })
    .await
    .expect("test took too long");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pvc_retention_policy_deletes_claims_and_their_folders() {
    let (c, _dir) = start_cluster().await;
    tokio::time::timeout(Duration::from_secs(90), async {
        let client = c.client();
        let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
        let mut sts = gated_statefulset("db", 2, "example/db:1", "Parallel");
        let spec = sts.spec.as_mut().unwrap();
        spec.template.spec.as_mut().unwrap().readiness_gates = None;
        spec.persistent_volume_claim_retention_policy =
            serde_json::from_value(json!({"whenDeleted": "Delete", "whenScaled": "Delete"}))
                .unwrap();
        sets.create(&PostParams::default(), &sts).await.unwrap();
        let folder = |i: u32| c.dir().join(format!("pvc/default/data-db-{i}"));
        wait_for("both pods ready with their PVC folders", T, || async {
            let s = sets.get("db").await.ok()?;
            (s.status?.ready_replicas == Some(2) && folder(0).is_dir() && folder(1).is_dir())
                .then_some(())
        })
        .await
        .unwrap();
        let owner = pvcs
            .get("data-db-0")
            .await
            .unwrap()
            .owner_references()
            .to_vec();
        assert_eq!(owner[0].kind, "StatefulSet");

        sets.patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
        wait_for("data-db-1 and its folder gone", T, || async {
            (pvcs.get_opt("data-db-1").await.ok()?.is_none() && !folder(1).exists()).then_some(())
        })
        .await
        .unwrap();
        assert!(folder(0).is_dir(), "the remaining pod keeps its data");

        sets.delete("db", &Default::default()).await.unwrap();
        wait_for(
            "data-db-0 garbage-collected with the StatefulSet",
            T,
            || async {
                (pvcs.get_opt("data-db-0").await.ok()?.is_none() && !folder(0).exists())
                    .then_some(())
            },
        )
        .await
        .unwrap();
    })
    .await
    .expect("test took too long");
    c.shutdown().await;
}

/// A StatefulSet deleted with `propagationPolicy: Orphan` and created anew gets its pods back
/// (adopted, not re-created) and, with `whenDeleted: Delete`, its claims as dependents again, so
/// that deleting the new set removes both, as the real controllers do.
#[tokio::test]
async fn a_statefulset_created_anew_adopts_its_orphaned_pods_and_claims() {
    let (c, _dir) = start_cluster().await;
    tokio::time::timeout(Duration::from_secs(120), async {
        let client = c.client();
        let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
            Api::namespaced(client.clone(), "default");
        let mut sts = gated_statefulset("db", 1, "example/db:1", "Parallel");
        sts.spec
            .as_mut()
            .unwrap()
            .persistent_volume_claim_retention_policy = Some(
            serde_json::from_value(json!({"whenDeleted": "Delete", "whenScaled": "Retain"}))
                .unwrap(),
        );
        let first = sets.create(&PostParams::default(), &sts).await.unwrap();
        let owner_of =
            |refs: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
                refs.unwrap_or_default()
                    .into_iter()
                    .find(|r| r.controller == Some(true))
                    .map(|r| r.uid)
            };
        let pod_uid = wait_for("db-0 exists", T, || async {
            pods.get_opt("db-0")
                .await
                .ok()
                .flatten()
                .and_then(|p| p.metadata.uid)
        })
        .await
        .unwrap();
        wait_for("data-db-0 owned by the first set", T, || async {
            let c = claims.get_opt("data-db-0").await.ok().flatten()?;
            (owner_of(c.metadata.owner_references) == first.metadata.uid).then_some(())
        })
        .await
        .unwrap();

        sets.delete("db", &DeleteParams::orphan()).await.unwrap();
        wait_for("the set is gone and its dependents orphaned", T, || async {
            let gone = sets.get_opt("db").await.ok()?.is_none();
            let p = pods.get_opt("db-0").await.ok().flatten()?;
            let c = claims.get_opt("data-db-0").await.ok().flatten()?;
            (gone
                && owner_of(p.metadata.owner_references).is_none()
                && owner_of(c.metadata.owner_references).is_none())
            .then_some(())
        })
        .await
        .unwrap();

        let second = sets.create(&PostParams::default(), &sts).await.unwrap();
        wait_for("pod and claim adopted by the new set", T, || async {
            let p = pods.get_opt("db-0").await.ok().flatten()?;
            let c = claims.get_opt("data-db-0").await.ok().flatten()?;
            (owner_of(p.metadata.owner_references) == second.metadata.uid
                && owner_of(c.metadata.owner_references) == second.metadata.uid)
                .then_some(())
        })
        .await
        .unwrap();
        let now = pods.get("db-0").await.unwrap();
        assert_eq!(
            now.metadata.uid.as_ref(),
            Some(&pod_uid),
            "the pod was adopted, not re-created"
        );

        sets.delete("db", &DeleteParams::background())
            .await
            .unwrap();
        wait_for("pod and claim deleted with the set", T, || async {
            let p = pods.get_opt("db-0").await.ok()?;
            let c = claims.get_opt("data-db-0").await.ok()?;
            (p.is_none() && c.is_none()).then_some(())
        })
        .await
        .unwrap();
    })
    .await
    .expect("within 120 s");
    c.shutdown().await;
}
