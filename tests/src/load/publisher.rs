//! A publisher like a careful application: persistent messages with unique ids `p<index>-<seq>`,
//! publisher confirms with a bounded window, and every publish that was not confirmed (nack,
//! returned as unroutable, no confirm before the connection failed) sent again on the next
//! attempt or connection. Without confirms it writes each message once and moves on.
//!
//! Each confirm is timestamped when it arrives (not when the loop gets round to it), because the
//! subscriber accounting compares confirm times with subscription closes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, PublisherConfirm};
use tokio::task::JoinHandle;

use super::client::{LastError, RUN_HEADER, Role, Run, confirm_channel, open};
use super::ledger::{Ledger, Published};

/// How long the loop waits for the oldest confirm before giving up on the connection.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

/// Where and how one publisher sends.
#[derive(Clone, Debug)]
pub(crate) struct PublisherSpec {
    pub index: u32,
    /// Connection name.
    pub client: String,
    /// `""`: the default exchange.
    pub exchange: String,
    /// Routing keys; message `seq` goes with `routes[seq % routes.len()]`.
    pub routes: Arc<Vec<String>>,
    pub mandatory: bool,
    pub confirms: bool,
}

/// A confirm being waited for, resolved with the instant it arrived (`None`: not within a minute).
type ConfirmWatch = JoinHandle<Option<(lapin::Result<Confirmation>, Instant)>>;

fn watch(pending: PublisherConfirm) -> ConfirmWatch {
    tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(60), pending)
            .await
            .ok()
            .map(|r| (r, Instant::now()))
    })
}

struct InFlight {
    seq: u64,
    route: usize,
    sent_at: Duration,
    confirm: ConfirmWatch,
}

/// Records the broker's ack of `f`, which arrived at `at`; true for the first ack of its id.
fn acked(
    ledger: &Ledger,
    run: &Run,
    publisher: u32,
    f: &InFlight,
    first_sent: &mut HashMap<u64, Duration>,
    at: Instant,
) -> bool {
    let p = Published {
        publisher,
        seq: f.seq,
        route: f.route,
        sent_at: f.sent_at,
        first_sent_at: first_sent.remove(&f.seq).unwrap_or(f.sent_at),
        confirmed_at: Some(run.at(at)),
    };
    ledger.confirmed(format!("p{publisher}-{}", f.seq), p, run.now())
}

/// Runs until `messages_per_publisher` messages are confirmed (written, without confirms), the
/// publishers are stopped, or the run's deadline.
pub(crate) async fn publisher(run: Arc<Run>, ledger: Arc<Ledger>, spec: PublisherSpec) {
    let cfg = &run.cfg;
    let client = spec.client.as_str();
    let last_error = LastError::default();
    let payload = vec![b'x'; cfg.payload_bytes];
    let mut headers = FieldTable::default();
    headers.insert(
        RUN_HEADER.into(),
        AMQPValue::LongString(run.tag.as_str().into()),
    );
    let mut next_seq: u64 = 0;
    // Sequences that failed and must be sent again, and when each was first sent.
    let mut resend: VecDeque<u64> = VecDeque::new();
    let mut first_sent: HashMap<u64, Duration> = HashMap::new();
    // Confirmed (without confirms: written) messages.
    let mut done: u64 = 0;
    let mut attempt = 0u32;
    while !run.stopped(Role::Publisher) && done < cfg.messages_per_publisher {
        let opened = Instant::now();
        let conn = match open(&cfg.target, client, &last_error).await {
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
            .publisher_connections
            .fetch_add(1, Ordering::Relaxed);
        let channel = if spec.confirms {
            confirm_channel(&conn).await
        } else {
            conn.create_channel().await.map_err(|e| e.to_string())
        };
        let ch = match channel {
            Ok(ch) => ch,
            Err(e) => {
                run.interrupted(
                    &ledger,
                    Role::Publisher,
                    client,
                    opened,
                    last_error.reason(e),
                );
                tokio::time::sleep(run.backoff(attempt)).await;
                attempt += 1;
                continue;
            }
        };
        attempt = 0;
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let failure: Option<String> = 'conn: loop {
            let more = done + (in_flight.len() as u64) < cfg.messages_per_publisher
                && (!resend.is_empty() || next_seq < cfg.messages_per_publisher);
            if more && !run.stopped(Role::Publisher) && in_flight.len() < cfg.confirm_window {
                let seq = resend.pop_front().unwrap_or_else(|| {
                    next_seq += 1;
                    next_seq - 1
                });
                let id = format!("p{}-{seq}", spec.index);
                let route = (seq % spec.routes.len() as u64) as usize;
                let props = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(id.as_str().into())
                    .with_headers(headers.clone());
                let sent_at = run.now();
                let first_sent_at = *first_sent.entry(seq).or_insert(sent_at);
                match ch
                    .basic_publish(
                        spec.exchange.as_str().into(),
                        spec.routes[route].as_str().into(),
                        BasicPublishOptions {
                            mandatory: spec.mandatory,
                            ..Default::default()
                        },
                        &payload,
                        props,
                    )
                    .await
                {
                    Ok(c) => {
                        ledger.counters.sent.fetch_add(1, Ordering::Relaxed);
                        let p = Published {
                            publisher: spec.index,
                            seq,
                            route,
                            sent_at,
                            first_sent_at,
                            confirmed_at: None,
                        };
                        if spec.confirms {
                            in_flight.push_back(InFlight {
                                seq,
                                route,
                                sent_at,
                                confirm: watch(c),
                            });
                        } else {
                            first_sent.remove(&seq);
                            ledger.written(id, p);
                            done += 1;
                        }
                    }
                    Err(e) => {
                        resend.push_back(seq);
                        break 'conn Some(e.to_string());
                    }
                }
                if !cfg.publish_interval.is_zero() {
                    tokio::time::sleep(cfg.publish_interval).await;
                }
                if in_flight.len() < cfg.confirm_window && more {
                    continue;
                }
            }
            let Some(mut f) = in_flight.pop_front() else {
                break 'conn None;
            };
            let outcome = tokio::time::timeout(CONFIRM_TIMEOUT, &mut f.confirm).await;
            match outcome {
                Ok(Ok(Some((Ok(Confirmation::Ack(None)), at)))) => {
                    if acked(&ledger, &run, spec.index, &f, &mut first_sent, at) {
                        done += 1;
                    }
                }
                Ok(Ok(Some((Ok(refusal), _)))) => {
                    // Nack, or returned as unroutable: not stored; send it again.
                    let c = &ledger.counters;
                    c.refused.fetch_add(1, Ordering::Relaxed);
                    match refusal {
                        Confirmation::Nack(_) => ledger.nacked(f.route),
                        _ => {
                            c.returned.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    resend.push_back(f.seq);
                }
                Ok(Ok(Some((Err(e), _)))) => {
                    resend.push_back(f.seq);
                    break 'conn Some(e.to_string());
                }
                Ok(Err(e)) => {
                    resend.push_back(f.seq);
                    break 'conn Some(format!("confirm watcher failed: {e}"));
                }
                Ok(Ok(None)) | Err(_) => {
                    f.confirm.abort();
                    resend.push_back(f.seq);
                    break 'conn Some(format!(
                        "no publisher confirm within {}s",
                        CONFIRM_TIMEOUT.as_secs()
                    ));
                }
            }
        };
        match failure {
            Some(e) => {
                // A confirm that arrived before the failure counts (the loop reads confirms only
                // when its window is full, so up to a window of them wait here); sending those
                // again would store a second copy. The rest is sent again on the next connection.
                for mut f in in_flight.drain(..) {
                    if f.confirm.is_finished()
                        && let Ok(Some((Ok(Confirmation::Ack(None)), at))) = (&mut f.confirm).await
                    {
                        if acked(&ledger, &run, spec.index, &f, &mut first_sent, at) {
                            done += 1;
                        }
                        continue;
                    }
                    f.confirm.abort();
                    ledger.counters.refused.fetch_add(1, Ordering::Relaxed);
                    resend.push_back(f.seq);
                }
                let mut r: Vec<u64> = resend.drain(..).collect();
                r.sort_unstable();
                resend.extend(r);
                run.interrupted(
                    &ledger,
                    Role::Publisher,
                    client,
                    opened,
                    last_error.reason(e),
                );
                let _ = conn.close(200, "reconnecting".into()).await;
                tokio::time::sleep(run.backoff(attempt)).await;
                attempt += 1;
            }
            None => {
                let _ = conn.close(200, "publisher done".into()).await;
                if done >= cfg.messages_per_publisher || run.stopped(Role::Publisher) {
                    break;
                }
            }
        }
    }
}
