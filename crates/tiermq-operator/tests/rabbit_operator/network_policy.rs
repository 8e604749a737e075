//! A broker cluster's NetworkPolicy as kubesim takes it (no broker: kubesim runs none here):
//! applied with the cluster's other objects, stored as built (the SharedCluster's
//! `amqpAllowedNamespaces` narrowing the operator's list), and deleted again when the
//! operator runs with `--network-policies false`. kubesim does not enforce NetworkPolicies;
//! what they admit is checked by the builder's unit tests.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::json;
use tiermq_crd::SharedCluster;
use tiermq_operator::build::BrokerCluster;
use tiermq_operator::config::RunArgs;
use tiermq_operator::controller::clusters::ensure_cluster;

const NS: &str = "default";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_policy_is_applied_with_the_cluster_and_removed_when_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = kubesim::cluster::ClusterConfig::new(dir.path());
    cfg.max_brokers = 0;
    let cluster = kubesim::cluster::start(cfg).await.unwrap();
    let client = cluster.client();
    let result = async {
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for (_, yaml) in tiermq_crd::crd_files() {
            let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).unwrap();
            crds.create(&PostParams::default(), &crd).await.unwrap();
        }
        let sc: SharedCluster = serde_json::from_value(json!({
            "apiVersion": "tiermq.io/v1alpha1", "kind": "SharedCluster",
            "metadata": {"name": "main", "namespace": NS},
            "spec": {"replicas": 1, "image": "rabbitmq:3.10-management",
                     "capacity": {"maxInstances": 5},
                     "amqpAllowedNamespaces": ["team-a", "team-b"]}
        }))
        .unwrap();
        let sc = Api::<SharedCluster>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &sc)
            .await
            .unwrap();
        let mut args = RunArgs::local("tiermq-system");
        args.amqp_allowed_namespaces = vec!["team-a".into()];
        let mut c = BrokerCluster::for_shared_cluster(&sc).unwrap();
        c.network = args.network_access();
        ensure_cluster(&client, &args, &c).await.unwrap();

        let nps: Api<NetworkPolicy> = Api::namespaced(client.clone(), NS);
        let live = nps.get("main").await.expect("the policy was applied");
        let built = tiermq_operator::build::network_policy::build(&c).unwrap();
        assert_eq!(live.spec, built.spec, "stored as built");
        // The SharedCluster's list narrows the operator's: team-a only.
        let amqp = &live.spec.as_ref().unwrap().ingress.as_ref().unwrap()[2];
        let ns = amqp.from.as_ref().unwrap()[0]
            .namespace_selector
            .as_ref()
            .unwrap();
        assert_eq!(
            ns.match_expressions.as_ref().unwrap()[0].values,
            Some(vec!["team-a".to_string()])
        );
        assert_eq!(
            live.metadata.owner_references.as_ref().unwrap()[0].uid,
            sc.metadata.uid.clone().unwrap()
        );

        // Turned off: the next pass deletes the policy it made.
        args.network_policies = false;
        c.network = args.network_access();
        ensure_cluster(&client, &args, &c).await.unwrap();
        assert!(nps.get_opt("main").await.unwrap().is_none(), "deleted");
        // And stays without one.
        ensure_cluster(&client, &args, &c).await.unwrap();
    };
    let r = tokio::time::timeout(std::time::Duration::from_secs(60), result).await;
    cluster.shutdown().await;
    r.expect("test took too long");
}
