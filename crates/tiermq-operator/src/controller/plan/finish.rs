//! Turning a phase function's [`Decision`] into a [`Plan`]: the status to record (tier, serving
//! cluster, migration with per-phase start times, history, phase, conditions), the Events and the
//! requeue delay.

use chrono::{DateTime, Utc};
use tiermq_crd::conditions::{self as types, events, reasons};
use tiermq_crd::{
    ClusterRef, InstancePhase, MigrationPhase, MigrationStatus, PhaseTiming, RabbitMQInstanceStatus,
};

use super::observed::Observed;
use super::output::{EventType, Plan, PlannedEvent, Step};
use super::roles::{describe, in_service};
use super::time::to_time;
use super::{Decision, HISTORY_LIMIT, conditions, requeue};
use crate::controller::conditions::is_true;

/// The plan for decision `d`, taken from the recorded phase `recorded` at `now`.
pub(super) fn finish(
    o: &Observed,
    recorded: MigrationPhase,
    d: Decision,
    now: DateTime<Utc>,
) -> Plan {
    let routed = routed_clusters(&d.steps);
    let serving_ok = routed.iter().any(|r| in_service(o, r));
    let mut status = next_status(o, &d, now);
    status.phase = Some(instance_phase(&d, serving_ok));
    let names: Vec<String> = routed.iter().map(describe).collect();
    let managed = [
        conditions::ready(o, &d, &names, serving_ok, now),
        conditions::migrating(o, &d, status.migration.as_ref(), now),
        conditions::conversion_blocked(o, &d, now),
        conditions::drain_timed_out(o, &d, now),
        conditions::reconciling(o, &d, status.migration.as_ref(), serving_ok, now),
        conditions::stalled(
            &o.status.conditions,
            o.generation,
            d.drain_timed_out
                .as_deref()
                .map(|m| (reasons::BACKLOG_REMAINS, m)),
            now,
        ),
        conditions::tier_served(
            o,
            &d,
            status.migration.as_ref(),
            status.tier,
            serving_ok,
            now,
        ),
        conditions::paused(&o.status.conditions, o.generation, false, now),
    ];
    let mut conds = managed.to_vec();
    conds.extend(
        o.status
            .conditions
            .iter()
            .filter(|c| !managed.iter().any(|m| m.type_ == c.type_))
            .cloned(),
    );
    status.conditions = conds;
    let requeue_after =
        requeue::requeue(o, recorded, &d, status.migration.as_ref(), serving_ok, now);
    let events = events_of(o, &d);
    Plan {
        phase: d.phase,
        steps: d.steps,
        status,
        events,
        requeue_after,
        finished: d.record,
    }
}

/// The clusters the plan's last `RouteService` step routes to.
fn routed_clusters(steps: &[Step]) -> Vec<ClusterRef> {
    steps
        .iter()
        .rev()
        .find_map(|s| match s {
            Step::RouteService { to } => Some(to.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The recorded status moved on by the decision (conditions and `phase` aside).
fn next_status(o: &Observed, d: &Decision, now: DateTime<Utc>) -> RabbitMQInstanceStatus {
    let mut status = o.status.clone();
    status.observed_generation = Some(o.generation);
    status.migration_phase = Some(d.phase);
    if d.tier.is_some() {
        status.tier = d.tier;
    }
    if d.serving.is_some() {
        status.serving = d.serving.clone();
    }
    status.migration = d.migration.clone().map(|m| with_phase_start(m, d, now));
    if let Some(auto) = &d.auto_tiering {
        status.auto_tiering = auto.clone();
    }
    status.next_maintenance_window = d.window_opens.map(to_time);
    if let Some(r) = &d.record {
        status.history.push(r.clone());
        let excess = status.history.len().saturating_sub(HISTORY_LIMIT);
        status.history.drain(..excess);
    }
    status
}

/// Records when the decision's phase started, the first time a conversion enters it.
fn with_phase_start(mut m: MigrationStatus, d: &Decision, now: DateTime<Utc>) -> MigrationStatus {
    if !d.deleting && m.phases.last().map(|p| p.phase) != Some(d.phase) {
        m.phases.push(PhaseTiming {
            phase: d.phase,
            started: to_time(now),
        });
    }
    m
}

/// `status.phase`, the one-word summary the printer column shows.
fn instance_phase(d: &Decision, serving_ok: bool) -> InstancePhase {
    use MigrationPhase::*;
    if d.deleting {
        return InstancePhase::Deleting;
    }
    match d.phase {
        Blocked => InstancePhase::Blocked,
        Stable if serving_ok => InstancePhase::Ready,
        Stable => InstancePhase::Provisioning,
        PreparingDestination | DualWriteDualRead | SingleWriteDualRead | DrainingSource
        | DestinationOnly | Completed | Aborting => InstancePhase::Migrating,
    }
}

/// The decision's Events, plus a Warning when the drain timeout is passed for the first time and
/// a Normal Event when reconciling resumes after a pause.
fn events_of(o: &Observed, d: &Decision) -> Vec<PlannedEvent> {
    let mut out = d.events.clone();
    if is_true(&o.status.conditions, types::PAUSED) {
        out.push(PlannedEvent {
            type_: EventType::Normal,
            reason: events::RESUMED,
            note: format!(
                "the annotation {} is gone or not \"true\": reconciling resumed",
                types::PAUSED_ANNOTATION
            ),
        });
    }
    if let Some(msg) = &d.drain_timed_out
        && !is_true(&o.status.conditions, types::DRAIN_TIMED_OUT)
    {
        out.push(PlannedEvent {
            type_: EventType::Warning,
            reason: events::DRAIN_TIMED_OUT,
            note: msg.clone(),
        });
    }
    out
}
