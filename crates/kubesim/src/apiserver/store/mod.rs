//! The object store and the Kubernetes semantics of reads and writes.
//!
//! [`State`] holds every object under one lock, with one global resourceVersion counter. It is
//! split by what a request does:
//!
//! - `write`: create, update (PUT) and patch (merge, JSON, strategic, apply): optimistic
//!   concurrency, `metadata.generation`, the status subresource, field ownership, no-op writes;
//! - `admit`: what a write must pass and gets on its way in: built-in and CRD validation,
//!   defaults per kind, ClusterIP allocation, CRD registration;
//! - `delete`: DELETE with its propagation policy, finalizers and graceful pod termination;
//! - `gc`: owner-reference garbage collection (orphan, foreground, background) and the end of
//!   terminating namespaces, run after every deletion until nothing changes;
//! - `namespaces`: the namespace controller that empties a terminating namespace a moment later;
//! - `watch`: the bounded event history watches resume from, and 410 Gone past it;
//! - `scale`: the `autoscaling/v1` Scale view of workloads.

mod admit;
mod delete;
mod gc;
mod namespaces;
mod scale;
mod watch;
mod write;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::error::{ApiError, ApiResult};
use super::merge::ssa;
use super::registry::{Registry, ResourceType};
use super::selector::{FieldSelector, LabelSelector};

pub use delete::Propagation;
pub use namespaces::{CONTENT_DELAY, spawn_namespace_controller};
pub use watch::{HISTORY_LEN, Subscription, WatchEvent};
pub use write::WriteOpts;
pub(crate) use write::new_uid;

/// Where an object is stored: (group, plural, namespace or empty, name). One entry per object,
/// whichever version it was written through.
type Key = (String, String, String, String);

/// Everything the server knows: the served types and every object, with the resourceVersion
/// counter and the watch history.
pub struct State {
    /// The served resource types (built-in and from CRDs).
    pub registry: Registry,
    objects: BTreeMap<Key, Value>,
    /// The global resourceVersion: bumped by every change.
    rv: u64,
    history: VecDeque<Arc<WatchEvent>>,
    /// Highest resourceVersion dropped from the history: watches from before it get 410.
    compacted: u64,
    tx: broadcast::Sender<Arc<WatchEvent>>,
    /// Services get ClusterIPs from the range of `ip_prefix` (see `admit::service_ip`);
    /// `used_ips` are the indexes taken.
    ip_prefix: [u8; 3],
    used_ips: BTreeSet<u16>,
}

/// Locks the state. A panic while it was held (a bug) must not take the whole server down
/// with it, so a poisoned lock is used as is: every write is staged on copies and committed
/// at its end.
pub fn lock(state: &std::sync::Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Now, as metadata timestamps are written (whole seconds, UTC).
fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn ns_key(rt: &ResourceType, ns: Option<&str>) -> String {
    if rt.namespaced {
        ns.unwrap_or("default").to_string()
    } else {
        String::new()
    }
}

fn meta_str<'a>(o: &'a Value, f: &str) -> Option<&'a str> {
    o["metadata"][f].as_str()
}

/// List semantics for field ownership: by field name for built-ins, from the schema for CRs.
fn lists_for(rt: &ResourceType) -> ssa::Lists<'_> {
    match &rt.crd {
        Some(c) => ssa::Lists::Schema(c.schema.as_ref()),
        None => ssa::Lists::ByName,
    }
}

fn finalizers(o: &Value) -> Vec<String> {
    o["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn set_finalizers(o: &mut Value, f: &[String]) {
    if f.is_empty() {
        if let Some(m) = o["metadata"].as_object_mut() {
            m.remove("finalizers");
        }
    } else {
        o["metadata"]["finalizers"] = json!(f);
    }
}

impl State {
    /// A fresh store: built-in types and the four namespaces every cluster has.
    pub fn new(ip_prefix: [u8; 3]) -> Self {
        let (tx, _) = broadcast::channel(4096);
        let mut s = State {
            registry: Registry::with_builtins(),
            objects: BTreeMap::new(),
            rv: 0,
            history: VecDeque::new(),
            compacted: 0,
            tx,
            ip_prefix,
            used_ips: BTreeSet::new(),
        };
        let ns = s
            .registry
            .get("", "v1", "namespaces")
            .cloned()
            .expect("namespaces are built in");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            s.create(
                &ns,
                None,
                obj,
                &WriteOpts {
                    field_manager: "kubesim".into(),
                    ..Default::default()
                },
            )
            .expect("built-in namespaces are valid");
        }
        s
    }

    /// The current global resourceVersion (how many changes happened).
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The key of object `name` of `rt` (namespace `default` if none is given).
    fn key(rt: &ResourceType, ns: Option<&str>, name: &str) -> Key {
        (
            rt.group.clone(),
            rt.plural.clone(),
            ns_key(rt, ns),
            name.to_string(),
        )
    }

    /// An object as served through `rt`'s version: its apiVersion and kind set accordingly.
    fn shown(rt: &ResourceType, mut o: Value) -> Value {
        o["apiVersion"] = json!(rt.api_version());
        o["kind"] = json!(rt.kind);
        o
    }

    /// GET of one object.
    pub fn get(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        self.objects
            .get(&Self::key(rt, ns, name))
            .cloned()
            .map(|o| Self::shown(rt, o))
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    /// The objects of `rt` (in `ns`, or everywhere when None) the selectors match.
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((g, p, n, _), _)| {
                *g == rt.group && *p == rt.plural && ns.is_none_or(|ns| !rt.namespaced || n == ns)
            })
            .filter(|(_, o)| labels.matches(&o["metadata"]["labels"]) && fields.matches(o))
            .map(|(_, o)| Self::shown(rt, o.clone()))
            .collect()
    }

    /// The Namespace object `ns`, if it exists.
    fn namespace_exists(&self, ns: &str) -> Option<&Value> {
        self.objects.get(&(
            String::new(),
            "namespaces".into(),
            String::new(),
            ns.to_string(),
        ))
    }

    /// The resource type an object is stored under (any of its served versions).
    fn rt_of(&self, k: &Key) -> Option<ResourceType> {
        self.registry.any_version(&k.0, &k.1).cloned()
    }

    /// The namespace of a key; None for cluster-scoped objects.
    fn ns_opt(k: &Key) -> Option<&str> {
        if k.2.is_empty() {
            None
        } else {
            Some(k.2.as_str())
        }
    }
}
