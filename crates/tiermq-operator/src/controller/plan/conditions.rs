//! The instance's conditions, one pure function each, over what the planner decided and the
//! conditions recorded before (whose transition times they keep). Types and reasons are in
//! [`tiermq_crd::conditions`].

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tiermq_crd::conditions::{self, reasons};
use tiermq_crd::{MigrationPhase, MigrationStatus, Tier};

use super::Decision;
use super::observed::Observed;
use crate::controller::conditions::condition;

/// `Ready`: the Service routes to a cluster that serves the tenant.
pub(super) fn ready(
    o: &Observed,
    d: &Decision,
    routed: &[String],
    serving_ok: bool,
    now: DateTime<Utc>,
) -> Condition {
    let (on, reason, message) = if d.deleting {
        (false, reasons::DELETING, d.progress.clone())
    } else if serving_ok {
        (
            true,
            reasons::IN_SERVICE,
            format!("served by {}", routed.join(" and ")),
        )
    } else {
        // What the kubelet says about broker pods that do not come up, so the instance shows
        // why it waits (a crash-looping broker), not only that it does.
        let problems: Vec<&str> = [&o.shared, &o.dedicated]
            .into_iter()
            .flat_map(|c| c.pod_problems.iter().map(String::as_str))
            .collect();
        let mut message = format!("waiting for {} to serve the tenant", routed.join(" and "));
        if !problems.is_empty() {
            message.push_str("; ");
            message.push_str(&problems.join("; "));
        }
        (false, reasons::PROVISIONING, message)
    };
    cond(o, conditions::READY, on, reason, message, now)
}

/// `Migrating`: a conversion (or its abort) runs; the reason tells a flip back apart.
pub(super) fn migrating(
    o: &Observed,
    d: &Decision,
    migration: Option<&MigrationStatus>,
    now: DateTime<Utc>,
) -> Condition {
    if !conversion_runs(d, migration) {
        let msg = "no conversion runs".to_string();
        return cond(o, conditions::MIGRATING, false, reasons::STABLE, msg, now);
    }
    let reason = migrating_reason(d, migration);
    cond(
        o,
        conditions::MIGRATING,
        true,
        reason,
        d.progress.clone(),
        now,
    )
}

/// `ConversionBlocked`: a tier flip is held, and why.
pub(super) fn conversion_blocked(o: &Observed, d: &Decision, now: DateTime<Utc>) -> Condition {
    match &d.blocked {
        Some((reason, msg)) => cond(
            o,
            conditions::CONVERSION_BLOCKED,
            true,
            reason,
            msg.clone(),
            now,
        ),
        None => cond(
            o,
            conditions::CONVERSION_BLOCKED,
            false,
            reasons::NOT_BLOCKED,
            "no tier flip is held".to_string(),
            now,
        ),
    }
}

/// `DrainTimedOut`: the source has been draining for longer than `drainTimeoutSeconds`.
pub(super) fn drain_timed_out(o: &Observed, d: &Decision, now: DateTime<Utc>) -> Condition {
    match &d.drain_timed_out {
        Some(msg) => cond(
            o,
            conditions::DRAIN_TIMED_OUT,
            true,
            reasons::BACKLOG_REMAINS,
            msg.clone(),
            now,
        ),
        None => cond(
            o,
            conditions::DRAIN_TIMED_OUT,
            false,
            reasons::WITHIN_DRAIN_TIMEOUT,
            "no drain has exceeded its timeout".to_string(),
            now,
        ),
    }
}

/// What the operator is still working on for this decision, as the reason and message of
/// `Reconciling` True; `None` when the spec is served and nothing is left to do.
fn work(
    d: &Decision,
    migration: Option<&MigrationStatus>,
    serving_ok: bool,
) -> Option<(&'static str, String)> {
    if d.deleting {
        return Some((reasons::DELETING, d.progress.clone()));
    }
    if let Some((reason, msg)) = &d.blocked {
        return Some((reason, msg.clone()));
    }
    if conversion_runs(d, migration) {
        return Some((migrating_reason(d, migration), d.progress.clone()));
    }
    if !serving_ok {
        let msg = "waiting for a cluster to serve the tenant".to_string();
        return Some((reasons::PROVISIONING, msg));
    }
    None
}

fn conversion_runs(d: &Decision, migration: Option<&MigrationStatus>) -> bool {
    migration.is_some() && d.phase != MigrationPhase::Stable && d.phase != MigrationPhase::Blocked
}

fn migrating_reason(d: &Decision, migration: Option<&MigrationStatus>) -> &'static str {
    match d.phase {
        MigrationPhase::Aborting => reasons::ABORTING,
        _ if migration.is_some_and(|m| m.reverse_requested) => reasons::REVERSE_QUEUED,
        _ => reasons::CONVERTING,
    }
}

/// `Reconciling` (kstatus): True with the reason of what is under way (a conversion, a held
/// flip, provisioning, deletion); False once the spec is served, and False too while the drain
/// is past its timeout (then `Stalled` is True: kstatus reports a stalled resource as failed
/// only when it does not also read as reconciling).
pub(super) fn reconciling(
    o: &Observed,
    d: &Decision,
    migration: Option<&MigrationStatus>,
    serving_ok: bool,
    now: DateTime<Utc>,
) -> Condition {
    let (on, reason, message) = match (&d.drain_timed_out, work(d, migration, serving_ok)) {
        (Some(msg), _) => (false, reasons::BACKLOG_REMAINS, format!("stalled: {msg}")),
        (None, Some((reason, msg))) => (true, reason, msg),
        (None, None) => (false, reasons::UP_TO_DATE, "the spec is served".to_string()),
    };
    cond(o, conditions::RECONCILING, on, reason, message, now)
}

/// `TierServed`: True when the tier of `spec.tier` serves the tenant with no conversion running
/// or held (what "conversion done" means); False with the reason of what is under way.
pub(super) fn tier_served(
    o: &Observed,
    d: &Decision,
    migration: Option<&MigrationStatus>,
    tier: Option<Tier>,
    serving_ok: bool,
    now: DateTime<Utc>,
) -> Condition {
    let (on, reason, message) = match work(d, migration, serving_ok) {
        Some((reason, msg)) => (false, reason, msg),
        None if d.phase == MigrationPhase::Stable && tier == Some(o.spec.tier) => (
            true,
            reasons::SPEC_TIER_SERVED,
            format!("the {} tier serves the tenant", o.spec.tier),
        ),
        None => (
            false,
            reasons::CONVERTING,
            format!("the {} tier does not serve the tenant yet", o.spec.tier),
        ),
    };
    cond(o, conditions::TIER_SERVED, on, reason, message, now)
}

/// `Stalled` (kstatus): True with the problem only someone's change clears (an invalid spec or
/// a name conflict, reported outside the planner; a drain past its timeout), else False.
pub fn stalled(
    previous: &[Condition],
    generation: i64,
    problem: Option<(&str, &str)>,
    now: DateTime<Utc>,
) -> Condition {
    let (on, reason, message) = match problem {
        Some((reason, message)) => (true, reason, message.to_string()),
        None => (
            false,
            reasons::NOT_STALLED,
            "nothing waits for a change by someone".to_string(),
        ),
    };
    condition(
        previous,
        conditions::STALLED,
        on,
        reason,
        message,
        generation,
        now,
    )
}

/// `Paused`: True while the annotation `tiermq.io/paused` is `"true"` (set outside the planner,
/// which never runs then), False whenever the planner runs.
pub fn paused(previous: &[Condition], generation: i64, on: bool, now: DateTime<Utc>) -> Condition {
    let (reason, message) = if on {
        (
            reasons::PAUSED_BY_ANNOTATION,
            format!(
                "reconciling is paused by the annotation {}=\"true\"; remove it to resume",
                conditions::PAUSED_ANNOTATION
            ),
        )
    } else {
        (
            reasons::NOT_PAUSED,
            "the operator reconciles the instance".to_string(),
        )
    };
    condition(
        previous,
        conditions::PAUSED,
        on,
        reason,
        message,
        generation,
        now,
    )
}

/// `InvalidSpec`: True with the problem the operator will not work around (reported outside
/// the planner, from a permanent error), False once the spec can be served.
pub fn invalid_spec(
    previous: &[Condition],
    generation: i64,
    problem: Option<(&str, &str)>,
    now: DateTime<Utc>,
) -> Condition {
    match problem {
        Some((reason, message)) => condition(
            previous,
            conditions::INVALID_SPEC,
            true,
            reason,
            message.to_string(),
            generation,
            now,
        ),
        None => condition(
            previous,
            conditions::INVALID_SPEC,
            false,
            reasons::SPEC_VALID,
            "the spec can be served".to_string(),
            generation,
            now,
        ),
    }
}

/// `Degraded`: True with the failing step's reason and message, or False after a pass that
/// succeeded.
pub fn degraded(
    previous: &[Condition],
    generation: i64,
    failing: Option<(&str, &str)>,
    now: DateTime<Utc>,
) -> Condition {
    match failing {
        Some((reason, message)) => condition(
            previous,
            conditions::DEGRADED,
            true,
            reason,
            message.to_string(),
            generation,
            now,
        ),
        None => condition(
            previous,
            conditions::DEGRADED,
            false,
            reasons::RECONCILED,
            "the last reconcile succeeded".to_string(),
            generation,
            now,
        ),
    }
}

fn cond(
    o: &Observed,
    type_: &str,
    on: bool,
    reason: &str,
    message: String,
    now: DateTime<Utc>,
) -> Condition {
    condition(
        &o.status.conditions,
        type_,
        on,
        reason,
        message,
        o.generation,
        now,
    )
}
