//! Queues a conversion cannot move without losing messages: such a flip is held (before it starts,
//! and again right before the write cutover, since clients may declare queues meanwhile) with a
//! `ConversionBlocked` condition that names the queue and the way out. Never a silent loss.
//!
//! - **A stream with history.** Consuming a stream does not remove its messages, so its history
//!   would stay on the source and be deleted with it, and consumers reading from `first` or an
//!   offset would see other messages on the destination.
//! - **A message TTL without dead-lettering, shorter than [`MIN_SAFE_TTL_SECONDS`]**, unless
//!   `spec.migration.allowMessageExpiry` says the tenant accepts it. Messages published after the
//!   write cutover wait on the destination until the source's consumers move there (once the
//!   source is drained); a short TTL could expire them in that time, and without a dead-letter
//!   exchange an expired message is gone. With a dead-letter exchange an expired message is
//!   dead-lettered, which is the queue's own behaviour either way.

use tiermq_crd::ClusterRef;
use tiermq_crd::conditions::reasons;

use super::observed::Observed;
use super::roles::{describe, tenant};

/// The shortest message TTL (without dead-lettering) a conversion moves without the tenant's
/// consent: several times what consumers may wait on the destination (two fresh statistics
/// samples of the drain proof plus a reconnect, 20–30 s with RabbitMQ's default statistics
/// interval).
pub const MIN_SAFE_TTL_SECONDS: u64 = 120;

/// The first queue on `r` that cannot move, as (reason, message with the way out).
pub fn cannot_move(o: &Observed, r: &ClusterRef) -> Option<(&'static str, String)> {
    let sample = tenant(o, r)?.backlog.as_ref()?;
    if let Some(q) = sample.queues.iter().find(|q| q.stream && q.ready > 0) {
        return Some((
            reasons::QUEUE_CANNOT_MOVE,
            format!(
                "stream {:?} on {} holds {} messages of history, which a conversion cannot move \
                 with their offsets; the flip waits until the stream is empty (retention, or \
                 delete and re-create it) — flip spec.tier back to withdraw",
                q.queue,
                describe(r),
                q.ready
            ),
        ));
    }
    if !o.spec.migration.allow_message_expiry
        && let Some(q) = sample.queues.iter().find(|q| {
            !q.dead_letters
                && q.ttl_ms
                    .is_some_and(|ttl| ttl < MIN_SAFE_TTL_SECONDS * 1000)
        })
    {
        return Some((
            reasons::QUEUE_CANNOT_MOVE,
            format!(
                "queue {:?} on {} drops messages older than {} ms (message TTL, no dead-letter \
                 exchange); messages may wait longer than that while consumers move, so the flip \
                 waits: raise the TTL to at least {MIN_SAFE_TTL_SECONDS} s, add a dead-letter \
                 exchange, or set spec.migration.allowMessageExpiry: true",
                q.queue,
                describe(r),
                q.ttl_ms.unwrap_or_default()
            ),
        ));
    }
    None
}
