//! The operator-wide bound on conversions running at once (`--max-concurrent-conversions`).
//!
//! Each conversion boots a broker (upgrade) or loads a SharedCluster (downgrade); a fleet that
//! flips together would start them all at once and slow every one of them down. With a bound,
//! flips beyond it are held (`ConversionBlocked`, `ConversionLimitReached`) and start in the
//! order they were held, as conversions end.
//!
//! The count comes from the instance cache (a recorded `status.migration` is a running
//! conversion, so a restarted leader recounts from statuses) corrected by what this replica did
//! that the cache may not show yet: conversions it started (a reservation, so two passes at once
//! never both take the last slot) and conversions it ended.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tiermq_crd::conditions::{CONVERSION_BLOCKED, reasons};
use tiermq_crd::{MigrationPhase, RabbitMQInstance};

use super::observe::instance_key as key;
use super::plan::ConversionSlots;

/// How long this replica's own start or end of a conversion stands without the cache showing it.
pub const NOTE_TTL: Duration = Duration::from_secs(120);

/// What this replica did to conversions that the cache may not show yet.
#[derive(Debug, Default)]
pub struct Book {
    /// Conversions started here: instance → when.
    started: HashMap<String, Instant>,
    /// Conversions ended here: instance → (the ended conversion's `started`, when it ended).
    ended: HashMap<String, (String, Instant)>,
}

/// Running conversions and held flips in the order they start.
#[derive(Debug, Default, PartialEq)]
pub struct Fleet {
    /// Instances whose conversion runs (or was just started here).
    pub running: BTreeSet<String>,
    /// Flips held for a slot, first held first.
    pub waiting: Vec<String>,
}

fn migration_start(i: &RabbitMQInstance) -> Option<String> {
    let m = i.status.as_ref()?.migration.as_ref()?;
    Some(m.started.0.to_string())
}

/// When `i`'s flip was first held, if it is held for a conversion slot now.
fn held_for_slot_since(i: &RabbitMQInstance) -> Option<String> {
    let st = i.status.as_ref()?;
    if st.migration.is_some()
        || st.migration_phase != Some(MigrationPhase::Blocked)
        || i.metadata.deletion_timestamp.is_some()
    {
        return None;
    }
    let c = st.conditions.iter().find(|c| {
        c.type_ == CONVERSION_BLOCKED
            && c.status == "True"
            && c.reason == reasons::CONVERSION_LIMIT_REACHED
    })?;
    // RFC 3339 in UTC at one precision sorts as time does.
    Some(c.last_transition_time.0.to_string())
}

impl Book {
    /// The fleet as the cache shows it, corrected by this replica's notes (which are dropped once
    /// the cache shows them, or after [`NOTE_TTL`]).
    pub fn fleet(&mut self, instances: &[Arc<RabbitMQInstance>], now: Instant) -> Fleet {
        let by_key: HashMap<String, &RabbitMQInstance> =
            instances.iter().map(|i| (key(i), i.as_ref())).collect();
        let start_of = |k: &str| by_key.get(k).and_then(|i| migration_start(i));
        self.ended.retain(|k, (started, at)| {
            now.duration_since(*at) < NOTE_TTL && start_of(k).as_ref() == Some(started)
        });
        self.started.retain(|k, at| {
            now.duration_since(*at) < NOTE_TTL
                && by_key.contains_key(k)
                && (start_of(k).is_none() || self.ended.contains_key(k))
        });
        let mut running: BTreeSet<String> = by_key
            .iter()
            .filter(|(k, i)| {
                migration_start(i).is_some_and(|s| self.ended.get(*k).is_none_or(|(e, _)| *e != s))
            })
            .map(|(k, _)| k.clone())
            .collect();
        running.extend(self.started.keys().cloned());
        let mut held: Vec<(String, String)> = by_key
            .iter()
            .filter(|(k, _)| !running.contains(*k))
            .filter_map(|(k, i)| held_for_slot_since(i).map(|t| (t, k.clone())))
            .collect();
        held.sort();
        Fleet {
            running,
            waiting: held.into_iter().map(|(_, k)| k).collect(),
        }
    }

    /// The slots as `me` sees them while its flip waits to start.
    pub fn slots_for(
        &mut self,
        instances: &[Arc<RabbitMQInstance>],
        me: &RabbitMQInstance,
        limit: u32,
        now: Instant,
    ) -> ConversionSlots {
        let me = key(me);
        let fleet = self.fleet(instances, now);
        let running = fleet.running.iter().filter(|k| **k != me).count();
        let ahead = match fleet.waiting.iter().position(|k| *k == me) {
            Some(p) => p,
            // Not held for a slot yet: behind every flip that is.
            None => fleet.waiting.len(),
        };
        ConversionSlots {
            limit: Some(limit),
            running: u32::try_from(running).unwrap_or(u32::MAX),
            ahead: u32::try_from(ahead).unwrap_or(u32::MAX),
        }
    }

    /// Takes a slot for `me`'s conversion unless `limit` run: the check and the note are one
    /// step, so two passes at once never both take the last slot.
    pub fn reserve(
        &mut self,
        instances: &[Arc<RabbitMQInstance>],
        me: &RabbitMQInstance,
        limit: u32,
        now: Instant,
    ) -> bool {
        let me = key(me);
        let fleet = self.fleet(instances, now);
        if fleet.running.iter().filter(|k| **k != me).count() >= limit as usize {
            return false;
        }
        self.started.insert(me, now);
        true
    }

    /// `i` took a slot but its conversion did not start (its status was not recorded, or the
    /// flip was withdrawn): the slot is free again.
    pub fn release(&mut self, i: &RabbitMQInstance) {
        self.started.remove(&key(i));
    }

    /// `i`'s conversion (as `i` shows it) has just been ended here.
    pub fn ended(&mut self, i: &RabbitMQInstance, now: Instant) {
        if let Some(s) = migration_start(i) {
            self.ended.insert(key(i), (s, now));
            self.started.remove(&key(i));
        }
    }

    /// The held flips that a free slot lets start now, first held first.
    pub fn to_wake(
        &mut self,
        instances: &[Arc<RabbitMQInstance>],
        limit: u32,
        now: Instant,
    ) -> Vec<String> {
        let fleet = self.fleet(instances, now);
        let free = (limit as usize).saturating_sub(fleet.running.len());
        fleet.waiting.into_iter().take(free).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(name: &str, status: serde_json::Value) -> Arc<RabbitMQInstance> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "tiermq.io/v1alpha1", "kind": "RabbitMQInstance",
                "metadata": {"name": name, "namespace": "t"},
                "spec": {"series": "Subscription", "tier": "Dedicated"},
                "status": status,
            }))
            .unwrap(),
        )
    }

    fn converting(name: &str, started: &str) -> Arc<RabbitMQInstance> {
        instance(
            name,
            serde_json::json!({
                "tier": "Shared", "migrationPhase": "DualWriteDualRead",
                "migration": {
                    "from": "Shared", "to": "Dedicated",
                    "source": {"kind": "Shared", "name": "s", "namespace": "tiermq-system"},
                    "destination": {"kind": "Dedicated", "name": name, "namespace": "t"},
                    "drainStrategy": "Shovel", "connectionPolicy": "Keep",
                    "started": started,
                }
            }),
        )
    }

    fn held(name: &str, since: &str) -> Arc<RabbitMQInstance> {
        instance(
            name,
            serde_json::json!({
                "tier": "Shared", "migrationPhase": "Blocked",
                "conditions": [{"type": "ConversionBlocked", "status": "True",
                    "reason": "ConversionLimitReached", "message": "m",
                    "lastTransitionTime": since}]
            }),
        )
    }

    fn stable(name: &str) -> Arc<RabbitMQInstance> {
        instance(
            name,
            serde_json::json!({"tier": "Shared", "migrationPhase": "Stable"}),
        )
    }

    #[test]
    fn held_flips_queue_in_the_order_they_were_held_behind_running_conversions() {
        let fleet = vec![
            converting("a", "2026-12-01T10:00:00Z"),
            held("late", "2026-12-01T10:05:00Z"),
            held("early", "2026-12-01T10:01:00Z"),
            stable("idle"),
        ];
        let mut book = Book::default();
        let now = Instant::now();
        let f = book.fleet(&fleet, now);
        assert_eq!(f.running.iter().collect::<Vec<_>>(), ["t/a"]);
        assert_eq!(f.waiting, ["t/early", "t/late"]);
        // With 2 slots, one is free: the first held flip is woken, and it alone may start.
        assert_eq!(book.to_wake(&fleet, 2, now), ["t/early"]);
        assert!(book.slots_for(&fleet, &fleet[2], 2, now).free());
        let late = book.slots_for(&fleet, &fleet[1], 2, now);
        assert_eq!((late.running, late.ahead), (1, 1));
        assert!(!late.free());
        // A flip not held yet queues behind both.
        let fresh = book.slots_for(&fleet, &fleet[3], 3, now);
        assert_eq!((fresh.running, fresh.ahead, fresh.free()), (1, 2, false));
    }

    #[test]
    fn a_reservation_counts_until_the_cache_shows_the_conversion_and_the_last_slot_goes_once() {
        let mut fleet = vec![held("x", "2026-12-01T10:01:00Z"), stable("y")];
        let mut book = Book::default();
        let now = Instant::now();
        assert!(
            book.reserve(&fleet, &fleet[0], 1, now),
            "x takes the only slot"
        );
        assert!(!book.reserve(&fleet, &fleet[1], 1, now), "y finds it taken");
        assert!(
            book.reserve(&fleet, &fleet[0], 1, now),
            "x again (a rerun) keeps it"
        );
        // x is not counted as waiting while its reservation stands.
        assert_eq!(book.fleet(&fleet, now).waiting, Vec::<String>::new());
        // The cache catches up: counted from the cache, the note is dropped.
        fleet[0] = converting("x", "2026-12-01T10:02:00Z");
        assert_eq!(book.fleet(&fleet, now).running.len(), 1);
        assert!(book.started.is_empty());
        // A slot taken by a pass whose status was never written goes back when released.
        let mut book = Book::default();
        let fleet = vec![stable("z"), stable("w")];
        assert!(book.reserve(&fleet, &fleet[0], 1, now));
        assert!(!book.reserve(&fleet, &fleet[1], 1, now));
        book.release(&fleet[0]);
        assert!(
            book.reserve(&fleet, &fleet[1], 1, now),
            "released, the slot is free"
        );
        // A note the cache never confirms lapses.
        let mut book = Book::default();
        let fleet = vec![stable("z")];
        assert!(book.reserve(&fleet, &fleet[0], 1, now));
        assert_eq!(book.fleet(&fleet, now + NOTE_TTL).running.len(), 0);
    }

    #[test]
    fn a_conversion_ended_here_frees_its_slot_before_the_cache_shows_it() {
        let fleet = vec![
            converting("a", "2026-12-01T10:00:00Z"),
            held("b", "2026-12-01T10:01:00Z"),
        ];
        let mut book = Book::default();
        let now = Instant::now();
        assert_eq!(book.to_wake(&fleet, 1, now), Vec::<String>::new());
        book.ended(&fleet[0], now);
        assert_eq!(book.to_wake(&fleet, 1, now), ["t/b"]);
        assert!(book.slots_for(&fleet, &fleet[1], 1, now).free());
        // `a` flips back at once: its new conversion (another start) counts again.
        let again = vec![converting("a", "2026-12-01T10:09:00Z"), fleet[1].clone()];
        assert_eq!(book.to_wake(&again, 1, now), Vec::<String>::new());
    }
}
