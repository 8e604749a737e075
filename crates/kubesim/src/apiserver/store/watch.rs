//! The watch-event history: every change is recorded with its resourceVersion and broadcast;
//! a watch resumes from any version still in the bounded history, and gets 410 Gone before it.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use super::State;
use crate::apiserver::error::{ApiError, ApiResult};

/// How many watch events are kept for resuming watches; older resourceVersions get 410 Gone.
pub const HISTORY_LEN: usize = 10_000;

/// One change, as every watch sees it before its own filtering.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// Group of the object's resource.
    pub group: String,
    /// Plural of the object's resource.
    pub plural: String,
    /// Namespace of the object; empty for cluster-scoped objects.
    pub namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub type_: &'static str,
    /// The object after the change (its last state for DELETED).
    pub object: Value,
    /// The object before a MODIFIED event, when its labels or fields may have changed: a
    /// filtered watch turns the event into ADDED or DELETED when the object enters or leaves
    /// the selection.
    pub old: Option<Value>,
}

/// Past events after a resourceVersion and a receiver for the ones to come.
pub type Subscription = (Vec<Arc<WatchEvent>>, broadcast::Receiver<Arc<WatchEvent>>);

impl State {
    /// Forgets the watch history: watches resuming from any version before now get 410 Gone
    /// (what a real server does after etcd compaction).
    pub fn compact_history(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    pub(super) fn emit(
        &mut self,
        type_: &'static str,
        group: &str,
        plural: &str,
        ns: &str,
        object: Value,
    ) {
        self.emit_change(type_, group, plural, ns, object, None);
    }

    pub(super) fn emit_change(
        &mut self,
        type_: &'static str,
        group: &str,
        plural: &str,
        ns: &str,
        object: Value,
        old: Option<Value>,
    ) {
        let ev = Arc::new(WatchEvent {
            rv: self.rv,
            group: group.into(),
            plural: plural.into(),
            namespace: ns.into(),
            type_,
            object,
            old,
        });
        self.history.push_back(ev.clone());
        while self.history.len() > HISTORY_LEN {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        let _ = self.tx.send(ev);
    }

    /// Events after `since` (for a watch resuming there) and a receiver for later ones, taken
    /// under the same lock so nothing falls between them.
    pub fn subscribe(&self, since: u64) -> ApiResult<Subscription> {
        if since < self.compacted {
            return Err(ApiError::gone(format!(
                "too old resource version: {since} ({})",
                self.compacted + 1
            )));
        }
        // A version this server never reached (a client of an earlier server instance): the
        // client must re-list, which 410 makes kube-rs and client-go do.
        if since > self.rv {
            return Err(ApiError::gone(format!(
                "resource version {since} is newer than the server's latest ({}); re-list",
                self.rv
            )));
        }
        let past = self
            .history
            .iter()
            .filter(|e| e.rv > since)
            .cloned()
            .collect();
        Ok((past, self.tx.subscribe()))
    }
}
