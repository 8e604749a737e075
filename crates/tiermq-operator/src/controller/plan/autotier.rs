//! R-auto (`spec.autoTiering`, opt-in): while an instance is `Stable` and in service, its
//! tenant's load on the serving cluster is compared with the thresholds towards the other tier.
//! Once they are crossed on every sample for `forSeconds`, and the cooldown since the last
//! conversion (or automatic change) is over, the plan sets `spec.tier` itself (`Step::SetTier`)
//! with a Normal Event naming the measured load; the conversion then starts like any flip.
//!
//! - Upgrade (Shared → Dedicated): *any* upgrade threshold met or exceeded.
//! - Downgrade (Dedicated → Shared): only with `downgrade` set, and *every* threshold set there
//!   undercut.
//! - A sample the broker could not give (unreachable, statistics incomplete) neither starts nor
//!   ends a crossing: the recorded state stays as it is.
//! - The status changes only when a crossing starts, its description changes or it ends, and on
//!   a change — never per sample, so an idle instance causes no writes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tiermq_crd::{AutoTieringStatus, Tier, TierThresholds};

use super::observed::Observed;
use super::roles::serving_ref;
use super::time::{from_time, to_time};

/// What auto-tiering decided in one pass.
#[derive(Debug, Default, PartialEq)]
pub(super) struct AutoOutcome {
    /// The status to record (`None`: auto-tiering is off, remove it).
    pub status: Option<AutoTieringStatus>,
    /// Set `spec.tier` to this tier; the note explains why (for the Event).
    pub change: Option<(Tier, String)>,
    /// Look again no later than this (the sampling interval, or when the crossing is due).
    pub look_again: Option<Duration>,
}

/// The load auto-tiering compares, from one statistics sample.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Load {
    publish_rate: f64,
    connections: u32,
    backlog: u64,
}

/// Auto-tiering for an instance served (stably) by the cluster of `tier`.
pub(super) fn evaluate(o: &Observed, tier: Tier, now: DateTime<Utc>) -> AutoOutcome {
    let Some(spec) = &o.spec.auto_tiering else {
        return AutoOutcome::default();
    };
    let prev = o.status.auto_tiering.clone().unwrap_or_default();
    let (to, th, any) = match tier {
        Tier::Shared => (Tier::Dedicated, &spec.upgrade, true),
        Tier::Dedicated => match &spec.downgrade {
            Some(th) => (Tier::Shared, th, false),
            None => {
                // Nothing to watch on this tier: forget a crossing from before.
                let status = AutoTieringStatus {
                    crossed_since: None,
                    crossed: None,
                    ..prev
                };
                return AutoOutcome {
                    status: Some(status),
                    ..AutoOutcome::default()
                };
            }
        },
    };
    let interval = sampling_interval(th);
    let unchanged = AutoOutcome {
        status: Some(prev.clone()),
        change: None,
        look_again: Some(interval),
    };
    let Some(load) = load(o, tier) else {
        return unchanged;
    };
    let Some(crossed) = crossed(th, load, any) else {
        return AutoOutcome {
            status: Some(AutoTieringStatus {
                crossed_since: None,
                crossed: None,
                ..prev
            }),
            ..unchanged
        };
    };
    // A crossing recorded before the last conversion ended was about the other tier.
    let last_tier_change = last_tier_change(o, &prev);
    let since = prev
        .crossed_since
        .as_ref()
        .map(from_time)
        .filter(|s| last_tier_change.is_none_or(|c| *s >= c))
        .unwrap_or(now);
    let sustained = now - since;
    let cooldown_left = last_tier_change.map_or(chrono::TimeDelta::zero(), |c| {
        chrono::TimeDelta::seconds(spec.cooldown_seconds) - (now - c)
    });
    let due_in = (chrono::TimeDelta::seconds(th.for_seconds) - sustained).max(cooldown_left);
    if due_in > chrono::TimeDelta::zero() {
        let wait = due_in
            .to_std()
            .unwrap_or(interval)
            .max(Duration::from_secs(1));
        return AutoOutcome {
            status: Some(AutoTieringStatus {
                crossed_since: Some(to_time(since)),
                crossed: Some(crossed),
                ..prev
            }),
            change: None,
            look_again: Some(wait.min(interval)),
        };
    }
    let note = format!(
        "{crossed} for {}s (now: {}): spec.tier set to {to}",
        sustained.num_seconds(),
        describe_load(load)
    );
    AutoOutcome {
        status: Some(AutoTieringStatus {
            crossed_since: None,
            crossed: None,
            last_change: Some(to_time(now)),
            last_change_reason: Some(note.clone()),
        }),
        change: Some((to, note)),
        look_again: Some(interval),
    }
}

/// How often a stable auto-tiered instance is sampled: a fifth of the sustain time, between 5 s
/// and 60 s (the broker's statistics are refreshed every 5 s by default).
fn sampling_interval(th: &TierThresholds) -> Duration {
    Duration::from_secs((th.for_seconds / 5).clamp(5, 60) as u64)
}

/// The later of the last conversion's end and the last automatic change.
fn last_tier_change(o: &Observed, prev: &AutoTieringStatus) -> Option<DateTime<Utc>> {
    let finished = o.status.history.last().map(|r| from_time(&r.finished));
    let auto = prev.last_change.as_ref().map(from_time);
    finished.max(auto)
}

/// The tenant's load on the serving cluster, when the broker gave a complete sample.
fn load(o: &Observed, tier: Tier) -> Option<Load> {
    let t = o.cluster_by_ref(&serving_ref(o, tier))?.tenant()?;
    let b = t.backlog.as_ref()?;
    Some(Load {
        publish_rate: if b.publish_rate.is_finite() {
            b.publish_rate.max(0.0)
        } else {
            0.0
        },
        connections: t.connections,
        backlog: b.queues.iter().map(|q| q.total().max(0) as u64).sum(),
    })
}

/// The crossed thresholds, described without measured values (so the description is stable
/// from sample to sample), or `None` when not crossed. `any`: one met threshold is enough
/// (upgrade); else every threshold set must be undercut (downgrade).
fn crossed(th: &TierThresholds, load: Load, any: bool) -> Option<String> {
    let checks = [
        th.publish_rate.map(|v| {
            let met = load.publish_rate >= f64::from(v);
            (met, format!("publishRate {} {v}/s", op(any)))
        }),
        th.connections.map(|v| {
            let met = load.connections >= v;
            (met, format!("connections {} {v}", op(any)))
        }),
        th.backlog.map(|v| {
            let met = load.backlog >= v;
            (met, format!("backlog {} {v}", op(any)))
        }),
    ];
    let set: Vec<(bool, String)> = checks.into_iter().flatten().collect();
    if set.is_empty() {
        return None;
    }
    if any {
        let met: Vec<String> = set
            .into_iter()
            .filter(|(m, _)| *m)
            .map(|(_, d)| d)
            .collect();
        (!met.is_empty()).then(|| met.join(", "))
    } else {
        // Downgrade: every set threshold must be undercut (`met` means at or above).
        set.iter().all(|(m, _)| !m).then(|| {
            set.into_iter()
                .map(|(_, d)| d)
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

fn op(any: bool) -> &'static str {
    if any { ">=" } else { "<" }
}

fn describe_load(l: Load) -> String {
    format!(
        "{:.1} msg/s published, {} connections, {} messages queued",
        l.publish_rate, l.connections, l.backlog
    )
}
