//! Leader election on a `coordination.k8s.io/v1` Lease, so that only one replica reconciles, with
//! the three timings of client-go's elector:
//!
//! - **lease duration** (15 s): how long others wait after they last saw the Lease change before
//!   they take it over;
//! - **renew deadline** (10 s, shorter than the lease): a leader that could not renew for this
//!   long gives up leadership *before* anyone else may take over — its controllers stop and
//!   their in-flight reconciles are cancelled;
//! - **retry period** (2 s): how often it tries to acquire or renew.
//!
//! Expiry is judged on the observer's own monotonic clock (when it saw the record change), never
//! by comparing its wall clock with the holder's `renewTime`, so clock skew between replicas does
//! not shorten the lease. Every write is a compare-and-swap on the Lease's resourceVersion.
//!
//! [`Leadership::confirm`] is what destructive steps call right before they run: it refuses unless
//! this replica renewed within the renew deadline *and* the stored Lease still names it.
//!
//! Written here rather than taken from a crate because the maintained Rust electors do not give
//! up leadership at a renew deadline shorter than the lease (the guarantee split-brain safety
//! rests on) or offer a per-action confirmation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// The elector's timings.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// How long a Lease that stopped changing stays with its holder.
    pub lease_duration: Duration,
    /// How long a leader may fail to renew before it gives up (shorter than `lease_duration`).
    pub renew_deadline: Duration,
    /// Time between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Why leadership could not be confirmed.
#[derive(Debug, thiserror::Error)]
#[error("leadership not confirmed: {0}")]
pub struct NotLeader(pub String);

/// This replica's part in the election; clone freely.
#[derive(Clone)]
pub struct Leadership {
    inner: Arc<Inner>,
}

struct Inner {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: Timings,
    leading: watch::Sender<bool>,
    state: Mutex<State>,
    /// Set by [`Leadership::release`]: no further round may take the Lease back.
    released: AtomicBool,
    /// Held for each acquire-or-renew round and by the release, so a round already under way
    /// cannot read the released record and take it again.
    round: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    /// When this replica last wrote the Lease as its holder.
    renewed: Option<Instant>,
    /// The other holder's record as last seen, and when it was first seen like that.
    observed: Option<(String, Instant)>,
}

impl Leadership {
    /// An elector for Lease `namespace/name` under `identity` (not started: see [`Self::run`]).
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timings: Timings,
    ) -> Self {
        let (leading, _) = watch::channel(false);
        Leadership {
            inner: Arc::new(Inner {
                api: Api::namespaced(client, namespace),
                name: name.to_string(),
                identity: identity.to_string(),
                timings,
                leading,
                state: Mutex::new(State::default()),
                released: AtomicBool::new(false),
                round: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Turns `true` while this replica leads.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.leading.subscribe()
    }

    /// This replica's identity in the Lease.
    pub fn identity(&self) -> &str {
        &self.inner.identity
    }

    fn renewed_within_deadline(&self) -> bool {
        let st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        st.renewed
            .is_some_and(|t| t.elapsed() < self.inner.timings.renew_deadline)
    }

    /// Right before a destructive action: this replica leads, renewed within the renew deadline,
    /// and the stored Lease names it.
    pub async fn confirm(&self) -> Result<(), NotLeader> {
        if !*self.inner.leading.borrow() || !self.renewed_within_deadline() {
            return Err(NotLeader(format!(
                "{} did not renew Lease {} within the renew deadline",
                self.inner.identity, self.inner.name
            )));
        }
        let timeout = self.inner.timings.retry_period;
        let lease = tokio::time::timeout(timeout, self.inner.api.get_opt(&self.inner.name))
            .await
            .map_err(|_| NotLeader(format!("reading Lease {} timed out", self.inner.name)))?
            .map_err(|e| NotLeader(format!("reading Lease {}: {e}", self.inner.name)))?;
        let holder = lease
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        if holder != self.inner.identity {
            return Err(NotLeader(format!(
                "Lease {} is held by {holder:?}",
                self.inner.name
            )));
        }
        Ok(())
    }

    /// Tries to acquire or renew until `stop` turns true; gives up leadership (the watch turns
    /// `false`, for good) when renewing failed for the renew deadline or another replica holds
    /// the Lease. Returns once it gave up or was stopped.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let t = self.inner.timings;
        loop {
            // Held until the outcome is acted on: a release waits for it, then wins.
            let round = self.inner.round.lock().await;
            if self.inner.released.load(Ordering::SeqCst) {
                return;
            }
            let attempt = tokio::time::timeout(t.retry_period, self.try_acquire_or_renew()).await;
            let leading = *self.inner.leading.borrow();
            match attempt {
                Ok(Ok(true)) => {
                    self.inner
                        .state
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .renewed = Some(Instant::now());
                    if !leading {
                        tracing::info!(identity = %self.inner.identity, lease = %self.inner.name, "acquired leadership");
                        let _ = self.inner.leading.send(true);
                    }
                }
                Ok(Ok(false)) if leading => {
                    tracing::warn!(lease = %self.inner.name, "another replica holds the Lease: giving up leadership");
                    let _ = self.inner.leading.send(false);
                    return;
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, lease = %self.inner.name, "leader election: Lease request failed")
                }
                Err(_) => {
                    tracing::warn!(lease = %self.inner.name, "leader election: Lease request timed out")
                }
            }
            if leading && !self.renewed_within_deadline() {
                tracing::error!(
                    lease = %self.inner.name,
                    deadline = ?t.renew_deadline,
                    "could not renew leadership within the renew deadline: giving up"
                );
                let _ = self.inner.leading.send(false);
                return;
            }
            drop(round);
            tokio::select! {
                _ = tokio::time::sleep(t.retry_period) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// On a clean shutdown: hands the Lease back (empty holder, 1 s duration) so another
    /// replica takes over at once instead of after the lease duration. Ends [`Self::run`] for
    /// good: it waits for a round under way, so the elector cannot take the released Lease back.
    pub async fn release(&self) {
        self.inner.released.store(true, Ordering::SeqCst);
        let _round = self.inner.round.lock().await;
        if !*self.inner.leading.borrow() {
            return;
        }
        let _ = self.inner.leading.send(false);
        let Ok(Some(mut lease)) = self.inner.api.get_opt(&self.inner.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.inner.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        match self
            .inner
            .api
            .replace(&self.inner.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.inner.name, "released leadership"),
            Err(e) => tracing::warn!(error = %e, "could not release the Lease"),
        }
    }

    /// One round: `Ok(true)` when this replica holds the Lease after it.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let i = &self.inner;
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let duration = i.timings.lease_duration.as_secs().max(1) as i32;
        let Some(mut lease) = i.api.get_opt(&i.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(i.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(i.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match i.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != i.identity {
            // Someone else's (or nobody's) record: expired only once it has not changed for a
            // whole lease duration on this replica's clock.
            let record = format!(
                "{holder}|{:?}|{:?}",
                spec.renew_time.as_ref().map(|t| t.0),
                spec.lease_duration_seconds
            );
            let held_for = spec
                .lease_duration_seconds
                .map_or(i.timings.lease_duration, |s| {
                    Duration::from_secs(s.max(0) as u64)
                });
            let expired = {
                let mut st = i.state.lock().unwrap_or_else(|e| e.into_inner());
                let since = match &st.observed {
                    Some((r, at)) if *r == record => *at,
                    _ => {
                        st.observed = Some((record, Instant::now()));
                        Instant::now()
                    }
                };
                holder.is_empty() || since.elapsed() >= held_for
            };
            if !expired {
                return Ok(false);
            }
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(i.identity.clone());
        spec.lease_duration_seconds = Some(duration);
        spec.renew_time = Some(now);
        // The resourceVersion read above makes this a compare-and-swap.
        match i.api.replace(&i.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
