//! `kubectl tiermq preview NAME --to Dedicated|Shared`: what flipping `spec.tier` would do, before
//! anyone flips it.
//!
//! The verdict is the operator's own: the plugin observes the instance the way the operator does
//! (`tiermq_operator::controller::observe`, the same Kubernetes objects and management-API reads)
//! with `spec.tier` set to the target, and runs the operator's pure planner on it
//! (`plan::plan`, whose first pass either starts the conversion or holds it with the
//! `ConversionBlocked` reason the operator would report), then asks the planner's cutover rule
//! (`plan::cutover_hold`) what would hold the write cutover later. Nothing is written anywhere.
//!
//! The rest is read from the same observation: the destination (which cluster, whether it exists
//! and is ready, the SharedCluster's capacity), the source's queues and backlog, an estimated
//! drain time from the rate the broker measures (and from earlier conversions' history), and what
//! clients will see (which connections are closed, when, with which reason).

use std::fmt::Write;

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use tiermq_crd::{
    ClusterKind, ClusterRef, ConnectionPolicy, DrainStrategy, MigrationPhase, RabbitMQInstance,
    Tier, conditions,
};
use tiermq_operator::controller::plan::{
    self, ClusterObservation, EventType, Observed, TenantState, cutover_hold, describe,
    effective_policy,
};

use crate::status::human_duration;

/// What the preview found out besides the observation: where the operator's settings came from,
/// and how the management APIs were addressed (for the "not reachable from here" note).
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// Lines about the settings used (e.g. which operator Deployment they were read from).
    pub notes: Vec<String>,
    /// How brokers were addressed, in words (`the cluster Services' ClusterIPs`).
    pub addressing: String,
}

/// The other tier.
fn from_tier(i: &RabbitMQInstance) -> Tier {
    i.status
        .as_ref()
        .and_then(|s| s.tier)
        .unwrap_or(i.spec.tier)
}

fn ready_phrase(c: &ClusterObservation) -> String {
    if !c.exists && c.capacity.is_some() {
        return "the SharedCluster exists, its brokers (StatefulSet) do not yet".into();
    }
    if !c.exists {
        return "does not exist".into();
    }
    let api = match (c.ready(), c.reachable()) {
        (true, true) => "management API answers",
        (true, false) => "management API not reachable from here",
        (false, _) => "not ready",
    };
    format!(
        "{}/{} replicas ready, {api}",
        c.ready_replicas, c.desired_replicas
    )
}

/// The whole preview page for flipping `i` to `to`, from `o` (observed with `spec.tier = to`).
pub fn render(
    i: &RabbitMQInstance,
    to: Tier,
    o: &Observed,
    ctx: &Context,
    now: DateTime<Utc>,
) -> String {
    let mut out = String::new();
    let from = from_tier(i);
    let st = &o.status;
    let recorded = st.migration_phase.unwrap_or(MigrationPhase::Stable);
    let direction = match (from, to) {
        (Tier::Shared, Tier::Dedicated) => "upgrade",
        (Tier::Dedicated, Tier::Shared) => "downgrade",
        _ => "no change",
    };
    let _ = writeln!(
        out,
        "Preview: RabbitMQInstance {}/{}, {from} -> {to} ({direction}); nothing is changed",
        i.namespace().unwrap_or_default(),
        i.name_any()
    );
    for n in &ctx.notes {
        let _ = writeln!(out, "  {n}");
    }

    // The operator's verdict: its planner on the observation with the flipped spec.
    let p = plan::plan(o, now);
    let blocked = p
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::CONVERSION_BLOCKED && c.status == "True");
    let _ = writeln!(out, "\nWhat the operator would do");
    let verdict = match (&st.migration, p.phase) {
        (None, MigrationPhase::Stable) if from == to => {
            format!("nothing: the instance is on {to} already")
        }
        (None, MigrationPhase::PreparingDestination) => {
            "start the conversion on its next pass (PreparingDestination)".to_string()
        }
        (_, MigrationPhase::Blocked) => match &p.status.next_maintenance_window {
            Some(t) => {
                let at = plan::from_time(t);
                format!(
                    "wait for the maintenance window (migrationPhase Blocked), then start the \
                     conversion at {} (in {})",
                    at.format("%Y-%m-%dT%H:%M:%SZ"),
                    human_duration((at - now).num_seconds())
                )
            }
            None => "hold the flip (migrationPhase Blocked)".to_string(),
        },
        (Some(m), MigrationPhase::Aborting) => format!(
            "abort the running {} -> {} conversion (it is before the write cutover): the source \
             serves alone again and the destination is removed",
            m.from, m.to
        ),
        (Some(m), _) if m.to == to => format!(
            "nothing new: the {} -> {to} conversion already runs (phase {recorded})",
            m.from
        ),
        (Some(m), _) => format!(
            "finish the running {} -> {} conversion first (it is past the write cutover), then \
             start the conversion back to {to}",
            m.from, m.to
        ),
        (None, phase) => format!("move to phase {phase}"),
    };
    let _ = writeln!(out, "  {verdict}");
    if let Some(c) = blocked {
        let _ = writeln!(out, "  blocker: {} ({}): {}", c.type_, c.reason, c.message);
    }
    // Warning Events of that pass, e.g. what a move onto RabbitMQ 4.x changes.
    for e in p.events.iter().filter(|e| e.type_ == EventType::Warning) {
        let _ = writeln!(out, "  warning ({}): {}", e.reason, e.note);
    }
    if from == to && st.migration.is_none() {
        return out;
    }

    // Source and destination.
    let source_ref = match &st.migration {
        Some(m) => m.source.clone(),
        None => st
            .serving
            .clone()
            .filter(|r| r.kind == from.cluster_kind())
            .unwrap_or_else(|| o.cluster(from.cluster_kind()).cluster.clone()),
    };
    let dest_ref = match &st.migration {
        Some(m) if m.to == to => m.destination.clone(),
        _ => o.cluster(to.cluster_kind()).cluster.clone(),
    };
    let _ = writeln!(out, "\nClusters");
    let source = o.cluster_by_ref(&source_ref);
    let _ = writeln!(
        out,
        "  source:       {} ({})",
        describe(&source_ref),
        source.map_or("not observed".into(), ready_phrase)
    );
    let dest = o.cluster_by_ref(&dest_ref);
    match (to, dest) {
        (Tier::Dedicated, Some(d)) if !d.exists => {
            let spec = &i.spec.dedicated;
            let _ = writeln!(
                out,
                "  destination:  {} (created for the conversion: {} replica(s) of {}, {} each)",
                describe(&dest_ref),
                spec.replicas,
                spec.image,
                spec.storage.size.0
            );
        }
        (Tier::Shared, _) if dest_ref.name.is_empty() => {
            let _ = writeln!(
                out,
                "  destination:  none: the instance names no SharedCluster and the operator has no default"
            );
        }
        (_, Some(d)) => {
            let _ = writeln!(
                out,
                "  destination:  {} ({})",
                describe(&dest_ref),
                ready_phrase(d)
            );
            if let Some(cap) = d.capacity {
                let room = if cap.counts_this_instance {
                    "the instance already counts there".to_string()
                } else if cap.has_room() {
                    format!("room for {} more", cap.max_instances - cap.instance_count)
                } else {
                    "full".to_string()
                };
                let _ = writeln!(
                    out,
                    "  capacity:     {}/{} instances placed ({room})",
                    cap.instance_count, cap.max_instances
                );
            } else if d.cluster.kind == ClusterKind::Shared {
                let _ = writeln!(
                    out,
                    "  capacity:     unknown: the SharedCluster does not exist"
                );
            }
        }
        (_, None) => {
            let _ = writeln!(
                out,
                "  destination:  {} (not observed)",
                describe(&dest_ref)
            );
        }
    }

    // What the operator recorded for the running conversion (whose source is the one shown):
    // the fallback when the source cannot be read from here.
    let recorded = st
        .migration
        .as_ref()
        .filter(|m| m.remaining_messages.is_some());

    // The source's queues, as the operator reads them.
    let _ = writeln!(out, "\nQueues and backlog on the source");
    let tenant = source.map(ClusterObservation::tenant_state);
    let mut backlog_known = None;
    let mut consumers_now = None;
    match tenant {
        Some(TenantState::Present(t)) => {
            let _ = writeln!(
                out,
                "  connections:  {} open ({} subscribing to exclusive or auto-delete queues, {} with consumers); access {:?}",
                t.connections, t.subscribers, t.consumers, t.access
            );
            consumers_now = Some(t.consumers);
            match &t.backlog {
                Some(b) => {
                    let _ = writeln!(
                        out,
                        "  {:<32} {:>8} {:>8} {:>8}  NOTES",
                        "QUEUE", "READY", "UNACKED", "DELAYED"
                    );
                    for q in &b.queues {
                        let mut notes = Vec::new();
                        if q.subscriber {
                            notes.push("subscriber queue".to_string());
                        }
                        if q.stream {
                            notes.push("stream".to_string());
                        }
                        if let Some(ttl) = q.ttl_ms {
                            notes.push(format!(
                                "TTL {ttl} ms{}",
                                if q.dead_letters {
                                    " (dead-lettered)"
                                } else {
                                    ""
                                }
                            ));
                        }
                        if q.drops_oldest {
                            notes.push("length limit drops oldest".to_string());
                        }
                        let row = format!(
                            "  {:<32} {:>8} {:>8} {:>8}  {}",
                            q.queue,
                            q.ready,
                            q.unacked,
                            q.delayed,
                            notes.join(", ")
                        );
                        let _ = writeln!(out, "{}", row.trim_end());
                    }
                    let _ = writeln!(
                        out,
                        "  total:        {} messages in {} queue(s){}",
                        b.total(),
                        b.queues.len(),
                        b.drain_rate
                            .map_or(String::new(), |r| format!(", leaving at {r:.1} msg/s"))
                    );
                    backlog_known = Some((b.total(), b.drain_rate));
                }
                None => {
                    let _ = writeln!(
                        out,
                        "  some queue has no statistics yet: counts unknown (the operator waits for them too)"
                    );
                }
            }
        }
        Some(TenantState::Absent) => {
            let _ = writeln!(out, "  the tenant's vhost does not exist on the source");
        }
        Some(TenantState::Unknown) | None => {
            let _ = writeln!(
                out,
                "  unknown: the management API of {} is not reachable from here (addressed by {}). \
                 The operator reads it from inside the cluster; run the preview where that \
                 address answers, or pass --broker-addressing to pick another address",
                describe(&source_ref),
                if ctx.addressing.is_empty() {
                    "the operator's addressing"
                } else {
                    ctx.addressing.as_str()
                }
            );
            if let Some(m) = recorded {
                let _ = writeln!(
                    out,
                    "  as the operator last recorded it (status.migration): {}",
                    crate::status::backlog_phrase(m)
                );
            }
        }
    }
    if let Some((reason, msg)) = cutover_hold(o, &source_ref) {
        let _ = writeln!(out, "  the write cutover would wait ({reason}): {msg}");
    }

    // Drain time.
    let _ = writeln!(out, "\nEstimated drain time");
    let strategy = i.spec.migration.drain_strategy;
    let timeout = i.spec.migration.drain_timeout_seconds;
    match backlog_known {
        Some((0, _)) => {
            let _ = writeln!(
                out,
                "  the source holds no message now: the drain ends after two fresh statistics samples"
            );
        }
        Some((n, Some(rate))) if rate > 0.0 => {
            let secs = (n as f64 / rate).ceil() as i64;
            let _ = writeln!(
                out,
                "  about {} at the measured {rate:.1} msg/s ({n} messages){}",
                human_duration(secs),
                if secs > timeout {
                    format!(
                        "; longer than drainTimeoutSeconds ({timeout}): DrainTimedOut would be raised (nothing is deleted)"
                    )
                } else {
                    String::new()
                }
            );
        }
        Some((n, _)) => {
            let how = match strategy {
                DrainStrategy::Consume if consumers_now == Some(0) => {
                    "no consumer is on the source, and with drainStrategy Consume the drain waits \
                     for consumers: it would not end by itself (drainStrategy Shovel moves the \
                     backlog)"
                }
                DrainStrategy::Consume => "the drain goes at the pace of the consumers",
                DrainStrategy::Shovel => "shovels move it at the brokers' pace",
            };
            let _ = writeln!(
                out,
                "  {n} messages and no consumption measured right now: {how}"
            );
        }
        None => match recorded.and_then(|m| m.eta_seconds) {
            Some(eta) => {
                let _ = writeln!(
                    out,
                    "  about {} as the operator last estimated it (status.migration.etaSeconds); \
                     the source's queue statistics cannot be read from here",
                    human_duration(eta)
                );
            }
            None => {
                let _ = writeln!(out, "  unknown without the source's queue statistics");
            }
        },
    }
    let drained: Vec<String> = st
        .history
        .iter()
        .filter_map(|r| {
            r.phase_seconds
                .iter()
                .find(|p| p.phase == MigrationPhase::DrainingSource)
                .map(|p| {
                    format!(
                        "{} ({} -> {}, {:?})",
                        human_duration(p.seconds),
                        r.from,
                        r.to,
                        r.outcome
                    )
                })
        })
        .collect();
    if !drained.is_empty() {
        let _ = writeln!(
            out,
            "  earlier conversions of this instance drained in: {}",
            drained.join(", ")
        );
    }

    // Clients.
    let policy = effective_policy(i.spec.migration.connection_policy, to);
    let grace = i.spec.migration.grace_period_seconds;
    let _ = writeln!(out, "\nWhat clients will see");
    let _ = writeln!(
        out,
        "  the endpoint stays the same: {} (host, port, vhost, user and password do not change)",
        st.endpoint.as_ref().map_or_else(
            || format!("the Service {}", i.name_any()),
            |e| format!("{}:{} vhost {}", e.host, e.port, e.vhost)
        )
    );
    let count = |n: Option<u32>| n.map_or(String::new(), |n| format!(" ({n} now)"));
    let src = tenant.and_then(|t| match t {
        TenantState::Present(t) => Some(t),
        _ => None,
    });
    let _ = writeln!(
        out,
        "  until the write cutover: nothing changes; clients stay on the source"
    );
    let _ = writeln!(
        out,
        "  at the write cutover: new connections reach the destination; the source refuses \
         writes; connections still publishing there are closed with \"{}\"",
        plan::CUTOVER_REASON
    );
    let _ = writeln!(
        out,
        "  {} later: subscriber connections (exclusive or auto-delete queues){} are closed with \
         the same reason, then the destination takes writes",
        human_duration(plan::SUBSCRIBER_SETTLE.num_seconds()),
        count(src.map(|t| t.subscribers))
    );
    match policy {
        ConnectionPolicy::Close => {
            let _ = writeln!(
                out,
                "  once the source is drained: every source connection{} is closed (connection \
                 policy Close{}), reason \"tiermq: this instance moved to the {to} tier; \
                 reconnect to the same endpoint\"",
                count(src.map(|t| t.connections)),
                if i.spec.migration.connection_policy.is_none() {
                    ", the default for a downgrade"
                } else {
                    ""
                }
            );
        }
        ConnectionPolicy::Keep => {
            let _ = writeln!(
                out,
                "  once the source is drained: connections with consumers{} are closed so they \
                 reconnect to the destination; idle connections stay (connection policy Keep{})",
                count(src.map(|t| t.consumers)),
                if i.spec.migration.connection_policy.is_none() {
                    ", the default for an upgrade"
                } else {
                    ""
                }
            );
        }
    }
    let _ = writeln!(
        out,
        "  {} later (gracePeriodSeconds, at least twice the measured statistics lag): the \
         source's last connections are closed with \"{}...\" and the source tenant is deleted{}",
        human_duration(grace),
        plan::RETIRE_REASON,
        if source_ref.kind == ClusterKind::Dedicated {
            ", with the dedicated cluster"
        } else {
            ""
        }
    );
    out
}

/// The SharedCluster reference to observe for `i` with the operator's settings; an unnamed one
/// (no clusterRef, no default) is observed as absent, as the operator does.
pub fn shared_ref(i: &RabbitMQInstance, config: &tiermq_operator::config::RunArgs) -> ClusterRef {
    tiermq_operator::controller::observe::shared_ref(i, config).unwrap_or_else(|| ClusterRef {
        kind: ClusterKind::Shared,
        name: String::new(),
        namespace: config.shared_namespace().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeSet;
    use tiermq_operator::controller::plan::{
        Access, BacklogSample, BrokerObservation, QueueMessages, SharedCapacity, ShovelObservation,
        TenantObservation,
    };

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn instance(spec_tier: &str, migration: serde_json::Value) -> RabbitMQInstance {
        serde_json::from_value(json!({
            "apiVersion": "tiermq.io/v1alpha1", "kind": "RabbitMQInstance",
            "metadata": {"name": "orders", "namespace": "team-a", "generation": 1},
            "spec": {"series": "Subscription", "tier": spec_tier,
                     "migration": migration},
            "status": {"tier": "Dedicated", "phase": "Ready", "migrationPhase": "Stable",
                "serving": {"kind": "Dedicated", "name": "orders-dedicated", "namespace": "team-a"},
                "endpoint": {"host": "orders.team-a.svc", "port": 5672, "vhost": "team-a.orders",
                             "secretName": "orders-credentials"},
                "history": [{"from": "Shared", "to": "Dedicated", "outcome": "Completed",
                    "started": "2025-12-31T00:00:00Z", "finished": "2025-12-31T00:05:00Z",
                    "phaseSeconds": [{"phase": "DrainingSource", "seconds": 95}]}]}
        }))
        .unwrap()
    }

    fn queue(name: &str, ready: i64) -> QueueMessages {
        QueueMessages {
            queue: name.into(),
            ready,
            ..QueueMessages::default()
        }
    }

    fn tenant(queues: Vec<QueueMessages>, rate: Option<f64>, consumers: u32) -> TenantObservation {
        TenantObservation {
            access: Access::ReadWrite,
            topology: BTreeSet::from(["queue/orders".to_string()]),
            connections: 4,
            subscribers: 1,
            consumers,
            transfers: 0,
            shovels: ShovelObservation::default(),
            federated: false,
            backlog: Some(BacklogSample {
                stats_at: now(),
                queues,
                drain_rate: rate,
                publish_rate: 0.0,
                live_ready: None,
            }),
            mirroring_policies: Vec::new(),
            policy_keys: Default::default(),
        }
    }

    fn cluster(kind: ClusterKind, name: &str, ns: &str) -> ClusterRef {
        ClusterRef {
            kind,
            name: name.into(),
            namespace: ns.into(),
        }
    }

    /// A dedicated instance in service with `t` as its tenant, and a SharedCluster `ops/main`.
    fn observed(
        i: &RabbitMQInstance,
        to: Tier,
        t: Option<TenantObservation>,
        shared: Option<SharedCapacity>,
    ) -> Observed {
        let mut spec = i.spec.clone();
        spec.tier = to;
        let ded = cluster(ClusterKind::Dedicated, "orders-dedicated", "team-a");
        let sh = cluster(ClusterKind::Shared, "main", "ops");
        let shared_obs = ClusterObservation {
            cluster: sh.clone(),
            exists: shared.is_some(),
            desired_replicas: 3,
            ready_replicas: 3,
            capacity: shared,
            broker: shared.map(|_| BrokerObservation { tenant: None }),
            rabbitmq_major: Some(3),
            refuses_transient_queues: false,
            pod_problems: Vec::new(),
            tenancy: None,
        };
        Observed {
            generation: 2,
            deletion_requested: false,
            spec,
            status: i.status.clone().unwrap(),
            shared: shared_obs,
            dedicated: ClusterObservation {
                cluster: ded.clone(),
                exists: true,
                desired_replicas: 1,
                ready_replicas: 1,
                capacity: None,
                broker: Some(BrokerObservation { tenant: t }),
                rabbitmq_major: Some(3),
                refuses_transient_queues: false,
                pod_problems: Vec::new(),
                tenancy: None,
            },
            service_routes: vec![ded],
            conversions: Default::default(),
        }
    }

    fn ctx() -> Context {
        Context {
            notes: vec!["operator settings: from Deployment tiermq-system/tiermq-operator".into()],
            addressing: "the cluster Services' ClusterIPs".into(),
        }
    }

    #[test]
    fn a_downgrade_with_room_starts_and_says_how_long_the_drain_takes_and_who_is_closed() {
        let i = instance("Dedicated", json!({}));
        let o = observed(
            &i,
            Tier::Shared,
            Some(tenant(
                vec![queue("orders", 1000), queue("audit", 200)],
                Some(40.0),
                2,
            )),
            Some(SharedCapacity {
                instance_count: 3,
                max_instances: 10,
                counts_this_instance: false,
            }),
        );
        let out = render(&i, Tier::Shared, &o, &ctx(), now());
        for want in [
            "Preview: RabbitMQInstance team-a/orders, Dedicated -> Shared (downgrade); nothing is changed",
            "operator settings: from Deployment tiermq-system/tiermq-operator",
            "start the conversion on its next pass (PreparingDestination)",
            "source:       dedicated cluster team-a/orders-dedicated (1/1 replicas ready, management API answers)",
            "destination:  SharedCluster ops/main (3/3 replicas ready, management API answers)",
            "capacity:     3/10 instances placed (room for 7 more)",
            "connections:  4 open (1 subscribing to exclusive or auto-delete queues, 2 with consumers)",
            "total:        1200 messages in 2 queue(s), leaving at 40.0 msg/s",
            "about 30s at the measured 40.0 msg/s (1200 messages)",
            "earlier conversions of this instance drained in: 1m35s (Shared -> Dedicated, Completed)",
            "orders.team-a.svc:5672 vhost team-a.orders",
            "every source connection (4 now) is closed (connection policy Close, the default for a downgrade)",
            "5m00s later",
            ", with the dedicated cluster",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
        assert!(!out.contains("blocker"), "{out}");
    }

    #[test]
    fn a_full_shared_cluster_is_the_blocker_the_operator_would_report() {
        let i = instance("Dedicated", json!({}));
        let o = observed(
            &i,
            Tier::Shared,
            Some(tenant(vec![queue("orders", 0)], None, 0)),
            Some(SharedCapacity {
                instance_count: 2,
                max_instances: 2,
                counts_this_instance: false,
            }),
        );
        let out = render(&i, Tier::Shared, &o, &ctx(), now());
        assert!(
            out.contains("hold the flip (migrationPhase Blocked)"),
            "{out}"
        );
        assert!(
            out.contains("blocker: ConversionBlocked (SharedClusterFull): conversion to Shared held: SharedCluster ops/main is full (2/2 instances)"),
            "{out}"
        );
        assert!(
            out.contains("capacity:     2/2 instances placed (full)"),
            "{out}"
        );
        assert!(out.contains("the source holds no message now"), "{out}");
    }

    #[test]
    fn a_flip_outside_the_maintenance_window_says_when_it_would_start() {
        let i = instance(
            "Dedicated",
            json!({"window": {"days": [], "startTime": "03:00", "endTime": "04:00"}}),
        );
        let o = observed(
            &i,
            Tier::Shared,
            Some(tenant(vec![queue("orders", 0)], None, 0)),
            Some(SharedCapacity {
                instance_count: 0,
                max_instances: 5,
                counts_this_instance: false,
            }),
        );
        let out = render(&i, Tier::Shared, &o, &ctx(), now());
        // now() is 2026-01-01T00:00:00Z.
        assert!(
            out.contains("wait for the maintenance window (migrationPhase Blocked), then start the conversion at 2026-01-01T03:00:00Z (in 3h00m)"),
            "{out}"
        );
        assert!(
            out.contains("blocker: ConversionBlocked (OutsideMaintenanceWindow): conversion to Shared waits for the maintenance window (every day 03:00-04:00 UTC)"),
            "{out}"
        );
    }

    #[test]
    fn a_queue_that_cannot_move_and_a_drain_without_consumers_are_named() {
        let i = instance("Dedicated", json!({"drainTimeoutSeconds": 600}));
        let mut short_ttl = queue("events", 50);
        short_ttl.ttl_ms = Some(10_000);
        let o = observed(
            &i,
            Tier::Shared,
            Some(tenant(vec![short_ttl], None, 0)),
            Some(SharedCapacity {
                instance_count: 0,
                max_instances: 5,
                counts_this_instance: false,
            }),
        );
        let out = render(&i, Tier::Shared, &o, &ctx(), now());
        assert!(
            out.contains("blocker: ConversionBlocked (QueueCannotMove): queue \"events\""),
            "{out}"
        );
        assert!(out.contains("TTL 10000 ms"), "{out}");
        assert!(
            out.contains("the write cutover would wait (QueueCannotMove)"),
            "{out}"
        );
        assert!(
            out.contains("no consumer is on the source, and with drainStrategy Consume the drain waits for consumers"),
            "{out}"
        );
    }

    #[test]
    fn an_unreachable_source_says_so_instead_of_guessing() {
        let i = instance("Dedicated", json!({"connectionPolicy": "Keep"}));
        let mut o = observed(
            &i,
            Tier::Shared,
            None,
            Some(SharedCapacity {
                instance_count: 0,
                max_instances: 5,
                counts_this_instance: false,
            }),
        );
        o.dedicated.broker = None;
        let out = render(&i, Tier::Shared, &o, &ctx(), now());
        assert!(
            out.contains("management API not reachable from here"),
            "{out}"
        );
        assert!(
            out.contains("unknown: the management API of dedicated cluster team-a/orders-dedicated is not reachable from here (addressed by the cluster Services' ClusterIPs)"),
            "{out}"
        );
        assert!(
            out.contains("unknown without the source's queue statistics"),
            "{out}"
        );
        assert!(
            out.contains("connections with consumers are closed so they reconnect to the destination; idle connections stay (connection policy Keep)"),
            "{out}"
        );
    }

    #[test]
    fn an_unreachable_source_of_a_running_conversion_falls_back_to_what_the_operator_recorded() {
        let mut i = instance("Shared", json!({}));
        let st = i.status.as_mut().unwrap();
        st.tier = Some(Tier::Shared);
        st.migration_phase = Some(MigrationPhase::DrainingSource);
        st.migration = Some(
            serde_json::from_value(json!({
                "from": "Dedicated", "to": "Shared",
                "source": {"kind": "Dedicated", "name": "orders-dedicated", "namespace": "team-a"},
                "destination": {"kind": "Shared", "name": "main", "namespace": "ops"},
                "drainStrategy": "Consume", "connectionPolicy": "Close",
                "started": "2025-12-31T23:58:00Z",
                "remainingMessages": 900, "drainRate": 15.0, "etaSeconds": 60
            }))
            .unwrap(),
        );
        let mut o = observed(
            &i,
            Tier::Shared,
            None,
            Some(SharedCapacity {
                instance_count: 1,
                max_instances: 5,
                counts_this_instance: true,
            }),
        );
        o.dedicated.broker = None;
        let out = render(&i, Tier::Shared, &o, &ctx(), now());
        assert!(
            out.contains("nothing new: the Dedicated -> Shared conversion already runs (phase DrainingSource)"),
            "{out}"
        );
        assert!(
            out.contains("as the operator last recorded it (status.migration): 900 messages left on the source, draining 15.0 msg/s, ETA 1m00s"),
            "{out}"
        );
        assert!(
            out.contains(
                "about 1m00s as the operator last estimated it (status.migration.etaSeconds)"
            ),
            "{out}"
        );
    }

    #[test]
    fn a_move_onto_rabbitmq_4_says_what_the_operator_translates() {
        let mut i = instance("Shared", json!({}));
        i.spec.dedicated.image = "rabbitmq:4.0-management".into();
        let st = i.status.as_mut().unwrap();
        st.tier = Some(Tier::Shared);
        st.serving = Some(cluster(ClusterKind::Shared, "main", "ops"));
        let mut o = observed(
            &i,
            Tier::Dedicated,
            None,
            Some(SharedCapacity {
                instance_count: 1,
                max_instances: 5,
                counts_this_instance: true,
            }),
        );
        let mut t = tenant(vec![queue("orders", 3)], Some(1.0), 1);
        t.mirroring_policies = vec!["ha-all (ha-mode, ha-sync-mode)".into()];
        o.shared.broker = Some(BrokerObservation { tenant: Some(t) });
        o.dedicated = ClusterObservation::absent(cluster(
            ClusterKind::Dedicated,
            "orders-dedicated",
            "team-a",
        ));
        let out = render(&i, Tier::Dedicated, &o, &ctx(), now());
        assert!(
            out.contains("start the conversion on its next pass (PreparingDestination)"),
            "{out}"
        );
        assert!(
            out.contains("warning (TranslatedForDestination): dedicated cluster team-a/orders-dedicated runs RabbitMQ 4.x: classic queue mirroring keys are dropped from policies ha-all (ha-mode, ha-sync-mode)"),
            "{out}"
        );
        // Onto 3.x nothing is translated.
        i.spec.dedicated.image = "rabbitmq:3.10-management".into();
        o.spec.dedicated.image = i.spec.dedicated.image.clone();
        let out = render(&i, Tier::Dedicated, &o, &ctx(), now());
        assert!(!out.contains("warning ("), "{out}");
    }

    #[test]
    fn an_upgrade_creates_the_dedicated_cluster_and_already_there_means_nothing_to_do() {
        let mut i = instance("Shared", json!({}));
        let st = i.status.as_mut().unwrap();
        st.tier = Some(Tier::Shared);
        st.serving = Some(cluster(ClusterKind::Shared, "main", "ops"));
        let mut o = observed(
            &i,
            Tier::Dedicated,
            None,
            Some(SharedCapacity {
                instance_count: 1,
                max_instances: 5,
                counts_this_instance: true,
            }),
        );
        o.shared.broker = Some(BrokerObservation {
            tenant: Some(tenant(vec![queue("orders", 3)], Some(1.0), 1)),
        });
        o.dedicated = ClusterObservation::absent(cluster(
            ClusterKind::Dedicated,
            "orders-dedicated",
            "team-a",
        ));
        let out = render(&i, Tier::Dedicated, &o, &ctx(), now());
        assert!(out.contains("Shared -> Dedicated (upgrade)"), "{out}");
        assert!(
            out.contains("destination:  dedicated cluster team-a/orders-dedicated (created for the conversion: 1 replica(s) of rabbitmq:"),
            "{out}"
        );
        assert!(out.contains("the default for an upgrade"), "{out}");
        assert!(!out.contains("with the dedicated cluster"), "{out}");
        let same = render(
            &i,
            Tier::Shared,
            &observed(&i, Tier::Shared, None, None),
            &ctx(),
            now(),
        );
        assert!(
            same.contains("nothing: the instance is on Shared already"),
            "{same}"
        );
    }
}
