//! TLS clusters (`spec.tls`) on kubesim with the operator binary and real brokers: a test CA
//! (rcgen) signs one certificate per cluster for its Service DNS name (and the instance Services
//! it may serve), stored in Secrets shaped as cert-manager writes them (`tls.crt`, `tls.key`,
//! `ca.crt`). The brokers then serve AMQPS and management HTTPS (checked through the cluster
//! Service with the CA and the Service name; a foreign CA is refused), AMQPS also answers through
//! the instance Service, the operator manages TLS clusters over HTTPS only, and conversions under
//! load lose nothing: a plain shared cluster → a TLS dedicated one (3.10), and TLS shared → TLS
//! dedicated → TLS shared (4.0, with every plain management connection through a Service reset).
//! The load's clients stay on the instance Service's plain port, which stays open beside TLS.
//!
//! Also: a missing, then incomplete, TLS Secret is reported (`SecretProblem`) and the instance
//! starts once it is complete.
//!
//! In the `matrix` module (15 to 45 s each): `cargo nextest run -p tiermq-tests
//! --test rabbit_e2e_guards --profile full -E 'test(tls::)'`. Part of the `rabbit_e2e_guards`
//! binary (one link fewer for CI on 2 cores).

mod matrix {
    use std::collections::BTreeMap;
    use std::net::{IpAddr, SocketAddr};
    use std::time::{Duration, Instant};

    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{Secret, Service};
    use kube::Api;
    use kube::api::PostParams;
    use tiermq_crd::Tier;
    use tiermq_testkit::tls::{TestCa, amqps_handshake};
    use tiermq_tests::harness::{
        IMAGE_3_10, IMAGE_4_0, InstanceSpec, World, shared_cluster_yaml_with,
    };
    use tiermq_tests::load::Load;
    use tiermq_tests::scenario::{self, NAME, NS};

    use crate::common::{TENANT, cluster_of, load_config, publish_to, wait_for_flow};

    const SYSTEM: &str = "tiermq-system";

    async fn tls_secret(
        world: &World,
        ca: &TestCa,
        ns: &str,
        name: &str,
        service: &str,
        also: &str,
    ) {
        world
            .create_tls_secret(ca, ns, name, service, also)
            .await
            .unwrap();
    }

    async fn namespace(world: &World, ns: &str) {
        world
            .kubectl
            .apply(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
            ))
            .await
            .unwrap();
    }

    /// The ClusterIP of Service `ns/name`.
    async fn cluster_ip(world: &World, ns: &str, name: &str) -> IpAddr {
        Api::<Service>::namespaced(world.cluster.client(), ns)
            .get(name)
            .await
            .unwrap()
            .spec
            .and_then(|s| s.cluster_ip)
            .unwrap()
            .parse()
            .unwrap()
    }

    /// A management client for cluster `ns/cluster` over HTTPS through its Service, trusting
    /// `ca_pem` and verifying the Service's DNS name (the admin login from its Secret).
    async fn https(
        world: &World,
        ca_pem: &str,
        ns: &str,
        cluster: &str,
    ) -> tiermq_broker::ManagementClient {
        let ip = cluster_ip(world, ns, cluster).await;
        // Only the login is taken from the harness's (plain) client; it sends nothing.
        let admin = world
            .management(ns, cluster)
            .await
            .unwrap()
            .endpoint()
            .clone();
        tiermq_broker::ManagementClient::with_options(
            tiermq_broker::ClusterEndpoint {
                url: format!("https://{ip}:15671"),
                ..admin
            },
            tiermq_broker::ClientOptions {
                tls: Some(tiermq_broker::ServerTls {
                    ca_pem: ca_pem.as_bytes().to_vec(),
                    server_name: format!("{cluster}.{ns}.svc"),
                }),
                retry: tiermq_broker::RetryPolicy::none(),
                ..Default::default()
            },
        )
        .unwrap()
    }

    /// Checks cluster `ns/cluster` through its Service: HTTPS management verified with `ca`
    /// under the Service's DNS name, AMQPS answering the protocol header, a foreign CA refused.
    async fn serves_tls(world: &World, ca: &TestCa, ns: &str, cluster: &str) {
        let ip = cluster_ip(world, ns, cluster).await;
        let host = format!("{cluster}.{ns}.svc");
        let health = https(world, ca.ca_pem(), ns, cluster)
            .await
            .health()
            .await
            .unwrap();
        assert!(health.healthy(), "{ns}/{cluster} over HTTPS: {health:?}");
        let other = TestCa::new("not the cluster's CA").unwrap();
        let refused = https(world, other.ca_pem(), ns, cluster)
            .await
            .health()
            .await
            .unwrap_err();
        assert!(
            refused.to_string().to_lowercase().contains("certificate"),
            "{refused}"
        );
        let amqps = SocketAddr::new(ip, 5671);
        assert_eq!(
            amqps_handshake(amqps, ca.ca_pem(), &host).await,
            Ok(1),
            "{ns}/{cluster} AMQPS"
        );
        let refused = amqps_handshake(amqps, other.ca_pem(), &host)
            .await
            .unwrap_err();
        assert!(refused.starts_with("TLS:"), "{refused}");
    }

    /// AMQPS through the instance's own Service (the endpoint clients use on every tier),
    /// verifying the instance Service's DNS name.
    async fn instance_serves_amqps(world: &World, ca: &TestCa) {
        let ip = cluster_ip(world, NS, NAME).await;
        let host = format!("{NAME}.{NS}.svc");
        assert_eq!(
            amqps_handshake(SocketAddr::new(ip, 5671), ca.ca_pem(), &host).await,
            Ok(1),
            "AMQPS through the instance Service {host}"
        );
    }

    /// Converts the instance to `to` under load and checks nothing was lost and the tenant is
    /// on the destination (asked over HTTPS with `ca`: every destination here has TLS).
    async fn convert_under_load(world: &mut World, ca: &TestCa, label: &str, to: Tier) {
        let target = world.instance_target(NS, NAME).await.unwrap();
        let load = Load::start(load_config(target)).await.unwrap();
        wait_for_flow(&load).await;
        let conversion = scenario::convert(
            world,
            NS,
            NAME,
            to,
            &load,
            Duration::from_secs(180),
            Some(&mut |l: &str| println!("{l}")),
        )
        .await
        .unwrap();
        load.stop_publishing();
        let report = load.finish(Duration::from_secs(60)).await;
        println!(
            "{label}: conversion to {to} took {:.1}s: {}",
            conversion.duration.as_secs_f64(),
            scenario::phase_table(&conversion)
        );
        println!("{label}: load {report}");
        assert_eq!(
            report.lost, 0,
            "{label}: confirmed but never consumed: {:?}",
            report.lost_sample
        );
        assert!(
            report.stats.confirmed >= 200,
            "{label}: the load ran through the conversion: {report}"
        );
        let (ns, cluster) = cluster_of(to);
        let dst = https(world, ca.ca_pem(), ns, &cluster).await;
        assert!(dst.get_vhost(TENANT).await.unwrap().is_some());
    }

    /// Messages parked in a queue no client consumes, so the conversion's drain has a backlog to
    /// move (the work-queue load keeps its own queue near empty).
    const PARKED: &str = "parked";
    const PARKED_COUNT: u64 = 300;

    /// Publishes [`PARKED_COUNT`] persistent messages, confirmed, to durable queue [`PARKED`]
    /// through the instance Service.
    async fn park_messages(world: &World) {
        let target = world.instance_target(NS, NAME).await.unwrap();
        let conn = tiermq_tests::load::probe_connection(&target, "park", Duration::from_secs(10))
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let durable = lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(PARKED.into(), durable, Default::default())
            .await
            .unwrap();
        publish_to(&conn, PARKED, PARKED_COUNT).await;
        let _ = conn.close(200, "parked".into()).await;
    }

    /// Waits until cluster `ns/cluster` (asked over HTTPS) holds `want` parked messages.
    async fn parked_arrived(world: &World, ca: &TestCa, ns: &str, cluster: &str, want: u64) {
        let dst = https(world, ca.ca_pem(), ns, cluster).await;
        let mut last = None;
        for _ in 0..60 {
            last = dst
                .get_queue(TENANT, PARKED)
                .await
                .ok()
                .flatten()
                .and_then(|q| q.messages_ready);
            if last == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("{ns}/{cluster} holds {last:?} of the {want} parked messages");
    }

    /// Resets every connection to the plain AMQP port (5672) of cluster Service `ns/cluster`,
    /// from the moment the Service has a ClusterIP (at once if it has one): the drain shovels,
    /// which reach the destination through its Service, must use AMQPS (5671) then. Clients
    /// stay untouched: they use the instance's own Service.
    fn reset_plain_amqp_of(
        world: &World,
        ns: &'static str,
        cluster: String,
    ) -> tokio::task::JoinHandle<IpAddr> {
        let faults = world
            .cluster
            .proxy_faults()
            .expect("kubesim runs its controllers");
        let client = world.cluster.client();
        tokio::spawn(async move {
            for _ in 0..1200 {
                let ip = Api::<Service>::namespaced(client.clone(), ns)
                    .get_opt(&cluster)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|s| s.spec?.cluster_ip)
                    .and_then(|ip| ip.parse::<IpAddr>().ok());
                if let Some(ip) = ip {
                    faults.set_at(ip, 5672, kubesim::sim::kubeproxy::ProxyFaultMode::Reset);
                    return ip;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("Service {ns}/{cluster} got no ClusterIP in 120 s");
        })
    }

    /// The world, a CA, SharedCluster `main` (with TLS when `shared_tls`) and instance `orders`
    /// on the shared tier whose dedicated cluster has TLS, all running `image`; returns once the
    /// instance is Ready.
    async fn world_with_tls(label: &str, shared_tls: bool, image: &str) -> (World, TestCa) {
        let mut world = World::start(label).await.unwrap();
        let ca = TestCa::new("tiermq e2e CA").unwrap();
        namespace(&world, SYSTEM).await;
        namespace(&world, NS).await;
        if shared_tls {
            // A shared cluster serves many instance Services: a wildcard per tenant namespace.
            tls_secret(
                &world,
                &ca,
                SYSTEM,
                "main-tls",
                "main",
                &format!("*.{NS}.svc"),
            )
            .await;
        }
        let instance_host = format!("{NAME}.{NS}.svc");
        let dedicated = format!("{NAME}-dedicated");
        tls_secret(&world, &ca, NS, "orders-tls", &dedicated, &instance_host).await;
        world.start_operator(&[]).unwrap();
        let mut shared = shared_cluster_yaml_with("main", image, 10);
        if shared_tls {
            shared.push_str("  tls:\n    secretName: main-tls\n");
        }
        world.kubectl.apply(&shared).await.unwrap();
        let spec = InstanceSpec {
            namespace: NS,
            name: NAME,
            tier: "Shared",
            drain_strategy: "Consume",
            grace_period_seconds: 3,
            connection_policy: None,
        };
        let instance = spec.yaml_with(image).replace(
            "  dedicated:\n",
            "  dedicated:\n    tls:\n      secretName: orders-tls\n",
        );
        world.kubectl.apply(&instance).await.unwrap();
        world
            .wait_ready(NS, NAME, Duration::from_secs(180))
            .await
            .unwrap();
        (world, ca)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_plain_shared_instance_moves_to_a_tls_dedicated_cluster_under_load_and_loses_nothing()
    {
        let started = Instant::now();
        let label = "tls-plain-to-tls";
        let (mut world, ca) = world_with_tls(label, false, IMAGE_3_10).await;
        println!(
            "{label}: instance ready on a plain shared cluster after {:.1}s",
            started.elapsed().as_secs_f64()
        );
        convert_under_load(&mut world, &ca, label, Tier::Dedicated).await;
        serves_tls(&world, &ca, NS, &format!("{NAME}-dedicated")).await;
        instance_serves_amqps(&world, &ca).await;
        println!(
            "{label}: done after {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_instance_round_trips_between_tls_clusters_under_load_and_loses_nothing() {
        let started = Instant::now();
        let label = "tls-round-trip";
        let (mut world, ca) = world_with_tls(label, true, IMAGE_4_0).await;
        serves_tls(&world, &ca, SYSTEM, "main").await;
        instance_serves_amqps(&world, &ca).await;
        let version = https(&world, ca.ca_pem(), SYSTEM, "main")
            .await
            .overview()
            .await
            .unwrap()
            .rabbitmq_version;
        assert!(version.starts_with("4.0"), "{version}");
        println!(
            "{label}: instance ready on a TLS shared cluster after {:.1}s",
            started.elapsed().as_secs_f64()
        );
        // From here on every plain management connection through a Service is reset: the
        // operator manages TLS clusters over HTTPS only, so the conversions must not notice.
        let faults = world
            .cluster
            .proxy_faults()
            .expect("kubesim runs its controllers");
        faults.set(15672, kubesim::sim::kubeproxy::ProxyFaultMode::Reset);
        // Both clusters have one CA, so the drain shovels cross over AMQPS: each direction
        // drains a parked backlog with the Shovel strategy while the destination's plain AMQP
        // port resets every connection through its Service.
        tiermq_tests::harness::patch_instance(
            &world.kubectl,
            NS,
            NAME,
            r#"{"spec":{"migration":{"drainStrategy":"Shovel"}}}"#,
        )
        .await
        .unwrap();
        let dedicated = format!("{NAME}-dedicated");
        park_messages(&world).await;
        let fault = reset_plain_amqp_of(&world, NS, dedicated.clone());
        convert_under_load(&mut world, &ca, label, Tier::Dedicated).await;
        faults.clear_at(fault.await.unwrap(), 5672);
        parked_arrived(&world, &ca, NS, &dedicated, PARKED_COUNT).await;
        serves_tls(&world, &ca, NS, &dedicated).await;
        instance_serves_amqps(&world, &ca).await;
        park_messages(&world).await;
        let fault = reset_plain_amqp_of(&world, SYSTEM, "main".into());
        convert_under_load(&mut world, &ca, label, Tier::Shared).await;
        faults.clear_at(fault.await.unwrap(), 5672);
        // The second backlog joined the first (nothing consumes either).
        parked_arrived(&world, &ca, SYSTEM, "main", 2 * PARKED_COUNT).await;
        instance_serves_amqps(&world, &ca).await;
        faults.clear(15672);
        assert_eq!(
            faults.hits(),
            0,
            "nothing used a TLS cluster's plain management port, nor the destination's plain \
             AMQP port"
        );
        println!(
            "{label}: done after {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_missing_or_incomplete_tls_secret_is_reported_and_the_instance_starts_once_it_is_there()
     {
        let started = Instant::now();
        let label = "tls-missing-secret";
        let mut world = World::start(label).await.unwrap();
        namespace(&world, SYSTEM).await;
        namespace(&world, NS).await;
        world.start_operator(&[]).unwrap();
        world
            .kubectl
            .apply(&shared_cluster_yaml_with("main", IMAGE_3_10, 10))
            .await
            .unwrap();
        let spec = InstanceSpec {
            namespace: NS,
            name: NAME,
            tier: "Dedicated",
            drain_strategy: "Consume",
            grace_period_seconds: 3,
            connection_policy: None,
        };
        let instance = spec.yaml_with(IMAGE_3_10).replace(
            "  dedicated:\n",
            "  dedicated:\n    tls:\n      secretName: orders-tls\n",
        );
        world.kubectl.apply(&instance).await.unwrap();
        let degraded = |needle: &'static str| {
            move |s: &tiermq_crd::RabbitMQInstanceStatus| {
                s.conditions.iter().any(|c| {
                    c.type_ == tiermq_crd::conditions::DEGRADED
                        && c.status == "True"
                        && c.reason == "SecretProblem"
                        && c.message.contains("orders-tls")
                        && c.message.contains(needle)
                })
            }
        };
        let s = world
            .wait_status(
                NS,
                NAME,
                "Degraded SecretProblem naming the missing TLS Secret",
                Duration::from_secs(60),
                degraded("does not exist"),
            )
            .await
            .unwrap();
        println!(
            "{label}: reported after {:.1}s: {:?}",
            started.elapsed().as_secs_f64(),
            s.conditions
                .iter()
                .find(|c| c.type_ == tiermq_crd::conditions::DEGRADED)
                .map(|c| &c.message)
        );
        // No broker pod is made for a cluster whose TLS Secret is missing.
        assert!(
            !world
                .statefulset_exists(NS, &format!("{NAME}-dedicated"))
                .await
                .unwrap()
        );
        // A Secret without the CA is refused by name of the missing key; nothing is logged of
        // its contents.
        let ca = TestCa::new("tiermq e2e CA").unwrap();
        let cert = ca
            .issue(&[&format!("{NAME}-dedicated.{NS}.svc")], &[])
            .unwrap();
        let secrets = Api::<Secret>::namespaced(world.cluster.client(), NS);
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("orders-tls".into()),
                namespace: Some(NS.into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                (
                    "tls.crt".to_string(),
                    ByteString(cert.cert_pem.clone().into_bytes()),
                ),
                (
                    "tls.key".to_string(),
                    ByteString(cert.key_pem.clone().into_bytes()),
                ),
            ])),
            ..Secret::default()
        };
        let mut secret = secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        world
            .wait_status(
                NS,
                NAME,
                "Degraded SecretProblem naming the missing ca.crt",
                Duration::from_secs(60),
                degraded("ca.crt"),
            )
            .await
            .unwrap();
        let log = world.operator_log_tail(2000);
        assert!(
            !log.contains("PRIVATE KEY") && !log.contains("BEGIN CERTIFICATE"),
            "the operator logged PEM contents"
        );
        // Complete, the instance comes up and serves TLS.
        secret
            .data
            .as_mut()
            .unwrap()
            .insert("ca.crt".into(), ByteString(ca.ca_pem().as_bytes().to_vec()));
        secrets
            .replace("orders-tls", &PostParams::default(), &secret)
            .await
            .unwrap();
        world
            .wait_ready(NS, NAME, Duration::from_secs(120))
            .await
            .unwrap();
        serves_tls(&world, &ca, NS, &format!("{NAME}-dedicated")).await;
        println!(
            "{label}: done after {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
}
