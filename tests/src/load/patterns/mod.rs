//! The client patterns: what each declares, where its publishers send, which accounting units it
//! has and how they are consumed (a [`Plan`]), and the checks only that pattern has
//! ([`refine`]). One file per pattern or pattern family.

mod delayed;
mod max_length;
mod pubsub;
mod single_active;
mod stream;
mod topic;
mod work_queue;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};

use super::config::{LoadConfig, PatternKnobs};
use super::consumer::Source;
use super::ledger::{Delivery, Ledger, Unit};
use super::report::PatternReport;
use super::target::{AmqpTarget, LoadError};

pub(crate) use pubsub::subscriber;

/// A client pattern of the load generator. See the module docs of [`crate::load`] for what
/// each one checks and how its loss is defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// Publishers with confirms to the default exchange into one durable classic queue,
    /// consumers with manual acks (the original load).
    WorkQueue,
    /// The work queue with publishers that do not use confirms.
    WorkQueueNoConfirm,
    /// A fanout exchange; subscribers with exclusive, server-named queues that re-subscribe on
    /// every reconnect.
    FanoutPubSub,
    /// A topic exchange and durable queues with different binding keys.
    TopicRouting,
    /// The work queue on a quorum queue.
    Quorum,
    /// A stream queue read from `first` and from an offset.
    Stream,
    /// A TTL + dead-letter delay queue without consumers in front of a consumed target queue.
    DelayedDelivery,
    /// One queue per overflow mode (`drop-head`, `reject-publish`, `reject-publish-dlx`).
    MaxLength,
    /// A single-active-consumer queue with several consumers.
    SingleActiveConsumer,
}

impl Pattern {
    pub const ALL: [Pattern; 9] = [
        Pattern::WorkQueue,
        Pattern::WorkQueueNoConfirm,
        Pattern::FanoutPubSub,
        Pattern::TopicRouting,
        Pattern::Quorum,
        Pattern::Stream,
        Pattern::DelayedDelivery,
        Pattern::MaxLength,
        Pattern::SingleActiveConsumer,
    ];

    /// Short name: table rows, CLI values, and the infix of connection and queue names.
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::WorkQueue => "work-queue",
            Pattern::WorkQueueNoConfirm => "no-confirm",
            Pattern::FanoutPubSub => "fanout",
            Pattern::TopicRouting => "topic",
            Pattern::Quorum => "quorum",
            Pattern::Stream => "stream",
            Pattern::DelayedDelivery => "delayed",
            Pattern::MaxLength => "max-length",
            Pattern::SingleActiveConsumer => "sac",
        }
    }

    /// Connection names are `<name><infix>-pub-<i>`; the work queue keeps the original names.
    fn client_prefix(self, cfg: &LoadConfig) -> String {
        match self {
            Pattern::WorkQueue => cfg.name.clone(),
            p => format!("{}-{}", cfg.name, p.as_str()),
        }
    }

    /// Queue and exchange names start with this; the work queue keeps the original queue.
    fn queue_prefix(self, cfg: &LoadConfig) -> String {
        match self {
            Pattern::WorkQueue => cfg.queue.clone(),
            p => format!("{}.{}", cfg.queue, p.as_str()),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Pattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Pattern::ALL.iter().map(|p| p.as_str()).collect();
                format!("unknown pattern {s:?}; one of {}", names.join(", "))
            })
    }
}

/// One declaration of a pattern's topology, made once before its clients start (the tenant's
/// topology, which a conversion copies to the destination).
#[derive(Clone, Debug)]
pub(crate) enum Declare {
    Exchange {
        name: String,
        kind: ExchangeKind,
    },
    /// A durable queue with arguments.
    Queue {
        name: String,
        args: Vec<(&'static str, AMQPValue)>,
    },
    Bind {
        queue: String,
        exchange: String,
        key: String,
    },
}

/// An accounting unit and the consumers that feed it.
pub(crate) struct UnitPlan {
    pub unit: Unit,
    /// One consumer per source.
    pub consumers: Vec<Source>,
    /// Start the (stream) consumers only once unit `.0` received the offset `.1` after the first
    /// offset of this run it read, and start them there.
    pub start_after_offset: Option<(usize, u64)>,
}

/// Everything a pattern is made of.
pub(crate) struct Plan {
    pub pattern: Pattern,
    /// Prefix of connection names.
    pub clients: String,
    pub topology: Vec<Declare>,
    /// `""`: the default exchange.
    pub exchange: String,
    /// Routing keys publishers cycle through by sequence number.
    pub routes: Vec<String>,
    pub mandatory: bool,
    pub confirms: bool,
    pub units: Vec<UnitPlan>,
    /// What [`super::Workload::add_consumers`] adds: more consumers of unit 0, or (`None`) new
    /// subscriber units.
    pub more_consumers_of_unit0: Option<Source>,
}

/// The plan of `pattern` for the names and sizes in `cfg`.
pub(crate) fn plan(pattern: Pattern, cfg: &LoadConfig, knobs: &PatternKnobs) -> Plan {
    let clients = pattern.client_prefix(cfg);
    let q = pattern.queue_prefix(cfg);
    match pattern {
        Pattern::WorkQueue | Pattern::WorkQueueNoConfirm | Pattern::Quorum => {
            work_queue::plan(pattern, clients, q, cfg)
        }
        Pattern::FanoutPubSub => pubsub::plan(clients, q, cfg),
        Pattern::TopicRouting => topic::plan(clients, q),
        Pattern::Stream => stream::plan(clients, q, knobs),
        Pattern::DelayedDelivery => delayed::plan(clients, q, cfg, knobs),
        Pattern::MaxLength => max_length::plan(clients, q, knobs),
        Pattern::SingleActiveConsumer => single_active::plan(clients, q, knobs),
    }
}

/// Adds what only `report.pattern` checks to its report.
pub(crate) fn refine(report: &mut PatternReport, ledger: &Ledger, knobs: &PatternKnobs) {
    match report.pattern {
        Pattern::WorkQueue | Pattern::Quorum => {}
        Pattern::WorkQueueNoConfirm => work_queue::refine_unconfirmed(report),
        Pattern::FanoutPubSub => pubsub::refine(report, ledger, knobs),
        Pattern::TopicRouting => topic::refine(report),
        Pattern::Stream => stream::refine(report, ledger, knobs),
        Pattern::DelayedDelivery => delayed::refine(report, ledger, knobs),
        Pattern::MaxLength => max_length::refine(report, ledger),
        Pattern::SingleActiveConsumer => single_active::refine(report, ledger),
    }
}

/// Declares `plan`'s topology through one short-lived connection.
pub(crate) async fn declare(target: &AmqpTarget, plan: &Plan) -> Result<(), LoadError> {
    let err = |step: String, reason: String| LoadError::Topology {
        pattern: plan.pattern.to_string(),
        target: target.to_string(),
        step,
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
    .map_err(|_| err("connect".into(), "timed out".into()))?
    .map_err(|e| err("connect".into(), e.to_string()))?;
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| err("open channel".into(), e.to_string()))?;
    for d in &plan.topology {
        let step = format!("{d:?}");
        let r = match d {
            Declare::Exchange { name, kind } => {
                ch.exchange_declare(
                    name.as_str().into(),
                    kind.clone(),
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
            }
            Declare::Queue { name, args } => {
                let mut table = FieldTable::default();
                for (k, v) in args {
                    table.insert((*k).into(), v.clone());
                }
                ch.queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    table,
                )
                .await
                .map(|_| ())
            }
            Declare::Bind {
                queue,
                exchange,
                key,
            } => {
                ch.queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
            }
        };
        r.map_err(|e| err(step, e.to_string()))?;
    }
    let _ = conn.close(200, "setup done".into()).await;
    Ok(())
}

/// `x-...: "<text>"` for queue arguments.
fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

/// Per publisher, the sequence numbers in the order they were first received must rise; counts
/// the deliveries that broke that order (an id first received after a later id of the same
/// publisher).
pub(crate) fn out_of_order(log: &[Delivery]) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut highest: std::collections::HashMap<&str, u64> = Default::default();
    let mut n = 0;
    for d in log {
        if !seen.insert(d.id.as_str()) {
            continue;
        }
        let Some((publisher, seq)) = split_id(&d.id) else {
            continue;
        };
        let h = highest.entry(publisher).or_insert(seq);
        if seq < *h {
            n += 1;
        } else {
            *h = seq;
        }
    }
    n
}

/// `p3-17` → (`p3`, 17).
fn split_id(id: &str) -> Option<(&str, u64)> {
    let (p, s) = id.rsplit_once('-')?;
    Some((p, s.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: &str) -> Delivery {
        Delivery {
            id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn order_is_kept_per_publisher_and_repeats_do_not_count() {
        let log: Vec<_> = ["p0-0", "p1-0", "p0-1", "p0-1", "p1-1", "p0-0", "p0-2"]
            .into_iter()
            .map(d)
            .collect();
        assert_eq!(out_of_order(&log), 0);
        let log: Vec<_> = ["p0-0", "p0-2", "p0-1", "p0-3"]
            .into_iter()
            .map(d)
            .collect();
        assert_eq!(out_of_order(&log), 1);
    }

    #[test]
    fn pattern_names_round_trip() {
        for p in Pattern::ALL {
            assert_eq!(p.as_str().parse::<Pattern>(), Ok(p));
        }
        assert!("nope".parse::<Pattern>().is_err());
    }
}
