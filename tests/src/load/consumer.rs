//! A consumer like a careful application: manual acks with a prefetch, a message counts only
//! once the broker accepted its ack (an unacked message comes back, and that redelivery is the
//! one that counts), and on any failure it reconnects with bounded backoff through the same
//! address.
//!
//! What it consumes is a [`Source`]: a named queue; a subscriber's exclusive, server-named queue
//! declared and bound anew on every connection (the subscription starts at the bind-ok and ends
//! when the client sees the connection or channel close); or a stream read from an offset and,
//! after a reconnect, from the offset after the last one it received.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection};

use super::client::{LastError, RUN_HEADER, Role, Run, open};
use super::ledger::{Delivery, Ledger, Unit};

/// Where a stream consumer starts reading (an absolute offset by the time it connects).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamStart {
    First,
    Offset(u64),
}

/// What a consumer consumes.
#[derive(Clone, Debug)]
pub(crate) enum Source {
    Queue(String),
    /// An exclusive, server-named queue bound to `exchange` with each of `keys`.
    Subscriber {
        exchange: String,
        keys: Vec<String>,
    },
    Stream {
        queue: String,
        start: StreamStart,
    },
}

#[derive(Clone)]
pub(crate) struct ConsumerSpec {
    pub index: u32,
    /// Connection name and consumer tag.
    pub client: String,
    pub source: Source,
    pub unit: Arc<Unit>,
}

/// Consumes until the consumers are stopped or the run's deadline.
pub(crate) async fn consumer(run: Arc<Run>, ledger: Arc<Ledger>, spec: ConsumerSpec) {
    let client = spec.client.as_str();
    let last_error = LastError::default();
    let mut attempt = 0u32;
    while !run.stopped(Role::Consumer) {
        let opened = Instant::now();
        let conn = match open(&run.cfg.target, client, &last_error).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(client, error = %e, "connect failed; retrying");
                tokio::time::sleep(run.backoff(attempt)).await;
                attempt += 1;
                continue;
            }
        };
        ledger
            .counters
            .consumer_connections
            .fetch_add(1, Ordering::Relaxed);
        let failure = consume_on(&run, &spec, &conn).await;
        match failure {
            Some(e) => {
                // The subscription ended when the client first noticed: the connection's error
                // event, or the failed operation, whichever came first.
                let seen = last_error
                    .seen_at()
                    .filter(|t| *t >= opened)
                    .unwrap_or_else(Instant::now);
                spec.unit.unsubscribed(run.at(seen));
                run.interrupted(
                    &ledger,
                    Role::Consumer,
                    client,
                    opened,
                    last_error.reason(e),
                );
                // A channel-level failure leaves the connection open (and a subscriber's
                // exclusive queue with it); close it before starting over.
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    conn.close(200, "reconnecting".into()),
                )
                .await;
                tokio::time::sleep(run.backoff(attempt)).await;
                attempt += 1;
            }
            None => {
                let _ = conn.close(200, "consumer done".into()).await;
                break;
            }
        }
        if attempt == 0 {
            attempt = 1;
        }
    }
}

/// Consumes until stopped (`None`) or the channel fails (`Some(reason)`).
async fn consume_on(run: &Run, spec: &ConsumerSpec, conn: &Connection) -> Option<String> {
    let cfg = &run.cfg;
    let ch = match conn.create_channel().await {
        Ok(ch) => ch,
        Err(e) => return Some(e.to_string()),
    };
    if let Err(e) = ch.basic_qos(cfg.prefetch, BasicQosOptions::default()).await {
        return Some(e.to_string());
    }
    let mut args = FieldTable::default();
    let queue = match &spec.source {
        Source::Queue(q) => q.clone(),
        Source::Subscriber { exchange, keys } => {
            let q = match ch
                .queue_declare(
                    "".into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
            {
                Ok(q) => q.name().to_string(),
                Err(e) => return Some(format!("declaring the subscriber queue: {e}")),
            };
            for key in keys {
                if let Err(e) = ch
                    .queue_bind(
                        q.as_str().into(),
                        exchange.as_str().into(),
                        key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                {
                    return Some(format!("binding the subscriber queue: {e}"));
                }
            }
            spec.unit.subscribed(run.now());
            q
        }
        Source::Stream { queue, start } => {
            let offset = match (spec.unit.resume_offset(), start) {
                (Some(next), _) => AMQPValue::LongLongInt(next as i64),
                (None, StreamStart::First) => AMQPValue::LongString("first".into()),
                (None, StreamStart::Offset(n)) => AMQPValue::LongLongInt(*n as i64),
            };
            args.insert("x-stream-offset".into(), offset);
            queue.clone()
        }
    };
    let mut stream = match ch
        .basic_consume(
            queue.as_str().into(),
            spec.client.as_str().into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
    {
        Ok(s) => s,
        Err(e) => return Some(e.to_string()),
    };
    loop {
        if run.stopped(Role::Consumer) {
            return None;
        }
        let next = tokio::time::timeout(Duration::from_millis(250), stream.next()).await;
        let delivery = match next {
            Err(_) => continue,
            Ok(None) => return Some("consumer stream ended (channel or connection closed)".into()),
            Ok(Some(Err(e))) => return Some(e.to_string()),
            Ok(Some(Ok(d))) => d,
        };
        let received_at = run.now();
        let props = &delivery.properties;
        let id = props
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "<no message-id>".into());
        let own = header(props, RUN_HEADER).and_then(as_string).as_deref() == Some(&run.tag);
        let offset = header(props, "x-stream-offset").and_then(as_u64);
        let died_in = header(props, "x-first-death-queue").and_then(as_string);
        let death_reason = header(props, "x-first-death-reason").and_then(as_string);
        if !cfg.consumer_delay.is_zero() {
            tokio::time::sleep(cfg.consumer_delay).await;
        }
        // Count only after the broker accepted the ack: an unacked message comes back, and
        // that redelivery is the one that counts.
        if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
            return Some(e.to_string());
        }
        if !own {
            spec.unit.foreign(offset);
            continue;
        }
        spec.unit.record(Delivery {
            id,
            consumer: spec.index,
            received_at,
            done_at: run.now(),
            offset,
            died_in,
            death_reason,
        });
    }
}

fn header<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().iter().find(|(k, _)| k.as_str() == name))
        .map(|(_, v)| v)
}

fn as_u64(v: &AMQPValue) -> Option<u64> {
    match v {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::Timestamp(n) => Some(*n),
        _ => None,
    }
}

fn as_string(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}
