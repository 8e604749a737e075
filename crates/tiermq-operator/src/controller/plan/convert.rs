//! The conversion itself, phase by phase: R-prepare, R-dual, R-single, R-drain (with R-timeout),
//! R-retire, R-reverse and R-complete. Each phase function returns the decision for one pass; the
//! `*_steps` functions give the desired state of their phase.

use chrono::{DateTime, Utc};
use tiermq_crd::conditions::events;
use tiermq_crd::{
    ClusterKind, ConnectionPolicy, DrainStrategy, MigrationOutcome, MigrationRecord,
    MigrationStatus, PhaseDuration,
};

use super::abort::start_abort;
use super::observed::{Observed, TenantState};
use super::output::{EventType, Step};
use super::roles::{
    backlog_note, describe, exists, federation_in_use, flipped_back, in_service, reachable,
    running, source_writable, tenant_of, topology_synced,
};
use super::time::{from_time, to_time};
use super::{Decision, drain};

use tiermq_crd::MigrationPhase::*;

pub(super) fn preparing_steps(o: &Observed, m: &MigrationStatus) -> Vec<Step> {
    let (s, d) = (&m.source, &m.destination);
    let mut steps = vec![Step::RouteService {
        to: vec![s.clone()],
    }];
    if d.kind == ClusterKind::Dedicated {
        steps.push(Step::EnsureDedicatedCluster { cluster: d.clone() });
    }
    if reachable(o, d) {
        steps.push(Step::EnsureTenant { cluster: d.clone() });
        if matches!(tenant_of(o, s), TenantState::Present(_)) && reachable(o, s) {
            steps.push(Step::CopyTopology {
                from: s.clone(),
                to: d.clone(),
            });
        }
    }
    steps
}

/// R-prepare.
pub(super) fn preparing(o: &Observed, now: DateTime<Utc>) -> Decision {
    let m = running(o, now);
    if flipped_back(o, &m) {
        return start_abort(o, m);
    }
    if in_service(o, &m.destination) && topology_synced(o, &m) {
        let note = format!(
            "{} ready with tenant and topology: the Service routes to both clusters",
            describe(&m.destination)
        );
        let steps = dual_steps(o, &m);
        return Decision::migrating(DualWriteDualRead, m, steps)
            .event(EventType::Normal, events::DUAL_WRITE, note.clone())
            .progress(note);
    }
    let waiting = match o.cluster_by_ref(&m.destination) {
        Some(c) if !c.ready() => format!(
            "waiting for {}: {}/{} replicas ready",
            describe(&m.destination),
            c.ready_replicas,
            c.desired_replicas
        ),
        Some(c) if !c.reachable() => format!(
            "waiting for the management API of {}",
            describe(&m.destination)
        ),
        Some(_) => "creating the tenant and copying the topology".to_string(),
        None => format!("{} is not observed", describe(&m.destination)),
    };
    let steps = preparing_steps(o, &m);
    Decision::migrating(PreparingDestination, m, steps).progress(waiting)
}

/// Copy the source's topology again when both tenants answer and the destination lacks some
/// object (clients may declare queues on the source while both clusters serve).
pub(super) fn topology_refresh(o: &Observed, m: &MigrationStatus) -> Option<Step> {
    let both_up = reachable(o, &m.source) && reachable(o, &m.destination);
    (both_up
        && matches!(tenant_of(o, &m.destination), TenantState::Present(_))
        && !topology_synced(o, m))
    .then(|| Step::CopyTopology {
        from: m.source.clone(),
        to: m.destination.clone(),
    })
}

pub(super) fn dual_steps(o: &Observed, m: &MigrationStatus) -> Vec<Step> {
    let (s, d) = (&m.source, &m.destination);
    let mut steps = Vec::new();
    // A crash while entering the write cutover may have revoked source writes already.
    if source_writable(o, m) == Some(false) {
        steps.push(Step::RestoreWrites { cluster: s.clone() });
    }
    if reachable(o, d) {
        steps.push(Step::EnsureTenant { cluster: d.clone() });
    }
    steps.extend(topology_refresh(o, m));
    steps.push(Step::RouteService {
        to: vec![s.clone(), d.clone()],
    });
    if o.spec.migration.federation {
        steps.push(Step::EnableFederation {
            source: s.clone(),
            destination: d.clone(),
        });
    }
    steps
}

/// R-dual.
pub(super) fn dual(o: &Observed, now: DateTime<Utc>) -> Decision {
    let m = running(o, now);
    if flipped_back(o, &m) {
        return start_abort(o, m);
    }
    // The cutover needs the destination routed; the source may already have left the Service
    // if an earlier attempt at this very cutover crashed half-way (then it simply continues).
    if o.service_routes.contains(&m.destination) && in_service(o, &m.destination) {
        let note = format!(
            "write cutover: {} leaves the Service and refuses writes, reads continue",
            describe(&m.source)
        );
        let steps = single_write_steps(o, &m);
        return Decision::migrating(SingleWriteDualRead, m, steps)
            .event(EventType::Normal, events::WRITE_CUTOVER, note.clone())
            .progress(note);
    }
    let steps = dual_steps(o, &m);
    Decision::migrating(DualWriteDualRead, m, steps)
        .progress("routing new connections to both clusters".to_string())
}

pub(super) fn single_write_steps(o: &Observed, m: &MigrationStatus) -> Vec<Step> {
    let (s, d) = (&m.source, &m.destination);
    let mut steps = Vec::new();
    if reachable(o, d) {
        steps.push(Step::EnsureTenant { cluster: d.clone() });
    }
    // Objects clients declared on the source during the dual phase follow before the cutover.
    steps.extend(topology_refresh(o, m));
    steps.push(Step::RouteService {
        to: vec![d.clone()],
    });
    steps.push(Step::RevokeWrites { cluster: s.clone() });
    if o.spec.migration.federation {
        steps.push(Step::EnableFederation {
            source: s.clone(),
            destination: d.clone(),
        });
    }
    steps
}

/// Keeps `reverse_requested` equal to "spec asks for the source tier again" (R-reverse) and
/// reports the moment it turns on.
pub(super) fn note_reverse(mut d: Decision, was: bool) -> Decision {
    let Some(m) = &d.migration else { return d };
    if m.reverse_requested && !was {
        let note = format!(
            "spec.tier is {} again after the write cutover: this conversion completes first, then the conversion back starts",
            m.from
        );
        d = d.event(EventType::Normal, events::REVERSE_QUEUED, note);
    }
    d
}

pub(super) fn with_reverse_flag(o: &Observed, m: &mut MigrationStatus) -> bool {
    let was = m.reverse_requested;
    m.reverse_requested = flipped_back(o, m);
    was
}

/// R-single.
pub(super) fn single_write(o: &Observed, now: DateTime<Utc>) -> Decision {
    let mut m = running(o, now);
    let was = with_reverse_flag(o, &mut m);
    let d = if o.routes_exactly(&[&m.destination]) && source_writable(o, &m) == Some(false) {
        drain::reset(&mut m);
        // The refusal of writes is observed now: only later samples can count.
        let source = m.source.clone();
        drain::account(&mut m, tenant_of(o, &source), now);
        let note = format!(
            "{} refuses writes; draining it ({})",
            describe(&m.source),
            match m.drain_strategy {
                DrainStrategy::Consume => "waiting for consumers",
                DrainStrategy::Shovel => "shovels move the backlog",
            }
        );
        let steps = draining_steps(o, &m);
        Decision::migrating(DrainingSource, m, steps)
            .event(EventType::Normal, events::DRAINING, note.clone())
            .progress(note)
    } else {
        let steps = single_write_steps(o, &m);
        Decision::migrating(SingleWriteDualRead, m, steps)
            .progress("waiting for the source to leave the Service and refuse writes".to_string())
    };
    note_reverse(d, was)
}

pub(super) fn draining_steps(o: &Observed, m: &MigrationStatus) -> Vec<Step> {
    let (s, d) = (&m.source, &m.destination);
    let mut steps = Vec::new();
    if reachable(o, d) {
        steps.push(Step::EnsureTenant { cluster: d.clone() });
    }
    steps.push(Step::RouteService {
        to: vec![d.clone()],
    });
    steps.push(Step::RevokeWrites { cluster: s.clone() });
    if federation_in_use(o, m) {
        steps.push(Step::DisableFederation {
            source: s.clone(),
            destination: d.clone(),
        });
    }
    if m.drain_strategy == DrainStrategy::Shovel {
        steps.push(Step::StartShovels {
            from: s.clone(),
            to: d.clone(),
        });
    }
    steps
}

/// When the current stay in `DrainingSource` began.
pub(super) fn draining_since(m: &MigrationStatus) -> DateTime<Utc> {
    m.phases
        .iter()
        .rev()
        .find(|p| p.phase == DrainingSource)
        .map_or_else(|| from_time(&m.started), |p| from_time(&p.started))
}

/// R-drain, R-timeout.
pub(super) fn draining(o: &Observed, now: DateTime<Utc>) -> Decision {
    let mut m = running(o, now);
    let was = with_reverse_flag(o, &mut m);
    let source = m.source.clone();
    drain::account(&mut m, tenant_of(o, &source), now);
    let d = if drain::drained(&m) {
        m.source_revoked_at = Some(to_time(now));
        let note = format!(
            "{} drained ({} consecutive fresh empty samples): destination only",
            describe(&m.source),
            m.empty_samples
        );
        let steps = destination_only_steps(o, &m);
        Decision::migrating(DestinationOnly, m, steps)
            .event(EventType::Normal, events::SOURCE_DRAINED, note.clone())
            .progress(note)
    } else {
        let elapsed = (now - draining_since(&m)).num_seconds();
        let timeout = o.spec.migration.drain_timeout_seconds;
        let timed_out = (elapsed >= timeout).then(|| {
            format!(
                "{} not drained after {elapsed}s (drainTimeoutSeconds {timeout}): {}; nothing was deleted, still waiting",
                describe(&m.source),
                backlog_note(&m)
            )
        });
        let mut progress = format!("draining {}: {}", describe(&m.source), backlog_note(&m));
        if let TenantState::Present(t) = tenant_of(o, &m.source)
            && t.shovels.failed > 0
        {
            progress.push_str(&format!(
                "; {} shovels failed and are re-created",
                t.shovels.failed
            ));
        }
        let steps = draining_steps(o, &m);
        let mut d = Decision::migrating(DrainingSource, m, steps).progress(progress);
        d.drain_timed_out = timed_out;
        d
    };
    note_reverse(d, was)
}

pub(super) fn destination_only_steps(o: &Observed, m: &MigrationStatus) -> Vec<Step> {
    let (s, d) = (&m.source, &m.destination);
    let mut steps = Vec::new();
    if reachable(o, d) {
        steps.push(Step::EnsureTenant { cluster: d.clone() });
    }
    steps.push(Step::RouteService {
        to: vec![d.clone()],
    });
    if federation_in_use(o, m) {
        steps.push(Step::DisableFederation {
            source: s.clone(),
            destination: d.clone(),
        });
    }
    let source_tenant_gone = matches!(tenant_of(o, s), TenantState::Absent);
    if exists(o, s) && !source_tenant_gone {
        steps.push(Step::StopShovels { from: s.clone() });
        steps.push(Step::RevokeAll { cluster: s.clone() });
        if m.connection_policy == ConnectionPolicy::Close {
            steps.push(Step::CloseConnections {
                cluster: s.clone(),
                reason: format!(
                    "tiermq: this instance moved to the {} tier; reconnect to the same endpoint",
                    m.to
                ),
            });
        }
    }
    steps
}

/// R-retire.
pub(super) fn destination_only(o: &Observed, now: DateTime<Utc>) -> Decision {
    let mut m = running(o, now);
    let was = with_reverse_flag(o, &mut m);
    let source = m.source.clone();
    drain::account(&mut m, tenant_of(o, &source), now);
    let d = if !drain::drained(&m) {
        // Messages (or writes) showed up on the source again: give reads back, drain again.
        m.source_revoked_at = None;
        let note = format!(
            "{} holds messages again ({}): read access restored, draining again",
            describe(&m.source),
            backlog_note(&m)
        );
        let steps = draining_steps(o, &m);
        Decision::migrating(DrainingSource, m, steps)
            .event(EventType::Warning, events::BACKLOG_REAPPEARED, note.clone())
            .progress(note)
    } else {
        let revoked_at = m.source_revoked_at.as_ref().map_or(now, from_time);
        m.source_revoked_at = Some(to_time(revoked_at));
        let grace = o.spec.migration.grace_period_seconds;
        let left = grace - (now - revoked_at).num_seconds();
        let mut steps = destination_only_steps(o, &m);
        if left <= 0 {
            let s = m.source.clone();
            if exists(o, &s) {
                steps.push(Step::DeleteTenant { cluster: s.clone() });
                if s.kind == ClusterKind::Dedicated {
                    steps.push(Step::DeleteDedicatedCluster { cluster: s.clone() });
                }
            }
            let note = format!("grace period over: {} retired", describe(&s));
            Decision::migrating(Completed, m, steps)
                .event(EventType::Normal, events::SOURCE_RETIRED, note.clone())
                .progress(note)
        } else {
            let conns = match tenant_of(o, &m.source) {
                TenantState::Present(t) => format!(", {} source connections open", t.connections),
                _ => String::new(),
            };
            let note = format!(
                "destination only; {} is retired in {left}s{conns}",
                describe(&m.source)
            );
            Decision::migrating(DestinationOnly, m, steps).progress(note)
        }
    };
    note_reverse(d, was)
}

pub(super) fn history_record(
    m: &MigrationStatus,
    now: DateTime<Utc>,
    outcome: MigrationOutcome,
) -> MigrationRecord {
    let mut phase_seconds = Vec::new();
    for (i, p) in m.phases.iter().enumerate() {
        let end = m.phases.get(i + 1).map_or(now, |n| from_time(&n.started));
        phase_seconds.push(PhaseDuration {
            phase: p.phase,
            seconds: (end - from_time(&p.started)).num_seconds().max(0),
        });
    }
    MigrationRecord {
        from: m.from,
        to: m.to,
        started: m.started.clone(),
        finished: to_time(now),
        outcome,
        phase_seconds,
    }
}

/// R-complete.
pub(super) fn completed(o: &Observed, now: DateTime<Utc>) -> Decision {
    let m = running(o, now);
    let record = history_record(&m, now, MigrationOutcome::Completed);
    let steps = vec![
        Step::RouteService {
            to: vec![m.destination.clone()],
        },
        Step::RecordHistory {
            record: record.clone(),
        },
    ];
    let mut note = format!("conversion {} -> {} completed", m.from, m.to);
    if o.spec.tier != m.to {
        note.push_str(&format!(
            "; the conversion back to {} starts next",
            o.spec.tier
        ));
    }
    let mut d =
        Decision::new(Stable, steps).event(EventType::Normal, events::CONVERSION_COMPLETED, note);
    d.tier = Some(m.to);
    d.serving = Some(m.destination);
    d.record = Some(record);
    d
}
