//! Live message counts, read from the queues themselves rather than from the management API's
//! statistics: a passive `queue.declare` answers with the queue's ready messages and consumers as
//! they are at that moment. Statistics lag by the statistics interval (and further on a loaded
//! broker), so nothing is deleted on their strength alone; [`super::retire_tenant`] asks the
//! queues before deleting a vhost.
//!
//! What a passive declare cannot see: messages a consumer holds unacknowledged (close the
//! connections first: they return to the queue), and a quorum queue's messages waiting for
//! at-least-once dead-lettering (the statistics' `messages_dlx`, which the caller adds). It needs
//! no permission beyond access to the vhost, and it changes nothing.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPUri, AMQPUserInfo};
use lapin::{Connection, ConnectionProperties};

use crate::client::ManagementClient;
use crate::error::{BrokerError, ErrorKind};

/// The largest frame the live-count connection accepts: the AMQP minimum. lapin sizes each of a
/// connection's two buffers at 32 frames and zero-fills them, so at the broker's usual 128 KiB
/// frames every connection touched 8 MiB, and a few counts at once raised the operator's peak RSS
/// by tens of MiB (heaptrack, 16 conversions at once). Passive declares need a few hundred bytes.
const LIVE_FRAME_MAX: u32 = 8192;

/// One queue's live state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveQueue {
    /// The queue's name.
    pub name: String,
    /// Ready messages now; `None` when the queue could not be asked (an exclusive queue of a
    /// live connection).
    pub ready: Option<u32>,
    /// Consumers on the queue now (0 when it could not be asked).
    pub consumers: u32,
}

/// Asks every queue in `queues` of `vhost` for its live counts over AMQP, as the cluster's
/// administrator. A queue that no longer exists is left out.
pub async fn live_counts(
    client: &ManagementClient,
    vhost: &str,
    queues: &[String],
) -> Result<Vec<LiveQueue>, BrokerError> {
    let op = format!("read live queue counts of vhost {vhost:?}");
    let fail = |detail: String| {
        client.error(
            op.clone(),
            ErrorKind::Unreachable {
                url: format!("amqp://{}:{}", client.host(), client.options().amqp_port),
                detail,
            },
        )
    };
    let uri = AMQPUri {
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: client.endpoint().username.clone(),
                password: client.endpoint().password.expose().to_string(),
            },
            host: client.host(),
            port: client.options().amqp_port,
        },
        vhost: vhost.to_string(),
        query: AMQPQueryString {
            frame_max: Some(LIVE_FRAME_MAX),
            ..Default::default()
        },
        ..Default::default()
    };
    let timeout = client.options().connect_timeout;
    let conn = tokio::time::timeout(
        timeout,
        Connection::connect_uri(
            uri,
            ConnectionProperties::default().with_connection_name("tiermq-live-count".into()),
        ),
    )
    .await
    .map_err(|_| fail("connect timed out".into()))?
    .map_err(|e| {
        fail(crate::redact(
            &e.to_string(),
            &[&client.endpoint().password],
        ))
    })?;
    let mut out = Vec::new();
    let mut result = Ok(());
    for name in queues {
        // A refused declare closes its channel: one channel per queue.
        let ch = match conn.create_channel().await {
            Ok(ch) => ch,
            Err(e) => {
                result = Err(fail(e.to_string()));
                break;
            }
        };
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        match ch
            .queue_declare(name.as_str().into(), passive, FieldTable::default())
            .await
        {
            Ok(q) => {
                out.push(LiveQueue {
                    name: name.clone(),
                    ready: Some(q.message_count()),
                    consumers: q.consumer_count(),
                });
                let _ = ch.close(200, "done".into()).await;
            }
            Err(e) => {
                let text = e.to_string();
                if text.contains("NOT_FOUND") {
                    continue;
                }
                // RESOURCE_LOCKED: an exclusive queue of a live connection; its count is unknown.
                out.push(LiveQueue {
                    name: name.clone(),
                    ready: None,
                    consumers: 0,
                });
            }
        }
    }
    let _ = conn.close(200, "done".into()).await;
    result.map(|()| out)
}
