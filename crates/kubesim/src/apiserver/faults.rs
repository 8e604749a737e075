//! Fault injection for tests: failing writes or reads, slow answers, dropped watches.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::ApiError;

#[derive(Debug, Clone)]
struct Fault {
    group: String,
    resource: String,
    name: Option<String>,
    remaining: u32,
    code: u16,
    /// Fails GETs of the object instead of writes.
    reads: bool,
}

#[derive(Debug, Default)]
struct Faults {
    faults: Vec<Fault>,
    delay: Duration,
}

/// Handle to the server's faults; cheap to clone, shared with the server.
#[derive(Clone)]
pub struct FaultInjector {
    inner: Arc<Mutex<Faults>>,
    end_watches: Arc<tokio::sync::watch::Sender<u64>>,
}

impl FaultInjector {
    pub(crate) fn new() -> Self {
        let (tx, _) = tokio::sync::watch::channel(0);
        FaultInjector {
            inner: Arc::default(),
            end_watches: Arc::new(tx),
        }
    }

    /// The next `count` writes (create, update, patch, delete, also of subresources) to
    /// `group`/`resource` (core group is ""), optionally only of object `name`, fail with `code`
    /// (409 gives a Conflict Status, anything else an InternalError Status).
    pub fn fail_writes(
        &self,
        group: &str,
        resource: &str,
        name: Option<&str>,
        count: u32,
        code: u16,
    ) {
        self.push(false, group, resource, name, count, code);
    }

    /// The next `count` GETs of object `name` of `group`/`resource` fail with `code` (an
    /// InternalError Status): a read that keeps failing, e.g. to hold a reconcile that has
    /// nothing to write. Lists and watches are not affected.
    pub fn fail_reads(&self, group: &str, resource: &str, name: &str, count: u32, code: u16) {
        self.push(true, group, resource, Some(name), count, code);
    }

    fn push(
        &self,
        reads: bool,
        group: &str,
        resource: &str,
        name: Option<&str>,
        count: u32,
        code: u16,
    ) {
        self.inner.lock().expect("fault lock").faults.push(Fault {
            group: group.into(),
            resource: resource.into(),
            name: name.map(str::to_string),
            remaining: count,
            code,
            reads,
        });
    }

    /// Every answer is delayed by `delay` (Duration::ZERO turns it off).
    pub fn set_delay(&self, delay: Duration) {
        self.inner.lock().expect("fault lock").delay = delay;
    }

    /// Ends every watch that is open now; clients see their streams end and resume.
    pub fn end_watches(&self) {
        self.end_watches.send_modify(|n| *n += 1);
    }

    /// Removes all pending faults and the delay.
    pub fn clear(&self) {
        let mut f = self.inner.lock().expect("fault lock");
        f.faults.clear();
        f.delay = Duration::ZERO;
    }

    pub(crate) fn delay(&self) -> Duration {
        self.inner.lock().expect("fault lock").delay
    }

    pub(crate) fn watch_ender(&self) -> tokio::sync::watch::Receiver<u64> {
        self.end_watches.subscribe()
    }

    /// Consumes one injected failure matching this write (or, with `read`, this GET of one
    /// object), if any.
    pub(crate) fn take_fault(
        &self,
        read: bool,
        group: &str,
        resource: &str,
        name: Option<&str>,
    ) -> Option<ApiError> {
        let mut f = self.inner.lock().expect("fault lock");
        let hit = f.faults.iter_mut().find(|w| {
            w.remaining > 0
                && w.reads == read
                && w.group == group
                && w.resource == resource
                && (w.name.is_none() || w.name.as_deref() == name)
        })?;
        hit.remaining -= 1;
        let code = hit.code;
        f.faults.retain(|w| w.remaining > 0);
        let n = name.unwrap_or("");
        Some(if code == 409 {
            ApiError::conflict(
                group,
                resource,
                n,
                "injected conflict (kubesim fault injection)",
            )
        } else {
            ApiError::new(
                code,
                "InternalError",
                format!(
                    "Internal error occurred: injected failure {} {resource} {n:?} (kubesim fault injection)",
                    if read { "reading" } else { "writing" }
                ),
            )
        })
    }
}
