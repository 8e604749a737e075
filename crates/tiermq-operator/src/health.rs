//! Whether the controllers are wedged, for `/healthz`.
//!
//! Two ways a running operator stops doing its job without exiting, both reported unhealthy (so
//! the kubelet's liveness probe restarts it):
//!
//! - **dead watches**: the controllers' watch streams keep failing (API server unreachable,
//!   permissions revoked) for at least the stall threshold. Watches retry with a back-off of at
//!   most about half a minute, so errors that stay further apart than [`WATCH_ERROR_GAP`] count
//!   as separate incidents, not one outage;
//! - **a stuck reconcile**: one reconcile has been running for at least the stall threshold (a
//!   call that never returns holds its object, and with it every later change of that object).
//!
//! A standby replica (not leading) runs no controllers and is healthy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Watch errors further apart than this are separate incidents (above kube-runtime's longest
/// watch retry back-off).
pub const WATCH_ERROR_GAP: Duration = Duration::from_secs(45);

/// The controllers' liveness; cheap to clone, shared by the controllers and the HTTP server.
#[derive(Clone)]
pub struct Health {
    stall_after: Duration,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// First and latest watch error of the current streak.
    watch_errors: Option<(Instant, Instant)>,
    /// The latest watch error's text (for the probe's answer).
    last_watch_error: String,
    /// Reconciles in flight: id → (what, since).
    in_flight: BTreeMap<u64, (String, Instant)>,
    next_id: u64,
}

/// Removes its reconcile from the in-flight list when dropped (finished or cancelled).
pub struct InFlight {
    id: u64,
    state: Arc<Mutex<State>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .in_flight
            .remove(&self.id);
    }
}

impl Health {
    /// Healthy until the watches fail or a reconcile runs for `stall_after`.
    pub fn new(stall_after: Duration) -> Self {
        Self {
            stall_after,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A controller's watch stream failed at `now` (`error` is shown by the probe; it never holds
    /// secrets: kube-runtime's watcher errors name the request and the API's status).
    pub fn watch_error(&self, now: Instant, error: &str) {
        let mut s = self.lock();
        s.watch_errors = match s.watch_errors {
            Some((first, last)) if now.saturating_duration_since(last) <= WATCH_ERROR_GAP => {
                Some((first, now))
            }
            _ => Some((now, now)),
        };
        s.last_watch_error = error.chars().take(300).collect();
    }

    /// A reconcile of `what` starts at `now`; it counts as in flight until the guard is dropped.
    pub fn reconcile_started(&self, what: String, now: Instant) -> InFlight {
        let mut s = self.lock();
        let id = s.next_id;
        s.next_id += 1;
        s.in_flight.insert(id, (what, now));
        InFlight {
            id,
            state: self.state.clone(),
        }
    }

    /// `Ok` while healthy at `now`, else why not.
    pub fn check(&self, now: Instant) -> Result<(), String> {
        let s = self.lock();
        if let Some((first, last)) = s.watch_errors {
            let failing = last.saturating_duration_since(first);
            if now.saturating_duration_since(last) <= WATCH_ERROR_GAP && failing >= self.stall_after
            {
                return Err(format!(
                    "watches failing for {}s (threshold {}s): {}",
                    failing.as_secs(),
                    self.stall_after.as_secs(),
                    s.last_watch_error
                ));
            }
        }
        if let Some((what, since)) = s.in_flight.values().min_by_key(|(_, since)| *since) {
            let running = now.saturating_duration_since(*since);
            if running >= self.stall_after {
                return Err(format!(
                    "the reconcile of {what} has run for {}s (threshold {}s) without finishing",
                    running.as_secs(),
                    self.stall_after.as_secs()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(60);

    #[test]
    fn watches_failing_for_the_threshold_are_unhealthy_and_recover_after_the_gap() {
        let h = Health::new(T);
        let t0 = Instant::now();
        assert!(h.check(t0).is_ok());
        // Errors every 20 s (a back-off's pace): one outage.
        for i in 0..3 {
            h.watch_error(t0 + Duration::from_secs(20 * i), "connection refused");
            assert!(h.check(t0 + Duration::from_secs(20 * i)).is_ok(), "{i}");
        }
        h.watch_error(t0 + Duration::from_secs(60), "connection refused");
        let err = h.check(t0 + Duration::from_secs(61)).unwrap_err();
        assert!(
            err.contains("watches failing for 60s") && err.contains("refused"),
            "{err}"
        );
        // No error for longer than the gap: the watches came back.
        assert!(
            h.check(t0 + Duration::from_secs(60) + WATCH_ERROR_GAP * 2)
                .is_ok()
        );
    }

    #[test]
    fn isolated_watch_errors_never_add_up() {
        let h = Health::new(T);
        let t0 = Instant::now();
        for i in 0..10 {
            // Once a minute, each a new incident.
            let at = t0 + Duration::from_secs(60 * i);
            h.watch_error(at, "410 Gone");
            assert!(h.check(at).is_ok(), "{i}");
        }
    }

    #[test]
    fn a_reconcile_running_past_the_threshold_is_unhealthy_until_it_ends() {
        let h = Health::new(T);
        let t0 = Instant::now();
        let quick = h.reconcile_started("RabbitMQInstance a/b".into(), t0);
        drop(quick);
        let stuck = h.reconcile_started("SharedCluster ns/main".into(), t0);
        assert!(h.check(t0 + Duration::from_secs(59)).is_ok());
        let err = h.check(t0 + Duration::from_secs(61)).unwrap_err();
        assert!(err.contains("SharedCluster ns/main"), "{err}");
        drop(stuck);
        assert!(h.check(t0 + Duration::from_secs(61)).is_ok());
    }
}
