//! A fair bound on a controller's passes at once.
//!
//! kube-runtime can bound passes itself (`controller::Config::concurrency`), but while it is full
//! it moves every request that falls due into a hash set, and when a slot frees it takes the first
//! one it finds there. Objects that keep falling due (a converting instance's pass requeues within
//! seconds) are found first again and again, and the rest wait as long as the load lasts: in the
//! scale bench, 17 of 50 instances flipped at once had no pass for over four minutes while the
//! other 33 had about 20 each. So the controllers here run unbounded in kube-runtime and every
//! pass first waits for a permit of a FIFO semaphore (tokio's `Semaphore` is fair): passes start
//! in the order they fell due, and one object is still never reconciled twice at once.
//!
//! A pass may have waited, so once admitted it reads its object again from the controller's
//! cache, and it does nothing when the object has left the cache (kube-runtime does not start a
//! pass for an object it cannot find there either).

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::Semaphore;

use crate::health::Health;
use crate::metrics::{ControllerLabels, Metrics};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

/// Admits a controller's passes, at most `bound` at once, first come first served.
pub struct Gate<K: kube::Resource<DynamicType = ()> + 'static> {
    /// `None`: unbounded.
    permits: Option<Arc<Semaphore>>,
    /// The controller's cache, read again once a pass is admitted.
    cache: Store<K>,
    /// Where waiting passes are counted (`tiermq_reconciles_waiting`, `..._wait_seconds`).
    waits: Option<(Gauge, Histogram)>,
}

impl<K: kube::Resource<DynamicType = ()> + Clone + 'static> Gate<K> {
    /// At most `bound` passes at once (0: unbounded) of objects cached in `cache`.
    pub fn new(bound: u16, cache: Store<K>) -> Self {
        Self {
            permits: (bound > 0).then(|| Arc::new(Semaphore::new(usize::from(bound)))),
            cache,
            waits: None,
        }
    }

    /// Counts the passes waiting for this gate, and how long each waited, as `controller`'s.
    pub fn metered(mut self, metrics: &Metrics, controller: &'static str) -> Self {
        let labels = ControllerLabels { controller };
        self.waits = Some((
            metrics.reconciles_waiting.get_or_create(&labels).clone(),
            metrics.reconcile_wait.get_or_create(&labels).clone(),
        ));
        self
    }
}

/// Counts one pass as waiting until it is dropped (admitted, or cancelled while waiting).
struct Waiting(Option<Gauge>);

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            g.dec();
        }
    }
}

/// `reconcile` behind `gate`, counted in `health` as in flight while it runs (not while it
/// waits for a permit: a long wait is not a stuck pass).
pub fn tracked<K, C, E, Fut>(
    health: &Health,
    gate: Gate<K>,
    reconcile: fn(Arc<K>, Arc<C>) -> Fut,
) -> impl FnMut(Arc<K>, Arc<C>) -> futures::future::BoxFuture<'static, Result<Action, E>>
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    C: Send + Sync + 'static,
    E: Send + 'static,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
{
    let health = health.clone();
    move |obj, ctx| {
        let health = health.clone();
        let permits = gate.permits.clone();
        let cache = gate.cache.clone();
        let waits = gate.waits.clone();
        async move {
            // A closed semaphore (never closed here) would admit everyone rather than no one.
            let _permit = match permits {
                Some(p) => {
                    let asked = std::time::Instant::now();
                    let waiting = Waiting(waits.as_ref().map(|(g, _)| {
                        g.inc();
                        g.clone()
                    }));
                    let permit = p.acquire_owned().await.ok();
                    drop(waiting);
                    if let Some((_, h)) = &waits {
                        h.observe(asked.elapsed().as_secs_f64());
                    }
                    permit
                }
                None => None,
            };
            let Some(obj) = cache.get(&ObjectRef::from_obj(&*obj)) else {
                return Ok(Action::await_change());
            };
            let what = format!(
                "{} {}/{}",
                K::kind(&()),
                obj.meta().namespace.as_deref().unwrap_or_default(),
                obj.meta().name.as_deref().unwrap_or_default()
            );
            let _in_flight = health.reconcile_started(what, std::time::Instant::now());
            // Boxed: a waiting pass holds a pointer, not the whole pass's state.
            Box::pin(reconcile(obj, ctx)).await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use kube::runtime::controller::{Config, Controller};
    use kube::runtime::{reflector, watcher};

    type Passes = Mutex<HashMap<String, u32>>;

    async fn pass(cm: Arc<ConfigMap>, passes: Arc<Passes>) -> Result<Action, std::io::Error> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        *passes
            .lock()
            .unwrap()
            .entry(cm.metadata.name.clone().unwrap_or_default())
            .or_default() += 1;
        // Due again at once: every object wants a pass all the time.
        Ok(Action::requeue(Duration::from_millis(1)))
    }

    /// 40 objects that are always due, 4 passes at once, until 320 passes ran (8 rounds): every
    /// object gets its turn again and again. The same run with kube-runtime's own bound
    /// (`Config::concurrency(4)`, no gate) gave 8 objects about 40 passes each, 3 one and 29 none.
    #[tokio::test]
    async fn every_object_gets_its_turn_while_passes_are_saturated() {
        let (reader, mut writer) = reflector::store::<ConfigMap>();
        let objects: Vec<ConfigMap> = (0..40)
            .map(|n| ConfigMap {
                metadata: ObjectMeta {
                    name: Some(format!("cm{n:02}")),
                    namespace: Some("ns".into()),
                    ..Default::default()
                },
                ..Default::default()
            })
            .collect();
        // A listed cache: the controller starts no pass before its store is ready.
        writer.apply_watcher_event(&watcher::Event::Init);
        for o in &objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(o.clone()));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let trigger =
            futures::stream::iter(objects.into_iter().map(Ok)).chain(futures::stream::pending());
        let passes: Arc<Passes> = Arc::default();
        let health = Health::new(Duration::from_secs(60));
        let metrics = Metrics::default();
        let labels = ControllerLabels { controller: "test" };
        let waiting = metrics.reconciles_waiting.get_or_create(&labels).clone();
        let run = Controller::for_stream(trigger, reader.clone())
            .with_config(Config::default().concurrency(0))
            .run(
                tracked(
                    &health,
                    Gate::new(4, reader).metered(&metrics, "test"),
                    pass,
                ),
                |_, _, _| Action::requeue(Duration::from_millis(1)),
                passes.clone(),
            )
            .for_each(|_| futures::future::ready(()));
        // Stop after 320 passes (a slow machine only takes longer), at most after 30 s.
        let total = |p: &Passes| p.lock().unwrap().values().sum::<u32>();
        let most_waiting = std::sync::atomic::AtomicI64::new(0);
        let enough = async {
            while total(&passes) < 320 {
                most_waiting.fetch_max(waiting.get(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::select! {
                _ = run => {}
                _ = enough => {}
            }
        })
        .await;

        let total = total(&passes);
        let passes = passes.lock().unwrap().clone();
        let fewest = (0..40)
            .map(|n| passes.get(&format!("cm{n:02}")).copied().unwrap_or(0))
            .min()
            .unwrap();
        assert!(total >= 320, "only {total} passes in 30 s");
        assert!(
            fewest >= 2,
            "an object had {fewest} passes while {total} ran: {passes:?}"
        );
        // The waiting passes were counted (40 due, 4 running), and each one's wait observed.
        let most = most_waiting.into_inner();
        assert!(most >= 20, "at most {most} passes seen waiting");
        // kube-runtime aborts the spawned passes of a dropped controller; an aborted pass that
        // was waiting is uncounted when its task is dropped, a moment later.
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while waiting.get() != 0 && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            waiting.get(),
            0,
            "passes cancelled while waiting are uncounted"
        );
        let text = metrics.encode();
        let waits: u64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(r#"tiermq_reconcile_wait_seconds_count{controller="test"} "#)
            })
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_default();
        assert!(waits >= 320, "{waits} waits observed for {total} passes");
    }
}
