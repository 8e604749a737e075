//! Drain accounting: when is the source provably empty?
//!
//! Two sources of counts, and neither is trusted alone:
//!
//! - **Statistics** (the management API): every queue's ready, unacknowledged, delayed and
//!   dead-letter-pending messages, but as of the last statistics emission, which lags by the
//!   statistics interval and further on a loaded broker.
//! - **The queues themselves** (`live_ready`: a passive `queue.declare` of every queue, right
//!   after the statistics were read): ready messages now, but blind to unacknowledged ones.
//!
//! The rule: the source is *drained* after [`DRAINED_AFTER`] consecutive **fresh** samples that
//! show 0 messages in every queue by the statistics **and** 0 ready messages by the queues, where
//!
//! - samples count only while no message can arrive: the tenant's writes are observed refused
//!   and no federation link is observed on its vhost. As long as one can arrive, the counter is
//!   0 and no baseline exists;
//! - the first pass that sees every way in closed sets a baseline, `last_sample = now` (operator
//!   clock), and counts nothing: only samples whose timestamp is *after* that observation count;
//! - a sample is fresh when its timestamp is strictly after `last_sample`; a stale sample (same
//!   or older timestamp, or none, or an unreachable broker) changes nothing;
//! - a fresh sample with messages by either count resets the counter to 0.
//!
//! Nothing is deleted on this proof alone: retiring the source closes its connections (so
//! unacknowledged messages return to their queues) and asks every queue once more.
//!
//! **Statistics lag, measured.** Whenever one count says empty and the other does not (the
//! statistics are behind), `stats_behind_since` remembers since when; once they agree again the
//! duration is a measured lag, and `stats_lag_seconds` keeps the longest. The grace
//! period before the source is retired is never shorter than twice that
//! ([`grace_seconds`]).

use chrono::{DateTime, Utc};
use tiermq_crd::MigrationStatus;

use super::observed::{Access, TenantState};
use super::time::{from_time, to_time};

pub use tiermq_broker::steps::DRAINED_AFTER;

/// A statistics lag measured over more than this is discarded (see `track_stats_lag`).
pub const MAX_MEASURED_LAG_SECONDS: i64 = 600;

/// Feed the source's tenant observation into the drain fields of `m`.
pub fn account(m: &mut MigrationStatus, tenant: TenantState<'_>, now: DateTime<Utc>) {
    let t = match tenant {
        TenantState::Present(t) => t,
        // Absent or unknown: nothing can be learned; keep what is known.
        TenantState::Absent | TenantState::Unknown => return,
    };
    track_stats_lag(m, t.backlog.as_ref(), now);
    if t.access == Access::ReadWrite || t.federated {
        m.empty_samples = 0;
        m.last_sample = None;
        if let Some(s) = &t.backlog {
            m.remaining_messages = Some(s.total());
        }
        return;
    }
    let Some(baseline) = m.last_sample.as_ref().map(from_time) else {
        m.empty_samples = 0;
        m.last_sample = Some(to_time(now));
        if let Some(s) = &t.backlog {
            m.remaining_messages = Some(s.total());
        }
        return;
    };
    let Some(sample) = t.backlog.as_ref().filter(|s| s.stats_at > baseline) else {
        return;
    };
    let total = sample.total().max(sample.live_ready.unwrap_or(0));
    let seconds = (sample.stats_at - baseline).num_milliseconds() as f64 / 1000.0;
    let derived = match m.remaining_messages {
        Some(prev) if seconds > 0.0 && prev >= total => Some((prev - total) as f64 / seconds),
        _ => None,
    };
    let rate = sample
        .drain_rate
        .filter(|r| r.is_finite() && *r >= 0.0)
        .or(derived);
    m.drain_rate = rate;
    m.eta_seconds = match rate {
        _ if total == 0 => Some(0),
        Some(r) if r > 0.0 => Some((total as f64 / r).ceil() as i64),
        _ => None,
    };
    m.remaining_messages = Some(total);
    m.last_sample = Some(to_time(sample.stats_at));
    // The queues must confirm what the statistics say: an unasked or unanswered queue counts as
    // holding messages.
    let empty = sample.is_empty() && sample.live_ready == Some(0);
    m.empty_samples = if empty {
        m.empty_samples.saturating_add(1)
    } else {
        0
    };
}

/// Measures how far the statistics trail the queues (see the module docs).
fn track_stats_lag(
    m: &mut MigrationStatus,
    sample: Option<&super::observed::BacklogSample>,
    now: DateTime<Utc>,
) {
    let Some((stats, live)) = sample.and_then(|s| {
        let ready: i64 = s
            .queues
            .iter()
            .map(|q| q.ready.max(0) + q.delayed.max(0))
            .sum();
        s.live_ready.map(|live| (ready, live))
    }) else {
        return;
    };
    // While draining, counts only fall, so "one says empty, the other does not" means the
    // statistics have not caught up (a moving backlog never compares equal, so counts are not
    // compared otherwise).
    let behind = (stats == 0) != (live == 0);
    match (&m.stats_behind_since, behind) {
        (None, true) => m.stats_behind_since = Some(to_time(now)),
        (Some(since), false) => {
            let lag = (now - from_time(since)).num_seconds().max(0);
            // Longer than this, the passes were too far apart to tell lag from absence (an
            // operator down for a while): no measurement.
            if lag <= MAX_MEASURED_LAG_SECONDS {
                m.stats_lag_seconds = Some(m.stats_lag_seconds.map_or(lag, |l| l.max(lag)));
            }
            m.stats_behind_since = None;
        }
        _ => {}
    }
}

/// The cluster is proven empty.
pub fn drained(m: &MigrationStatus) -> bool {
    m.empty_samples >= DRAINED_AFTER
}

/// The grace period before the source is retired: the spec's, but never shorter than twice the
/// statistics lag measured during this conversion.
pub fn grace_seconds(spec_grace: i64, m: &MigrationStatus) -> i64 {
    spec_grace.max(2 * m.stats_lag_seconds.unwrap_or(0))
}

/// Forget everything counted (a new drain begins).
pub fn reset(m: &mut MigrationStatus) {
    m.empty_samples = 0;
    m.last_sample = None;
    m.remaining_messages = None;
    m.drain_rate = None;
    m.eta_seconds = None;
}
