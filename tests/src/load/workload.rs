//! A [`Workload`]: any set of patterns running at once against one target, each with its own
//! accounting, stopped and accounted together.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::client::{Interruption, Role, Run};
use super::config::{PatternKnobs, WorkloadConfig};
use super::consumer::{ConsumerSpec, Source, StreamStart, consumer};
use super::ledger::{Ledger, Unit};
use super::patterns::{self, Pattern, Plan, UnitPlan};
use super::publisher::{PublisherSpec, publisher};
use super::report::{LoadStats, PatternReport, WorkloadReport};
use super::target::LoadError;

/// What the scenario runner needs to show progress of a running load, whichever kind it is.
pub trait LoadView {
    /// Time since the load started.
    fn elapsed(&self) -> Duration;
    /// Counters summed over the load's patterns.
    fn stats(&self) -> LoadStats;
}

/// One consumer's outages from the closes it saw and the times of its deliveries: (first close
/// of the outage, time until the next delivery). Closes with no delivery in between are one
/// outage.
fn outages(
    mut closes: Vec<Duration>,
    mut received: Vec<Duration>,
) -> Vec<(Duration, Option<Duration>)> {
    closes.sort();
    received.sort();
    let mut out = Vec::new();
    let mut outage_start: Option<Duration> = None;
    for (k, at) in closes.iter().enumerate() {
        let start = *outage_start.get_or_insert(*at);
        let next = received.iter().find(|r| **r > *at).copied();
        // The outage goes on while the next close comes before the next delivery.
        match (closes.get(k + 1), next) {
            (Some(nc), Some(n)) if *nc < n => continue,
            (Some(_), None) => continue,
            _ => {}
        }
        out.push((start, next.map(|n| n.saturating_sub(start))));
        outage_start = None;
    }
    out
}

/// One consumer outage: from a close the client saw until its next delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsumerResume {
    /// The consumer's connection name.
    pub client: String,
    /// When the client saw its connection or channel close (since the load started).
    pub closed_at: Duration,
    /// Until its next delivery; `None`: no delivery followed.
    pub resumed_after: Option<Duration>,
}

/// One running pattern.
struct PatternRun {
    ledger: Arc<Ledger>,
    clients: String,
    exchange: String,
    routes: Arc<Vec<String>>,
    mandatory: bool,
    confirms: bool,
    more_consumers: Option<Source>,
    publishers: Vec<JoinHandle<()>>,
    consumers: Vec<JoinHandle<()>>,
    next_publisher: u32,
    next_consumer: u32,
}

impl PatternRun {
    fn add_publisher(&mut self, run: &Arc<Run>) {
        let index = self.next_publisher;
        self.next_publisher += 1;
        let spec = PublisherSpec {
            index,
            client: format!("{}-pub-{index}", self.clients),
            exchange: self.exchange.clone(),
            routes: self.routes.clone(),
            mandatory: self.mandatory,
            confirms: self.confirms,
        };
        self.publishers.push(tokio::spawn(publisher(
            run.clone(),
            self.ledger.clone(),
            spec,
        )));
    }

    fn add_consumer(
        &mut self,
        run: &Arc<Run>,
        unit: Arc<Unit>,
        source: Source,
        start_after_offset: Option<(usize, u64)>,
    ) {
        let index = self.next_consumer;
        self.next_consumer += 1;
        let client = match source {
            // A subscriber is its own unit: the unit carries the name.
            Source::Subscriber { .. } => unit.name.clone(),
            _ => format!("{}-con-{index}", self.clients),
        };
        let mut spec = ConsumerSpec {
            index,
            client,
            source,
            unit,
        };
        let (run, ledger) = (run.clone(), self.ledger.clone());
        let reader =
            start_after_offset.and_then(|(u, n)| Some((ledger.units().get(u)?.clone(), n)));
        self.consumers.push(tokio::spawn(async move {
            // A stream reader that asks for "n after the first offset of this run" starts once
            // the first reader has seen that offset exist.
            if let Some((reader, n)) = reader {
                let start = loop {
                    if let (Some(first), Some(last)) = (reader.first_offset(), reader.last_offset())
                        && last >= first + n
                    {
                        break first + n;
                    }
                    if run.stopped(Role::Consumer) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                if let Source::Stream {
                    start: StreamStart::Offset(o),
                    ..
                } = &mut spec.source
                {
                    *o = start;
                }
            }
            consumer(run, ledger, spec).await
        }));
    }

    fn add_unit(&mut self, run: &Arc<Run>, up: UnitPlan) {
        let unit = self.ledger.add_unit(up.unit);
        for source in up.consumers {
            self.add_consumer(run, unit.clone(), source, up.start_after_offset);
        }
    }
}

/// Any set of patterns running against one target. Dropping it stops every client.
pub struct Workload {
    run: Arc<Run>,
    knobs: PatternKnobs,
    patterns: Vec<PatternRun>,
}

impl Workload {
    /// Declares each pattern's topology (exchanges, durable queues, bindings: the tenant's
    /// topology, which a conversion copies), then starts every pattern's publishers and
    /// consumers.
    pub async fn start(cfg: WorkloadConfig) -> Result<Workload, LoadError> {
        let plans = plans(&cfg);
        for plan in &plans {
            patterns::declare(&cfg.load.target, plan).await?;
        }
        Ok(Self::launch(cfg, plans))
    }

    /// Starts clients against a topology that exists already.
    pub fn start_without_declare(cfg: WorkloadConfig) -> Workload {
        let plans = plans(&cfg);
        Self::launch(cfg, plans)
    }

    fn launch(cfg: WorkloadConfig, plans: Vec<Plan>) -> Workload {
        let run = Arc::new(Run::new(cfg.load));
        let mut patterns = Vec::new();
        for plan in plans {
            let mut p = PatternRun {
                ledger: Arc::new(Ledger::new(plan.pattern)),
                clients: plan.clients,
                exchange: plan.exchange,
                routes: Arc::new(plan.routes),
                mandatory: plan.mandatory,
                confirms: plan.confirms,
                more_consumers: plan.more_consumers_of_unit0,
                publishers: Vec::new(),
                consumers: Vec::new(),
                next_publisher: 0,
                next_consumer: 0,
            };
            for _ in 0..run.cfg.publishers {
                p.add_publisher(&run);
            }
            for up in plan.units {
                p.add_unit(&run, up);
            }
            patterns.push(p);
        }
        Workload {
            run,
            knobs: cfg.knobs,
            patterns,
        }
    }

    fn find(&mut self, pattern: Pattern) -> Option<&mut PatternRun> {
        self.patterns
            .iter_mut()
            .find(|p| p.ledger.pattern == pattern)
    }

    /// Starts `n` more publishers of `pattern` (new connections, each with its own id space and
    /// the configured message count). False when the pattern is not running.
    pub fn add_publishers(&mut self, pattern: Pattern, n: u32) -> bool {
        let run = self.run.clone();
        let Some(p) = self.find(pattern) else {
            return false;
        };
        for _ in 0..n {
            p.add_publisher(&run);
        }
        true
    }

    /// Starts `n` more consumers of `pattern`: on its (first) queue for the work-queue-like
    /// patterns, new subscribers for fanout pub/sub. False when the pattern is not running or has
    /// no such notion (topic, stream, max-length).
    pub fn add_consumers(&mut self, pattern: Pattern, n: u32) -> bool {
        let run = self.run.clone();
        let Some(p) = self.find(pattern) else {
            return false;
        };
        if let Some(source) = p.more_consumers.clone() {
            let Some(unit) = p.ledger.units().first().cloned() else {
                return false;
            };
            for _ in 0..n {
                p.add_consumer(&run, unit.clone(), source.clone(), None);
            }
            return true;
        }
        if pattern == Pattern::FanoutPubSub {
            for _ in 0..n {
                let i = p.ledger.units().len() as u32;
                let up = patterns::subscriber(&p.clients, &p.exchange, i);
                p.add_unit(&run, up);
            }
            return true;
        }
        false
    }

    /// Counters of one pattern.
    pub fn pattern_stats(&self, pattern: Pattern) -> Option<LoadStats> {
        self.patterns
            .iter()
            .find(|p| p.ledger.pattern == pattern)
            .map(|p| p.ledger.stats(self.knobs.close_boundary))
    }

    /// Counters summed over every pattern.
    pub fn stats(&self) -> LoadStats {
        let mut s = LoadStats::default();
        for p in &self.patterns {
            s += p.ledger.stats(self.knobs.close_boundary);
        }
        s
    }

    pub fn elapsed(&self) -> Duration {
        self.run.started.elapsed()
    }

    pub fn interruptions(&self) -> Vec<Interruption> {
        self.run.interruptions()
    }

    /// True when every publisher has finished (all its messages confirmed, or stopped).
    pub fn publishing_done(&self) -> bool {
        self.patterns
            .iter()
            .flat_map(|p| &p.publishers)
            .all(|h| h.is_finished())
    }

    /// Asks publishers to stop after their in-flight messages.
    pub fn stop_publishing(&self) {
        self.run.stop(Role::Publisher);
    }

    /// Waits for publishers to finish, then for every queue and subscriber to receive what it is
    /// owed (at most `drain_timeout`: a lost message keeps it waiting that long, so pick it to
    /// fit the consumers' speed), then stops everything and accounts per pattern.
    pub async fn finish(mut self, drain_timeout: Duration) -> WorkloadReport {
        self.drain(drain_timeout).await;
        self.report()
    }

    pub(crate) async fn drain(&mut self, drain_timeout: Duration) {
        let publish_deadline = self.run.deadline.max(Instant::now());
        for h in self
            .patterns
            .iter_mut()
            .flat_map(|p| p.publishers.drain(..))
        {
            let left = publish_deadline.saturating_duration_since(Instant::now());
            let _ = tokio::time::timeout(left + Duration::from_secs(5), h).await;
        }
        let until = Instant::now() + drain_timeout;
        // Let late duplicates show up too: wait for a quiet second after everything arrived.
        while Instant::now() < until {
            if self.stats().unconsumed == 0 {
                let before = self.stats().received;
                tokio::time::sleep(Duration::from_secs(1)).await;
                if self.stats().received == before {
                    break;
                }
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.run.stop(Role::Consumer);
        for h in self.patterns.iter_mut().flat_map(|p| p.consumers.drain(..)) {
            let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
        }
    }

    /// For every time a work-queue consumer lost its connection or channel (as the client saw
    /// it): how long until that consumer's next delivery. Interruptions with no delivery in
    /// between (e.g. a refused reconnect) form one outage, timed from the first of them; an
    /// outage without a later delivery is `None`.
    pub fn consumer_resumes(&self) -> Vec<ConsumerResume> {
        let interruptions = self.interruptions();
        let mut out = Vec::new();
        for p in &self.patterns {
            let clients = format!("{}-con-", p.clients);
            let logs: Vec<_> = p
                .ledger
                .units()
                .iter()
                .filter(|u| u.queue.is_some())
                .flat_map(|u| u.log())
                .collect();
            let mut by_consumer: std::collections::BTreeMap<u32, Vec<Duration>> =
                Default::default();
            for i in interruptions
                .iter()
                .filter(|i| i.role == Role::Consumer && i.pattern == p.ledger.pattern)
            {
                if let Some(index) = i
                    .client
                    .strip_prefix(&clients)
                    .and_then(|n| n.parse::<u32>().ok())
                {
                    by_consumer.entry(index).or_default().push(i.after);
                }
            }
            for (index, closes) in by_consumer {
                let received: Vec<Duration> = logs
                    .iter()
                    .filter(|d| d.consumer == index)
                    .map(|d| d.received_at)
                    .collect();
                out.extend(outages(closes, received).into_iter().map(
                    |(closed_at, resumed_after)| ConsumerResume {
                        client: format!("{clients}{index}"),
                        closed_at,
                        resumed_after,
                    },
                ));
            }
        }
        out.sort_by_key(|r| r.closed_at);
        out
    }

    /// The account so far (final after [`Workload::finish`]).
    pub fn report(&self) -> WorkloadReport {
        WorkloadReport {
            patterns: self
                .patterns
                .iter()
                .map(|p| PatternReport::build(&p.ledger, p.confirms, &self.knobs))
                .collect(),
            interruptions: self.interruptions(),
            duration: self.elapsed(),
            close_boundary: self.knobs.close_boundary,
        }
    }
}

impl LoadView for Workload {
    fn elapsed(&self) -> Duration {
        Workload::elapsed(self)
    }

    fn stats(&self) -> LoadStats {
        Workload::stats(self)
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.run.stop(Role::Publisher);
        self.run.stop(Role::Consumer);
        for p in &self.patterns {
            for h in p.publishers.iter().chain(p.consumers.iter()) {
                h.abort();
            }
        }
    }
}

fn plans(cfg: &WorkloadConfig) -> Vec<Plan> {
    let mut seen = Vec::new();
    cfg.patterns
        .iter()
        .filter(|p| {
            let new = !seen.contains(*p);
            seen.push(**p);
            new
        })
        .map(|p| patterns::plan(*p, &cfg.load, &cfg.knobs))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn an_outage_runs_from_the_first_close_to_the_next_delivery() {
        // Closed at 1.0 s, refused again at 1.2 s, consuming at 1.5 s; closed at 3.0 s for good.
        let got = outages(ms(&[3000, 1200, 1000]), ms(&[500, 1500, 1600]));
        assert_eq!(
            got,
            vec![
                (
                    Duration::from_millis(1000),
                    Some(Duration::from_millis(500))
                ),
                (Duration::from_millis(3000), None),
            ]
        );
        assert!(outages(Vec::new(), ms(&[1])).is_empty());
    }
}
