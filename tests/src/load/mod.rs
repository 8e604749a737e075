//! AMQP load generator and loss checker.
//!
//! Publishers use publisher confirms, consumers acknowledge manually, and every message carries a
//! unique id `p<publisher>-<sequence>` (AMQP `message-id`) so the checker can tell, at the end,
//! which confirmed messages were never consumed (lost) and which were consumed more than once
//! (duplicates). Clients behave like well-written applications during a tier conversion: when the
//! server closes their connection (`CONNECTION_FORCED` with a reason) or refuses a publish (403
//! after write revocation), they record the reason and reconnect with bounded backoff through the
//! same address (the instance Service), which by then routes to the destination cluster.
//!
//! Every loop is bounded in count and time: a publisher stops after `messages_per_publisher`
//! confirmed messages or at `max_duration`, consumers stop when told to or at `max_duration`.
//! Only `127.0.0.0/8` targets are accepted.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use lapin::{Confirmation, PublisherConfirm};

/// Why a load could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "AMQP target {host:?} is not a 127.0.0.0/8 address; the load generator only loads loopback brokers"
    )]
    NotLoopback { host: String },
    #[error("AMQP URI is not usable ({reason}); expected amqp://user:pass@127.x.y.z:5672/vhost")]
    BadUri { reason: String },
    #[error("declaring queue {queue:?} through {target} failed: {reason}")]
    Declare {
        queue: String,
        target: String,
        reason: String,
    },
}

/// An AMQP URI with credentials. `Debug`/`Display` show only the host part.
#[derive(Clone)]
pub struct AmqpTarget {
    uri: String,
    host: String,
}

impl AmqpTarget {
    /// `amqp://user:pass@host:port/vhost` (user, password and vhost percent-encoded by the caller
    /// or by [`AmqpTarget::from_parts`]). Refuses hosts outside `127.0.0.0/8`.
    pub fn new(uri: impl Into<String>) -> Result<Self, LoadError> {
        let uri = uri.into();
        let rest = uri
            .strip_prefix("amqp://")
            .ok_or_else(|| LoadError::BadUri {
                reason: "scheme must be amqp://".into(),
            })?;
        let authority = rest.split('/').next().unwrap_or_default();
        let hostport = authority.rsplit('@').next().unwrap_or_default();
        let host = hostport.split(':').next().unwrap_or_default().to_string();
        let hostport = hostport.to_string();
        let ip: Ipv4Addr = host
            .parse()
            .map_err(|_| LoadError::NotLoopback { host: host.clone() })?;
        if !ip.is_loopback() {
            return Err(LoadError::NotLoopback { host });
        }
        Ok(AmqpTarget {
            uri,
            host: hostport,
        })
    }

    /// Builds the URI from its parts, percent-encoding user, password and vhost.
    pub fn from_parts(
        host: &str,
        port: u16,
        vhost: &str,
        user: &str,
        password: &str,
    ) -> Result<Self, LoadError> {
        Self::new(format!(
            "amqp://{}:{}@{host}:{port}/{}",
            encode(user),
            encode(password),
            encode(vhost)
        ))
    }

    /// `host:port`, safe to print.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn uri(&self) -> &str {
        &self.uri
    }
}

impl fmt::Debug for AmqpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AmqpTarget({})", self.host)
    }
}

impl fmt::Display for AmqpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "amqp://{}", self.host)
    }
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What load to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub target: AmqpTarget,
    /// Prefix of connection names (shown in the management API).
    pub name: String,
    pub queue: String,
    pub publishers: u32,
    pub consumers: u32,
    /// Each publisher stops after this many confirmed messages.
    pub messages_per_publisher: u64,
    /// Pause between two publishes of one publisher (`ZERO`: as fast as confirms allow).
    pub publish_interval: Duration,
    /// Unconfirmed messages a publisher keeps in flight.
    pub confirm_window: usize,
    pub prefetch: u16,
    /// Hard limit for every client loop.
    pub max_duration: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Payload size in bytes (the id is carried in `message-id`).
    pub payload_bytes: usize,
    /// Time a consumer spends on each message before acknowledging it (a slow application;
    /// builds a backlog when publishers are faster).
    pub consumer_delay: Duration,
}

impl LoadConfig {
    /// A small steady load: 2 publishers × `messages` at ~`rate` msg/s each, 2 consumers.
    pub fn steady(target: AmqpTarget, queue: &str, messages: u64, rate: f64) -> Self {
        LoadConfig {
            target,
            name: "load".into(),
            queue: queue.into(),
            publishers: 2,
            consumers: 2,
            messages_per_publisher: messages,
            publish_interval: Duration::from_secs_f64(1.0 / rate.max(0.1)),
            confirm_window: 16,
            prefetch: 20,
            max_duration: Duration::from_secs(300),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            payload_bytes: 64,
            consumer_delay: Duration::ZERO,
        }
    }
}

/// Which side of the load a client is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Consumer,
}

/// One time a client lost its connection or channel and reconnected.
#[derive(Clone, Debug)]
pub struct Interruption {
    /// Since the load started.
    pub after: Duration,
    pub role: Role,
    pub client: String,
    /// When this client's connection was opened (since the load started).
    pub connection_opened: Duration,
    /// What the server or the client library said (e.g. `CONNECTION_FORCED - <reason>`,
    /// `ACCESS_REFUSED - ...`).
    pub reason: String,
}

/// Live counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Publishes written (including re-sends after a failure).
    pub sent: u64,
    /// Distinct messages the broker confirmed.
    pub confirmed: u64,
    /// Deliveries consumed and acknowledged (including duplicates).
    pub received: u64,
    /// Deliveries of an id that had been consumed before.
    pub duplicates: u64,
    /// Confirmed ids not consumed yet (while running: in flight; at the end: lost).
    pub unconsumed: u64,
    pub reconnects: u64,
    /// Publishes the broker refused or did not confirm (re-sent later).
    pub refused: u64,
    /// Longest time without any publisher confirm since the first one (publishers stalled).
    pub max_confirm_gap: Duration,
}

/// The final account of a load run.
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub stats: LoadStats,
    /// Confirmed messages never consumed.
    pub lost: u64,
    /// Up to 20 of the lost ids, for the failure message.
    pub lost_sample: Vec<String>,
    pub duplicates: u64,
    pub interruptions: Vec<Interruption>,
    pub duration: Duration,
    /// Connections opened, per role.
    pub connections: HashMap<&'static str, u64>,
}

impl LoadReport {
    /// Interruption reasons, deduplicated, for test output.
    pub fn reasons(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .interruptions
            .iter()
            .map(|i| i.reason.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        write!(
            f,
            "sent {} confirmed {} received {} lost {} duplicates {} reconnects {} refused {} in {:.1}s",
            s.sent,
            s.confirmed,
            s.received,
            self.lost,
            self.duplicates,
            s.reconnects,
            s.refused,
            self.duration.as_secs_f64()
        )
    }
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    confirmed: AtomicU64,
    received: AtomicU64,
    duplicates: AtomicU64,
    reconnects: AtomicU64,
    refused: AtomicU64,
    publisher_connections: AtomicU64,
    consumer_connections: AtomicU64,
    /// Milliseconds since start of the last confirm (0: none yet) and the longest gap.
    last_confirm_ms: AtomicU64,
    max_confirm_gap_ms: AtomicU64,
}

struct Shared {
    cfg: LoadConfig,
    started: Instant,
    deadline: Instant,
    counters: Counters,
    /// Confirmed ids.
    confirmed: Mutex<HashSet<String>>,
    /// Consumed ids → deliveries.
    consumed: Mutex<HashMap<String, u32>>,
    interruptions: Mutex<Vec<Interruption>>,
    stop_publishing: AtomicBool,
    stop_consuming: AtomicBool,
    publishers_done: AtomicU64,
}

impl Shared {
    fn stopped(&self, role: Role) -> bool {
        Instant::now() >= self.deadline
            || match role {
                Role::Publisher => self.stop_publishing.load(Ordering::Relaxed),
                Role::Consumer => self.stop_consuming.load(Ordering::Relaxed),
            }
    }

    fn interrupted(&self, role: Role, client: &str, opened: Instant, reason: String) {
        self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(?role, client, %reason, "load client reconnects");
        self.interruptions.lock().unwrap().push(Interruption {
            after: self.started.elapsed(),
            role,
            client: client.to_string(),
            connection_opened: opened.saturating_duration_since(self.started),
            reason,
        });
    }

    fn stats(&self) -> LoadStats {
        let c = &self.counters;
        let confirmed = self.confirmed.lock().unwrap();
        let consumed = self.consumed.lock().unwrap();
        let unconsumed = confirmed
            .iter()
            .filter(|id| !consumed.contains_key(*id))
            .count() as u64;
        LoadStats {
            sent: c.sent.load(Ordering::Relaxed),
            confirmed: c.confirmed.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            unconsumed,
            reconnects: c.reconnects.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            max_confirm_gap: Duration::from_millis(c.max_confirm_gap_ms.load(Ordering::Relaxed)),
        }
    }

    fn confirmed_now(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        let c = &self.counters;
        let last = c.last_confirm_ms.swap(now.max(1), Ordering::Relaxed);
        if last > 0 {
            c.max_confirm_gap_ms
                .fetch_max(now.saturating_sub(last), Ordering::Relaxed);
        }
    }
}

/// A running load. Dropping it stops every client.
pub struct Load {
    shared: Arc<Shared>,
    publishers: Vec<tokio::task::JoinHandle<()>>,
    consumers: Vec<tokio::task::JoinHandle<()>>,
    next_consumer: u32,
    next_publisher: u32,
}

impl Load {
    /// Declares the durable queue once (the tenant's topology, which the operator copies to the
    /// destination), then starts publishers and consumers.
    pub async fn start(cfg: LoadConfig) -> Result<Load, LoadError> {
        declare_queue(&cfg.target, &cfg.queue).await?;
        Ok(Self::start_without_declare(cfg))
    }

    /// Starts clients against a queue that exists already.
    pub fn start_without_declare(cfg: LoadConfig) -> Load {
        let now = Instant::now();
        let shared = Arc::new(Shared {
            deadline: now + cfg.max_duration,
            started: now,
            counters: Counters::default(),
            confirmed: Mutex::default(),
            consumed: Mutex::default(),
            interruptions: Mutex::default(),
            stop_publishing: AtomicBool::new(false),
            stop_consuming: AtomicBool::new(false),
            publishers_done: AtomicU64::new(0),
            cfg,
        });
        let shared_publishers = shared.cfg.publishers;
        let publishers = (0..shared.cfg.publishers)
            .map(|i| tokio::spawn(publisher(shared.clone(), i)))
            .collect();
        let mut load = Load {
            shared,
            publishers,
            consumers: Vec::new(),
            next_consumer: 0,
            next_publisher: shared_publishers,
        };
        load.add_consumers(load.shared.cfg.consumers);
        load
    }

    /// Starts `n` more publishers (new connections, e.g. to write to both clusters while
    /// dual-write), each with its own id space and the configured message count.
    pub fn add_publishers(&mut self, n: u32) {
        for _ in 0..n {
            let i = self.next_publisher;
            self.next_publisher += 1;
            self.publishers
                .push(tokio::spawn(publisher(self.shared.clone(), i)));
        }
    }

    /// Starts `n` more consumers (e.g. to read from both clusters while dual-read).
    pub fn add_consumers(&mut self, n: u32) {
        for _ in 0..n {
            let i = self.next_consumer;
            self.next_consumer += 1;
            self.consumers
                .push(tokio::spawn(consumer(self.shared.clone(), i)));
        }
    }

    pub fn stats(&self) -> LoadStats {
        self.shared.stats()
    }

    pub fn elapsed(&self) -> Duration {
        self.shared.started.elapsed()
    }

    pub fn interruptions(&self) -> Vec<Interruption> {
        self.shared.interruptions.lock().unwrap().clone()
    }

    /// True when every publisher has finished (all its messages confirmed, or stopped).
    pub fn publishing_done(&self) -> bool {
        self.publishers.iter().all(|h| h.is_finished())
    }

    /// Asks publishers to stop after their in-flight messages.
    pub fn stop_publishing(&self) {
        self.shared.stop_publishing.store(true, Ordering::Relaxed);
    }

    /// Waits for publishers to finish, then for consumers to consume every confirmed message (at
    /// most `drain_timeout`), then stops everything and counts lost and duplicate messages.
    pub async fn finish(mut self, drain_timeout: Duration) -> LoadReport {
        let publish_deadline = self.shared.deadline.max(Instant::now());
        for h in self.publishers.drain(..) {
            let left = publish_deadline.saturating_duration_since(Instant::now());
            let _ = tokio::time::timeout(left + Duration::from_secs(5), h).await;
        }
        let until = Instant::now() + drain_timeout;
        // Let late duplicates show up too: wait for a quiet second after everything arrived.
        while Instant::now() < until {
            if self.shared.stats().unconsumed == 0 {
                let before = self.shared.counters.received.load(Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
                if self.shared.counters.received.load(Ordering::Relaxed) == before {
                    break;
                }
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.shared.stop_consuming.store(true, Ordering::Relaxed);
        for h in self.consumers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
        }
        self.report()
    }

    fn report(&self) -> LoadReport {
        let stats = self.shared.stats();
        let confirmed = self.shared.confirmed.lock().unwrap();
        let consumed = self.shared.consumed.lock().unwrap();
        let mut lost: Vec<String> = confirmed
            .iter()
            .filter(|id| !consumed.contains_key(*id))
            .cloned()
            .collect();
        lost.sort();
        let c = &self.shared.counters;
        LoadReport {
            stats,
            lost: lost.len() as u64,
            lost_sample: lost.into_iter().take(20).collect(),
            duplicates: stats.duplicates,
            interruptions: self.interruptions(),
            duration: self.elapsed(),
            connections: HashMap::from([
                ("publisher", c.publisher_connections.load(Ordering::Relaxed)),
                ("consumer", c.consumer_connections.load(Ordering::Relaxed)),
            ]),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.shared.stop_publishing.store(true, Ordering::Relaxed);
        self.shared.stop_consuming.store(true, Ordering::Relaxed);
        for h in self.publishers.iter().chain(self.consumers.iter()) {
            h.abort();
        }
    }
}

/// Declares a durable classic queue through `target`.
pub async fn declare_queue(target: &AmqpTarget, queue: &str) -> Result<(), LoadError> {
    let err = |reason: String| LoadError::Declare {
        queue: queue.to_string(),
        target: target.to_string(),
        reason,
    };
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(
            target.uri(),
            ConnectionProperties::default().with_connection_name("load-setup".into()),
        ),
    )
    .await
    .map_err(|_| err("connect timed out".into()))?
    .map_err(|e| err(e.to_string()))?;
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| err(e.to_string()))?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| err(e.to_string()))?;
    let _ = conn.close(200, "setup done".into()).await;
    Ok(())
}

/// Opens one named connection through `target` (retrying for up to `timeout`) and returns it; the
/// caller keeps it open to see where it landed (the management API lists it by name).
pub async fn probe_connection(
    target: &AmqpTarget,
    name: &str,
    timeout: Duration,
) -> Result<Connection, String> {
    let until = Instant::now() + timeout;
    loop {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            Connection::connect(
                target.uri(),
                ConnectionProperties::default().with_connection_name(name.into()),
            ),
        )
        .await;
        match r {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) if Instant::now() >= until => return Err(e.to_string()),
            Err(_) if Instant::now() >= until => return Err("connect timed out".into()),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Opens a connection and records server-initiated close reasons from its event stream.
async fn open(
    shared: &Shared,
    name: &str,
    last_error: &Arc<Mutex<Option<String>>>,
) -> Result<Connection, String> {
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(
            shared.cfg.target.uri(),
            ConnectionProperties::default().with_connection_name(name.into()),
        ),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let slot = last_error.clone();
    let mut events = conn.events_listener();
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            if let lapin::Event::Error(e) = ev {
                *slot.lock().unwrap() = Some(e.to_string());
            }
        }
    });
    Ok(conn)
}

fn backoff(shared: &Shared, attempt: u32) -> Duration {
    let base = shared.cfg.backoff_min.as_millis() as u64;
    let d = base.saturating_mul(1u64 << attempt.min(10));
    Duration::from_millis(d).min(shared.cfg.backoff_max)
}

/// Prefers the connection-level reason (it names what the server said) over the operation's.
fn reason(last_error: &Mutex<Option<String>>, op_error: String) -> String {
    match last_error.lock().unwrap().take() {
        Some(conn) if !op_error.contains("ACCESS_REFUSED") => conn,
        _ => op_error,
    }
}

async fn confirm_channel(conn: &Connection) -> Result<Channel, String> {
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(ch)
}

async fn publisher(shared: Arc<Shared>, index: u32) {
    let cfg = &shared.cfg;
    let client = format!("{}-pub-{index}", cfg.name);
    let last_error = Arc::new(Mutex::new(None));
    let payload = vec![b'x'; cfg.payload_bytes];
    let mut next_seq: u64 = 0;
    // Sequences that failed and must be sent again.
    let mut resend: VecDeque<u64> = VecDeque::new();
    let mut confirmed_count: u64 = 0;
    let mut attempt = 0u32;
    while !shared.stopped(Role::Publisher) && confirmed_count < cfg.messages_per_publisher {
        let opened = Instant::now();
        let conn = match open(&shared, &client, &last_error).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(client, error = %e, "connect failed; retrying");
                tokio::time::sleep(backoff(&shared, attempt)).await;
                attempt += 1;
                continue;
            }
        };
        shared
            .counters
            .publisher_connections
            .fetch_add(1, Ordering::Relaxed);
        let ch = match confirm_channel(&conn).await {
            Ok(ch) => ch,
            Err(e) => {
                shared.interrupted(Role::Publisher, &client, opened, reason(&last_error, e));
                tokio::time::sleep(backoff(&shared, attempt)).await;
                attempt += 1;
                continue;
            }
        };
        attempt = 0;
        let mut in_flight: VecDeque<(u64, PublisherConfirm)> = VecDeque::new();
        let failure: Option<String> = 'conn: loop {
            let more = confirmed_count + (in_flight.len() as u64) < cfg.messages_per_publisher
                && (!resend.is_empty() || next_seq < cfg.messages_per_publisher);
            if more && !shared.stopped(Role::Publisher) && in_flight.len() < cfg.confirm_window {
                let seq = resend.pop_front().unwrap_or_else(|| {
                    next_seq += 1;
                    next_seq - 1
                });
                let props = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(format!("p{index}-{seq}").into());
                match ch
                    .basic_publish(
                        "".into(),
                        cfg.queue.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &payload,
                        props,
                    )
                    .await
                {
                    Ok(c) => {
                        shared.counters.sent.fetch_add(1, Ordering::Relaxed);
                        in_flight.push_back((seq, c));
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
            let Some((seq, pending)) = in_flight.pop_front() else {
                break 'conn None;
            };
            match tokio::time::timeout(Duration::from_secs(15), pending).await {
                Ok(Ok(Confirmation::Ack(None))) => {
                    let id = format!("p{index}-{seq}");
                    if shared.confirmed.lock().unwrap().insert(id) {
                        shared.counters.confirmed.fetch_add(1, Ordering::Relaxed);
                        shared.confirmed_now();
                        confirmed_count += 1;
                    }
                }
                Ok(Ok(_)) => {
                    // Nack or returned as unroutable: not stored; send it again.
                    shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                    resend.push_back(seq);
                }
                Ok(Err(e)) => {
                    resend.push_back(seq);
                    break 'conn Some(e.to_string());
                }
                Err(_) => {
                    resend.push_back(seq);
                    break 'conn Some("no publisher confirm within 15s".into());
                }
            }
        };
        match failure {
            Some(e) => {
                // Everything still in flight is unconfirmed: send it again on the next connection.
                shared
                    .counters
                    .refused
                    .fetch_add(in_flight.len() as u64, Ordering::Relaxed);
                resend.extend(in_flight.drain(..).map(|(s, _)| s));
                let mut r: Vec<u64> = resend.drain(..).collect();
                r.sort_unstable();
                resend.extend(r);
                shared.interrupted(Role::Publisher, &client, opened, reason(&last_error, e));
                let _ = conn.close(200, "reconnecting".into()).await;
                tokio::time::sleep(backoff(&shared, attempt)).await;
                attempt += 1;
            }
            None => {
                let _ = conn.close(200, "publisher done".into()).await;
                if confirmed_count >= cfg.messages_per_publisher || shared.stopped(Role::Publisher)
                {
                    break;
                }
            }
        }
    }
    shared.publishers_done.fetch_add(1, Ordering::Relaxed);
}

async fn consumer(shared: Arc<Shared>, index: u32) {
    let cfg = &shared.cfg;
    let client = format!("{}-con-{index}", cfg.name);
    let last_error = Arc::new(Mutex::new(None));
    let mut attempt = 0u32;
    while !shared.stopped(Role::Consumer) {
        let opened = Instant::now();
        let conn = match open(&shared, &client, &last_error).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(client, error = %e, "connect failed; retrying");
                tokio::time::sleep(backoff(&shared, attempt)).await;
                attempt += 1;
                continue;
            }
        };
        shared
            .counters
            .consumer_connections
            .fetch_add(1, Ordering::Relaxed);
        let failure = consume_on(&shared, &conn, &client).await;
        match failure {
            Some(e) => {
                shared.interrupted(Role::Consumer, &client, opened, reason(&last_error, e));
                tokio::time::sleep(backoff(&shared, attempt)).await;
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
async fn consume_on(shared: &Shared, conn: &Connection, client: &str) -> Option<String> {
    let cfg = &shared.cfg;
    let ch = match conn.create_channel().await {
        Ok(ch) => ch,
        Err(e) => return Some(e.to_string()),
    };
    if let Err(e) = ch.basic_qos(cfg.prefetch, BasicQosOptions::default()).await {
        return Some(e.to_string());
    }
    let mut stream = match ch
        .basic_consume(
            cfg.queue.as_str().into(),
            client.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    {
        Ok(s) => s,
        Err(e) => return Some(e.to_string()),
    };
    loop {
        if shared.stopped(Role::Consumer) {
            return None;
        }
        let next = tokio::time::timeout(Duration::from_millis(250), stream.next()).await;
        let delivery = match next {
            Err(_) => continue,
            Ok(None) => return Some("consumer stream ended (channel or connection closed)".into()),
            Ok(Some(Err(e))) => return Some(e.to_string()),
            Ok(Some(Ok(d))) => d,
        };
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "<no message-id>".into());
        if !cfg.consumer_delay.is_zero() {
            tokio::time::sleep(cfg.consumer_delay).await;
        }
        // Count only after the broker accepted the ack: an unacked message comes back, and
        // that redelivery is the one that counts.
        if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
            return Some(e.to_string());
        }
        shared.counters.received.fetch_add(1, Ordering::Relaxed);
        let mut consumed = shared.consumed.lock().unwrap();
        let n = consumed.entry(id).or_insert(0);
        *n += 1;
        if *n > 1 {
            shared.counters.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(AmqpTarget::new("amqp://u:p@127.20.3.4:5672/v").is_ok());
        let e = AmqpTarget::new("amqp://u:p@10.0.0.1:5672/v").unwrap_err();
        assert!(matches!(e, LoadError::NotLoopback { .. }), "{e}");
        let e = AmqpTarget::new("amqp://u:p@example:5672/v").unwrap_err();
        assert!(matches!(e, LoadError::NotLoopback { .. }), "{e}");
        assert!(AmqpTarget::new("http://127.0.0.1/").is_err());
    }

    #[test]
    fn debug_and_display_hide_the_password() {
        let t = AmqpTarget::from_parts(
            "127.20.1.1",
            5672,
            "team-a.orders",
            "team-a.orders",
            "s3cr:et/",
        )
        .unwrap();
        assert!(!format!("{t:?} {t}").contains("s3cr"));
        assert!(t.uri().contains("s3cr%3Aet%2F"));
        assert!(t.uri().ends_with("/team-a.orders"));
    }
}
