//! What every client shares: the run's clock, deadline and stop flags, opening a connection that
//! remembers why the server closed it, bounded backoff, and the record of interruptions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties};

use super::config::LoadConfig;
use super::ledger::Ledger;
use super::patterns::Pattern;
use super::target::AmqpTarget;

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
    /// The pattern the client belongs to.
    pub pattern: Pattern,
}

/// The message header naming the run a message belongs to.
pub(crate) const RUN_HEADER: &str = "x-tiermq-load-run";

/// The state every client of one run shares.
pub(crate) struct Run {
    pub cfg: LoadConfig,
    /// Carried by every message (header [`RUN_HEADER`]): consumers set aside messages of other
    /// runs (a stream keeps them for good; a queue may hold leftovers), whose ids would collide.
    pub tag: String,
    pub started: Instant,
    pub deadline: Instant,
    stop_publishing: AtomicBool,
    stop_consuming: AtomicBool,
    interruptions: Mutex<Vec<Interruption>>,
}

impl Run {
    pub fn new(cfg: LoadConfig) -> Run {
        let now = Instant::now();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Run {
            tag: format!("{:x}-{:x}", std::process::id(), nanos),
            deadline: now + cfg.max_duration,
            started: now,
            cfg,
            stop_publishing: AtomicBool::new(false),
            stop_consuming: AtomicBool::new(false),
            interruptions: Mutex::default(),
        }
    }

    /// Time since the run started: every timestamp of the accounting is one of these.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn at(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.started)
    }

    pub fn stopped(&self, role: Role) -> bool {
        Instant::now() >= self.deadline
            || match role {
                Role::Publisher => self.stop_publishing.load(Ordering::Relaxed),
                Role::Consumer => self.stop_consuming.load(Ordering::Relaxed),
            }
    }

    pub fn stop(&self, role: Role) {
        match role {
            Role::Publisher => self.stop_publishing.store(true, Ordering::Relaxed),
            Role::Consumer => self.stop_consuming.store(true, Ordering::Relaxed),
        }
    }

    pub fn interrupted(
        &self,
        ledger: &Ledger,
        role: Role,
        client: &str,
        opened: Instant,
        reason: String,
    ) {
        ledger.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(?role, client, %reason, "load client reconnects");
        self.interruptions.lock().unwrap().push(Interruption {
            after: self.now(),
            role,
            client: client.to_string(),
            connection_opened: self.at(opened),
            reason,
            pattern: ledger.pattern,
        });
    }

    pub fn interruptions(&self) -> Vec<Interruption> {
        self.interruptions.lock().unwrap().clone()
    }

    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.cfg.backoff_min.as_millis() as u64;
        let d = base.saturating_mul(1u64 << attempt.min(10));
        Duration::from_millis(d).min(self.cfg.backoff_max)
    }
}

/// The last error a connection reported on its event stream, and when the client saw it.
#[derive(Clone, Default)]
pub(crate) struct LastError(Arc<Mutex<Option<(String, Instant)>>>);

impl LastError {
    /// Prefers the connection-level reason (it names what the server said) over the operation's.
    pub fn reason(&self, op_error: String) -> String {
        match self.0.lock().unwrap().take() {
            Some((conn, _)) if !op_error.contains("ACCESS_REFUSED") => conn,
            _ => op_error,
        }
    }

    /// When the connection reported its error, if it did.
    pub fn seen_at(&self) -> Option<Instant> {
        self.0.lock().unwrap().as_ref().map(|(_, t)| *t)
    }
}

/// Opens a connection through `target` and records server-initiated close reasons from its
/// event stream into `last_error`.
pub(crate) async fn open(
    target: &AmqpTarget,
    name: &str,
    last_error: &LastError,
) -> Result<Connection, String> {
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(
            &target.uri_small_frames(),
            ConnectionProperties::default().with_connection_name(name.into()),
        ),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let slot = last_error.0.clone();
    let mut events = conn.events_listener();
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            if let lapin::Event::Error(e) = ev {
                *slot.lock().unwrap() = Some((e.to_string(), Instant::now()));
            }
        }
    });
    Ok(conn)
}

pub(crate) async fn confirm_channel(conn: &Connection) -> Result<Channel, String> {
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(ch)
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
                &target.uri_small_frames(),
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
