//! Bring your own cluster: a SharedCluster whose brokers the operator did not create. Objects
//! shaped as the RabbitMQ cluster operator makes them for a `RabbitmqCluster` `prod` (written by
//! hand; no cluster operator runs) run a real broker on kubesim; SharedCluster `main` points at
//! it with `spec.external.rabbitmqClusterRef`. An instance goes shared → dedicated → shared
//! under load and loses nothing; its tenant lives on the external broker while shared and is
//! retired from it while dedicated; when the external broker pod comes back on a new IP while
//! the instance's reconciles fail, the clients follow it through the instance Service (the
//! router is woken by the pod); the operator builds no broker object for
//! `main`, and deleting `main` leaves the external StatefulSet, its pod and its broker as they
//! were.
//!
//! In the `matrix` module (about 2 minutes): `make test-faults` runs it, or
//! `cargo nextest run -p tiermq-tests --test rabbit_e2e_guards --profile full -E 'test(byo::)'`.
//! Part of the `rabbit_e2e_guards` binary (one link fewer for CI on 2 cores).

mod matrix {
    use std::time::{Duration, Instant};

    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{Pod, Secret, Service};
    use kube::Api;
    use tiermq_crd::{SharedCluster, Tier};
    use tiermq_tests::harness::{
        IMAGE_3_10, InstanceSpec, World, external_shared_cluster_yaml,
        rabbitmq_cluster_objects_yaml,
    };
    use tiermq_tests::load::Load;
    use tiermq_tests::scenario::{self, NAME, NS};

    use crate::common::{
        TENANT, flowing_again, load_config, move_broker_pod, wait_for_flow, wait_until,
    };

    const SYSTEM: &str = "tiermq-system";
    /// The `RabbitmqCluster` the external objects stand for.
    const RMQ: &str = "prod";

    /// A management client for the external cluster as its owner would make one: the
    /// cluster operator's default-user Secret and client Service.
    async fn external_management(world: &World) -> tiermq_broker::ManagementClient {
        let client = world.cluster.client();
        let s = Api::<Secret>::namespaced(client.clone(), SYSTEM)
            .get(&format!("{RMQ}-default-user"))
            .await
            .unwrap();
        let data = s.data.unwrap_or_default();
        let val = |k: &str| String::from_utf8_lossy(&data[k].0).into_owned();
        let ip = Api::<Service>::namespaced(client, SYSTEM)
            .get(RMQ)
            .await
            .unwrap()
            .spec
            .and_then(|s| s.cluster_ip)
            .unwrap();
        tiermq_broker::ManagementClient::new(tiermq_broker::ClusterEndpoint {
            cluster: format!("{SYSTEM}/{RMQ}"),
            url: format!("http://{ip}:15672"),
            username: val("username"),
            password: tiermq_broker::Secret::new(val("password")),
        })
        .unwrap()
    }

    /// Waits until `f` holds, failing the test with `what` after `timeout`.
    async fn eventually<F, Fut>(what: &str, timeout: Duration, f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        assert!(wait_until(timeout, f).await, "{what} within {timeout:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_external_rabbitmq_cluster_carries_a_round_trip_under_load_and_outlives_its_shared_cluster()
     {
        let started = Instant::now();
        let mut world = World::start_configured("byo", |c| c.with_fresh_pod_ips())
            .await
            .unwrap();
        world.start_operator(&[]).unwrap();
        let password = format!("byo-{:016x}", rand::random::<u64>());
        world
            .kubectl
            .apply(&rabbitmq_cluster_objects_yaml(
                RMQ,
                IMAGE_3_10,
                ("byo-admin", &password),
                500,
            ))
            .await
            .unwrap();
        world
            .kubectl
            .apply(&external_shared_cluster_yaml("main", RMQ, 10))
            .await
            .unwrap();
        let shared: Api<SharedCluster> = Api::namespaced(world.cluster.client(), SYSTEM);
        eventually(
            "SharedCluster main Ready",
            Duration::from_secs(120),
            || async {
                shared
                    .get("main")
                    .await
                    .ok()
                    .and_then(|s| s.status)
                    .is_some_and(|s| s.ready)
            },
        )
        .await;
        println!(
            "byo: external SharedCluster ready after {:.1}s",
            started.elapsed().as_secs_f64()
        );
        // The operator built nothing for `main`.
        assert!(!world.statefulset_exists(SYSTEM, "main").await.unwrap());
        let secrets = Api::<Secret>::namespaced(world.cluster.client(), SYSTEM);
        assert!(secrets.get_opt("main-admin").await.unwrap().is_none());
        assert!(
            secrets
                .get_opt("main-erlang-cookie")
                .await
                .unwrap()
                .is_none()
        );

        let spec = InstanceSpec {
            namespace: NS,
            name: NAME,
            tier: "Shared",
            drain_strategy: "Consume",
            grace_period_seconds: 3,
            connection_policy: None,
        };
        world
            .kubectl
            .apply(&spec.yaml_with(IMAGE_3_10))
            .await
            .unwrap();
        world
            .wait_ready(NS, NAME, Duration::from_secs(120))
            .await
            .unwrap();
        let external = external_management(&world).await;
        assert!(
            external.get_vhost(TENANT).await.unwrap().is_some(),
            "the tenant lives on the external broker"
        );
        let pod_uid = |world: &World| {
            let pods = Api::<Pod>::namespaced(world.cluster.client(), SYSTEM);
            async move {
                pods.get(&format!("{RMQ}-server-0"))
                    .await
                    .unwrap()
                    .metadata
                    .uid
                    .unwrap()
            }
        };

        let target = world.instance_target(NS, NAME).await.unwrap();
        let load = Load::start(load_config(target)).await.unwrap();
        wait_for_flow(&load).await;
        let timeout = Duration::from_secs(150);
        let mut print = |l: &str| println!("{l}");
        let up = scenario::convert(
            &mut world,
            NS,
            NAME,
            Tier::Dedicated,
            &load,
            timeout,
            Some(&mut print),
        )
        .await
        .unwrap();
        println!(
            "byo: up {:.1}s: {}",
            up.duration.as_secs_f64(),
            scenario::phase_table(&up)
        );
        assert!(scenario::completed(&up), "{:?}", up.phases);
        eventually(
            "the tenant retired from the external broker",
            Duration::from_secs(30),
            || async { external.get_vhost(TENANT).await.is_ok_and(|v| v.is_none()) },
        )
        .await;
        let down = scenario::convert(
            &mut world,
            NS,
            NAME,
            Tier::Shared,
            &load,
            timeout,
            Some(&mut print),
        )
        .await
        .unwrap();
        println!(
            "byo: down {:.1}s: {}",
            down.duration.as_secs_f64(),
            scenario::phase_table(&down)
        );
        assert!(scenario::completed(&down), "{:?}", down.phases);
        assert!(
            external.get_vhost(TENANT).await.unwrap().is_some(),
            "back on the external broker"
        );
        // The external broker pod comes back on a new IP (as a re-created pod does on a real
        // cluster); its pods carry only the cluster operator's labels, and the clients follow.
        // The instance's credentials Secret is taken away first, so every instance reconcile
        // fails before it plans: only the router, woken by the pod, can move the route.
        let creds = Api::<Secret>::namespaced(world.cluster.client(), NS);
        let creds_name = format!("{NAME}-credentials");
        let mut saved = creds.get(&creds_name).await.unwrap();
        creds
            .delete(&creds_name, &Default::default())
            .await
            .unwrap();
        // Secrets are not watched, so the next pass reports it: brought now.
        world.poke_instance(NS, NAME).await.unwrap();
        eventually(
            "the instance reports the missing Secret",
            Duration::from_secs(60),
            || async {
                world.status(NS, NAME).await.is_ok_and(|s| {
                    s.conditions.iter().any(|c| {
                        c.status == "True"
                            && c.reason == tiermq_crd::conditions::reasons::SECRET_PROBLEM
                    })
                })
            },
        )
        .await;
        let (old, new) = move_broker_pod(&world, SYSTEM, &format!("{RMQ}-server-0")).await;
        let since = load.stats();
        let resumed = flowing_again(&load, since, 50, Duration::from_secs(60)).await;
        println!(
            "byo: {RMQ}-server-0 moved {old} -> {new}; clients flowing again after {resumed:?}"
        );
        assert!(
            resumed.is_some(),
            "clients reach the moved external broker: {:?} {:?}\n{}",
            load.stats(),
            load.interruptions().last(),
            world.operator_log_tail(30)
        );
        // The Secret back as it was (the operator never makes a new one).
        saved.metadata.resource_version = None;
        saved.metadata.uid = None;
        saved.metadata.creation_timestamp = None;
        saved.metadata.managed_fields = None;
        creds.create(&Default::default(), &saved).await.unwrap();
        let broker_pod = pod_uid(&world).await;
        load.stop_publishing();
        let report = load.finish(Duration::from_secs(60)).await;
        println!("byo: load {report}");
        assert_eq!(
            report.lost, 0,
            "confirmed but never consumed: {:?}",
            report.lost_sample
        );
        assert!(
            report.stats.confirmed >= 200,
            "the load ran through both conversions: {report}"
        );

        // Deleting the instance, then the SharedCluster, leaves the external brokers alone.
        world
            .kubectl
            .ok(
                &[
                    "-n",
                    NS,
                    "delete",
                    "rmqi",
                    NAME,
                    "--wait=true",
                    "--timeout=120s",
                ],
                None,
            )
            .await
            .unwrap();
        eventually(
            "the tenant removed from the external broker",
            Duration::from_secs(60),
            || async { external.get_vhost(TENANT).await.is_ok_and(|v| v.is_none()) },
        )
        .await;
        world
            .kubectl
            .ok(
                &[
                    "-n",
                    SYSTEM,
                    "delete",
                    "sharedcluster",
                    "main",
                    "--wait=true",
                    "--timeout=60s",
                ],
                None,
            )
            .await
            .unwrap();
        assert!(shared.get_opt("main").await.unwrap().is_none());
        // Long enough for the garbage collector and the operator to have acted on the deletion.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let sts = Api::<StatefulSet>::namespaced(world.cluster.client(), SYSTEM)
            .get(&format!("{RMQ}-server"))
            .await
            .expect("the external StatefulSet is still there");
        assert!(sts.metadata.deletion_timestamp.is_none());
        assert_eq!(
            sts.status.and_then(|s| s.ready_replicas),
            Some(1),
            "the external broker is still ready"
        );
        assert_eq!(
            pod_uid(&world).await,
            broker_pod,
            "the external pod was never replaced"
        );
        for name in [
            format!("{RMQ}-default-user"),
            format!("{RMQ}-erlang-cookie"),
        ] {
            assert!(
                secrets.get_opt(&name).await.unwrap().is_some(),
                "Secret {name} kept"
            );
        }
        external
            .overview()
            .await
            .expect("the external broker still answers with its own admin");
        println!("byo: done in {:.1}s", started.elapsed().as_secs_f64());
    }
}
