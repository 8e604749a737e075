//! Queues a conversion cannot move without losing messages: such a flip is held (before it starts,
//! and again right before the write cutover, since clients may declare queues meanwhile) with a
//! `ConversionBlocked` condition that names the queue and the way out. Never a silent loss.
//!
//! - **A stream with history.** Consuming a stream does not remove its messages, so its history
//!   would stay on the source and be deleted with it, and consumers reading from `first` or an
//!   offset would see other messages on the destination.
//! - **A message TTL without dead-lettering, shorter than [`MIN_SAFE_TTL_SECONDS`]**, unless
//!   `spec.migration.allowLimitDrops` says the tenant accepts it. Messages published after the
//!   write cutover wait on the destination until the source's consumers move there (once the
//!   source is drained); a short TTL could expire them in that time, and without a dead-letter
//!   exchange an expired message is gone. With a dead-letter exchange an expired message is
//!   dead-lettered, which is the queue's own behaviour either way.
//! - **A length limit with the `drop-head` overflow** (the default), unless
//!   `spec.migration.allowLimitDrops`. For the same reason the destination's queue grows while
//!   consumers are still on the source, and at its limit it drops (or dead-letters) its oldest
//!   messages, which a single cluster with its consumers would have delivered. With
//!   `reject-publish` or `reject-publish-dlx` nothing already taken is dropped: publishers see
//!   the refusal (a negative confirm), so such queues move.

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
    if o.spec.migration.allow_limit_drops {
        return None;
    }
    if let Some(q) = sample.queues.iter().find(|q| {
        !q.subscriber
            && !q.dead_letters
            && q.ttl_ms
                .is_some_and(|ttl| ttl < MIN_SAFE_TTL_SECONDS * 1000)
    }) {
        return Some((
            reasons::QUEUE_CANNOT_MOVE,
            format!(
                "queue {:?} on {} drops messages older than {} ms (message TTL, no dead-letter \
                 exchange); messages may wait longer than that while consumers move, so the flip \
                 waits: raise the TTL to at least {MIN_SAFE_TTL_SECONDS} s, add a dead-letter \
                 exchange, or set spec.migration.allowLimitDrops: true",
                q.queue,
                describe(r),
                q.ttl_ms.unwrap_or_default()
            ),
        ));
    }
    if let Some(q) = sample
        .queues
        .iter()
        .find(|q| !q.subscriber && q.drops_oldest)
    {
        return Some((
            reasons::QUEUE_CANNOT_MOVE,
            format!(
                "queue {:?} on {} has a length limit that drops its oldest messages (overflow \
                 drop-head); messages pile up on the destination while consumers move, so the \
                 flip waits: set the overflow to reject-publish (publishers see refusals \
                 instead), remove the limit for the conversion, or set \
                 spec.migration.allowLimitDrops: true",
                q.queue,
                describe(r)
            ),
        ));
    }
    None
}
