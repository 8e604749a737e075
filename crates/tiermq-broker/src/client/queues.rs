//! Queues and the connections, consumers and channels that use them.

use reqwest::Method;

use super::{Call, ManagementClient};
use crate::encode::segment;
use crate::error::{BrokerError, ErrorKind, NotFoundExt};
use crate::model::*;

impl ManagementClient {
    // ---- queues ----

    /// The vhost's queues with their statistics. A queue the statistics give no message counts
    /// for (not emitted yet, or every queue when the broker collects no statistics, as with
    /// RabbitMQ 4.x's `management_agent.disable_metrics_collector = true`) gets the counts its
    /// queue process reports now (`messages`, `messages_ready`, `messages_unacknowledged` from
    /// the management API's queue totals, which need no statistics); rates, consumer counts and
    /// `messages_dlx` stay statistics-only.
    pub async fn list_queues(&self, vhost: &str) -> Result<Vec<QueueInfo>, BrokerError> {
        let op = format!("list queues of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        let mut queues: Vec<QueueInfo> = self
            .get_json(Call::new(
                Method::GET,
                op.clone(),
                format!("queues/{}", segment(vhost)),
            ))
            .await?;
        let uncounted =
            |q: &QueueInfo| q.messages_ready.is_none() || q.messages_unacknowledged.is_none();
        // Only where the broker collects no statistics at all: with statistics on, a queue
        // without counts has not had its first emission yet, and the totals lag just the same
        // (measured on 3.10: a new quorum queue's totals said 0 while it held 3), so it must
        // stay uncounted ("not known") rather than look empty.
        if queues.iter().any(uncounted) && self.statistics_disabled(vhost).await? {
            /// A queue as the totals listing has it (other fields may be null there).
            #[derive(serde::Deserialize)]
            struct Totals {
                name: String,
                messages: Option<u64>,
                messages_ready: Option<u64>,
                messages_unacknowledged: Option<u64>,
            }
            let totals: Vec<Totals> = self
                .get_json(Call::new(
                    Method::GET,
                    format!("{op} (queue totals)"),
                    format!(
                        "queues/{}?disable_stats=true&enable_queue_totals=true",
                        segment(vhost)
                    ),
                ))
                .await?;
            for q in queues.iter_mut().filter(|q| uncounted(q)) {
                if let Some(t) = totals.iter().find(|t| t.name == q.name) {
                    q.messages = t.messages;
                    q.messages_ready = t.messages_ready;
                    q.messages_unacknowledged = t.messages_unacknowledged;
                }
            }
        }
        Ok(queues)
    }

    /// The queue, or `None` if it does not exist.
    pub async fn get_queue(
        &self,
        vhost: &str,
        name: &str,
    ) -> Result<Option<QueueInfo>, BrokerError> {
        let op = format!("read queue {name:?} in vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.check(&op, "queue", name)?;
        let path = format!("queues/{}/{}", segment(vhost), segment(name));
        self.get_json(Call::new(Method::GET, op, path))
            .await
            .optional()
    }

    // ---- connections ----

    /// The vhost's client connections.
    pub async fn list_connections(&self, vhost: &str) -> Result<Vec<ConnectionInfo>, BrokerError> {
        let op = format!("list connections of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.get_json(Call::new(
            Method::GET,
            op,
            format!("vhosts/{}/connections", segment(vhost)),
        ))
        .await
    }

    /// The vhost's consumers, each with its queue and connection.
    pub async fn list_consumers(&self, vhost: &str) -> Result<Vec<ConsumerInfo>, BrokerError> {
        let op = format!("list consumers of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.get_json(Call::new(
            Method::GET,
            op,
            format!("consumers/{}", segment(vhost)),
        ))
        .await
        .optional()
        .map(Option::unwrap_or_default)
    }

    /// The vhost's channels (a channel shows up after its first statistics emission).
    pub async fn list_channels(&self, vhost: &str) -> Result<Vec<ChannelInfo>, BrokerError> {
        let op = format!("list channels of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.get_json(Call::new(
            Method::GET,
            op,
            format!("vhosts/{}/channels", segment(vhost)),
        ))
        .await
    }

    /// The broker collects no management statistics (RabbitMQ 4.x with
    /// `management_agent.disable_metrics_collector = true`): it then refuses to list channels
    /// with "Stats in management UI are disabled on this node" (measured on 4.0.5).
    async fn statistics_disabled(&self, vhost: &str) -> Result<bool, BrokerError> {
        match self.list_channels(vhost).await {
            Ok(_) => Ok(false),
            Err(e) => match &e.kind {
                ErrorKind::Client { reason, .. } if reason.contains("disabled") => Ok(true),
                _ => Err(e),
            },
        }
    }

    /// Closes a connection; the client receives `CONNECTION_FORCED - <reason>`. `false` if it was
    /// already gone.
    pub async fn close_connection(&self, name: &str, reason: &str) -> Result<bool, BrokerError> {
        let op = format!("close connection {name:?}");
        self.check(&op, "connection", name)?;
        // Header values must be visible ASCII; anything else would be refused by the HTTP layer.
        let reason: String = reason
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        let mut call = Call::new(Method::DELETE, op, format!("connections/{}", segment(name)));
        call.headers.push(("X-Reason", reason));
        self.delete_idempotent(call).await
    }
}
