//! `kubectl tiermq watch NAME`: follows the instance and prints one line whenever something a
//! person follows changes: tier, phase, migration phase, backlog, drain rate, ETA, or a
//! condition's status or reason (messages are left out: progress text changes on every pass).

use std::io::Write;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use tiermq_crd::{RabbitMQInstance, RabbitMQInstanceStatus};

/// What a `watch` line says about an instance's status.
pub fn summary(st: Option<&RabbitMQInstanceStatus>) -> String {
    let Some(st) = st else {
        return "no status yet".into();
    };
    let mut parts = vec![
        format!("tier={}", st.tier.map_or("-".into(), |t| t.to_string())),
        format!(
            "phase={}",
            st.phase.map_or("-".into(), |p| format!("{p:?}"))
        ),
        format!(
            "migration={}",
            st.migration_phase.map_or("-".into(), |p| p.to_string())
        ),
    ];
    if let Some(m) = &st.migration {
        if let Some(n) = m.remaining_messages {
            parts.push(format!("backlog={n}"));
        }
        if let Some(r) = m.drain_rate {
            parts.push(format!("rate={r:.1}/s"));
        }
        if let Some(eta) = m.eta_seconds {
            parts.push(format!("eta={}", crate::status::human_duration(eta)));
        }
    }
    let conditions: Vec<String> = st
        .conditions
        .iter()
        .map(|c| format!("{}={}({})", c.type_, c.status, c.reason))
        .collect();
    if !conditions.is_empty() {
        parts.push(conditions.join(" "));
    }
    parts.join(" ")
}

/// Remembers the last line printed and says what to print next, if anything.
#[derive(Default)]
pub struct Changes {
    last: Option<String>,
}

impl Changes {
    /// The line for this state of the instance (`None`: deleted), or `None` when nothing a
    /// person follows changed since the last line.
    pub fn next(
        &mut self,
        name: &str,
        status: Option<Option<&RabbitMQInstanceStatus>>,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let text = match status {
            Some(st) => summary(st),
            None => "deleted".into(),
        };
        if self.last.as_deref() == Some(text.as_str()) {
            return None;
        }
        self.last = Some(text.clone());
        Some(format!(
            "{}  {name}  {text}",
            now.format("%Y-%m-%dT%H:%M:%SZ")
        ))
    }
}

/// Follows `namespace/name` and writes a line per change to `out` until `stop` resolves or the
/// watch fails.
pub async fn follow(
    client: kube::Client,
    namespace: &str,
    name: &str,
    out: &mut (dyn Write + Send),
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let api: Api<RabbitMQInstance> = Api::namespaced(client, namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let label = format!("{namespace}/{name}");
    let mut changes = Changes::default();
    let mut seen = false;
    let events = watcher::watcher(api, cfg).map_err(anyhow::Error::from);
    futures::pin_mut!(events);
    futures::pin_mut!(stop);
    loop {
        let ev = tokio::select! {
            _ = &mut stop => return Ok(()),
            ev = events.next() => ev,
        };
        let Some(ev) = ev else { return Ok(()) };
        let line = match ev? {
            Event::Apply(i) | Event::InitApply(i) if i.name_any() == name => {
                seen = true;
                changes.next(&label, Some(i.status.as_ref()), Utc::now())
            }
            Event::Delete(i) if i.name_any() == name => changes.next(&label, None, Utc::now()),
            Event::InitDone if !seen => changes.next(&label, None, Utc::now()).map(|_| {
                format!(
                    "{}  {label}  not found (yet); waiting for it",
                    Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
                )
            }),
            _ => None,
        };
        if let Some(line) = line {
            writeln!(out, "{line}")?;
            out.flush()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(v: serde_json::Value) -> RabbitMQInstanceStatus {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn one_line_per_change_and_none_for_progress_text() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut c = Changes::default();
        let stable = status(
            json!({"tier": "Shared", "phase": "Ready", "migrationPhase": "Stable",
            "conditions": [{"type": "Ready", "status": "True", "reason": "InService",
                            "message": "served by SharedCluster ops/main",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
        );
        assert_eq!(
            c.next("team-a/orders", Some(Some(&stable)), now).unwrap(),
            "2026-01-01T00:00:00Z  team-a/orders  tier=Shared phase=Ready migration=Stable Ready=True(InService)"
        );
        // Only the message changed: no line.
        let mut reworded = stable.clone();
        reworded.conditions[0].message = "served by SharedCluster ops/main (again)".into();
        assert_eq!(c.next("team-a/orders", Some(Some(&reworded)), now), None);
        let draining = status(json!({"tier": "Dedicated", "phase": "Migrating",
            "migrationPhase": "DrainingSource",
            "migration": {"from": "Shared", "to": "Dedicated",
                "source": {"kind": "Shared", "name": "main", "namespace": "ops"},
                "destination": {"kind": "Dedicated", "name": "orders-dedicated", "namespace": "team-a"},
                "drainStrategy": "Consume", "connectionPolicy": "Keep",
                "started": "2026-01-01T00:00:00Z",
                "remainingMessages": 5, "drainRate": 2.5, "etaSeconds": 2}}));
        assert_eq!(
            c.next("team-a/orders", Some(Some(&draining)), now).unwrap(),
            "2026-01-01T00:00:00Z  team-a/orders  tier=Dedicated phase=Migrating migration=DrainingSource backlog=5 rate=2.5/s eta=2s"
        );
        assert!(
            c.next("team-a/orders", None, now)
                .unwrap()
                .ends_with("deleted")
        );
    }
}
