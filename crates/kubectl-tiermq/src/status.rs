//! `kubectl tiermq status NAME`: the instance's tiers, the running conversion as a phase timeline
//! with durations, its backlog, drain rate and ETA, the finished conversions, and every condition
//! with its reason and message. Rendering is a pure function of the instance and the clock.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use tiermq_crd::{MigrationStatus, RabbitMQInstance, RabbitMQInstanceStatus};
use tiermq_operator::controller::plan::{describe, describe_window};

/// `1h02m`, `3m40s`, `12s` (negative spans count as 0).
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn at(t: &Time) -> DateTime<Utc> {
    tiermq_operator::controller::plan::from_time(t)
}

fn stamp(t: &Time) -> String {
    at(t).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Backlog, drain rate and ETA of a conversion in one phrase.
pub fn backlog_phrase(m: &MigrationStatus) -> String {
    let mut out = match m.remaining_messages {
        Some(n) => format!("{n} messages left on the source"),
        None => "backlog not sampled yet".to_string(),
    };
    match m.drain_rate {
        Some(r) => {
            let _ = write!(out, ", draining {r:.1} msg/s");
        }
        None if m.remaining_messages.is_some() => out.push_str(", no drain rate yet"),
        None => {}
    }
    if let Some(eta) = m.eta_seconds {
        let _ = write!(out, ", ETA {}", human_duration(eta));
    }
    out
}

/// The whole `status` page.
pub fn render(i: &RabbitMQInstance, now: DateTime<Utc>) -> String {
    let mut o = String::new();
    let empty = RabbitMQInstanceStatus::default();
    let st = i.status.as_ref().unwrap_or(&empty);
    let show = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let _ = writeln!(
        o,
        "RabbitMQInstance {}/{}",
        i.namespace().unwrap_or_default(),
        i.name_any()
    );
    let _ = writeln!(o, "  spec tier:    {}", i.spec.tier);
    let _ = writeln!(
        o,
        "  tier:         {}   phase: {}   migration: {}",
        show(st.tier.map(|t| t.to_string())),
        show(st.phase.map(|p| format!("{p:?}"))),
        show(st.migration_phase.map(|p| p.to_string())),
    );
    let _ = writeln!(
        o,
        "  serving:      {}",
        show(st.serving.as_ref().map(describe))
    );
    if let Some(ep) = &st.endpoint {
        let _ = writeln!(
            o,
            "  endpoint:     {}:{} vhost {} (Secret {})",
            ep.host, ep.port, ep.vhost, ep.secret_name
        );
    }
    if let Some(w) = &i.spec.migration.window {
        let _ = writeln!(o, "  window:       flips start {}", describe_window(w));
    }
    let generation = i.metadata.generation;
    if st.observed_generation.is_some() && st.observed_generation != generation {
        let _ = writeln!(
            o,
            "  note:         the operator has not seen the latest spec yet (generation {}, observed {})",
            show(generation.map(|g| g.to_string())),
            show(st.observed_generation.map(|g| g.to_string()))
        );
    }
    if tiermq_crd::conditions::paused_by(i.annotations()) {
        let _ = writeln!(
            o,
            "  note:         reconciling is paused by the annotation {}; remove it to resume",
            tiermq_crd::conditions::PAUSED_ANNOTATION
        );
    }

    match &st.migration {
        Some(m) => {
            let _ = writeln!(
                o,
                "\nConversion {} -> {}, started {} ({} ago)",
                m.from,
                m.to,
                stamp(&m.started),
                human_duration((now - at(&m.started)).num_seconds())
            );
            let _ = writeln!(o, "  source:       {}", describe(&m.source));
            let _ = writeln!(o, "  destination:  {}", describe(&m.destination));
            let _ = writeln!(
                o,
                "  drain:        {:?}; source connections: {:?}",
                m.drain_strategy, m.connection_policy
            );
            let _ = writeln!(o, "  backlog:      {}", backlog_phrase(m));
            if m.reverse_requested {
                let _ = writeln!(
                    o,
                    "  flip back:    requested after the write cutover; the conversion back to {} starts when this one completes",
                    m.from
                );
            }
            let _ = writeln!(o, "  {:<22} {:<22} DURATION", "PHASE", "ENTERED");
            for (n, p) in m.phases.iter().enumerate() {
                let (end, running) = match m.phases.get(n + 1) {
                    Some(next) => (at(&next.started), false),
                    None => (now, true),
                };
                let _ = writeln!(
                    o,
                    "  {:<22} {:<22} {}{}",
                    p.phase.to_string(),
                    stamp(&p.started),
                    human_duration((end - at(&p.started)).num_seconds()),
                    if running { " (current)" } else { "" }
                );
            }
        }
        None => {
            let _ = writeln!(o, "\nNo conversion runs.");
            if let Some(t) = &st.next_maintenance_window {
                let _ = writeln!(
                    o,
                    "  waiting:      the conversion to {} starts when the maintenance window opens, {} (in {})",
                    i.spec.tier,
                    stamp(t),
                    human_duration((at(t) - now).num_seconds())
                );
            }
        }
    }

    if !st.history.is_empty() {
        let _ = writeln!(o, "\nFinished conversions (oldest first)");
        for r in &st.history {
            let total = (at(&r.finished) - at(&r.started)).num_seconds();
            let phases: Vec<String> = r
                .phase_seconds
                .iter()
                .map(|p| format!("{} {}", p.phase, human_duration(p.seconds)))
                .collect();
            let _ = writeln!(
                o,
                "  {} -> {}  {:?}  {} .. {}  took {}",
                r.from,
                r.to,
                r.outcome,
                stamp(&r.started),
                stamp(&r.finished),
                human_duration(total)
            );
            if !phases.is_empty() {
                let _ = writeln!(o, "    {}", phases.join(", "));
            }
        }
    }

    let _ = writeln!(o, "\nConditions");
    if st.conditions.is_empty() {
        let _ = writeln!(o, "  none reported yet");
    } else {
        let _ = writeln!(
            o,
            "  {:<18} {:<7} {:<22} {:<8} MESSAGE",
            "TYPE", "STATUS", "REASON", "SINCE"
        );
        for c in &st.conditions {
            let _ = writeln!(
                o,
                "  {:<18} {:<7} {:<22} {:<8} {}",
                c.type_,
                c.status,
                c.reason,
                human_duration((now - at(&c.last_transition_time)).num_seconds()),
                c.message
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_paused_instance_says_so() {
        let mut i: RabbitMQInstance = serde_json::from_value(json!({
            "apiVersion": "tiermq.io/v1alpha1", "kind": "RabbitMQInstance",
            "metadata": {"name": "orders", "namespace": "team-a", "generation": 3,
                         "annotations": {"tiermq.io/paused": "true"}},
            "spec": {"series": "Subscription", "tier": "Shared"},
            "status": {"conditions": [{"type": "Paused", "status": "True",
                "reason": "PausedByAnnotation", "message": "paused",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap();
        let now = "2026-01-01T00:01:00Z".parse().unwrap();
        let page = render(&i, now);
        assert!(
            page.contains("reconciling is paused by the annotation tiermq.io/paused"),
            "{page}"
        );
        assert!(
            page.contains("Paused             True    PausedByAnnotation"),
            "{page}"
        );
        i.metadata.annotations = None;
        assert!(!render(&i, now).contains("is paused"));
    }

    #[test]
    fn a_flip_waiting_for_its_window_says_when_it_starts() {
        let i: RabbitMQInstance = serde_json::from_value(json!({
            "apiVersion": "tiermq.io/v1alpha1", "kind": "RabbitMQInstance",
            "metadata": {"name": "orders", "namespace": "team-a", "generation": 2},
            "spec": {"series": "Subscription", "tier": "Dedicated",
                     "migration": {"window": {"days": ["Sat"], "startTime": "22:00", "endTime": "02:00"}}},
            "status": {"tier": "Shared", "phase": "Blocked", "migrationPhase": "Blocked",
                       "observedGeneration": 2, "nextMaintenanceWindow": "2026-01-03T22:00:00Z"}
        }))
        .unwrap();
        let page = render(&i, t("2026-01-03T20:30:00Z"));
        for want in [
            "window:       flips start Sat 22:00-02:00 UTC",
            "waiting:      the conversion to Dedicated starts when the maintenance window opens, 2026-01-03T22:00:00Z (in 1h30m)",
        ] {
            assert!(page.contains(want), "missing {want:?} in\n{page}");
        }
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human_duration(-5), "0s");
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(220), "3m40s");
        assert_eq!(human_duration(3720), "1h02m");
        assert_eq!(human_duration(90_000), "1d01h");
    }

    #[test]
    fn a_draining_conversion_shows_its_timeline_backlog_and_conditions() {
        let i: RabbitMQInstance = serde_json::from_value(json!({
            "apiVersion": "tiermq.io/v1alpha1", "kind": "RabbitMQInstance",
            "metadata": {"name": "orders", "namespace": "team-a", "generation": 3},
            "spec": {"series": "Subscription", "tier": "Shared"},
            "status": {
                "tier": "Shared", "phase": "Migrating", "migrationPhase": "DrainingSource",
                "observedGeneration": 3,
                "serving": {"kind": "Shared", "name": "main", "namespace": "ops"},
                "migration": {
                    "from": "Dedicated", "to": "Shared",
                    "source": {"kind": "Dedicated", "name": "orders-dedicated", "namespace": "team-a"},
                    "destination": {"kind": "Shared", "name": "main", "namespace": "ops"},
                    "drainStrategy": "Consume", "connectionPolicy": "Close",
                    "started": "2026-01-01T00:00:00Z",
                    "phases": [
                        {"phase": "PreparingDestination", "started": "2026-01-01T00:00:00Z"},
                        {"phase": "DualWriteDualRead", "started": "2026-01-01T00:01:02Z"},
                        {"phase": "SingleWriteDualRead", "started": "2026-01-01T00:01:32Z"},
                        {"phase": "DrainingSource", "started": "2026-01-01T00:01:40Z"}
                    ],
                    "remainingMessages": 1200, "drainRate": 40.0, "etaSeconds": 30
                },
                "history": [{"from": "Shared", "to": "Dedicated", "outcome": "Completed",
                    "started": "2025-12-31T00:00:00Z", "finished": "2025-12-31T00:05:00Z",
                    "phaseSeconds": [{"phase": "PreparingDestination", "seconds": 60},
                                     {"phase": "DrainingSource", "seconds": 240}]}],
                "conditions": [{"type": "DrainTimedOut", "status": "True", "reason": "BacklogRemains",
                    "message": "dedicated cluster team-a/orders-dedicated not drained after 3600s",
                    "lastTransitionTime": "2026-01-01T00:04:00Z", "observedGeneration": 3}]
            }
        }))
        .unwrap();
        let out = render(&i, t("2026-01-01T00:05:20Z"));
        for want in [
            "RabbitMQInstance team-a/orders",
            "tier:         Shared   phase: Migrating   migration: DrainingSource",
            "serving:      SharedCluster ops/main",
            "Conversion Dedicated -> Shared, started 2026-01-01T00:00:00Z (5m20s ago)",
            "source:       dedicated cluster team-a/orders-dedicated",
            "backlog:      1200 messages left on the source, draining 40.0 msg/s, ETA 30s",
            "PreparingDestination   2026-01-01T00:00:00Z   1m02s",
            "DualWriteDualRead      2026-01-01T00:01:02Z   30s",
            "SingleWriteDualRead    2026-01-01T00:01:32Z   8s",
            "DrainingSource         2026-01-01T00:01:40Z   3m40s (current)",
            "Shared -> Dedicated  Completed  2025-12-31T00:00:00Z .. 2025-12-31T00:05:00Z  took 5m00s",
            "PreparingDestination 1m00s, DrainingSource 4m00s",
            "DrainTimedOut      True    BacklogRemains         1m20s    dedicated cluster team-a/orders-dedicated not drained",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
        assert!(!out.contains("has not seen the latest spec"), "{out}");
    }

    #[test]
    fn a_new_instance_says_what_is_not_known_yet() {
        let i: RabbitMQInstance = serde_json::from_value(json!({
            "apiVersion": "tiermq.io/v1alpha1", "kind": "RabbitMQInstance",
            "metadata": {"name": "fresh", "namespace": "team-b", "generation": 2},
            "spec": {"series": "Serverless", "tier": "Dedicated"},
            "status": {"observedGeneration": 1}
        }))
        .unwrap();
        let out = render(&i, t("2026-01-01T00:00:00Z"));
        assert!(
            out.contains("tier:         -   phase: -   migration: -"),
            "{out}"
        );
        assert!(out.contains("No conversion runs."), "{out}");
        assert!(out.contains("none reported yet"), "{out}");
        assert!(
            out.contains("has not seen the latest spec yet (generation 2, observed 1)"),
            "{out}"
        );
    }
}
