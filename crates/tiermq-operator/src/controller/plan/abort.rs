//! R-abort: a flip back before the write cutover. The destination was never routed and never
//! took writes (it is read-only until the cutover, which is recorded before it is performed), so
//! it holds no client message: the source serves alone again and the destination is discarded
//! at once. Nothing waits for a destination that never served, so an abort also ends when the
//! destination never became ready (a broken image, an unbindable volume).

use chrono::{DateTime, Utc};
use tiermq_crd::conditions::events;
use tiermq_crd::{ClusterKind, MigrationOutcome, MigrationStatus};

use super::convert::history_record;
use super::observed::Observed;
use super::output::{EventType, Step};
use super::roles::{describe, exists, federation_left, running};
use super::{Decision, drain};

use tiermq_crd::MigrationPhase::*;

/// The abort's desired state: the source alone, writable; the destination gone — unless the
/// conversion's record is missing from status (edited by hand), when nothing proves the
/// destination never took writes and it is kept.
pub(super) fn abort_steps(o: &Observed, m: &MigrationStatus) -> Vec<Step> {
    let (s, d) = (&m.source, &m.destination);
    let mut steps = vec![
        Step::RouteService {
            to: vec![s.clone()],
        },
        Step::RestoreWrites { cluster: s.clone() },
    ];
    steps.extend(federation_left(o, m));
    if !recorded(o) {
        return steps;
    }
    match d.kind {
        // The StatefulSet and its volumes take the tenant with them.
        ClusterKind::Dedicated => steps.push(Step::DeleteDedicatedCluster { cluster: d.clone() }),
        ClusterKind::Shared if exists(o, d) => {
            steps.push(Step::DiscardTenant { cluster: d.clone() })
        }
        // A SharedCluster that is gone took the tenant with it.
        ClusterKind::Shared => {}
    }
    steps
}

pub(super) fn start_abort(o: &Observed, mut m: MigrationStatus) -> Decision {
    drain::reset(&mut m);
    m.reverse_requested = false;
    m.source_revoked_at = None;
    m.source_closed_at = None;
    let note = format!(
        "spec.tier is {} again before the write cutover: aborting; {} never took a client's \
         message and is removed",
        m.from,
        describe(&m.destination)
    );
    let steps = abort_steps(o, &m);
    Decision::migrating(Aborting, m, steps)
        .event(EventType::Normal, events::ABORTING, note.clone())
        .progress(note)
}

/// The running conversion is recorded in status (not rebuilt from a hand-edited status).
fn recorded(o: &Observed) -> bool {
    o.status.migration.is_some()
}

/// R-abort, continued: once the abort's steps ran, the source is the sole cluster again.
pub(super) fn aborting(o: &Observed, now: DateTime<Utc>) -> Decision {
    let m = running(o, now);
    let steps = abort_steps(o, &m);
    if !recorded(o) {
        let note = format!(
            "aborting, but status lost the conversion's record (edited by hand?): {} is kept, \
             since nothing proves it never took a message; check it and delete it yourself, \
             then restore status.migration or recreate the instance",
            describe(&m.destination)
        );
        return Decision::migrating(Aborting, m, steps).progress(note);
    }
    let record = history_record(&m, now, MigrationOutcome::Aborted);
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
