//! [`Load`]: the work queue on its own, with the API the end-to-end tests, the scenario runner
//! and the demo were written against. It is a [`Workload`] of one [`Pattern::WorkQueue`].

use std::collections::HashMap;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

use super::client::Interruption;
use super::config::{LoadConfig, WorkloadConfig};
use super::patterns::Pattern;
use super::report::{LoadReport, LoadStats};
use super::target::{AmqpTarget, LoadError};
use super::workload::{LoadView, Workload};

/// A running work-queue load. Dropping it stops every client.
pub struct Load {
    inner: Workload,
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
        Load {
            inner: Workload::start_without_declare(WorkloadConfig::new(cfg, &[Pattern::WorkQueue])),
        }
    }

    /// Starts `n` more publishers (new connections, e.g. to write to both clusters while
    /// dual-write), each with its own id space and the configured message count.
    pub fn add_publishers(&mut self, n: u32) {
        self.inner.add_publishers(Pattern::WorkQueue, n);
    }

    /// Starts `n` more consumers (e.g. to read from both clusters while dual-read).
    pub fn add_consumers(&mut self, n: u32) {
        self.inner.add_consumers(Pattern::WorkQueue, n);
    }

    pub fn stats(&self) -> LoadStats {
        self.inner.stats()
    }

    pub fn elapsed(&self) -> Duration {
        self.inner.elapsed()
    }

    pub fn interruptions(&self) -> Vec<Interruption> {
        self.inner.interruptions()
    }

    /// Consumer outages and how long each took to consume again (see
    /// [`Workload::consumer_resumes`]).
    pub fn consumer_resumes(&self) -> Vec<super::workload::ConsumerResume> {
        self.inner.consumer_resumes()
    }

    /// True when every publisher has finished (all its messages confirmed, or stopped).
    pub fn publishing_done(&self) -> bool {
        self.inner.publishing_done()
    }

    /// Asks publishers to stop after their in-flight messages.
    pub fn stop_publishing(&self) {
        self.inner.stop_publishing();
    }

    /// Waits for publishers to finish, then for consumers to consume every confirmed message (at
    /// most `drain_timeout`), then stops everything and counts lost and duplicate messages.
    pub async fn finish(mut self, drain_timeout: Duration) -> LoadReport {
        self.inner.drain(drain_timeout).await;
        let stats = self.inner.stats();
        let report = self.inner.report();
        let p = &report.patterns[0];
        let lost_sample = p
            .units
            .first()
            .map(|u| u.lost_sample.clone())
            .unwrap_or_default();
        LoadReport {
            stats,
            lost: p.lost,
            lost_sample,
            duplicates: stats.duplicates,
            interruptions: report.interruptions.clone(),
            duration: report.duration,
            connections: HashMap::from([
                ("publisher", p.publisher_connections),
                ("consumer", p.consumer_connections),
            ]),
        }
    }
}

impl LoadView for Load {
    fn elapsed(&self) -> Duration {
        Load::elapsed(self)
    }

    fn stats(&self) -> LoadStats {
        Load::stats(self)
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
            &target.uri_small_frames(),
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

/// Reads a queue's length as the broker counts it at this moment (a passive declare, so without
/// the management statistics' lag). One connection, kept open.
pub struct QueueProbe {
    conn: Connection,
    ch: lapin::Channel,
    target: String,
}

impl QueueProbe {
    /// Opens the probe's connection through `target`.
    pub async fn open(target: &AmqpTarget) -> Result<QueueProbe, LoadError> {
        let err = |reason: String| LoadError::Declare {
            queue: "-".into(),
            target: target.to_string(),
            reason,
        };
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            Connection::connect(
                &target.uri_small_frames(),
                ConnectionProperties::default().with_connection_name("load-probe".into()),
            ),
        )
        .await
        .map_err(|_| err("connect timed out".into()))?
        .map_err(|e| err(e.to_string()))?;
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(QueueProbe {
            conn,
            ch,
            target: target.to_string(),
        })
    }

    /// Ready messages in `queue` now.
    pub async fn ready(&self, queue: &str) -> Result<u32, LoadError> {
        let q = self
            .ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| LoadError::Declare {
                queue: queue.to_string(),
                target: self.target.clone(),
                reason: e.to_string(),
            })?;
        Ok(q.message_count())
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self.conn.close(200, "probe done".into()).await;
    }
}
