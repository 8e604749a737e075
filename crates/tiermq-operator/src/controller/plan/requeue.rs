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
    match d.phase {
        Stable if serving_ok => d.look_again.map_or(secs(300), |l| l.min(secs(300))),
        Stable => secs(10),
        // Waiting for the maintenance window: look again when it opens (at most 5 min away, so a
        // changed window or clock is seen).
        Blocked => match d.window_opens {
            Some(opens) => {
                let until = (opens - now).num_milliseconds().max(0) as u64;
                Duration::from_millis(until).clamp(secs(1), secs(300))
            }
            None => secs(30),
        },
        PreparingDestination => secs(10),
        DualWriteDualRead => secs(2),
        // The cutover pauses writes until subscribers moved: look again soon.
        SingleWriteDualRead => secs(1),
        DrainingSource | Aborting => secs(5),
        DestinationOnly => {
            let left = m
                .and_then(|m| Some((m, m.source_revoked_at.as_ref()?)))
                .map_or(0, |(m, t)| {
                    super::drain::grace_seconds(o.spec.migration.grace_period_seconds, m)
                        - (now - from_time(t)).num_seconds()
                });
            secs(left.clamp(1, 30) as u64)
        }
        Completed => secs(1),
    }
}

/// The plan's delay, but no longer than `drain_poll_seconds` while a conversion runs.
pub fn requeue_after(p: &Plan, drain_poll_seconds: u64) -> Duration {
    let poll = Duration::from_secs(drain_poll_seconds.max(1));
    match p.phase {
        PreparingDestination | DualWriteDualRead | SingleWriteDualRead | DrainingSource
        | Aborting | DestinationOnly | Completed => p.requeue_after.min(poll),
        Stable | Blocked => p.requeue_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draining_requeues_at_the_drain_poll() {
        let p = |phase, secs| Plan {
            phase,
            steps: vec![],
            status: Default::default(),
            events: vec![],
            requeue_after: Duration::from_secs(secs),
            finished: None,
        };
        assert_eq!(
            requeue_after(&p(DrainingSource, 5), 2),
            Duration::from_secs(2)
        );
        assert_eq!(requeue_after(&p(Stable, 300), 2), Duration::from_secs(300));
    }
}
