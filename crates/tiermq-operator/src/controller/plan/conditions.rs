//! The instance's conditions, one pure function each, over what the planner decided and the
//! conditions recorded before (whose transition times they keep). Types and reasons are in
//! [`tiermq_crd::conditions`].

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tiermq_crd::conditions::{self, reasons};
use tiermq_crd::{MigrationPhase, MigrationStatus};

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
    let running = migration.is_some()
        && d.phase != MigrationPhase::Stable
        && d.phase != MigrationPhase::Blocked;
    if !running {
        let msg = "no conversion runs".to_string();
        return cond(o, conditions::MIGRATING, false, reasons::STABLE, msg, now);
    }
    let reason = match d.phase {
        MigrationPhase::Aborting => reasons::ABORTING,
        _ if migration.is_some_and(|m| m.reverse_requested) => reasons::REVERSE_QUEUED,
        _ => reasons::CONVERTING,
    };
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
