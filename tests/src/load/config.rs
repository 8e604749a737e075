//! What load to run: the client knobs every pattern shares ([`LoadConfig`]), the knobs only some
//! patterns have ([`PatternKnobs`]), and which patterns run together ([`WorkloadConfig`]).

use std::time::Duration;

use super::patterns::Pattern;
use super::target::AmqpTarget;

/// What load to run: the knobs of publishers and consumers. On its own (with [`super::Load`]) it
/// describes today's work queue; inside a [`WorkloadConfig`] every pattern uses the same knobs,
/// `name` prefixes every connection name and `queue` every queue and exchange name.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub target: AmqpTarget,
    /// Prefix of connection names (shown in the management API).
    pub name: String,
    pub queue: String,
    /// Publishers per pattern.
    pub publishers: u32,
    /// Consumers per queue (work-queue-like patterns), or subscribers (fanout pub/sub).
    pub consumers: u32,
    /// Each publisher stops after this many confirmed messages (sent messages without confirms).
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

/// Knobs of single patterns.
#[derive(Clone, Debug)]
pub struct PatternKnobs {
    /// Subscriber accounting: messages confirmed less than this before a subscriber's close are
    /// reported separately (the "boundary"), besides the strict count that includes them.
    pub close_boundary: Duration,
    /// Delayed delivery: the delay queue's `x-message-ttl`.
    pub delay: Duration,
    /// Max-length: `x-max-length` of each overflow queue. Large enough that consumers that keep
    /// up never reach it.
    pub max_length: u32,
    /// Stream: the second stream consumer starts this many offsets after the first offset of this
    /// run (`x-stream-offset`), once the stream holds it; with fewer messages than that it reads
    /// nothing and its row shows them lost.
    pub stream_offset: u64,
    /// Single active consumer: consumers on the queue (one of them active at a time).
    pub sac_consumers: u32,
}

impl Default for PatternKnobs {
    fn default() -> Self {
        PatternKnobs {
            close_boundary: Duration::from_millis(50),
            delay: Duration::from_millis(300),
            max_length: 1000,
            stream_offset: 20,
            sac_consumers: 3,
        }
    }
}

/// A set of patterns run at once against one target (see [`super::Workload`]).
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub load: LoadConfig,
    pub patterns: Vec<Pattern>,
    pub knobs: PatternKnobs,
}

impl WorkloadConfig {
    /// Every pattern in `patterns` with the client knobs of `load` and default pattern knobs.
    pub fn new(load: LoadConfig, patterns: &[Pattern]) -> Self {
        WorkloadConfig {
            load,
            patterns: patterns.to_vec(),
            knobs: PatternKnobs::default(),
        }
    }
}
