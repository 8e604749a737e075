//! The end of a namespace, as kube-controller-manager's namespace controller brings it about.
//!
//! DELETE of a namespace that holds objects only marks it: `deletionTimestamp` and phase
//! `Terminating` (new objects are refused from then on). Its content is deleted
//! [`CONTENT_DELAY`] later, by the task [`spawn_namespace_controller`] starts beside the server,
//! and the namespace goes once it is empty (see `gc`). So, as on a real cluster, requests sent
//! right after the namespace's DELETE still find its objects: `kubectl delete -k` of a
//! kustomization that holds its own namespace deletes the namespace first and then each object in
//! it, and succeeds.

use std::sync::{Mutex, Weak};
use std::time::Duration;

use super::{Propagation, State, lock};

/// How long a terminating namespace keeps its content (the real controller also needs a
/// moment: it discovers every namespaced resource first).
pub const CONTENT_DELAY: Duration = Duration::from_millis(1000);

/// How often the task looks for terminating namespaces.
const TICK: Duration = Duration::from_millis(100);

impl State {
    /// Names of the namespaces marked for deletion that still exist.
    pub fn terminating_namespaces(&self) -> Vec<String> {
        self.objects
            .iter()
            .filter(|(k, o)| {
                k.0.is_empty()
                    && k.1 == "namespaces"
                    && o["metadata"]["deletionTimestamp"].is_string()
            })
            .map(|(k, _)| k.3.clone())
            .collect()
    }

    /// Deletes everything in namespace `name` (background propagation); the namespace itself
    /// goes when the last object is gone.
    pub fn empty_namespace(&mut self, name: &str) {
        let members: Vec<(crate::apiserver::registry::ResourceType, String)> = self
            .objects
            .keys()
            .filter(|k| k.2 == name)
            .filter_map(|k| {
                self.registry
                    .any_version(&k.0, &k.1)
                    .map(|t| (t.clone(), k.3.clone()))
            })
            .collect();
        for (t, n) in members {
            // Already going (finalizers, graceful pods) or gone through a cascade: fine.
            let _ = self.delete(
                &t,
                Some(name),
                &n,
                Propagation::Background,
                None,
                false,
                None,
            );
        }
        self.gc();
    }
}

/// Starts the namespace controller: every 100 ms, the content of namespaces terminating for at
/// least [`CONTENT_DELAY`] is deleted. It stops when the server's state is dropped.
pub fn spawn_namespace_controller(state: Weak<Mutex<State>>) {
    tokio::spawn(async move {
        let mut seen: std::collections::BTreeMap<String, tokio::time::Instant> = Default::default();
        loop {
            tokio::time::sleep(TICK).await;
            let Some(state) = state.upgrade() else { return };
            let mut st = lock(&state);
            let now = tokio::time::Instant::now();
            let terminating = st.terminating_namespaces();
            seen.retain(|n, _| terminating.contains(n));
            for n in terminating {
                let since = *seen.entry(n.clone()).or_insert(now);
                if now.duration_since(since) >= CONTENT_DELAY {
                    st.empty_namespace(&n);
                }
            }
        }
    });
}
