//! The cluster's NetworkPolicy: which pods may open which broker port.
//!
//! | port | from |
//! |---|---|
//! | management (15672) | the operator's pods ([`NetworkAccess::operator_namespace`] and [`NetworkAccess::operator_pod_labels`]) |
//! | management HTTPS (15671), on TLS clusters | as management |
//! | epmd (4369), distribution (25672), CLI (35672–35682) | the same cluster's pods |
//! | AMQP (5672), and AMQPS (5671) on TLS clusters | pods of [`NetworkAccess::amqp_namespaces`] (all when empty) narrowed by the cluster's own list ([`BrokerCluster::amqp_namespaces`], see [`amqp_namespaces`]), the operator and every tiermq broker (shovels and federation run between clusters) |
//! | Prometheus (15692) | pods of [`NetworkAccess::prometheus_namespaces`] (all when empty) |
//!
//! The policy only selects the cluster's broker pods and only restricts ingress. It takes effect
//! only where the CNI enforces NetworkPolicy; the operator's `--network-policies false` leaves it
//! out (and deletes one it made before).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    AMQP_PORT, AMQPS_PORT, BrokerCluster, DIST_PORT, EPMD_PORT, LABEL_MANAGED_BY, LABEL_NAME,
    MANAGED_BY, MANAGEMENT_PORT, MANAGEMENT_TLS_PORT, PROMETHEUS_PORT, network_policy_name,
};

/// First and last port of the range `rabbitmqctl` and the other CLI tools use to reach a node
/// (the distribution port + 10000, 11 ports).
pub const CLI_PORTS: (i32, i32) = (35672, 35682);
/// The label every namespace carries with its own name (set by the API server).
const LABEL_NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

/// Who may reach a cluster's brokers (operator-wide settings, see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkAccess {
    /// Whether the cluster gets a NetworkPolicy at all.
    pub enabled: bool,
    /// Namespace the operator's pods run in.
    pub operator_namespace: String,
    /// Labels of the operator's pods.
    pub operator_pod_labels: BTreeMap<String, String>,
    /// Namespaces whose pods may use AMQP; empty: every namespace.
    pub amqp_namespaces: Vec<String>,
    /// Namespaces whose pods may scrape Prometheus metrics; empty: every namespace.
    pub prometheus_namespaces: Vec<String>,
}

impl Default for NetworkAccess {
    /// On, the operator in `tiermq-system` with the chart's labels, AMQP and metrics open.
    fn default() -> Self {
        Self {
            enabled: true,
            operator_namespace: "tiermq-system".into(),
            operator_pod_labels: default_operator_pod_labels(),
            amqp_namespaces: Vec::new(),
            prometheus_namespaces: Vec::new(),
        }
    }
}

/// The labels the chart and `deploy/` give the operator's pods.
pub fn default_operator_pod_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), "tiermq".to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            "operator".to_string(),
        ),
    ])
}

/// Namespaces whose pods may use AMQP: `None` every namespace, else exactly these (maybe none).
/// The operator's list (`operator`, empty: all) narrowed by the cluster's (`cluster`): the
/// namespaces in both.
pub fn amqp_namespaces(operator: &[String], cluster: Option<&[String]>) -> Option<Vec<String>> {
    match cluster {
        None if operator.is_empty() => None,
        None => Some(operator.to_vec()),
        Some(own) => Some(
            own.iter()
                .filter(|n| operator.is_empty() || operator.contains(n))
                .cloned()
                .collect(),
        ),
    }
}

/// The NetworkPolicy `<cluster>` admitting only the traffic of the module docs' table, or
/// `None` when [`NetworkAccess::enabled`] is off.
pub fn build(c: &BrokerCluster) -> Option<NetworkPolicy> {
    let a = &c.network;
    if !a.enabled {
        return None;
    }
    let port = |p: i32| NetworkPolicyPort {
        protocol: Some("TCP".into()),
        port: Some(IntOrString::Int(p)),
        ..NetworkPolicyPort::default()
    };
    let labels = |m: BTreeMap<String, String>| LabelSelector {
        match_labels: Some(m),
        ..LabelSelector::default()
    };
    let in_namespaces = |names: &[String]| LabelSelector {
        match_expressions: Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                key: LABEL_NAMESPACE_NAME.into(),
                operator: "In".into(),
                values: Some(names.to_vec()),
            },
        ]),
        ..LabelSelector::default()
    };
    // Pods of `namespaces` (all when empty).
    let namespaces = |names: &[String]| NetworkPolicyPeer {
        namespace_selector: Some(if names.is_empty() {
            LabelSelector::default()
        } else {
            in_namespaces(names)
        }),
        ..NetworkPolicyPeer::default()
    };
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(in_namespaces(std::slice::from_ref(&a.operator_namespace))),
        pod_selector: Some(labels(a.operator_pod_labels.clone())),
        ..NetworkPolicyPeer::default()
    };
    let any_broker = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        pod_selector: Some(labels(BTreeMap::from([
            (LABEL_NAME.to_string(), "rabbitmq".to_string()),
            (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        ]))),
        ..NetworkPolicyPeer::default()
    };
    let peers = NetworkPolicyPeer {
        pod_selector: Some(labels(c.selector_labels())),
        ..NetworkPolicyPeer::default()
    };
    let rule =
        |from: Vec<NetworkPolicyPeer>, ports: Vec<NetworkPolicyPort>| NetworkPolicyIngressRule {
            from: Some(from),
            ports: Some(ports),
        };
    // A TLS cluster (`spec.tls`) also listens on AMQPS and management HTTPS, for the same
    // sources as their plain ports.
    let tls = c.tls_secret.is_some();
    let with_tls = |plain: i32, secure: i32| {
        let mut ports = vec![port(plain)];
        if tls {
            ports.push(port(secure));
        }
        ports
    };
    Some(NetworkPolicy {
        metadata: c.meta(network_policy_name(&c.name)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(labels(c.selector_labels())),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                rule(
                    vec![operator.clone()],
                    with_tls(MANAGEMENT_PORT, MANAGEMENT_TLS_PORT),
                ),
                rule(
                    vec![peers],
                    vec![
                        port(EPMD_PORT),
                        port(DIST_PORT),
                        NetworkPolicyPort {
                            end_port: Some(CLI_PORTS.1),
                            ..port(CLI_PORTS.0)
                        },
                    ],
                ),
                rule(
                    match amqp_namespaces(&a.amqp_namespaces, c.amqp_namespaces.as_deref()) {
                        None => vec![namespaces(&[]), operator, any_broker],
                        Some(list) if list.is_empty() => vec![operator, any_broker],
                        Some(list) => vec![namespaces(&list), operator, any_broker],
                    },
                    with_tls(AMQP_PORT, AMQPS_PORT),
                ),
                rule(
                    vec![namespaces(&a.prometheus_namespaces)],
                    vec![port(PROMETHEUS_PORT)],
                ),
            ]),
            ..NetworkPolicySpec::default()
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn ports(r: &NetworkPolicyIngressRule) -> Vec<(i32, Option<i32>)> {
        r.ports
            .iter()
            .flatten()
            .map(|p| match &p.port {
                Some(IntOrString::Int(n)) => (*n, p.end_port),
                other => panic!("port {other:?}"),
            })
            .collect()
    }

    #[test]
    fn management_only_from_operator_pods_and_dist_only_from_peers() {
        let mut c = dedicated();
        c.network.operator_namespace = "ops".into();
        let np = build(&c).expect("enabled by default");
        assert_eq!(np.metadata.name.as_deref(), Some("orders-dedicated"));
        assert_owned(&np.metadata, "RabbitMQInstance", "orders");
        let spec = np.spec.unwrap();
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
        assert_eq!(
            spec.pod_selector.unwrap().match_labels,
            Some(c.selector_labels())
        );
        let rules = spec.ingress.unwrap();
        // Every rule names its sources: no rule admits everyone on every port.
        assert!(
            rules
                .iter()
                .all(|r| r.from.as_ref().is_some_and(|f| !f.is_empty()))
        );
        let mgmt = &rules[0];
        assert_eq!(ports(mgmt), [(MANAGEMENT_PORT, None)]);
        let from = &mgmt.from.as_ref().unwrap()[0];
        let ns = from.namespace_selector.as_ref().unwrap();
        let req = &ns.match_expressions.as_ref().unwrap()[0];
        assert_eq!(req.key, LABEL_NAMESPACE_NAME);
        assert_eq!(req.values, Some(vec!["ops".to_string()]));
        assert_eq!(
            from.pod_selector.as_ref().unwrap().match_labels,
            Some(default_operator_pod_labels())
        );
        let inter = &rules[1];
        assert_eq!(
            ports(inter),
            [(EPMD_PORT, None), (DIST_PORT, None), (35672, Some(35682))]
        );
        let peers = &inter.from.as_ref().unwrap()[0];
        // Same namespace only (no namespaceSelector), same cluster's pods only.
        assert_eq!(peers.namespace_selector, None);
        assert_eq!(
            peers.pod_selector.as_ref().unwrap().match_labels,
            Some(c.selector_labels())
        );
        // No other rule opens the management or inter-node ports.
        for r in &rules[2..] {
            for (p, _) in ports(r) {
                assert!(![MANAGEMENT_PORT, EPMD_PORT, DIST_PORT].contains(&p), "{p}");
            }
        }
    }

    #[test]
    fn a_tls_cluster_opens_amqps_and_management_https_to_the_same_sources() {
        let mut c = shared();
        c.tls_secret = Some("main-tls".into());
        let rules = build(&c).unwrap().spec.unwrap().ingress.unwrap();
        assert_eq!(
            ports(&rules[0]),
            [(MANAGEMENT_PORT, None), (MANAGEMENT_TLS_PORT, None)]
        );
        assert_eq!(ports(&rules[2]), [(AMQP_PORT, None), (AMQPS_PORT, None)]);
        c.tls_secret = None;
        let rules = build(&c).unwrap().spec.unwrap().ingress.unwrap();
        assert_eq!(ports(&rules[0]), [(MANAGEMENT_PORT, None)]);
    }

    #[test]
    fn amqp_and_metrics_open_to_all_namespaces_unless_narrowed() {
        let mut c = shared();
        let rules = build(&c).unwrap().spec.unwrap().ingress.unwrap();
        assert_eq!(ports(&rules[2]), [(AMQP_PORT, None)]);
        assert_eq!(ports(&rules[3]), [(PROMETHEUS_PORT, None)]);
        for r in &rules[2..] {
            let all = &r.from.as_ref().unwrap()[0];
            assert_eq!(all.namespace_selector, Some(LabelSelector::default()));
            assert_eq!(all.pod_selector, None);
        }

        c.network.amqp_namespaces = vec!["team-a".into(), "team-b".into()];
        c.network.prometheus_namespaces = vec!["monitoring".into()];
        let rules = build(&c).unwrap().spec.unwrap().ingress.unwrap();
        let values = |r: &NetworkPolicyIngressRule| {
            r.from.as_ref().unwrap()[0]
                .namespace_selector
                .as_ref()
                .unwrap()
                .match_expressions
                .as_ref()
                .unwrap()[0]
                .values
                .clone()
                .unwrap()
        };
        assert_eq!(values(&rules[2]), ["team-a", "team-b"]);
        assert_eq!(values(&rules[3]), ["monitoring"]);
        // Shovels and the operator keep AMQP whatever the namespaces.
        let amqp_from = rules[2].from.as_ref().unwrap();
        assert_eq!(amqp_from.len(), 3);
        assert_eq!(
            amqp_from[2]
                .pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()[LABEL_MANAGED_BY],
            MANAGED_BY
        );
    }

    #[test]
    fn a_shared_cluster_narrows_the_amqp_namespaces() {
        let s = |v: &[&str]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(amqp_namespaces(&[], None), None);
        assert_eq!(amqp_namespaces(&s(&["a"]), None), Some(s(&["a"])));
        assert_eq!(amqp_namespaces(&[], Some(&s(&["b"]))), Some(s(&["b"])));
        assert_eq!(
            amqp_namespaces(&s(&["a", "b"]), Some(&s(&["b", "c"]))),
            Some(s(&["b"]))
        );
        assert_eq!(amqp_namespaces(&s(&["a"]), Some(&s(&["c"]))), Some(s(&[])));

        let mut c = shared();
        c.amqp_namespaces = Some(s(&["team-a"]));
        let rules = build(&c).unwrap().spec.unwrap().ingress.unwrap();
        let from = rules[2].from.as_ref().unwrap();
        let req = &from[0]
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap()[0];
        assert_eq!(req.values, Some(s(&["team-a"])));
        // Nothing in common: no namespace, only the operator and the brokers.
        c.network.amqp_namespaces = s(&["team-b"]);
        let rules = build(&c).unwrap().spec.unwrap().ingress.unwrap();
        let from = rules[2].from.as_ref().unwrap();
        assert_eq!(from.len(), 2);
        assert!(from.iter().all(|p| p.pod_selector.is_some()));
    }

    #[test]
    fn turned_off_builds_none() {
        let mut c = shared();
        c.network.enabled = false;
        assert_eq!(build(&c), None);
    }
}
