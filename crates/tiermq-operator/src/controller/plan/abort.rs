//! R-abort: a flip back before the write cutover. The destination is drained back into the source
//! like a source being drained, and removed only once proven empty.

use chrono::{DateTime, Utc};
use tiermq_crd::conditions::events;
use tiermq_crd::{ClusterKind, MigrationOutcome, MigrationStatus};

use super::convert::history_record;
use super::observed::{Observed, TenantState};
use super::output::{EventType, Step};
use super::roles::{
    backlog_note, describe, exists, federation_in_use, holds_topology_of, reachable, running,
    tenant_of,
};
use super::{Decision, drain};

use tiermq_crd::MigrationPhase::*;

/// R-abort: the abort's desired state while the destination is not yet proven empty.
pub(super) fn abort_steps(o: &Observed, m: &MigrationStatus) -> Vec<Step> {
    let (s, d) = (&m.source, &m.destination);
    let mut steps = vec![
        Step::RouteService {
            to: vec![s.clone()],
        },
        Step::RestoreWrites { cluster: s.clone() },
    ];
    if federation_in_use(o, m) {
        steps.push(Step::DisableFederation {
            source: s.clone(),
            destination: d.clone(),
        });
    }
    if let TenantState::Present(_) = tenant_of(o, d) {
        steps.push(Step::RevokeWrites { cluster: d.clone() });
        // Queues clients declared on the destination during the dual phase must exist on the
        // source before their messages are shovelled back.
        if reachable(o, s)
            && matches!(tenant_of(o, s), TenantState::Present(_))
            && !holds_topology_of(o, s, d)
        {
            steps.push(Step::CopyTopology {
                from: d.clone(),
                to: s.clone(),
            });
        }
        steps.push(Step::StartShovels {
            from: d.clone(),
            to: s.clone(),
        });
    }
    steps
}

pub(super) fn start_abort(o: &Observed, mut m: MigrationStatus) -> Decision {
    drain::reset(&mut m);
    m.reverse_requested = false;
    m.source_revoked_at = None;
    let note = format!(
        "spec.tier is {} again before the write cutover: aborting; {} is drained back before it is removed",
        m.from,
        describe(&m.destination)
    );
    let steps = abort_steps(o, &m);
    Decision::migrating(Aborting, m, steps)
        .event(EventType::Normal, events::ABORTING, note.clone())
        .progress(note)
}

/// R-abort, continued: drain the destination back, then remove it and return to `Stable`.
pub(super) fn aborting(o: &Observed, now: DateTime<Utc>) -> Decision {
    let mut m = running(o, now);
    let dst = m.destination.clone();
    // A dedicated destination whose StatefulSet does not exist holds nothing.
    let state = if dst.kind == ClusterKind::Dedicated && !exists(o, &dst) {
        TenantState::Absent
    } else {
        tenant_of(o, &dst)
    };
    let mut steps = abort_steps(o, &m);
    let done = match state {
        TenantState::Unknown => false,
        TenantState::Absent => true,
        TenantState::Present(_) => {
            drain::account(&mut m, state, now);
            if drain::drained(&m) {
                steps.push(Step::StopShovels { from: dst.clone() });
                steps.push(Step::DeleteTenant {
                    cluster: dst.clone(),
                });
                true
            } else {
                false
            }
        }
    };
    if !done {
        let why = match state {
            TenantState::Unknown => format!(
                "waiting for the management API of {} to prove it holds no messages",
                describe(&dst)
            ),
            _ => format!("draining {} back: {}", describe(&dst), backlog_note(&m)),
        };
        return Decision::migrating(Aborting, m, steps).progress(why);
    }
    if dst.kind == ClusterKind::Dedicated && exists(o, &dst) {
        steps.push(Step::DeleteDedicatedCluster {
            cluster: dst.clone(),
        });
    }
    let record = history_record(&m, now, MigrationOutcome::Aborted);
    steps.push(Step::RecordHistory {
        record: record.clone(),
    });
    let note = format!(
        "conversion {} -> {} aborted; {} serves the instance alone, no message lost",
        m.from,
        m.to,
        describe(&m.source)
    );
    let mut d = Decision::new(Stable, steps).event(EventType::Normal, events::ABORTED, note);
    d.tier = Some(m.from);
    d.serving = Some(m.source);
    d.record = Some(record);
    d
}
