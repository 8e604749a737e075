//! Who is connected to a tenant's vhost, by what they do: publishing, consuming, or subscribing.
//!
//! A *subscriber* is a connection whose messages live in a queue that exists only for it: it
//! consumes from (or owns) an exclusive queue, or consumes from an auto-delete queue. Such a queue
//! is never copied to another cluster (RabbitMQ does not export exclusive queues, and an
//! auto-delete queue dies with its last consumer), so a subscriber receives what is published on
//! its own cluster only, and its queue, with whatever it still holds, goes when the connection
//! goes. A conversion therefore moves subscribers together with the writes (see the operator's
//! cutover), and closes them only when nothing can still be routed to their queues.
//!
//! A *publisher* is a connection with a channel that is publishing now: a publish rate above 0,
//! or (before the broker has computed rates, which takes a few sample intervals) publishes
//! counted on a channel that has not gone idle. RabbitMQ 3.10 channels cache their permission
//! checks until they go idle, so a revoked write does not stop such a channel; an idle channel
//! has dropped its cache and is refused at its next publish anyway.
//!
//! A *consumer* is a connection with at least one consumer on any queue.
//!
//! Everything here comes from the management API's statistics, which lag by the statistics
//! interval: a connection that started to publish or subscribe a moment ago may not show yet.

use std::collections::BTreeSet;

use crate::client::ManagementClient;
use crate::error::BrokerError;
use crate::model::{ChannelInfo, ConsumerInfo, QueueInfo};

/// The tenant's connections on one vhost, by what they do (names as the management API gives
/// them, for [`ManagementClient::close_connection`]). A connection may be in several sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clients {
    /// Connections with a channel publishing now.
    pub publishers: BTreeSet<String>,
    /// Connections that consume from or own an exclusive queue, or consume from an auto-delete
    /// queue.
    pub subscribers: BTreeSet<String>,
    /// Connections with at least one consumer.
    pub consumers: BTreeSet<String>,
    /// Queues whose messages belong to one connection (exclusive or auto-delete).
    pub subscriber_queues: BTreeSet<String>,
}

impl Clients {
    /// Publishers that are not subscribers: closing them cannot take a queue with it.
    pub fn publishers_only(&self) -> impl Iterator<Item = &String> {
        self.publishers
            .iter()
            .filter(|c| !self.subscribers.contains(*c))
    }
}

/// Sorts the connections of `user` (pure): from the vhost's channels, consumers and queues.
pub fn classify(
    channels: &[ChannelInfo],
    consumers: &[ConsumerInfo],
    queues: &[QueueInfo],
    user: &str,
) -> Clients {
    let mut out = Clients::default();
    for q in queues {
        if q.exclusive || q.auto_delete {
            out.subscriber_queues.insert(q.name.clone());
        }
        if q.exclusive
            && let Some(owner) = &q.owner_pid_details
        {
            out.subscribers.insert(owner.name.clone());
        }
    }
    for c in consumers {
        let Some(ch) = &c.channel_details else {
            continue;
        };
        if ch.user.as_deref().is_some_and(|u| u != user) {
            continue;
        }
        let Some(conn) = &ch.connection_name else {
            continue;
        };
        out.consumers.insert(conn.clone());
        if out.subscriber_queues.contains(&c.queue.name) {
            out.subscribers.insert(conn.clone());
        }
    }
    for c in channels {
        if c.user.as_deref() != Some(user) {
            continue;
        }
        let stats = c.message_stats.as_ref();
        let rate = stats
            .and_then(|m| m.pointer("/publish_details/rate"))
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0);
        let count = stats
            .and_then(|m| m.get("publish"))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if (rate > 0.0 || (count > 0 && c.idle_since.is_none()))
            && let Some(d) = &c.connection_details
        {
            out.publishers.insert(d.name.clone());
        }
    }
    out
}

/// The tenant's connections on `vhost`, sorted by [`classify`].
pub async fn list_clients(
    client: &ManagementClient,
    vhost: &str,
    user: &str,
) -> Result<Clients, BrokerError> {
    let channels = client.list_channels(vhost).await?;
    let consumers = client.list_consumers(vhost).await?;
    let queues = client.list_queues(vhost).await?;
    Ok(classify(&channels, &consumers, &queues, user))
}

/// Closes each connection in `names` with `reason`; gone ones are skipped. Returns how many
/// were closed.
pub async fn close_named(
    client: &ManagementClient,
    names: impl IntoIterator<Item = &String>,
    reason: &str,
) -> Result<usize, BrokerError> {
    let mut closed = 0;
    for name in names {
        if client.close_connection(name, reason).await? {
            closed += 1;
        }
    }
    Ok(closed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn channel(conn: &str, user: &str, stats: serde_json::Value, idle: bool) -> ChannelInfo {
        serde_json::from_value(json!({
            "name": format!("{conn} (1)"), "user": user,
            "connection_details": {"name": conn},
            "message_stats": stats,
            "idle_since": if idle { json!("2026-01-01 00:00:00") } else { json!(null) }
        }))
        .unwrap()
    }

    fn consumer(queue: &str, conn: &str, user: &str) -> ConsumerInfo {
        serde_json::from_value(json!({
            "queue": {"name": queue, "vhost": "v"},
            "channel_details": {"connection_name": conn, "user": user}
        }))
        .unwrap()
    }

    fn queue(name: &str, exclusive: bool, auto_delete: bool, owner: Option<&str>) -> QueueInfo {
        serde_json::from_value(json!({
            "name": name, "vhost": "v", "exclusive": exclusive, "auto_delete": auto_delete,
            "owner_pid_details": owner.map(|o| json!({"name": o}))
        }))
        .unwrap()
    }

    #[test]
    fn only_connections_of_the_tenant_that_publish_are_publishers() {
        let channels: Vec<ChannelInfo> = serde_json::from_value(json!([
            {"name": "p1", "user": "ns.i", "connection_details": {"name": "conn-pub"},
             "message_stats": {"publish": 10, "publish_details": {"rate": 12.5}}},
            {"name": "c1", "user": "ns.i", "connection_details": {"name": "conn-consume"},
             "message_stats": {"deliver_get": 10, "deliver_get_details": {"rate": 9.0}}},
            {"name": "p0", "user": "ns.i", "connection_details": {"name": "conn-stopped"},
             "idle_since": "2026-01-01 00:00:00",
             "message_stats": {"publish": 10, "publish_details": {"rate": 0.0}}},
            {"name": "p2", "user": "ns.i", "connection_details": {"name": "conn-no-rate-yet"},
             "message_stats": {"publish": 3}},
            {"name": "x", "user": "other", "connection_details": {"name": "conn-other"},
             "message_stats": {"publish_details": {"rate": 3.0}}},
            {"name": "n", "user": "ns.i", "connection_details": {"name": "conn-new"}}
        ]))
        .unwrap();
        let picked: Vec<String> = classify(&channels, &[], &[], "ns.i")
            .publishers
            .into_iter()
            .collect();
        assert_eq!(picked, ["conn-no-rate-yet", "conn-pub"]);
    }

    #[test]
    fn connections_are_sorted_by_what_they_do() {
        let channels = [
            channel(
                "pub",
                "t",
                json!({"publish": 10, "publish_details": {"rate": 5.0}}),
                false,
            ),
            channel("fresh-pub", "t", json!({"publish": 3}), false),
            channel("idle-pub", "t", json!({"publish": 3}), true),
            channel(
                "other-user",
                "x",
                json!({"publish_details": {"rate": 5.0}}),
                false,
            ),
            channel(
                "sub-and-pub",
                "t",
                json!({"publish_details": {"rate": 1.0}}),
                false,
            ),
        ];
        let consumers = [
            consumer("work", "worker", "t"),
            consumer("amq.gen-1", "sub", "t"),
            consumer("ad", "ad-sub", "t"),
            consumer("amq.gen-2", "sub-and-pub", "t"),
        ];
        let queues = [
            queue("work", false, false, None),
            queue("amq.gen-1", true, false, Some("sub")),
            queue("amq.gen-2", true, false, Some("sub-and-pub")),
            queue("ad", false, true, None),
            queue("amq.gen-3", true, false, Some("owner-only")),
        ];
        let c = classify(&channels, &consumers, &queues, "t");
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(c.publishers, set(&["pub", "fresh-pub", "sub-and-pub"]));
        assert_eq!(
            c.subscribers,
            set(&["sub", "ad-sub", "sub-and-pub", "owner-only"])
        );
        assert_eq!(
            c.consumers,
            set(&["worker", "sub", "ad-sub", "sub-and-pub"])
        );
        let only: Vec<&String> = c.publishers_only().collect();
        assert_eq!(only, ["fresh-pub", "pub"]);
    }
}
