//! AMQP load generator and loss checker, with a matrix of client patterns.
//!
//! Every message carries a unique id `p<publisher>-<sequence>` (AMQP `message-id`, unique within
//! its pattern and run; a header names the run, and consumers set aside messages of other runs,
//! e.g. what a stream kept from an earlier run) so the checker can tell, at the end, which messages a queue or subscriber was owed
//! and never consumed (lost) and which it consumed more than once (duplicates). Clients behave
//! like well-written applications during a tier conversion: when the server closes their
//! connection (`CONNECTION_FORCED` with a reason) or refuses a publish (403 after write
//! revocation), they record the reason and reconnect with bounded backoff through the same
//! address (the instance Service), which by then routes to the destination cluster. Publishers
//! use confirms (except in [`Pattern::WorkQueueNoConfirm`]) and send every unconfirmed message
//! again; consumers ack manually and a delivery counts once the broker accepted its ack.
//!
//! # Running patterns
//!
//! [`Load`] is the original work queue with its original API. [`Workload`] runs any set of
//! [`Pattern`]s at once against one [`AmqpTarget`]:
//!
//! ```no_run
//! # async fn f(target: tiermq_tests::load::AmqpTarget) -> anyhow::Result<()> {
//! use std::time::Duration;
//! use tiermq_tests::load::{LoadConfig, Pattern, Workload, WorkloadConfig};
//! let load = LoadConfig::steady(target, "orders", 200, 20.0); // 2 publishers x 200 at 20/s each
//! let w = Workload::start(WorkloadConfig::new(load, &Pattern::ALL)).await?;
//! // ... convert the instance ...
//! w.stop_publishing();
//! let report = w.finish(Duration::from_secs(30)).await;
//! println!("{report}"); // pattern | sent | confirmed | received | lost | duplicates | notes
//! # Ok(()) }
//! ```
//!
//! Names: the work queue keeps the original names (queue `<queue>`, connections `<name>-pub-<i>`
//! and `<name>-con-<i>`); every other pattern's queues and exchanges start with
//! `<queue>.<pattern>` and its connections with `<name>-<pattern>-`.
//!
//! # Patterns, what each checks, and what "lost" means there
//!
//! In general a queue or subscriber (an accounting *unit*, one table row) is *owed* a message when
//! the broker confirmed it and it was routed there; *lost* = owed and never consumed;
//! *duplicates* = deliveries of an id that unit had consumed before.
//!
//! - [`Pattern::WorkQueue`]: the default exchange into one durable classic queue, competing
//!   consumers. Lost = confirmed, never consumed.
//! - [`Pattern::WorkQueueNoConfirm`]: the same without publisher confirms. Nothing was promised,
//!   so nothing counts as lost; written-but-never-received is reported separately as
//!   `unconfirmed_missing`.
//! - [`Pattern::Quorum`]: the work queue on a quorum queue (`x-queue-type: quorum`).
//! - [`Pattern::FanoutPubSub`]: a durable fanout exchange; N subscribers, each with an
//!   exclusive, server-named queue, declared, bound and consumed again on every reconnect.
//!   A subscriber's *subscribed interval* runs from the bind-ok of its queue (as the client saw
//!   it) until the client observes its connection or channel close (the connection's error
//!   event or the failed operation, whichever came first). A confirmed message counts for a
//!   subscriber when it was *sent* (handed to the client library) after a bind-ok and its
//!   confirm arrived before that interval's close. This is strict: a message in flight across the
//!   close counts as missed. Lost = such a message never received ("missed"); what was
//!   published during a reconnect gap is excused. Each subscriber row also gives how many of its
//!   misses were confirmed within [`PatternKnobs::close_boundary`] (50 ms) before a close, so the
//!   boundary's share is visible, and its subscriptions and total gap time.
//! - [`Pattern::TopicRouting`]: a durable topic exchange, four routing keys, four durable queues
//!   bound with `orders.eu.*`, `orders.*.created`, `orders.#` and `audit.#`. Each queue is owed
//!   every confirmed message whose key matches its binding (so each message reaches every
//!   matching queue once); anything else a queue receives is *misrouted* (the `audit` queue must
//!   stay empty). Publishes are mandatory: an unroutable one is returned and sent again.
//! - [`Pattern::Stream`]: a stream queue; one reader from `first` (owed every confirmed message;
//!   F = the first offset of this run it reads) and one from offset F + N
//!   ([`PatternKnobs::stream_offset`]), started once that offset exists (owed every confirmed
//!   message except those the first reader saw below F + N). Streams need a prefetch and manual
//!   acks; the start is the consumer argument `x-stream-offset`; a reader that reconnects
//!   continues after the last offset it received. Each reader must see its messages in publish
//!   order per publisher, and the offset reader must start exactly at F + N.
//! - [`Pattern::DelayedDelivery`]: a delay queue with `x-message-ttl`
//!   ([`PatternKnobs::delay`]), no consumers, and a dead-letter route to a target queue that
//!   the consumers read. Lost = confirmed and never consumed from the target; *early* = arrived
//!   before the delay had passed since it was first sent.
//! - [`Pattern::MaxLength`]: one queue per `x-overflow` mode (`drop-head`, `reject-publish`,
//!   `reject-publish-dlx`) with [`PatternKnobs::max_length`], all dead-lettering into one
//!   consumed `dead` queue. With consumers keeping up nothing overflows. A `reject-publish` nack
//!   is a refused publish (re-sent), not a loss; a confirmed message dropped from the head and
//!   dead-lettered is reported as dropped (`dead_lettered`), not lost; lost = confirmed, never
//!   consumed and never dead-lettered.
//! - [`Pattern::SingleActiveConsumer`]: a queue with `x-single-active-consumer`, several
//!   consumers. Lost as for the work queue; *overlapping* = deliveries processed (taken until
//!   the ack was accepted) while another consumer was processing one; *out of order* = per
//!   publisher, an id first processed after a later one.
//!
//! # Bounds
//!
//! Every loop is bounded in count and time: a publisher stops after `messages_per_publisher`
//! confirmed (without confirms: written) messages, when told to, or at `max_duration`; consumers
//! stop when told to or at `max_duration`. Only `127.0.0.0/8` targets are accepted, and the
//! password never appears in `Debug` or `Display` output.

mod client;
mod config;
mod consumer;
mod ledger;
mod patterns;
mod publisher;
mod report;
mod single;
mod target;
mod workload;

pub use client::{Interruption, Role, probe_connection};
pub use config::{LoadConfig, PatternKnobs, WorkloadConfig};
pub use patterns::Pattern;
pub use report::{LoadReport, LoadStats, PatternReport, UnitReport, WorkloadReport};
pub use single::{Load, QueueProbe, declare_queue};
pub use target::{AmqpTarget, LoadError};
pub use workload::{ConsumerResume, LoadView, Workload};
