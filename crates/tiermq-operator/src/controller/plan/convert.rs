//! The conversion itself, phase by phase: R-prepare, R-dual, R-cutover, R-drain (with
//! R-timeout), R-retire, R-reverse and R-complete. Each phase function returns the decision for
//! one pass; the `*_steps` functions give the desired state of their phase.

use chrono::{DateTime, Utc};
use tiermq_crd::conditions::{events, reasons};
use tiermq_crd::{
    ClusterKind, ClusterRef, ConnectionPolicy, DrainStrategy, MigrationOutcome, MigrationRecord,
    MigrationStatus, PhaseDuration,
};

use super::abort::start_abort;
use super::observed::{Observed, TenantState};
use super::output::{EventType, Step};
use super::roles::{
    backlog_note, copy_topology, describe, exists, federation_left, flipped_back, in_service,
    reachable, running, tenant, tenant_of, topology_synced, writable,
};
use super::time::{from_time, to_time};
use super::{Decision, SUBSCRIBER_SETTLE, drain, queues, requeue};

use tiermq_crd::MigrationPhase::*;

/// The reason clients moved at the cutover are given (`CONNECTION_FORCED - <reason>`).
pub const CUTOVER_REASON: &str =
    "tiermq: this instance moves to another cluster; reconnect to the same endpoint";

/// The destination's dedicated cluster exists as the spec says (desired in every phase where it
/// is the destination: a StatefulSet deleted by hand comes back).
fn destination_cluster(m: &MigrationStatus) -> Option<Step> {
    (m.destination.kind == ClusterKind::Dedicated).then(|| Step::EnsureDedicatedCluster {
        cluster: m.destination.clone(),
    })
}

/// Ensures the destination tenant with writes refused: before the cutover is complete nothing
/// may be published there (it would be invisible to subscribers still on the source, and an
/// abort would have to drain it back).
fn destination_read_only(o: &Observed, m: &MigrationStatus) -> Option<Step> {
    reachable(o, &m.destination).then(|| Step::EnsureTenant {
        cluster: m.destination.clone(),
        writable: false,
    })
}

/// The destination tenant with full permissions: the cluster clients write to.
fn destination_writable(o: &Observed, m: &MigrationStatus) -> Option<Step> {
    reachable(o, &m.destination).then(|| Step::EnsureTenant {
        cluster: m.destination.clone(),
        writable: true,
    })
}

pub(super) fn preparing_steps(o: &Observed, m: &MigrationStatus) -> Vec<Step> {
    let (s, d) = (&m.source, &m.destination);
    let mut steps = vec![Step::RouteService {
        to: vec![s.clone()],
    }];
    steps.extend(destination_cluster(m));
    steps.extend(destination_read_only(o, m));
    if reachable(o, d) && matches!(tenant_of(o, s), TenantState::Present(_)) && reachable(o, s) {
        steps.push(copy_topology(o, s, d));
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
            "{} ready with tenant and topology; clients stay on {} until the write cutover",
            describe(&m.destination),
            describe(&m.source)
        );
        let steps = dual_steps(o, &m);
        return Decision::migrating(DualWriteDualRead, m, steps)
            .event(EventType::Normal, events::DUAL_WRITE, note.clone())
            .progress(note);
    }
    let waiting = match o.cluster_by_ref(&m.destination) {
        Some(c) if !c.ready() => {
            let mut w = format!(
                "waiting for {}: {}/{} replicas ready",
                describe(&m.destination),
                c.ready_replicas,
                c.desired_replicas
            );
            for p in &c.pod_problems {
                w.push_str("; ");
                w.push_str(p);
            }
            w
        }
        Some(c) if !c.reachable() => format!(
            "waiting for the management API of {}",
            describe(&m.destination)
        ),
        Some(_) => "creating the tenant and copying the topology".to_string(),
        None => format!("{} is not observed", describe(&m.destination)),
    };
    // With the destination answering, this pass's steps are what the phase waits for.
    let answering = o
        .cluster_by_ref(&m.destination)
        .is_some_and(|c| c.ready() && c.reachable());
    let steps = preparing_steps(o, &m);
    let soon = requeue::soon(&m, now);
    let d = Decision::migrating(PreparingDestination, m, steps).progress(waiting);
    if answering { d.look_again(soon) } else { d }
}

/// Copy the source's topology again when both tenants answer and the destination lacks some
/// object (clients may declare queues on the source until the cutover freezes it).
pub(super) fn topology_refresh(o: &Observed, m: &MigrationStatus) -> Option<Step> {
    let both_up = reachable(o, &m.source) && reachable(o, &m.destination);
    (both_up
        && matches!(tenant_of(o, &m.destination), TenantState::Present(_))
        && !topology_synced(o, m))
    .then(|| copy_topology(o, &m.source, &m.destination))
}

pub(super) fn dual_steps(o: &Observed, m: &MigrationStatus) -> Vec<Step> {
    let s = &m.source;
    let mut steps = Vec::from_iter(destination_cluster(m));
    // The source is frozen only from the cutover on; a frozen source here was left by hand or
    // by an older version: it serves alone again.
    if writable(o, s) == Some(false) {
        steps.push(Step::RestoreWrites { cluster: s.clone() });
    }
    steps.extend(destination_read_only(o, m));
    steps.extend(topology_refresh(o, m));
    steps.push(Step::RouteService {
        to: vec![s.clone()],
    });
    steps.extend(federation_left(o, m));
    steps
}

/// R-dual: the destination is kept in step; the cutover starts once nothing holds it.
pub(super) fn dual(o: &Observed, now: DateTime<Utc>) -> Decision {
    let m = running(o, now);
    if flipped_back(o, &m) {
        return start_abort(o, m);
    }
    let steps = dual_steps(o, &m);
    if !(in_service(o, &m.destination) && topology_synced(o, &m)) {
        let note = format!(
            "waiting for {} to hold the tenant and the topology",
            describe(&m.destination)
        );
        let soon = requeue::soon(&m, now);
        return Decision::migrating(DualWriteDualRead, m, steps)
            .progress(note)
            .look_again(soon);
    }
    // What cannot move is judged from a complete sample: a queue whose statistics are not in
    // yet could be a stream with history.
    if tenant(o, &m.source).is_none_or(|t| t.backlog.is_none()) {
        let note = format!(
            "waiting for statistics of every queue on {} before the write cutover",
            describe(&m.source)
        );
        return Decision::migrating(DualWriteDualRead, m, steps).progress(note);
    }
    if let Some((reason, msg)) = cutover_hold(o, &m.source) {
        let mut d = Decision::migrating(DualWriteDualRead, m, steps).progress(msg.clone());
        d.blocked = Some((reason, msg));
        return d;
    }
    // Write-ahead: this pass records the cutover and changes nothing; the next one performs it.
    // So while `DualWriteDualRead` is recorded the destination has never been routed or
    // writable, and an abort from here can discard it.
    let note = format!(
        "write cutover: the Service routes to {}; {} refuses writes and topology changes, reads continue",
        describe(&m.destination),
        describe(&m.source)
    );
    Decision::migrating(SingleWriteDualRead, m, steps)
        .event(EventType::Normal, events::WRITE_CUTOVER, note.clone())
        .progress(note)
}

/// Why the write cutover off `source` must wait, as (reason, message): a queue that cannot move
/// without loss, or a subscriber that has not consumed what was published for it (closing it
/// would drop its queue with them). Judged from the source's last observation.
pub fn cutover_hold(o: &Observed, source: &ClusterRef) -> Option<(&'static str, String)> {
    if let Some(problem) = queues::cannot_move(o, source) {
        return Some(problem);
    }
    let backlog = tenant(o, source)
        .and_then(|t| t.backlog.as_ref())
        .map_or(0, |b| b.subscriber_backlog());
    (backlog > 0).then(|| {
        (
            reasons::SUBSCRIBER_BACKLOG,
            format!(
                "the write cutover waits: subscribers on {} have {backlog} messages not consumed \
                 yet (their exclusive or auto-delete queues would be dropped with them when they \
                 move)",
                describe(source)
            ),
        )
    })
}

/// R-cutover, the desired state of `SingleWriteDualRead` before subscribers move: the Service
/// routes to the destination (still read-only), the source refuses writes and topology changes,
/// publishers still publishing there are closed (so they reconnect to the destination), and the
/// source's final topology is copied.
pub(super) fn cutover_steps(o: &Observed, m: &MigrationStatus) -> Vec<Step> {
    let (s, d) = (&m.source, &m.destination);
    let mut steps = Vec::from_iter(destination_cluster(m));
    steps.push(Step::RouteService {
        to: vec![d.clone()],
    });
    steps.push(Step::FreezeSource { cluster: s.clone() });
    steps.extend(topology_refresh(o, m));
    steps.extend(federation_left(o, m));
    steps
}

/// What moves subscribers, in order: close them, move the tenant's own transfers, then let the
/// destination take writes.
fn move_subscribers_steps(o: &Observed, m: &MigrationStatus) -> Vec<Step> {
    let (s, d) = (&m.source, &m.destination);
    let mut steps = vec![
        Step::CloseSubscribers {
            cluster: s.clone(),
            reason: CUTOVER_REASON.to_string(),
        },
        Step::CopyTransfers {
            from: s.clone(),
            to: d.clone(),
        },
        Step::StopTransfers { cluster: s.clone() },
    ];
    steps.extend(destination_writable(o, m));
    steps
}

/// R-cutover.
pub(super) fn single_write(o: &Observed, now: DateTime<Utc>) -> Decision {
    let mut m = running(o, now);
    let was = with_reverse_flag(o, &mut m);
    let s = m.source.clone();
    let frozen = o.routes_exactly(&[&m.destination]) && writable(o, &s) == Some(false);
    if !frozen {
        m.source_frozen_at = None;
        let mut steps = cutover_steps(o, &m);
        steps.extend(destination_read_only(o, &m));
        let soon = requeue::soon(&m, now);
        let d = Decision::migrating(SingleWriteDualRead, m, steps)
            .progress(
                "moving new connections to the destination; the source stops taking writes"
                    .to_string(),
            )
            .look_again(soon);
        return note_reverse(d, was);
    }
    let since = m
        .source_frozen_at
        .get_or_insert_with(|| to_time(now))
        .clone();
    // Nothing can be routed to a subscriber's queue once the source refuses writes; the settle
    // lets what was routed before reach the subscriber before its connection (and queue) go.
    let no_subscribers = tenant(o, &s).is_some_and(|t| t.subscribers == 0);
    let settles_at = from_time(&since) + SUBSCRIBER_SETTLE;
    let settled = no_subscribers || now >= settles_at;
    let soon = requeue::soon(&m, now);
    let moved = tenant(o, &s).is_some_and(|t| t.subscribers == 0 && t.transfers == 0)
        && writable(o, &m.destination) == Some(true);
    let d = if moved {
        drain::reset(&mut m);
        // The refusal of writes is observed now: only later samples can count.
        drain::account(&mut m, tenant_of(o, &s), now);
        let note = format!(
            "{} refuses writes and its subscribers moved; draining it ({})",
            describe(&s),
            match m.drain_strategy {
                DrainStrategy::Consume => "waiting for consumers",
                DrainStrategy::Shovel => "shovels move the backlog",
            }
        );
        let steps = draining_steps(o, &m);
        Decision::migrating(DrainingSource, m, steps)
            .event(EventType::Normal, events::DRAINING, note.clone())
            .progress(note)
    } else if settled {
        let mut steps = cutover_steps(o, &m);
        steps.extend(move_subscribers_steps(o, &m));
        let note = format!(
            "subscribers move from {} to {}, which takes writes now",
            describe(&m.source),
            describe(&m.destination)
        );
        Decision::migrating(SingleWriteDualRead, m, steps)
            .event(EventType::Normal, events::SUBSCRIBERS_MOVED, note.clone())
            .progress(note)
            .look_again(soon)
    } else {
        let mut steps = cutover_steps(o, &m);
        steps.extend(destination_read_only(o, &m));
        Decision::migrating(SingleWriteDualRead, m, steps)
            .progress(
                "the source refuses writes; subscribers move once what was published for them \
                 has reached them"
                    .to_string(),
            )
            .look_again(requeue::until(
                settles_at,
                now,
                std::time::Duration::from_secs(1),
            ))
    };
    note_reverse(d, was)
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

pub(super) fn draining_steps(o: &Observed, m: &MigrationStatus) -> Vec<Step> {
    let (s, d) = (&m.source, &m.destination);
    let mut steps = Vec::from_iter(destination_cluster(m));
    steps.extend(destination_writable(o, m));
    steps.push(Step::RouteService {
        to: vec![d.clone()],
    });
    // Desired state, asserted on every pass: read-only (this also gives reads back after a
    // `RevokeAll` when messages turned up again), no transfers, no subscriber left behind.
    steps.push(Step::FreezeSource { cluster: s.clone() });
    steps.push(Step::StopTransfers { cluster: s.clone() });
    steps.push(Step::CloseSubscribers {
        cluster: s.clone(),
        reason: CUTOVER_REASON.to_string(),
    });
    steps.extend(federation_left(o, m));
    // Messages that turn up after the source was proven drained (a consumer's unacknowledged
    // ones, returned when it moved) have no consumer left there to take them: they are
    // shovelled over whatever the strategy.
    let consumers_moved = m.phases.iter().any(|p| p.phase == DestinationOnly);
    if m.drain_strategy == DrainStrategy::Shovel || consumers_moved || no_consumer_left(o, m) {
        steps.push(Step::StartShovels {
            from: s.clone(),
            to: d.clone(),
        });
    }
    steps
}

/// A `Consume` drain whose source has messages but no consumer left: its consumers were
/// disconnected after the cutover (the source broker restarted, say) and reconnected through the
/// Service, which routes to the destination now, so none can come back and the backlog would
/// wait forever. It is shovelled instead (and stays so once shovels run).
fn no_consumer_left(o: &Observed, m: &MigrationStatus) -> bool {
    m.drain_strategy == DrainStrategy::Consume
        && tenant(o, &m.source).is_some_and(|t| {
            t.consumers == 0
                && (m.remaining_messages.is_some_and(|n| n > 0) || t.shovels.running > 0)
        })
}

/// When the current stay in `DrainingSource` began.
fn draining_since(m: &MigrationStatus) -> DateTime<Utc> {
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
            "{} drained ({} consecutive fresh empty samples, its queues asked directly): destination only",
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
            let mut msg = format!(
                "{} not drained after {elapsed}s (drainTimeoutSeconds {timeout}): {}; nothing was deleted, still waiting",
                describe(&m.source),
                backlog_note(&m)
            );
            if no_consumer_left(o, &m) {
                msg.push_str("; no consumer is left on the source: shovels move the rest");
            }
            msg
        });
        let mut progress = format!("draining {}: {}", describe(&m.source), backlog_note(&m));
        if no_consumer_left(o, &m) {
            progress.push_str("; no consumer is left on the source, so shovels move the rest");
        }
        if let TenantState::Present(t) = tenant_of(o, &m.source)
            && t.shovels.failed > 0
        {
            progress.push_str(&format!(
                "; {} shovels terminated and are declared again",
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
    let mut steps = Vec::from_iter(destination_cluster(m));
    steps.extend(destination_writable(o, m));
    steps.push(Step::RouteService {
        to: vec![d.clone()],
    });
    steps.extend(federation_left(o, m));
    let source_tenant_gone = matches!(tenant_of(o, s), TenantState::Absent);
    if exists(o, s) && !source_tenant_gone {
        steps.push(Step::StopShovels { from: s.clone() });
        steps.push(Step::RevokeAll { cluster: s.clone() });
        let reason = format!(
            "tiermq: this instance moved to the {} tier; reconnect to the same endpoint",
            m.to
        );
        // The source has nothing left to read: its consumers move now, whatever the policy;
        // `Keep` leaves only idle connections until the source is retired.
        steps.push(match m.connection_policy {
            ConnectionPolicy::Close => Step::CloseConnections {
                cluster: s.clone(),
                reason,
            },
            ConnectionPolicy::Keep => Step::CloseConsumers {
                cluster: s.clone(),
                reason,
            },
        });
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
        m.source_closed_at = None;
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
        if m.source_revoked_at.is_none() {
            m.source_revoked_at = Some(to_time(now));
        }
        // To the millisecond: the requeue wakes the pass that retires the source right then.
        let left_ms =
            requeue::grace_ends(o, Some(&m)).map_or(0, |ends| (ends - now).num_milliseconds());
        let mut steps = destination_only_steps(o, &m);
        if left_ms > 0 {
            let left = (left_ms + 999) / 1000;
            let conns = match tenant_of(o, &m.source) {
                TenantState::Present(t) => format!(", {} source connections open", t.connections),
                _ => String::new(),
            };
            let note = format!(
                "destination only; {} is retired in {left}s{conns}",
                describe(&m.source)
            );
            Decision::migrating(DestinationOnly, m, steps).progress(note)
        } else {
            match retirement(o, &m) {
                Retirement::Go => {
                    let s = m.source.clone();
                    if exists(o, &s) {
                        steps.push(Step::DeleteTenant { cluster: s.clone() });
                    }
                    // Also when its StatefulSet is gone already: a deletion cut short (a crash,
                    // an API error) leaves its other objects, and this pass repeats until the
                    // step succeeded for all of them.
                    if s.kind == ClusterKind::Dedicated {
                        steps.push(Step::DeleteDedicatedCluster { cluster: s.clone() });
                    }
                    let note = format!("grace period over: {} retired", describe(&s));
                    Decision::migrating(Completed, m, steps)
                        .event(EventType::Normal, events::SOURCE_RETIRED, note.clone())
                        .progress(note)
                }
                Retirement::Close => {
                    // Recorded with the close: the next passes wait for a sample taken after it.
                    m.source_closed_at = Some(to_time(now));
                    steps.push(Step::CloseConnections {
                        cluster: m.source.clone(),
                        reason: format!(
                            "{RETIRE_REASON}: this instance moved to the {} tier; reconnect to \
                             the same endpoint",
                            m.to
                        ),
                    });
                    let note = format!(
                        "grace period over: closing the last connections on {} before it is retired",
                        describe(&m.source)
                    );
                    Decision::migrating(DestinationOnly, m, steps).progress(note)
                }
                Retirement::Wait(why) => {
                    let note = format!(
                        "grace period over: {} is retired once {why}",
                        describe(&m.source)
                    );
                    Decision::migrating(DestinationOnly, m, steps).progress(note)
                }
            }
        }
    };
    note_reverse(d, was)
}

/// How the reason starts that clients still connected to a source see when it is retired.
pub const RETIRE_REASON: &str = "tiermq: this cluster is retired for the instance";

/// The next move in retiring a drained source whose grace period is over.
enum Retirement {
    /// Close its connections (first, or again because some are open).
    Close,
    /// Wait for a sample that can tell, saying for what.
    Wait(&'static str),
    /// Delete it: nothing is connected and a sample taken after the last close shows it empty.
    Go,
}

/// R-retire, in short passes that each survive a restart (a crash loop still converges): close
/// the source's connections and record when; then delete once it shows no connection and a
/// sample taken after that close finds no message, by statistics and by its queues. Messages a
/// consumer held unacknowledged return to their queues on the close; such a sample sees them,
/// which sends the conversion back to draining.
fn retirement(o: &Observed, m: &MigrationStatus) -> Retirement {
    if !exists(o, &m.source) {
        return Retirement::Go;
    }
    let t = match tenant_of(o, &m.source) {
        TenantState::Absent => return Retirement::Go,
        TenantState::Unknown => return Retirement::Wait("its broker answers again"),
        TenantState::Present(t) => t,
    };
    let Some(closed_at) = m.source_closed_at.as_ref().map(from_time) else {
        return Retirement::Close;
    };
    if t.connections > 0 {
        return Retirement::Close;
    }
    match &t.backlog {
        Some(b) if b.stats_at > closed_at && b.total() == 0 && b.live_ready == Some(0) => {
            Retirement::Go
        }
        _ => Retirement::Wait("a sample taken after its connections closed shows it empty"),
    }
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
    let steps = vec![Step::RouteService {
        to: vec![m.destination.clone()],
    }];
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
