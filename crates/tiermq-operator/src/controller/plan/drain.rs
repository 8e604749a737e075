//! Drain accounting: when is a cluster provably empty?
//!
//! The management API's counts lag by the statistics interval, so one sample proves nothing. The
//! rule: a cluster is *drained* after [`DRAINED_AFTER`] consecutive **fresh** samples that show 0
//! ready, 0 unacked and 0 delayed messages in every queue, where
//!
//! - samples count only while no message can arrive: the tenant's writes are observed refused
//!   and no federation link is observed on its vhost (a federated queue pulls messages in from
//!   the other cluster). A sample taken while messages can arrive proves nothing about later; as
//!   long as one can, the counter is 0 and no baseline exists;
//! - the first pass that sees every way in closed sets a baseline, `last_sample = now` (operator
//!   clock), and counts nothing: only samples whose broker statistics timestamp is *after* that
//!   observation can show the closed state (this assumes the broker and operator clocks agree to
//!   well within the statistics interval, as NTP gives);
//! - a sample is fresh when its timestamp is strictly after `last_sample`; a stale sample (same
//!   or older timestamp, or none, or an unreachable broker) changes nothing;
//! - a fresh non-empty sample resets the counter to 0.
//!
//! The same fields of `status.migration` serve the source during a conversion and the destination
//! while an abort drains it back (`Aborting`).

use chrono::{DateTime, Utc};
use tiermq_crd::MigrationStatus;

use super::observed::{Access, TenantState};
use super::time::{from_time, to_time};

/// Consecutive fresh empty samples needed to call a cluster drained.
pub const DRAINED_AFTER: u32 = 2;

/// Feed the drained cluster's tenant observation into the drain fields of `m`.
pub fn account(m: &mut MigrationStatus, tenant: TenantState<'_>, now: DateTime<Utc>) {
    let t = match tenant {
        TenantState::Present(t) => t,
        // Absent or unknown: nothing can be learned; keep what is known.
        TenantState::Absent | TenantState::Unknown => return,
    };
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
    let total = sample.total();
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
    let empty = sample.is_empty();
    m.empty_samples = if empty {
        m.empty_samples.saturating_add(1)
    } else {
        0
    };
}

/// The drained cluster is proven empty.
pub fn drained(m: &MigrationStatus) -> bool {
    m.empty_samples >= DRAINED_AFTER
}

/// Forget everything counted (a new drain begins).
pub fn reset(m: &mut MigrationStatus) {
    m.empty_samples = 0;
    m.last_sample = None;
    m.remaining_messages = None;
    m.drain_rate = None;
    m.eta_seconds = None;
}
