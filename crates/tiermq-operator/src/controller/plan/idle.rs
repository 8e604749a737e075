//! R-stable, R-blocked, R-window and R-limit: an instance without a running conversion, and the
//! gates a tier flip passes before a conversion starts.

use chrono::{DateTime, Utc};
use tiermq_crd::conditions::{self as types, events, reasons};
use tiermq_crd::{MigrationPhase, Tier};

use super::Decision;
use super::observed::Observed;
use super::output::{EventType, Step};
use super::roles::{describe, new_migration, reachable, refused_policy_keys, serving_ref};
use super::window::{WindowState, describe_window, window_state};
use super::{autotier, placement, queues};

use MigrationPhase::*;

/// R-stable, R-blocked, R-window, R-limit.
pub(super) fn idle(o: &Observed, recorded: MigrationPhase, now: DateTime<Utc>) -> Decision {
    // The reason the flip was held for in the previous pass, if it was.
    let held_for = (recorded == Blocked)
        .then(|| {
            o.status
                .conditions
                .iter()
                .find(|c| c.type_ == types::CONVERSION_BLOCKED && c.status == "True")
                .map(|c| c.reason.as_str())
        })
        .flatten();
    match o.status.tier {
        Some(from) if from != o.spec.tier => {
            let to = o.spec.tier;
            if let Some((reason, msg)) = blocker(o, from, to) {
                let mut d = steady(o, from, Blocked);
                // A Warning when the flip starts being held by a problem (also right after
                // waiting for the window or a conversion slot: those waits were no problem).
                let waited = matches!(
                    held_for,
                    Some(reasons::OUTSIDE_MAINTENANCE_WINDOW | reasons::CONVERSION_LIMIT_REACHED)
                );
                if recorded != Blocked || waited {
                    d = d.event(EventType::Warning, events::CONVERSION_BLOCKED, msg.clone());
                }
                d.blocked = Some((reason, msg));
                return d;
            }
            if let Some(w) = &o.spec.migration.window {
                match window_state(w, now) {
                    Ok(WindowState::Open { .. }) => {}
                    Ok(WindowState::Closed { opens_at }) => {
                        let reason = reasons::OUTSIDE_MAINTENANCE_WINDOW;
                        let msg = format!(
                            "conversion to {to} waits for the maintenance window ({}): it starts at {}",
                            describe_window(w),
                            opens_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        );
                        let mut d = steady(o, from, Blocked);
                        if held_for != Some(reason) {
                            d = d.event(EventType::Normal, events::WAITING_FOR_WINDOW, msg.clone());
                        }
                        d.blocked = Some((reason, msg));
                        d.window_opens = Some(opens_at);
                        return d;
                    }
                    Err(problem) => {
                        let reason = reasons::INVALID_MAINTENANCE_WINDOW;
                        let msg = format!("conversion to {to} held: {problem}");
                        let mut d = steady(o, from, Blocked);
                        if held_for != Some(reason) {
                            d = d.event(
                                EventType::Warning,
                                events::CONVERSION_BLOCKED,
                                msg.clone(),
                            );
                        }
                        d.blocked = Some((reason, msg));
                        return d;
                    }
                }
            }
            if !o.conversions.free() {
                let reason = reasons::CONVERSION_LIMIT_REACHED;
                let c = &o.conversions;
                let ahead = match c.ahead {
                    0 => "it is next".to_string(),
                    1 => "1 held flip starts before it".to_string(),
                    n => format!("{n} held flips start before it"),
                };
                let msg = format!(
                    "conversion to {to} waits for a conversion slot: {} of at most {} run at once \
                     (the operator's --max-concurrent-conversions); {ahead}",
                    c.running,
                    c.limit.unwrap_or_default()
                );
                let mut d = steady(o, from, Blocked);
                if held_for != Some(reason) {
                    d = d.event(
                        EventType::Normal,
                        events::WAITING_FOR_CONVERSION_SLOT,
                        msg.clone(),
                    );
                }
                d.blocked = Some((reason, msg));
                return d;
            }
            let m = new_migration(o, from, to, now);
            let note = format!(
                "converting {from} -> {to}: preparing {}",
                describe(&m.destination)
            );
            // Write-ahead: this pass only records the conversion (the source stays as it is);
            // destination state is created from the next pass on, once the recorded migration
            // owns it, so a crash plus a flip back can never leave an orphaned destination.
            let steps = steady(o, from, Stable).steps;
            let translated = queues::version_notes(o, &m.source);
            let refused = refused_policy_keys(o, &m.source, &m.destination);
            let refused_note = (!refused.is_empty()).then(|| {
                format!(
                    "{} admits only the policy keys in its spec.tenants.policyKeys: the copy \
                     drops {} (a policy left with no key is not copied)",
                    describe(&m.destination),
                    refused.join(", ")
                )
            });
            let mut d = Decision::migrating(PreparingDestination, m, steps)
                .event(EventType::Normal, events::CONVERSION_STARTED, note.clone())
                .progress(note);
            if let Some(t) = translated {
                d = d.event(EventType::Warning, events::TRANSLATED_FOR_DESTINATION, t);
            }
            if let Some(t) = refused_note {
                d = d.event(EventType::Warning, events::TRANSLATED_FOR_DESTINATION, t);
            }
            d
        }
        current => {
            let tier = current.unwrap_or(o.spec.tier);
            let mut d = steady(o, tier, Stable);
            if current.is_some() {
                d = auto_tier(d, o, tier, now);
            }
            if recorded == Blocked {
                d = d.event(
                    EventType::Normal,
                    events::CONVERSION_WITHDRAWN,
                    format!("spec.tier is {tier} again: no conversion"),
                );
            }
            d
        }
    }
}

/// R-auto on a stable instance: record what auto-tiering saw and, when due, flip `spec.tier`.
fn auto_tier(mut d: Decision, o: &Observed, tier: Tier, now: DateTime<Utc>) -> Decision {
    let auto = autotier::evaluate(o, tier, now);
    d.auto_tiering = Some(auto.status);
    d.look_again = auto.look_again;
    if let Some((to, note)) = auto.change {
        d.steps.push(Step::SetTier { tier: to });
        d = d.event(EventType::Normal, events::AUTO_TIERED, note);
    }
    d
}

/// The steady state of an instance served by the cluster of `tier`.
pub(super) fn steady(o: &Observed, tier: Tier, phase: MigrationPhase) -> Decision {
    let c = serving_ref(o, tier);
    let mut steps = Vec::new();
    if tier == Tier::Dedicated {
        steps.push(Step::EnsureDedicatedCluster { cluster: c.clone() });
    }
    if reachable(o, &c) {
        steps.push(Step::EnsureTenant {
            cluster: c.clone(),
            writable: true,
        });
    }
    steps.push(Step::RouteService {
        to: vec![c.clone()],
    });
    let mut d = Decision::new(phase, steps);
    d.tier = Some(tier);
    d.serving = Some(c);
    d
}

/// Why a flip from `from` to `to` cannot start now, if it cannot.
pub(super) fn blocker(o: &Observed, from: Tier, to: Tier) -> Option<(&'static str, String)> {
    let src_ref = serving_ref(o, from);
    let Some(src) = o.cluster_by_ref(&src_ref) else {
        let msg = format!(
            "conversion to {to} held: {} serves the instance but was not observed",
            describe(&src_ref)
        );
        return Some((reasons::NOT_IN_SERVICE, msg));
    };
    if !src.in_service() {
        let why = if !src.exists {
            "its cluster does not exist".to_string()
        } else if !src.ready() {
            format!(
                "{}/{} replicas ready",
                src.ready_replicas, src.desired_replicas
            )
        } else if !src.reachable() {
            "its management API does not answer".to_string()
        } else {
            "its vhost/user is missing".to_string()
        };
        let msg = format!(
            "conversion to {to} held: the instance is not in service on {} ({why}); it starts once the instance is in service",
            describe(&src.cluster)
        );
        return Some((reasons::NOT_IN_SERVICE, msg));
    }
    if let Some(problem) = queues::cannot_move(o, &src_ref) {
        return Some(problem);
    }
    if to == Tier::Shared {
        let dst = &o.shared;
        let held = |(reason, msg): (&'static str, String)| {
            Some((reason, format!("conversion to Shared held: {msg}")))
        };
        if !dst.exists {
            return held(placement::not_found(&dst.cluster));
        }
        if !dst.ready() || !dst.reachable() {
            return held((
                reasons::SHARED_CLUSTER_NOT_READY,
                format!(
                    "{} is not ready ({}/{} replicas, management API {})",
                    describe(&dst.cluster),
                    dst.ready_replicas,
                    dst.desired_replicas,
                    if dst.reachable() {
                        "answers"
                    } else {
                        "unreachable"
                    }
                ),
            ));
        }
        if dst.capacity.is_none() {
            return held((
                reasons::SHARED_CLUSTER_NOT_READY,
                format!("{} reports no capacity yet", describe(&dst.cluster)),
            ));
        }
        if let Some(problem) = placement::room_problem(dst) {
            return held(problem);
        }
        if let Some(problem) = placement::terms_problem(o, dst) {
            return held(problem);
        }
    }
    None
}
