//! What every reconcile shares: the API client, the configuration, metrics, the Event recorder,
//! the cache of instances (for placement counts) and per-object retry backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use tiermq_crd::{RabbitMQInstance, SharedCluster};

use crate::config::RunArgs;
use crate::controller::clusters::ClientCache;
use crate::metrics::Metrics;

/// Shared state of the controllers; cheap to clone behind an `Arc`.
pub struct Context {
    /// The API server connection every reconcile reads and writes through.
    pub client: kube::Client,
    /// The operator's command-line configuration.
    pub config: RunArgs,
    /// Where reconciles count themselves, their errors and the fleet's state.
    pub metrics: Metrics,
    /// Emits Events as the operator's field manager and this replica's identity (if set).
    pub recorder: Recorder,
    /// Every RabbitMQInstance as the instance controller's reflector sees it.
    pub instances: Store<RabbitMQInstance>,
    /// Every SharedCluster as the instance controller's SharedCluster watch sees it (an instance
    /// that watch wakes is reconciled with the SharedCluster it was woken for already here).
    pub shared_clusters: Store<SharedCluster>,
    /// Management clients by cluster (see [`ClientCache`]).
    clients: ClientCache,
    /// This replica's part in leader election (`None` without it): destructive steps confirm
    /// leadership right before they run.
    pub leadership: Option<crate::leader::Leadership>,
    /// Consecutive failures per object and when the last one happened.
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    /// Placements onto SharedClusters decided but maybe not yet in the instance cache:
    /// cluster → instance → when (see [`Self::reserve`]).
    placing: Mutex<HashMap<String, HashMap<String, Instant>>>,
    /// Conversions started and ended here that the cache may not show yet (see
    /// [`crate::controller::slots`]).
    slots: Mutex<crate::controller::slots::Book>,
    /// Wakes held flips when a conversion slot frees (the instance controller watches it).
    wake: tokio::sync::mpsc::UnboundedSender<RabbitMQInstance>,
}

/// How long a placement reservation stands without the cache showing the placement.
pub const RESERVATION_TTL: Duration = Duration::from_secs(120);

/// First retry delay of a transient failure; doubled per consecutive failure up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_secs(2);
/// Longest retry delay of a transient failure.
pub const MAX_BACKOFF: Duration = Duration::from_secs(120);
/// A failure count not added to for this long is forgotten (see [`Context::backoff`]).
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

impl Context {
    /// The shared state for one run of the controllers, with no failures or reservations yet.
    pub fn new(
        client: kube::Client,
        config: RunArgs,
        metrics: Metrics,
        instances: Store<RabbitMQInstance>,
        shared_clusters: Store<SharedCluster>,
        leadership: Option<crate::leader::Leadership>,
        wake: tokio::sync::mpsc::UnboundedSender<RabbitMQInstance>,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: crate::controller::apply::FIELD_MANAGER.into(),
            instance: config.identity.clone(),
        };
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
            instances,
            shared_clusters,
            clients: ClientCache::default(),
            leadership,
            failures: Mutex::new(HashMap::new()),
            placing: Mutex::new(HashMap::new()),
            slots: Mutex::default(),
            wake,
        })
    }

    /// `--max-concurrent-conversions`, if set.
    fn conversion_limit(&self) -> Option<u32> {
        (self.config.max_concurrent_conversions > 0)
            .then_some(u32::from(self.config.max_concurrent_conversions))
    }

    /// The conversion slots as `i` sees them (unbounded without a limit).
    pub async fn conversion_slots(
        &self,
        i: &RabbitMQInstance,
    ) -> crate::error::Result<crate::controller::plan::ConversionSlots> {
        let Some(limit) = self.conversion_limit() else {
            return Ok(Default::default());
        };
        let all = self.all_instances().await?;
        let mut book = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        Ok(book.slots_for(&all, i, limit, Instant::now()))
    }

    /// Takes a conversion slot for `i` (always granted without a limit); see
    /// [`crate::controller::slots::Book::reserve`].
    pub async fn reserve_conversion(&self, i: &RabbitMQInstance) -> crate::error::Result<bool> {
        let Some(limit) = self.conversion_limit() else {
            return Ok(true);
        };
        let all = self.all_instances().await?;
        let mut book = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        Ok(book.reserve(&all, i, limit, Instant::now()))
    }

    /// Gives back a conversion slot `i` took but did not use (see
    /// [`crate::controller::slots::Book::release`]).
    pub fn release_conversion(&self, i: &RabbitMQInstance) {
        if self.conversion_limit().is_some() {
            let mut book = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            book.release(i);
        }
    }

    /// `i`'s conversion (as `i` shows it) ended in this pass: its slot goes to the flips held
    /// longest, which are woken.
    pub async fn conversion_ended(&self, i: &RabbitMQInstance) {
        let Some(limit) = self.conversion_limit() else {
            return;
        };
        let Ok(all) = self.all_instances().await else {
            return;
        };
        let next = {
            let mut book = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            book.ended(i, Instant::now());
            book.to_wake(&all, limit, Instant::now())
        };
        for k in next {
            if let Some(o) = all
                .iter()
                .find(|o| crate::controller::observe::instance_key(o) == k)
            {
                tracing::debug!(instance = %k, "a conversion slot is free: waking a held flip");
                let _ = self.wake.send(o.as_ref().clone());
            }
        }
    }

    /// Every instance, once the cache holds the initial list (placement counts must not be
    /// taken from a half-filled cache).
    pub async fn all_instances(&self) -> crate::error::Result<Vec<Arc<RabbitMQInstance>>> {
        self.instances.wait_until_ready().await.map_err(|_| {
            crate::error::Error::NotReady("the RabbitMQInstance cache stopped".into())
        })?;
        Ok(self.instances.state())
    }

    /// Reads of SharedClusters and instances from the caches, the rest from the API.
    pub fn lookup(&self) -> crate::controller::clusters::Lookup<'_> {
        crate::controller::clusters::Lookup::cached(
            &self.client,
            &self.shared_clusters,
            &self.instances,
            &self.clients,
        )
    }

    /// Records one more consecutive failure of `obj` and returns the delay before the next try.
    ///
    /// An object deleted while failing is never reconciled again (the controller skips objects
    /// gone from its cache), so [`Self::succeeded`] would never forget it: entries without a
    /// failure for [`FORGET_AFTER`] are dropped here instead (their next failure starts the
    /// backoff over, which is harmless).
    pub fn backoff<K: kube::Resource<DynamicType = ()>>(&self, obj: &ObjectRef<K>) -> Duration {
        let now = Instant::now();
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
        let (n, last) = f.entry(obj.to_string()).or_insert((0, now));
        *n = n.saturating_add(1);
        *last = now;
        backoff_after(*n)
    }

    /// Instances counted on SharedCluster `cluster` (`ns/name`): those the cache shows placed
    /// there (`placed`), plus reservations of others not yet in the cache.
    pub fn placed_count(&self, cluster: &str, placed: &[String]) -> usize {
        let mut p = self.placing.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let entry = p.entry(cluster.to_string()).or_default();
        // A reservation ends when the cache shows the placement or after its TTL.
        entry.retain(|i, at| {
            now.duration_since(*at) < RESERVATION_TTL && !placed.iter().any(|x| x == i)
        });
        placed.len() + entry.len()
    }

    /// Takes a slot on SharedCluster `cluster` for `instance` unless `max` are taken, counting
    /// the cache's `placed` and every reservation: the check and the reservation are one step,
    /// so two instances placed at once never both take the last slot. Returns whether it got
    /// one (also true when it already had one or is placed there).
    pub fn reserve(&self, cluster: &str, instance: &str, placed: &[String], max: usize) -> bool {
        let mut p = self.placing.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let entry = p.entry(cluster.to_string()).or_default();
        entry.retain(|i, at| {
            now.duration_since(*at) < RESERVATION_TTL && !placed.iter().any(|x| x == i)
        });
        if placed.iter().any(|x| x == instance) || entry.contains_key(instance) {
            return true;
        }
        if placed.len() + entry.len() >= max {
            return false;
        }
        entry.insert(instance.to_string(), now);
        true
    }

    /// `instance` holds a reservation on `cluster`.
    pub fn holds_reservation(&self, cluster: &str, instance: &str) -> bool {
        let p = self.placing.lock().unwrap_or_else(|e| e.into_inner());
        p.get(cluster).is_some_and(|e| e.contains_key(instance))
    }

    /// Consecutive failures of `obj` recorded so far.
    pub fn failures<K: kube::Resource<DynamicType = ()>>(&self, obj: &ObjectRef<K>) -> u32 {
        let f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.get(&obj.to_string()).map_or(0, |(n, _)| *n)
    }

    /// Forgets the failures of `key` (it reconciled successfully).
    pub fn succeeded<K: kube::Resource<DynamicType = ()>>(&self, obj: &ObjectRef<K>) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.remove(&obj.to_string());
    }
}

/// Exponential backoff: 2 s, 4 s, 8 s ... capped at [`MAX_BACKOFF`].
pub fn backoff_after(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BASE_BACKOFF.saturating_mul(1 << exp).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_after(1), Duration::from_secs(2));
        assert_eq!(backoff_after(2), Duration::from_secs(4));
        assert_eq!(backoff_after(4), Duration::from_secs(16));
        assert_eq!(backoff_after(30), MAX_BACKOFF);
    }
}
