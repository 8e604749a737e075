//! When to look at an instance again: the planner's delay per phase, and the cap the drain poll
//! puts on it while a conversion runs (the operator's own status writes do not trigger
//! reconciles, so the requeue is what moves a conversion along and samples a draining cluster).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tiermq_crd::{MigrationPhase, MigrationStatus};

use super::Decision;
use super::observed::Observed;
use super::output::Plan;
use super::time::from_time;

use MigrationPhase::*;

/// Delay after a pass that recorded a new phase (milliseconds).
pub(super) const PHASE_CHANGE_MS: u64 = 100;

/// Delay after a pass that ran the steps the phase waits for (the next observation should show
/// them done): the phase moves on without waiting a whole poll.
pub(super) const SOON: Duration = Duration::from_millis(200);

/// Added to a wait for a known instant (the end of the grace period, of the subscriber settle)
/// so the pass lands after it, not a tick before.
const PAST: Duration = Duration::from_millis(50);

/// How soon to look again after a pass that ran the steps the current phase waits for:
/// [`SOON`] while the phase is young, then a tenth of its age, so a phase that does not move on
/// as expected (a step that succeeds but changes nothing observed) backs off rather than spins.
pub(super) fn soon(m: &MigrationStatus, now: DateTime<Utc>) -> Duration {
    let entered = m
        .phases
        .last()
        .map_or_else(|| from_time(&m.started), |p| from_time(&p.started));
    let age_ms = (now - entered).num_milliseconds().max(0) as u64;
    Duration::from_millis(age_ms / 10).max(SOON)
}

/// The time from `now` until `at` (plus [`PAST`]), at least [`SOON`] and at most `cap`.
pub(super) fn until(at: DateTime<Utc>, now: DateTime<Utc>, cap: Duration) -> Duration {
    let ms = (at - now).num_milliseconds().max(0) as u64;
    (Duration::from_millis(ms) + PAST).clamp(SOON, cap)
}

/// The planner's delay for decision `d` taken from the recorded phase `recorded`.
pub(super) fn requeue(
    o: &Observed,
    recorded: MigrationPhase,
    d: &Decision,
    m: Option<&MigrationStatus>,
    serving_ok: bool,
    now: DateTime<Utc>,
) -> Duration {
    let secs = |s: u64| Duration::from_secs(s);
    if d.deleting {
        return secs(5);
    }
    // A recorded phase change is acted on at once: the next pass reads the instance fresh
    // (never the cache), so nothing needs to settle first. A short floor, not zero, so a planner
    // bug that flips between two phases cannot spin the API server.
    if d.phase != recorded {
        return Duration::from_millis(PHASE_CHANGE_MS);
    }
    let base = match d.phase {
        Stable if serving_ok => secs(300),
        Stable => secs(10),
        // Waiting for the maintenance window: look again when it opens (at most 5 min away, so a
        // changed window or clock is seen).
        Blocked => match d.window_opens {
            Some(opens) => until(opens, now, secs(300)).max(secs(1)),
            None => secs(30),
        },
        PreparingDestination => secs(10),
        DualWriteDualRead => secs(2),
        // The cutover pauses writes until subscribers moved: look again soon.
        SingleWriteDualRead => secs(1),
        DrainingSource | Aborting => secs(5),
        // The grace period is waited out to the millisecond: it is spent between passes.
        DestinationOnly => match grace_ends(o, m) {
            Some(ends) if ends > now => until(ends, now, secs(30)),
            _ => secs(1),
        },
        Completed => secs(1),
    };
    // A phase that knows when its next observation can differ (steps just run, a settle
    // ending, auto-tiering's next sample) says so; never later than the phase's own delay.
    d.look_again.map_or(base, |l| base.min(l))
}

/// When the grace period of a revoked source ends (`None` before the source was revoked).
pub(super) fn grace_ends(o: &Observed, m: Option<&MigrationStatus>) -> Option<DateTime<Utc>> {
    let m = m?;
    let revoked = from_time(m.source_revoked_at.as_ref()?);
    let grace = super::drain::grace_seconds(o.spec.migration.grace_period_seconds, m);
    Some(revoked + chrono::TimeDelta::seconds(grace))
}

/// The plan's delay, but no longer than `drain_poll_seconds` while a conversion runs; and while
/// the source waits for the fresh sample that confirms it empty (to count as drained, to be
/// retired), no longer than the brokers' statistics interval (`stats_interval_ms`, when the next
/// sample can exist): polling for those at the drain poll would add up to a poll per sample.
pub fn requeue_after(p: &Plan, drain_poll_seconds: u64, stats_interval_ms: u32) -> Duration {
    let poll = Duration::from_secs(drain_poll_seconds.max(1));
    match p.phase {
        DrainingSource | DestinationOnly if confirming(p) => p
            .requeue_after
            .min(poll)
            .min(Duration::from_millis(u64::from(stats_interval_ms)).max(SOON)),
        PreparingDestination | DualWriteDualRead | SingleWriteDualRead | DrainingSource
        | Aborting | DestinationOnly | Completed => p.requeue_after.min(poll),
        Stable | Blocked => p.requeue_after,
    }
}

/// Only a sample taken after some instant is missing: in `DrainingSource`, the source takes no
/// more messages (a drain baseline exists) and its last fresh sample, if any, showed it empty;
/// in `DestinationOnly`, the source's last connections were closed for its retirement, which
/// waits for a sample taken after that.
fn confirming(p: &Plan) -> bool {
    p.status.migration.as_ref().is_some_and(|m| match p.phase {
        DrainingSource => m.last_sample.is_some() && m.remaining_messages.is_none_or(|r| r == 0),
        _ => m.source_closed_at.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(phase: MigrationPhase, secs: u64, m: Option<MigrationStatus>) -> Plan {
        let mut p = Plan {
            phase,
            steps: vec![],
            status: Default::default(),
            events: vec![],
            requeue_after: Duration::from_secs(secs),
            finished: None,
        };
        p.status.migration = m;
        p
    }

    /// A drain with a baseline and `remaining` messages in its last fresh sample.
    fn draining(remaining: Option<i64>) -> MigrationStatus {
        let ref_ = |kind| serde_json::json!({"kind": kind, "namespace": "ns", "name": "c"});
        let mut m: MigrationStatus = serde_json::from_value(serde_json::json!({
            "from": "Dedicated", "to": "Shared",
            "source": ref_("Dedicated"), "destination": ref_("Shared"),
            "drainStrategy": "Consume", "connectionPolicy": "Close",
            "started": "2026-12-02T04:00:00Z",
            "lastSample": "2026-12-02T04:00:10.250000Z",
        }))
        .unwrap();
        m.remaining_messages = remaining;
        m
    }

    #[test]
    fn draining_requeues_at_the_drain_poll() {
        let m = Some(draining(Some(700)));
        assert_eq!(
            requeue_after(&plan(DrainingSource, 5, m), 2, 500),
            Duration::from_secs(2)
        );
        assert_eq!(
            requeue_after(&plan(Stable, 300, None), 2, 500),
            Duration::from_secs(300)
        );
    }

    /// Once a fresh sample showed the source empty (or before the first after the baseline),
    /// the confirming sample is awaited for a statistics interval, not a drain poll.
    #[test]
    fn a_drain_awaiting_its_confirming_sample_looks_again_after_a_statistics_interval() {
        for remaining in [Some(0), None] {
            let p = plan(DrainingSource, 5, Some(draining(remaining)));
            assert_eq!(requeue_after(&p, 2, 500), Duration::from_millis(500));
            // Never beyond the poll, never below the floor.
            assert_eq!(requeue_after(&p, 2, 5_000), Duration::from_secs(2));
            assert_eq!(requeue_after(&p, 2, 10), SOON);
        }
        // Retiring: after the last connections were closed, a sample taken after that.
        let mut m = draining(Some(0));
        let p = plan(DestinationOnly, 1, Some(m.clone()));
        assert_eq!(requeue_after(&p, 2, 500), Duration::from_secs(1));
        m.source_closed_at = m.last_sample.clone();
        let p = plan(DestinationOnly, 1, Some(m));
        assert_eq!(requeue_after(&p, 2, 500), Duration::from_millis(500));
    }

    #[test]
    fn a_wait_for_an_instant_lands_just_after_it_within_its_bounds() {
        let now = chrono::Utc::now();
        let ms = chrono::TimeDelta::milliseconds;
        assert_eq!(
            until(now + ms(1_234), now, Duration::from_secs(30)),
            Duration::from_millis(1_284)
        );
        assert_eq!(until(now - ms(5), now, Duration::from_secs(30)), SOON);
        assert_eq!(
            until(now + ms(60_000), now, Duration::from_secs(30)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn soon_backs_off_with_the_age_of_the_phase() {
        let mut m = draining(None);
        let entered = from_time(&m.started);
        assert_eq!(
            soon(&m, entered + chrono::TimeDelta::milliseconds(300)),
            SOON
        );
        assert_eq!(
            soon(&m, entered + chrono::TimeDelta::seconds(60)),
            Duration::from_secs(6)
        );
        m.phases.push(tiermq_crd::PhaseTiming {
            phase: DrainingSource,
            started: super::super::time::to_time(entered + chrono::TimeDelta::seconds(59)),
        });
        assert_eq!(soon(&m, entered + chrono::TimeDelta::seconds(60)), SOON);
    }
}
