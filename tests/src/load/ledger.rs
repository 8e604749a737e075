//! The accounting of one pattern: what the broker accepted ([`Published`]), what each queue or
//! subscriber (a [`Unit`]) received, and from that which messages a unit was owed and never got.
//!
//! Publishers write into [`Ledger::confirmed`] (or [`Ledger::written`] without confirms), consumers
//! into [`Unit::record`]; [`Ledger::account`] compares the two. Every time is a [`Duration`] since
//! the run started.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::patterns::Pattern;
use super::report::LoadStats;

/// Live counters of one pattern.
#[derive(Default)]
pub(crate) struct Counters {
    /// Publishes written (including re-sends after a failure).
    pub sent: AtomicU64,
    /// Distinct messages the broker confirmed.
    pub confirmed: AtomicU64,
    pub reconnects: AtomicU64,
    /// Publishes not confirmed (nack, returned, or no confirm before the connection failed);
    /// re-sent later.
    pub refused: AtomicU64,
    /// Of `refused`: negative confirms (e.g. `x-overflow: reject-publish` on a full queue).
    pub nacked: AtomicU64,
    /// Of `refused`: returned as unroutable (mandatory publishes).
    pub returned: AtomicU64,
    pub publisher_connections: AtomicU64,
    pub consumer_connections: AtomicU64,
    /// Milliseconds since start of the last confirm (0: none yet) and the longest gap.
    last_confirm_ms: AtomicU64,
    max_confirm_gap_ms: AtomicU64,
}

impl Counters {
    /// Longest time without any confirm since the first one.
    pub fn max_confirm_gap(&self) -> Duration {
        Duration::from_millis(self.max_confirm_gap_ms.load(Ordering::Relaxed))
    }
}

/// One message the broker accepted: confirmed, or (publishers without confirms) written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Published {
    pub publisher: u32,
    pub seq: u64,
    /// Index into the pattern's routing keys.
    pub route: usize,
    /// When the publish the broker confirmed was handed to the client library (before the write).
    pub sent_at: Duration,
    /// When the first copy of this id was (an earlier copy may have arrived although it was not
    /// confirmed; it is then re-sent).
    pub first_sent_at: Duration,
    /// When its confirm arrived at the client; `None` without confirms.
    pub confirmed_at: Option<Duration>,
}

impl Published {
    fn accepted_at(&self) -> Duration {
        self.confirmed_at.unwrap_or(self.sent_at)
    }
}

/// Which published messages a unit is owed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Every one.
    All,
    /// Those published with one of these routes (indices into the pattern's routing keys).
    Routes(Vec<usize>),
    /// Those sent after a bind-ok of the unit and confirmed before that subscription's close.
    WhileSubscribed,
    /// Every one except those that unit `reader` saw in the first `skip` offsets from the first
    /// offset of this run it read.
    StreamFrom { skip: u64, reader: usize },
    /// None: a dead-letter sink, whose deliveries are classified by the queue they died in.
    Nothing,
}

/// One delivery a consumer acknowledged.
#[derive(Clone, Debug, Default)]
pub(crate) struct Delivery {
    pub id: String,
    pub consumer: u32,
    /// When the consumer took it from the channel.
    pub received_at: Duration,
    /// When the broker had accepted its ack.
    pub done_at: Duration,
    /// `x-stream-offset` (stream deliveries).
    pub offset: Option<u64>,
    /// `x-first-death-queue` and `x-first-death-reason` (dead-lettered messages).
    pub died_in: Option<String>,
    pub death_reason: Option<String>,
}

/// One subscription of a subscriber: from its bind-ok until the client saw its connection or
/// channel close (`None`: still subscribed when the run stopped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Subscription {
    pub bound_at: Duration,
    pub closed_at: Option<Duration>,
}

impl Subscription {
    /// Strict: `p` was sent after this subscription's bind-ok and confirmed before its close.
    pub fn covers(&self, p: &Published) -> bool {
        p.sent_at >= self.bound_at && self.closed_at.is_none_or(|c| p.accepted_at() < c)
    }

    /// `p` was confirmed less than `boundary` before this subscription's close.
    pub fn near_close(&self, p: &Published, boundary: Duration) -> bool {
        self.closed_at
            .is_some_and(|c| p.accepted_at() + boundary >= c)
    }
}

/// An accounting unit: a queue, or one subscriber (its server-named queues).
pub(crate) struct Unit {
    pub name: String,
    /// The queue consumed (`None`: a subscriber's server-named queues).
    pub queue: Option<String>,
    pub expect: Expect,
    received: Mutex<HashMap<String, u32>>,
    log: Mutex<Vec<Delivery>>,
    subscriptions: Mutex<Vec<Subscription>>,
    deliveries: AtomicU64,
    duplicates: AtomicU64,
    /// Deliveries of other runs, acked and set aside, and the last stream offset among them.
    foreign: AtomicU64,
    foreign_offset: Mutex<Option<u64>>,
}

impl Unit {
    pub fn new(name: impl Into<String>, queue: Option<String>, expect: Expect) -> Unit {
        Unit {
            name: name.into(),
            queue,
            expect,
            received: Mutex::default(),
            log: Mutex::default(),
            subscriptions: Mutex::default(),
            deliveries: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            foreign_offset: Mutex::default(),
        }
    }

    /// Records a delivery of another run (acked, not accounted).
    pub fn foreign(&self, offset: Option<u64>) {
        self.foreign.fetch_add(1, Ordering::Relaxed);
        if let Some(o) = offset {
            let mut f = self.foreign_offset.lock().unwrap();
            *f = Some(f.map_or(o, |x| x.max(o)));
        }
    }

    /// Deliveries of other runs seen.
    pub fn foreign_count(&self) -> u64 {
        self.foreign.load(Ordering::Relaxed)
    }

    /// Records an acknowledged delivery; true when its id had been received before.
    pub fn record(&self, d: Delivery) -> bool {
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        let dup = {
            let mut received = self.received.lock().unwrap();
            let n = received.entry(d.id.clone()).or_insert(0);
            *n += 1;
            *n > 1
        };
        if dup {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        self.log.lock().unwrap().push(d);
        dup
    }

    /// A subscriber's queue was declared and bound (bind-ok seen at `at`).
    pub fn subscribed(&self, at: Duration) {
        self.subscriptions.lock().unwrap().push(Subscription {
            bound_at: at,
            closed_at: None,
        });
    }

    /// The client saw the subscriber's connection or channel close at `at`.
    pub fn unsubscribed(&self, at: Duration) {
        if let Some(s) = self.subscriptions.lock().unwrap().last_mut()
            && s.closed_at.is_none()
        {
            s.closed_at = Some(at.max(s.bound_at));
        }
    }

    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.subscriptions.lock().unwrap().clone()
    }

    pub fn log(&self) -> Vec<Delivery> {
        self.log.lock().unwrap().clone()
    }

    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }

    /// The highest stream offset received in this run, if any.
    pub fn last_offset(&self) -> Option<u64> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|d| d.offset)
            .max()
    }

    /// The lowest stream offset received in this run, if any.
    pub fn first_offset(&self) -> Option<u64> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|d| d.offset)
            .min()
    }

    /// Where a stream reader continues after a reconnect: after the last offset it received,
    /// of this run or (skipped) of another.
    pub fn resume_offset(&self) -> Option<u64> {
        let foreign = *self.foreign_offset.lock().unwrap();
        self.last_offset().max(foreign).map(|o| o + 1)
    }
}

/// What one unit was owed and got.
#[derive(Clone, Debug, Default)]
pub(crate) struct UnitAccount {
    /// Published messages this unit was owed.
    pub expected: u64,
    /// Deliveries acknowledged (duplicates included).
    pub deliveries: u64,
    pub duplicates: u64,
    /// Owed, never received, and not dead-lettered from this unit's queue; sorted.
    pub missing: Vec<String>,
    /// Of `missing`: confirmed less than the boundary before a subscription's close.
    pub missing_near_close: u64,
    /// Owed, never received, dead-lettered from this unit's queue (e.g. dropped by max-length).
    pub dead_lettered: u64,
    /// Distinct ids received that this unit was not owed (e.g. misrouted, or sent just before a
    /// bind-ok, or read before a stream offset).
    pub unexpected: u64,
}

/// The accounting of one pattern.
pub(crate) struct Ledger {
    pub pattern: Pattern,
    pub counters: Counters,
    published: Mutex<HashMap<String, Published>>,
    units: Mutex<Vec<Arc<Unit>>>,
    /// Negative confirms per route.
    nacked: Mutex<HashMap<usize, u64>>,
}

impl Ledger {
    pub fn new(pattern: Pattern) -> Ledger {
        Ledger {
            pattern,
            counters: Counters::default(),
            published: Mutex::default(),
            units: Mutex::default(),
            nacked: Mutex::default(),
        }
    }

    /// The broker nacked a publish with route `route`.
    pub fn nacked(&self, route: usize) {
        self.counters.nacked.fetch_add(1, Ordering::Relaxed);
        *self.nacked.lock().unwrap().entry(route).or_insert(0) += 1;
    }

    pub fn nacked_by_route(&self) -> HashMap<usize, u64> {
        self.nacked.lock().unwrap().clone()
    }

    pub fn add_unit(&self, unit: Unit) -> Arc<Unit> {
        let unit = Arc::new(unit);
        self.units.lock().unwrap().push(unit.clone());
        unit
    }

    pub fn units(&self) -> Vec<Arc<Unit>> {
        self.units.lock().unwrap().clone()
    }

    /// The broker confirmed message `id`; false when it had been confirmed before.
    pub fn confirmed(&self, id: String, p: Published, observed_at: Duration) -> bool {
        let new = match self.published.lock().unwrap().entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(p);
                true
            }
        };
        if new {
            self.counters.confirmed.fetch_add(1, Ordering::Relaxed);
            self.confirm_seen(observed_at);
        }
        new
    }

    /// A publisher without confirms wrote message `id`.
    pub fn written(&self, id: String, p: Published) {
        self.published.lock().unwrap().entry(id).or_insert(p);
    }

    fn confirm_seen(&self, at: Duration) {
        let now = at.as_millis() as u64;
        let c = &self.counters;
        let last = c.last_confirm_ms.swap(now.max(1), Ordering::Relaxed);
        if last > 0 {
            c.max_confirm_gap_ms
                .fetch_max(now.saturating_sub(last), Ordering::Relaxed);
        }
    }

    pub fn published(&self) -> HashMap<String, Published> {
        self.published.lock().unwrap().clone()
    }

    /// Owed-but-missing messages over all units (while running: in flight; at the end: lost).
    pub fn outstanding(&self, boundary: Duration) -> u64 {
        self.account(boundary)
            .iter()
            .map(|a| a.missing.len() as u64)
            .sum()
    }

    /// Compares what was published with what each unit received, in the order of
    /// [`Ledger::units`].
    pub fn account(&self, boundary: Duration) -> Vec<UnitAccount> {
        let units = self.units();
        let published = self.published.lock().unwrap();
        // Ids dead-lettered out of each queue, from every sink's deliveries.
        let mut died_in: HashMap<String, HashSet<String>> = HashMap::new();
        for u in units.iter().filter(|u| u.expect == Expect::Nothing) {
            for d in u.log.lock().unwrap().iter() {
                if let Some(q) = &d.died_in {
                    died_in.entry(q.clone()).or_default().insert(d.id.clone());
                }
            }
        }
        let none = HashSet::new();
        units
            .iter()
            .map(|u| {
                let before_offset: HashSet<String> = match &u.expect {
                    Expect::StreamFrom { skip, reader } => units
                        .get(*reader)
                        .and_then(|r| {
                            let start = r.first_offset()? + skip;
                            Some(
                                r.log
                                    .lock()
                                    .unwrap()
                                    .iter()
                                    .filter(|d| d.offset.is_some_and(|o| o < start))
                                    .map(|d| d.id.clone())
                                    .collect(),
                            )
                        })
                        .unwrap_or_default(),
                    _ => HashSet::new(),
                };
                let subs = u.subscriptions();
                let dead = u
                    .queue
                    .as_ref()
                    .and_then(|q| died_in.get(q))
                    .unwrap_or(&none);
                let received = u.received.lock().unwrap();
                account_unit(
                    &u.expect,
                    &published,
                    &received,
                    &subs,
                    &before_offset,
                    dead,
                    boundary,
                    u.deliveries(),
                    u.duplicates.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Today's counters, with `unconsumed` over all units.
    pub fn stats(&self, boundary: Duration) -> LoadStats {
        let c = &self.counters;
        let units = self.units();
        LoadStats {
            sent: c.sent.load(Ordering::Relaxed),
            confirmed: c.confirmed.load(Ordering::Relaxed),
            received: units.iter().map(|u| u.deliveries()).sum(),
            duplicates: units
                .iter()
                .map(|u| u.duplicates.load(Ordering::Relaxed))
                .sum(),
            unconsumed: self.outstanding(boundary),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            max_confirm_gap: c.max_confirm_gap(),
        }
    }
}

/// The pure part of [`Ledger::account`] for one unit.
#[allow(clippy::too_many_arguments)]
fn account_unit(
    expect: &Expect,
    published: &HashMap<String, Published>,
    received: &HashMap<String, u32>,
    subs: &[Subscription],
    before_offset: &HashSet<String>,
    dead: &HashSet<String>,
    boundary: Duration,
    deliveries: u64,
    duplicates: u64,
) -> UnitAccount {
    let mut a = UnitAccount {
        deliveries,
        duplicates,
        ..Default::default()
    };
    let mut owed: HashSet<&str> = HashSet::new();
    for (id, p) in published {
        let (is_owed, near_close) = match expect {
            Expect::All => (true, false),
            Expect::Routes(routes) => (routes.contains(&p.route), false),
            Expect::WhileSubscribed => match subs.iter().find(|s| s.covers(p)) {
                Some(s) => (true, s.near_close(p, boundary)),
                None => (false, false),
            },
            Expect::StreamFrom { .. } => (!before_offset.contains(id), false),
            Expect::Nothing => (false, false),
        };
        if !is_owed {
            continue;
        }
        owed.insert(id);
        a.expected += 1;
        if received.contains_key(id) {
            continue;
        }
        if dead.contains(id) {
            a.dead_lettered += 1;
        } else {
            a.missing.push(id.clone());
            if near_close {
                a.missing_near_close += 1;
            }
        }
    }
    if *expect != Expect::Nothing {
        a.unexpected = received
            .keys()
            .filter(|id| !owed.contains(id.as_str()))
            .count() as u64;
    }
    a.missing.sort();
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn msg(seq: u64, sent: u64, confirmed: u64) -> (String, Published) {
        (
            format!("p0-{seq}"),
            Published {
                publisher: 0,
                seq,
                route: 0,
                sent_at: ms(sent),
                first_sent_at: ms(sent),
                confirmed_at: Some(ms(confirmed)),
            },
        )
    }

    /// Subscribed from 1000 ms (bind-ok) until 2000 ms (close seen), then again from 2500 ms.
    fn subscriber_case(received: &[u64]) -> UnitAccount {
        let published: HashMap<_, _> = [
            msg(0, 900, 1005),  // sent before the bind-ok: not owed even though confirmed after
            msg(1, 1100, 1110), // inside: owed
            msg(2, 1500, 1510), // inside: owed
            msg(3, 1960, 1970), // confirmed 30 ms before the close: owed, near the close
            msg(4, 1990, 2010), // confirmed after the close: not owed
            msg(5, 2200, 2210), // in the gap: not owed
            msg(6, 2600, 2610), // second subscription, still open: owed
        ]
        .into_iter()
        .collect();
        let received: HashMap<String, u32> =
            received.iter().map(|s| (format!("p0-{s}"), 1)).collect();
        let subs = [
            Subscription {
                bound_at: ms(1000),
                closed_at: Some(ms(2000)),
            },
            Subscription {
                bound_at: ms(2500),
                closed_at: None,
            },
        ];
        account_unit(
            &Expect::WhileSubscribed,
            &published,
            &received,
            &subs,
            &HashSet::new(),
            &HashSet::new(),
            ms(50),
            received.len() as u64,
            0,
        )
    }

    #[test]
    fn a_subscriber_is_owed_what_was_sent_after_its_bind_and_confirmed_before_its_close() {
        let a = subscriber_case(&[1, 2, 3, 6]);
        assert_eq!(a.expected, 4, "{a:?}");
        assert!(a.missing.is_empty(), "{a:?}");
        assert_eq!(a.unexpected, 0);
    }

    #[test]
    fn a_message_lost_across_the_close_is_missed_strictly_but_marked_near_the_close() {
        let a = subscriber_case(&[1, 2, 6]);
        assert_eq!(a.missing, vec!["p0-3".to_string()]);
        assert_eq!(a.missing_near_close, 1);
    }

    #[test]
    fn a_message_missed_well_inside_the_subscription_counts_in_both_counts() {
        let a = subscriber_case(&[1, 3, 6, 0, 5]);
        assert_eq!(a.missing, vec!["p0-2".to_string()]);
        assert_eq!(a.missing_near_close, 0);
        assert_eq!(a.unexpected, 2, "p0-0 and p0-5 arrived but were not owed");
    }

    #[test]
    fn dead_lettered_messages_are_not_missing_and_routes_select_what_is_owed() {
        let mut published: HashMap<_, _> = [msg(0, 1, 2), msg(1, 3, 4), msg(2, 5, 6)]
            .into_iter()
            .collect();
        published.get_mut("p0-2").unwrap().route = 1;
        let received = HashMap::from([("p0-0".to_string(), 2)]);
        let dead = HashSet::from(["p0-1".to_string()]);
        let a = account_unit(
            &Expect::Routes(vec![0]),
            &published,
            &received,
            &[],
            &HashSet::new(),
            &dead,
            ms(50),
            2,
            1,
        );
        assert_eq!((a.expected, a.dead_lettered, a.missing.len()), (2, 1, 0));
        assert_eq!(a.duplicates, 1);
    }
}
