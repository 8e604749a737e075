//! How much the source still holds, and when it counts as drained.
//!
//! **Freshness.** The management API's counts come from statistics each queue emits every
//! `collect_statistics_interval` (5 s by default; quorum queues every `quorum_tick_interval`,
//! also 5 s), stored in sample buckets (`sample_retention_policies`, 5 s wide by default); the
//! counts shown change once per bucket. Measured on 3.10 with the defaults: a change shows up
//! after about 5 s; a new queue's counts after about 5 s too. So one reading may be up to
//! interval + bucket old. A source counts as drained only after
//! [`DrainCriteria::required_samples`] consecutive readings that show every queue empty, each
//! taken at least [`DrainCriteria::min_spacing`] after the previous counted one. With the spacing
//! above that lag, the later reading reflects any message that existed when the earlier one was
//! taken. A queue that has not reported statistics yet has unknown counts and never reads as
//! empty.
//!
//! **Delayed messages.** Messages waiting in a TTL / dead-letter "delay queue" (a queue with a
//! message TTL and a dead-letter exchange, by argument or policy, and no consumers) are ready
//! messages of that queue until they expire, so they count in `total_ready` like any other and
//! keep the source from reading as drained; they are also summed in `delayed`. When one expires
//! it is dead-lettered into its target queue, where it counts again until consumed. Messages with
//! a per-message TTL look like ordinary ready messages.
//!
//! **ETA.** `remaining / drain_rate`, where the drain rate is the acknowledge and no-ack delivery
//! rate over all queues; for delayed messages the queue's TTL is taken as the (upper bound of the)
//! time until they become consumable, so the ETA is at least `TTL + delayed / drain_rate` for the
//! longest TTL holding messages. Unknown (`None`) while nothing consumes. It is an estimate from
//! current rates, not a promise.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::ManagementClient;
use crate::error::BrokerError;
use crate::model::QueueInfo;

/// One queue's share of the backlog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueBacklog {
    /// The queue's name.
    pub name: String,
    /// `classic`, `quorum` or `stream` (`classic` when the API names none).
    pub queue_type: String,
    /// Exclusive (its messages belong to the owning connection).
    pub exclusive: bool,
    /// Auto-delete (deleted with its last consumer).
    pub auto_delete: bool,
    /// Not durable (transient): gone with a broker restart. RabbitMQ 4.x deprecates transient
    /// queues that are not exclusive.
    #[serde(default)]
    pub transient: bool,
    /// `false` until the queue's first statistics emission: its counts are unknown.
    pub stats_known: bool,
    /// Messages ready for delivery (0 while `stats_known` is false).
    pub ready: u64,
    /// Messages delivered and not yet acknowledged (0 while `stats_known` is false).
    pub unacked: u64,
    /// Quorum queue messages waiting for at-least-once dead-lettering: held by the queue,
    /// counted in neither `ready` nor `unacked`.
    pub dlx_pending: u64,
    /// Consumers on the queue.
    pub consumers: u64,
    /// Messages per second acknowledged or delivered without ack.
    pub drain_rate: f64,
    /// Messages per second published into the queue.
    pub publish_rate: f64,
    /// For a delay queue: its message TTL in milliseconds.
    pub delay_ttl_ms: Option<u64>,
    /// The queue's message TTL in milliseconds (argument or policy), delay queue or not.
    pub message_ttl_ms: Option<u64>,
    /// Expired or rejected messages go to a dead-letter exchange (argument or policy).
    pub dead_letters: bool,
    /// A length limit (`max-length` or `max-length-bytes`) with the `drop-head` overflow (the
    /// default): when it is reached the oldest message is dropped (or dead-lettered).
    #[serde(default)]
    pub drops_oldest: bool,
}

impl QueueBacklog {
    /// Messages the queue holds: ready, unacknowledged and waiting to be dead-lettered.
    pub fn remaining(&self) -> u64 {
        self.ready + self.unacked + self.dlx_pending
    }

    /// A queue whose messages belong to one connection (exclusive or auto-delete).
    pub fn is_subscriber_queue(&self) -> bool {
        self.exclusive || self.auto_delete
    }

    fn from_info(q: &QueueInfo) -> Self {
        let stats = q.message_stats.clone().unwrap_or_default();
        let rate = |r: Option<crate::model::Rate>| r.map(|r| r.rate).unwrap_or(0.0);
        let consumers = q.consumers.unwrap_or(0);
        let ttl = q.setting("message-ttl").and_then(Value::as_u64);
        let dlx = q.setting("dead-letter-exchange").is_some();
        let limited = q.setting("max-length").is_some() || q.setting("max-length-bytes").is_some();
        let overflow = q.setting("overflow").and_then(Value::as_str);
        QueueBacklog {
            name: q.name.clone(),
            queue_type: q.queue_type.clone().unwrap_or_else(|| "classic".into()),
            exclusive: q.exclusive,
            auto_delete: q.auto_delete,
            transient: !q.durable,
            stats_known: q.messages_ready.is_some() && q.messages_unacknowledged.is_some(),
            ready: q.messages_ready.unwrap_or(0),
            unacked: q.messages_unacknowledged.unwrap_or(0),
            dlx_pending: q.messages_dlx.unwrap_or(0),
            consumers,
            drain_rate: rate(stats.ack_details)
                + rate(stats.deliver_no_ack_details)
                + rate(stats.get_no_ack_details),
            publish_rate: rate(stats.publish_details),
            delay_ttl_ms: if dlx && consumers == 0 { ttl } else { None },
            message_ttl_ms: ttl,
            dead_letters: dlx,
            drops_oldest: limited && overflow.is_none_or(|o| o == "drop-head"),
        }
    }
}

/// A reading of a vhost's backlog: plain data for status, the state machine and metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backlog {
    /// The cluster's name, as the client was configured.
    pub cluster: String,
    /// The vhost read.
    pub vhost: String,
    /// When the reading was taken (the operator's clock).
    pub sampled_at: DateTime<Utc>,
    /// Every queue of the vhost.
    pub queues: Vec<QueueBacklog>,
    /// Ready messages over all queues.
    pub total_ready: u64,
    /// Unacknowledged messages over all queues.
    pub total_unacked: u64,
    /// Messages waiting for at-least-once dead-lettering (quorum queues).
    pub total_dlx_pending: u64,
    /// Of `total_ready`, the messages waiting in delay queues.
    pub delayed: u64,
    /// Consumers over all queues.
    pub consumers: u64,
    /// Messages per second leaving the vhost's queues (acknowledged, or delivered or fetched
    /// without ack).
    pub drain_rate: f64,
    /// Messages per second published into the vhost's queues.
    pub publish_rate: f64,
    /// Estimated seconds until the vhost is empty: 0 when it is, `None` when nothing drains.
    pub eta_seconds: Option<f64>,
    /// Every queue had statistics; otherwise the totals are a lower bound.
    pub complete: bool,
}

impl Backlog {
    /// Builds a reading from the queue list (pure).
    pub fn from_queues(
        cluster: &str,
        vhost: &str,
        sampled_at: DateTime<Utc>,
        queues: &[QueueInfo],
    ) -> Self {
        let queues: Vec<QueueBacklog> = queues.iter().map(QueueBacklog::from_info).collect();
        let sum = |f: fn(&QueueBacklog) -> u64| queues.iter().map(f).sum::<u64>();
        let mut b = Backlog {
            cluster: cluster.to_string(),
            vhost: vhost.to_string(),
            sampled_at,
            total_ready: sum(|q| q.ready),
            total_unacked: sum(|q| q.unacked),
            total_dlx_pending: sum(|q| q.dlx_pending),
            delayed: sum(|q| if q.delay_ttl_ms.is_some() { q.ready } else { 0 }),
            consumers: sum(|q| q.consumers),
            drain_rate: queues.iter().map(|q| q.drain_rate).sum(),
            publish_rate: queues.iter().map(|q| q.publish_rate).sum(),
            complete: queues.iter().all(|q| q.stats_known),
            eta_seconds: None,
            queues,
        };
        b.eta_seconds = b.estimate_eta();
        b
    }

    /// Ready, unacknowledged and dead-letter-pending messages over all queues.
    pub fn remaining(&self) -> u64 {
        self.total_ready + self.total_unacked + self.total_dlx_pending
    }

    /// This reading shows every queue, with known counts, empty.
    pub fn is_empty(&self) -> bool {
        self.complete && self.remaining() == 0
    }

    fn estimate_eta(&self) -> Option<f64> {
        if self.is_empty() {
            return Some(0.0);
        }
        if self.drain_rate <= 0.0 {
            return None;
        }
        let by_rate = self.remaining() as f64 / self.drain_rate;
        let longest_delay = self
            .queues
            .iter()
            .filter(|q| q.ready > 0)
            .filter_map(|q| q.delay_ttl_ms)
            .max()
            .map(|ms| ms as f64 / 1000.0 + self.delayed as f64 / self.drain_rate)
            .unwrap_or(0.0);
        Some(by_rate.max(longest_delay))
    }
}

/// Consecutive fresh empty readings that prove a vhost drained. The one drain threshold of the
/// project: the operator's planner and [`super::retire_tenant`] both count to it.
pub const DRAINED_AFTER: u32 = 2;

/// When a vhost counts as drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainCriteria {
    /// Consecutive empty readings needed.
    pub required_samples: u32,
    /// Least time between two counted readings; keep it above the broker's statistics interval.
    pub min_spacing: Duration,
}

impl DrainCriteria {
    /// For a broker with the given statistics interval and sample bucket width: two readings,
    /// spaced by the most a reading can lag plus a second.
    pub fn for_broker(stats_interval: Duration, sample_increment: Duration) -> Self {
        DrainCriteria {
            required_samples: DRAINED_AFTER,
            min_spacing: stats_interval + sample_increment + Duration::from_secs(1),
        }
    }
}

impl Default for DrainCriteria {
    /// RabbitMQ's defaults: 5 s statistics interval (and quorum tick), 5 s sample buckets.
    fn default() -> Self {
        Self::for_broker(Duration::from_secs(5), Duration::from_secs(5))
    }
}

/// The drain check's memory between readings; small and serializable so the operator can keep it
/// in status across reconciles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainProgress {
    /// Empty readings counted in a row.
    pub consecutive_empty: u32,
    /// When the last counted reading was taken.
    pub last_counted_at: Option<DateTime<Utc>>,
}

impl DrainProgress {
    /// Folds one reading in (pure). A reading with anything in it starts over; an empty reading
    /// too soon after the last counted one is not counted (it may be the same statistics).
    pub fn observe(self, backlog: &Backlog, criteria: &DrainCriteria) -> DrainProgress {
        if !backlog.is_empty() {
            return DrainProgress::default();
        }
        let spacing =
            chrono::Duration::from_std(criteria.min_spacing).unwrap_or(chrono::Duration::MAX);
        match self.last_counted_at {
            Some(last) if backlog.sampled_at < last + spacing => self,
            _ => DrainProgress {
                consecutive_empty: self.consecutive_empty + 1,
                last_counted_at: Some(backlog.sampled_at),
            },
        }
    }

    /// Enough empty readings were counted for the vhost to count as drained.
    pub fn drained(&self, criteria: &DrainCriteria) -> bool {
        self.consecutive_empty >= criteria.required_samples
    }
}

/// Reads the backlog of `vhost` now.
pub async fn measure_backlog(
    client: &ManagementClient,
    vhost: &str,
) -> Result<Backlog, BrokerError> {
    let queues = client.list_queues(vhost).await?;
    Ok(Backlog::from_queues(
        client.cluster(),
        vhost,
        Utc::now(),
        &queues,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn queue(v: Value) -> QueueInfo {
        let mut base = json!({"name": "q", "vhost": "v", "type": "classic"});
        base.as_object_mut()
            .unwrap()
            .extend(v.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn reading(secs: i64, queues: &[QueueInfo]) -> Backlog {
        Backlog::from_queues("c", "v", at(secs), queues)
    }

    fn empty() -> QueueInfo {
        queue(json!({"messages": 0, "messages_ready": 0, "messages_unacknowledged": 0}))
    }

    #[test]
    fn counts_rates_and_eta() {
        let q = queue(json!({
            "messages": 150, "messages_ready": 100, "messages_unacknowledged": 50, "consumers": 2,
            "message_stats": {"ack_details": {"rate": 25.0}, "publish_details": {"rate": 0.0}}
        }));
        let b = reading(0, &[q, empty()]);
        assert_eq!(
            (b.total_ready, b.total_unacked, b.remaining(), b.consumers),
            (100, 50, 150, 2)
        );
        assert!(b.complete && !b.is_empty());
        assert_eq!(b.eta_seconds, Some(6.0));
    }

    #[test]
    fn messages_waiting_for_dead_lettering_keep_a_quorum_queue_from_reading_empty() {
        // Measured on 3.10: a quorum queue with `dead-letter-strategy: at-least-once` whose
        // target is missing shows 0 ready, 0 unacked and `messages_dlx: 5`.
        let q = queue(json!({
            "type": "quorum", "messages": 5, "messages_ready": 0,
            "messages_unacknowledged": 0, "messages_dlx": 5
        }));
        let b = reading(0, &[q]);
        assert_eq!((b.remaining(), b.total_dlx_pending), (5, 5));
        assert!(!b.is_empty());
    }

    #[test]
    fn a_queue_without_statistics_is_never_empty() {
        let fresh = queue(json!({"consumers": 0}));
        let b = reading(0, &[fresh, empty()]);
        assert!(!b.complete);
        assert!(!b.is_empty());
    }

    #[test]
    fn delay_queue_messages_count_and_stretch_the_eta() {
        let delay = queue(json!({
            "name": "delay", "messages": 10, "messages_ready": 10, "messages_unacknowledged": 0, "consumers": 0,
            "arguments": {"x-message-ttl": 30000, "x-dead-letter-exchange": ""}
        }));
        let target = queue(json!({
            "name": "work", "messages": 0, "messages_ready": 0, "messages_unacknowledged": 0, "consumers": 1,
            "message_stats": {"ack_details": {"rate": 10.0}}
        }));
        let b = reading(0, &[delay, target]);
        assert_eq!((b.total_ready, b.delayed), (10, 10));
        assert!(!b.is_empty());
        // 30 s until they can be consumed, then 10 messages at 10/s.
        assert_eq!(b.eta_seconds, Some(31.0));
    }

    #[test]
    fn ttl_by_policy_counts_as_a_delay_queue_too() {
        let q = queue(json!({
            "messages": 3, "messages_ready": 3, "messages_unacknowledged": 0, "consumers": 0,
            "effective_policy_definition": {"message-ttl": 1000, "dead-letter-exchange": "dlx"}
        }));
        assert_eq!(reading(0, &[q]).delayed, 3);
    }

    #[test]
    fn nothing_consuming_means_no_eta() {
        let q = queue(json!({"messages": 5, "messages_ready": 5, "messages_unacknowledged": 0}));
        assert_eq!(reading(0, &[q]).eta_seconds, None);
        assert_eq!(reading(0, &[empty()]).eta_seconds, Some(0.0));
    }

    #[test]
    fn default_spacing_covers_rabbitmqs_default_lag() {
        assert_eq!(
            DrainCriteria::default().min_spacing,
            Duration::from_secs(11)
        );
        assert_eq!(DrainCriteria::default().required_samples, 2);
    }

    #[test]
    fn drained_needs_spaced_consecutive_empty_readings() {
        let c = DrainCriteria {
            required_samples: 2,
            min_spacing: Duration::from_secs(2),
        };
        let busy = queue(json!({"messages": 1, "messages_ready": 0, "messages_unacknowledged": 1}));
        let mut p = DrainProgress::default();
        p = p.observe(&reading(0, &[empty()]), &c);
        assert_eq!(p.consecutive_empty, 1);
        // Too soon: the same statistics may be read twice.
        p = p.observe(&reading(1, &[empty()]), &c);
        assert_eq!(p.consecutive_empty, 1);
        assert!(!p.drained(&c));
        // An unacked message resets the count.
        p = p.observe(&reading(2, &[busy]), &c);
        assert_eq!(p, DrainProgress::default());
        p = p.observe(&reading(3, &[empty()]), &c);
        p = p.observe(&reading(5, &[empty()]), &c);
        assert!(p.drained(&c));
    }

    proptest::proptest! {
        /// Whatever the sequence, "drained" only follows readings that were all empty, the last
        /// `required` of them counted and spaced.
        #[test]
        fn never_drained_right_after_a_non_empty_reading(steps in proptest::collection::vec((0u8..3, 0i64..4), 1..40)) {
            let c = DrainCriteria { required_samples: 2, min_spacing: Duration::from_secs(2) };
            let mut p = DrainProgress::default();
            let mut t = 0;
            let mut since_non_empty: Vec<i64> = Vec::new();
            for (kind, dt) in steps {
                t += dt;
                let q = match kind {
                    0 => empty(),
                    1 => queue(json!({"messages": 1, "messages_ready": 1, "messages_unacknowledged": 0})),
                    _ => queue(json!({})),
                };
                let b = reading(t, &[q]);
                if b.is_empty() { since_non_empty.push(t) } else { since_non_empty.clear() }
                p = p.observe(&b, &c);
                if p.drained(&c) {
                    proptest::prop_assert!(b.is_empty());
                    proptest::prop_assert!(since_non_empty.len() >= 2);
                    let first = since_non_empty[0];
                    proptest::prop_assert!(t - first >= 2, "counted readings {first}..{t} too close");
                }
            }
        }
    }
}
