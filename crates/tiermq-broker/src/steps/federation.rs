//! Optional queue federation during the dual phases: the downstream cluster's queues fetch
//! messages from the same-named queues on the upstream cluster whenever their own consumers have
//! spare capacity, so a consumer on either cluster sees every message. Set it up on both clusters
//! (each the other's upstream) for symmetric reads.
//!
//! RabbitMQ applies one policy per queue, the highest priority one, and picks arbitrarily between
//! equal priorities. So that turning federation on does not switch off a tenant's own policy (a
//! TTL, a length limit), each tenant policy that applies to queues gets a federated twin with the
//! same pattern and definition plus `federation-upstream`. Every twin ranks above every tenant
//! policy (no tie with any of them), and twins keep the tenant policies' order among themselves;
//! a catch-all below every tenant policy covers the remaining queues.

use std::collections::BTreeMap;

use serde_json::Value;

use super::MANAGED_PREFIX;
use crate::client::ManagementClient;
use crate::error::BrokerError;
use crate::model::{FederationUpstream, Policy};
use crate::secret::Secret;

/// The upstream every federation policy points at.
pub const FEDERATION_UPSTREAM: &str = "tiermq-peer";
/// Prefix of the federation policies (the catch-all has exactly this name).
pub const FEDERATION_POLICY_PREFIX: &str = "tiermq-federation";

/// What [`ensure_queue_federation`] put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationSetup {
    /// The name of the upstream the policies point at.
    pub upstream: String,
    /// Names of the federation policies now present.
    pub policies: Vec<String>,
    /// Stale federation policies deleted in this pass.
    pub removed: Vec<String>,
}

/// The federation policies for a vhost with these tenant policies (pure).
pub fn federation_policies(vhost: &str, tenant_policies: &[Policy]) -> Vec<Policy> {
    let own: Vec<&Policy> = tenant_policies
        .iter()
        .filter(|p| {
            !p.name.starts_with(MANAGED_PREFIX) && (p.apply_to == "queues" || p.apply_to == "all")
        })
        .collect();
    let lowest = own.iter().map(|p| p.priority).min().unwrap_or(0);
    let highest = own.iter().map(|p| p.priority).max().unwrap_or(0);
    // Added to a tenant priority, this lands above the highest one and keeps the order.
    let lift = highest.saturating_sub(lowest).saturating_add(1);
    let mut out = vec![Policy {
        name: FEDERATION_POLICY_PREFIX.to_string(),
        vhost: vhost.to_string(),
        // Server-named queues (amq.gen-*) belong to one connection: nothing to federate.
        pattern: "^(?!amq\\.).*".to_string(),
        apply_to: "queues".to_string(),
        definition: [(
            "federation-upstream".to_string(),
            Value::from(FEDERATION_UPSTREAM),
        )]
        .into_iter()
        .collect(),
        priority: lowest.saturating_sub(1).min(0),
    }];
    for p in own {
        let mut definition = p.definition.clone();
        definition.insert(
            "federation-upstream".into(),
            Value::from(FEDERATION_UPSTREAM),
        );
        out.push(Policy {
            name: format!("{FEDERATION_POLICY_PREFIX}-{}", p.name),
            vhost: vhost.to_string(),
            pattern: p.pattern.clone(),
            apply_to: "queues".to_string(),
            definition,
            priority: p.priority.saturating_add(lift),
        });
    }
    out
}

/// Makes `downstream`'s queues in `vhost` federated from the queues of the cluster that
/// `upstream_uri` (an AMQP URI with credentials, vhost included) points at. Idempotent; also
/// follows changes of the tenant's own policies when called again.
pub async fn ensure_queue_federation(
    downstream: &ManagementClient,
    vhost: &str,
    upstream_uri: &Secret,
) -> Result<FederationSetup, BrokerError> {
    let upstream = FederationUpstream {
        uri: upstream_uri.clone(),
        prefetch_count: 100,
        ack_mode: "on-confirm".into(),
        reconnect_delay_secs: 1,
    };
    downstream
        .put_federation_upstream(vhost, FEDERATION_UPSTREAM, &upstream)
        .await?;
    let current = downstream.list_policies(vhost).await?;
    let desired = federation_policies(vhost, &current);
    let existing: BTreeMap<&str, &Policy> = current.iter().map(|p| (p.name.as_str(), p)).collect();
    for p in &desired {
        let same = existing.get(p.name.as_str()).is_some_and(|e| {
            e.pattern == p.pattern
                && e.apply_to == p.apply_to
                && e.definition == p.definition
                && e.priority == p.priority
        });
        if !same {
            downstream.put_policy(vhost, p).await?;
        }
    }
    let mut removed = Vec::new();
    for p in &current {
        if p.name.starts_with(FEDERATION_POLICY_PREFIX) && !desired.iter().any(|d| d.name == p.name)
        {
            downstream.delete_policy(vhost, &p.name).await?;
            removed.push(p.name.clone());
        }
    }
    Ok(FederationSetup {
        upstream: FEDERATION_UPSTREAM.to_string(),
        policies: desired.into_iter().map(|p| p.name).collect(),
        removed,
    })
}

/// Removes the federation policies and the upstream; the tenant's own policies apply again.
pub async fn remove_queue_federation(
    downstream: &ManagementClient,
    vhost: &str,
) -> Result<(), BrokerError> {
    for p in downstream.list_policies(vhost).await? {
        if p.name.starts_with(FEDERATION_POLICY_PREFIX) {
            downstream.delete_policy(vhost, &p.name).await?;
        }
    }
    downstream
        .delete_federation_upstream(vhost, FEDERATION_UPSTREAM)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(name: &str, apply_to: &str, priority: i64, def: Value) -> Policy {
        Policy {
            name: name.into(),
            vhost: "v".into(),
            pattern: format!("^{name}"),
            apply_to: apply_to.into(),
            definition: def.as_object().unwrap().clone(),
            priority,
        }
    }

    #[test]
    fn tenant_policies_keep_their_effect_under_federation() {
        let tenant = vec![
            policy("ttl", "queues", 5, json!({"message-ttl": 1000})),
            policy("lim", "all", -3, json!({"max-length": 10})),
            policy("xonly", "exchanges", 9, json!({"alternate-exchange": "ae"})),
            policy("tiermq-federation-old", "queues", 0, json!({})),
        ];
        let fed = federation_policies("v", &tenant);
        let names: Vec<&str> = fed.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "tiermq-federation",
                "tiermq-federation-ttl",
                "tiermq-federation-lim"
            ]
        );
        let ttl = &fed[1];
        // Twins rank above every tenant policy (no tie: RabbitMQ would pick either) and keep
        // the tenant policies' order.
        let tenant_max = tenant
            .iter()
            .filter(|p| p.apply_to != "exchanges" && !p.name.starts_with(MANAGED_PREFIX))
            .map(|p| p.priority)
            .max()
            .unwrap();
        assert!(fed[1..].iter().all(|t| t.priority > tenant_max), "{fed:?}");
        assert!(ttl.priority > fed[2].priority);
        assert_eq!(ttl.definition["message-ttl"], 1000);
        assert_eq!(ttl.definition["federation-upstream"], FEDERATION_UPSTREAM);
        assert_eq!(ttl.pattern, "^ttl");
        // The catch-all sits below every tenant policy.
        assert!(fed[0].priority < -3);
        assert!(fed.iter().all(|p| p.apply_to == "queues"));
    }

    #[test]
    fn a_twin_never_ties_with_the_tenant_policy_one_above_its_original() {
        // Before: the twin of `a` (priority 1) got 2, the priority of the tenant's `b`, and
        // RabbitMQ chose between them arbitrarily, switching `b` off for queues both match.
        let tenant = vec![
            policy("a", "queues", 1, json!({"message-ttl": 1})),
            policy("b", "queues", 2, json!({"max-length": 2})),
        ];
        let fed = federation_policies("v", &tenant);
        for twin in &fed[1..] {
            assert!(
                tenant.iter().all(|t| t.priority != twin.priority),
                "{} ties with a tenant policy",
                twin.name
            );
        }
    }
}
