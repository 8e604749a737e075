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
//! - **A transient non-exclusive queue moving onto a RabbitMQ 4.x cluster that does not permit
//!   them** (`deprecated_features.permit.transient_nonexcl_queues = false`). 4.x deprecates such
//!   queues; 4.0 permits them by default. A cluster that does not refuses clients declaring them
//!   and skips them when definitions are imported (checked on 4.0.5), so their clients would
//!   fail on the destination.
//!
//! What a move onto RabbitMQ 4.x changes without holding the flip ([`version_notes`], reported
//! in a Warning Event when the conversion starts): classic mirroring policy keys are dropped
//! (4.x refuses them; the broker step's copy does it), and transient non-exclusive queues move
//! although 4.x deprecates them.

use tiermq_crd::conditions::reasons;
use tiermq_crd::{ClusterKind, ClusterRef};

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
    let dst = other_cluster(o, r);
    if dst.1.is_some_and(|m| m >= 4)
        && dst.0.refuses_transient_queues
        && let Some(q) = sample.queues.iter().find(|q| q.transient)
    {
        return Some((
            reasons::QUEUE_CANNOT_MOVE,
            format!(
                "queue {:?} on {} is transient (not durable) and not exclusive; {} runs \
                 RabbitMQ {}.x and does not permit such queues \
                 (deprecated_features.permit.transient_nonexcl_queues = false): it would skip \
                 the queue and refuse its clients, so the flip waits: declare the queue durable \
                 (or exclusive), or permit them on the destination",
                q.queue,
                describe(r),
                describe(&dst.0.cluster),
                dst.1.unwrap_or_default()
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

/// The other cluster of a conversion whose source is `r`, with the RabbitMQ major version it
/// runs or will run: its StatefulSet's image, or for a dedicated cluster not created yet, the
/// image `spec.dedicated` names.
fn other_cluster<'a>(
    o: &'a Observed,
    r: &ClusterRef,
) -> (&'a super::observed::ClusterObservation, Option<u32>) {
    let kind = match r.kind {
        ClusterKind::Shared => ClusterKind::Dedicated,
        ClusterKind::Dedicated => ClusterKind::Shared,
    };
    let c = o.cluster(kind);
    let major = c.rabbitmq_major.or_else(|| {
        (kind == ClusterKind::Dedicated)
            .then(|| tiermq_crd::versions::image_version(&o.spec.dedicated.image))
            .flatten()
            .map(|v| v.major)
    });
    (c, major)
}

/// What moving the tenant from `r` onto the other cluster changes because that cluster runs
/// RabbitMQ 4.x (see the module docs), as one message; `None` when nothing changes.
pub fn version_notes(o: &Observed, r: &ClusterRef) -> Option<String> {
    let (dst, major) = other_cluster(o, r);
    let major = major.filter(|m| *m >= 4)?;
    let t = tenant(o, r)?;
    let mut notes = Vec::new();
    if !t.mirroring_policies.is_empty() {
        notes.push(format!(
            "classic queue mirroring keys are dropped from policies {} (removed in RabbitMQ \
             4.0, refused there; quorum queues replicate instead)",
            t.mirroring_policies.join(", ")
        ));
    }
    let transient: Vec<String> = t
        .backlog
        .iter()
        .flat_map(|b| &b.queues)
        .filter(|q| q.transient)
        .map(|q| format!("{:?}", q.queue))
        .collect();
    if !transient.is_empty() {
        notes.push(format!(
            "transient non-exclusive queues {} move, but RabbitMQ 4.x deprecates them (4.0 \
             permits them by default; declare them durable or exclusive before a cluster \
             stops permitting them)",
            transient.join(", ")
        ));
    }
    (!notes.is_empty()).then(|| {
        format!(
            "{} runs RabbitMQ {major}.x: {}",
            describe(&dst.cluster),
            notes.join("; ")
        )
    })
}
