//! Where the controllers look: every namespace (a ClusterRole), or only the namespaces the
//! operator is configured with (`--watch-namespaces`: namespaced mode, Roles in those namespaces
//! only).
//!
//! kube-runtime watches one `Api` per watcher, and a reflector store fed by several watchers
//! at once would be corrupted: each watcher's (re)list starts with `Init` and ends with
//! `InitDone`, which replaces the *whole* store with that one namespace's objects. So the
//! per-namespace event streams are merged here into one stream that a store can take: a single
//! `Init` … `InitDone` once every namespace has listed (events arriving meanwhile are held and
//! replayed after it), and later re-lists of one namespace turned into `Apply` for what the
//! re-list holds and `Delete` for what it no longer holds. kube-runtime has no multi-namespace
//! watcher of its own, hence this module.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// The namespaces the controllers watch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Empty: every namespace.
    pub namespaces: Vec<String>,
}

/// Kinds the controllers watch.
pub trait Watched:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

impl Scope {
    /// Every namespace, or `namespaces` only (empty entries ignored; empty: every namespace).
    pub fn new(namespaces: &[String]) -> Self {
        let mut namespaces: Vec<String> = namespaces
            .iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        Self { namespaces }
    }

    /// True when `namespace` is watched.
    pub fn covers(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace)
    }

    /// The watch events of `K` in scope, in the shape a reflector store takes.
    pub fn events<K: Watched>(
        &self,
        client: &kube::Client,
        config: watcher::Config,
    ) -> BoxStream<'static, Result<watcher::Event<K>, watcher::Error>> {
        if self.namespaces.is_empty() {
            return watcher::watcher(Api::<K>::all(client.clone()), config)
                .default_backoff()
                .boxed();
        }
        let per_ns = self.namespaces.iter().enumerate().map(|(i, ns)| {
            watcher::watcher(Api::<K>::namespaced(client.clone(), ns), config.clone())
                .default_backoff()
                .map(move |e| (i, e))
                .boxed()
        });
        merge(self.namespaces.len(), stream::select_all(per_ns)).boxed()
    }

    /// The objects of `K` in scope that changed or were deleted (what a watch trigger wants).
    pub fn touched<K: Watched>(
        &self,
        client: &kube::Client,
        config: watcher::Config,
    ) -> BoxStream<'static, Result<K, watcher::Error>> {
        self.events(client, config).touched_objects().boxed()
    }
}

/// The merge state: which namespaces have listed once, events held until all have, and per
/// namespace the objects it holds (by name) and the names of a re-list in progress.
struct Merge<K> {
    listed: Vec<bool>,
    held: Vec<watcher::Event<K>>,
    known: Vec<HashMap<String, K>>,
    relist: Vec<Option<HashSet<String>>>,
}

/// Merges per-namespace watcher events (tagged with the namespace's index) into one stream a
/// reflector store takes (see the module doc).
fn merge<K: Watched>(
    namespaces: usize,
    events: impl Stream<Item = (usize, Result<watcher::Event<K>, watcher::Error>)> + Send + 'static,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static {
    let state = std::sync::Mutex::new(Merge {
        listed: vec![false; namespaces],
        held: Vec::new(),
        known: (0..namespaces).map(|_| HashMap::new()).collect(),
        relist: vec![None; namespaces],
    });
    stream::once(async { Ok(watcher::Event::Init) }).chain(events.flat_map(move |(i, ev)| {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let out = match ev {
            Err(e) => vec![Err(e)],
            Ok(ev) => s.step(i, ev).into_iter().map(Ok).collect(),
        };
        stream::iter(out)
    }))
}

impl<K: Watched> Merge<K> {
    fn all_listed(&self) -> bool {
        self.listed.iter().all(|l| *l)
    }

    /// What namespace `i`'s event `ev` becomes downstream.
    fn step(&mut self, i: usize, ev: watcher::Event<K>) -> Vec<watcher::Event<K>> {
        use watcher::Event::*;
        if !self.listed[i] {
            // The first list of this namespace: part of the merged initial list.
            return match ev {
                Init => Vec::new(),
                InitApply(o) => {
                    self.known[i].insert(o.name_any(), o.clone());
                    vec![InitApply(o)]
                }
                InitDone => {
                    self.listed[i] = true;
                    if !self.all_listed() {
                        return Vec::new();
                    }
                    let mut out = vec![InitDone];
                    out.append(&mut self.held);
                    out
                }
                // A watcher emits these only after its list; kept in order just in case.
                Apply(o) => {
                    self.known[i].insert(o.name_any(), o.clone());
                    vec![InitApply(o)]
                }
                Delete(o) => {
                    self.known[i].remove(&o.name_any());
                    Vec::new()
                }
            };
        }
        let out = match ev {
            Init => {
                self.relist[i] = Some(HashSet::new());
                Vec::new()
            }
            InitApply(o) | Apply(o) => {
                if let Some(seen) = self.relist[i].as_mut() {
                    seen.insert(o.name_any());
                }
                self.known[i].insert(o.name_any(), o.clone());
                vec![Apply(o)]
            }
            Delete(o) => {
                self.known[i].remove(&o.name_any());
                vec![Delete(o)]
            }
            InitDone => match self.relist[i].take() {
                // Gone while the watch was broken: the re-list no longer holds them.
                Some(seen) => {
                    let gone: Vec<String> = self.known[i]
                        .keys()
                        .filter(|n| !seen.contains(*n))
                        .cloned()
                        .collect();
                    gone.iter()
                        .filter_map(|n| self.known[i].remove(n))
                        .map(Delete)
                        .collect()
                }
                None => Vec::new(),
            },
        };
        if self.all_listed() {
            out
        } else {
            self.held.extend(out);
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;
    use watcher::Event::*;

    fn cm(ns: &str, name: &str, v: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "data": {"v": v}
        }))
        .unwrap()
    }

    /// Runs tagged events through the merge into a real reflector store; returns the store's
    /// `ns/name=v` entries and whether it became ready.
    async fn store_after(events: Vec<(usize, watcher::Event<ConfigMap>)>) -> (Vec<String>, bool) {
        let (reader, writer) = reflector::store::<ConfigMap>();
        let merged = merge(2, stream::iter(events.into_iter().map(|(i, e)| (i, Ok(e)))));
        let _: Vec<_> = merged.reflect(writer).collect().await;
        let mut got: Vec<String> = reader
            .state()
            .iter()
            .map(|c| {
                format!(
                    "{}/{}={}",
                    c.namespace().unwrap(),
                    c.name_any(),
                    c.data.as_ref().unwrap()["v"]
                )
            })
            .collect();
        got.sort();
        // A dropped writer also ends the wait, with an error: only Ok means ready.
        let ready = matches!(reader.wait_until_ready().now_or_never(), Some(Ok(())));
        (got, ready)
    }

    use futures::FutureExt;

    #[tokio::test]
    async fn interleaved_lists_of_two_namespaces_fill_one_store() {
        let (got, ready) = store_after(vec![
            (0, Init),
            (0, InitApply(cm("a", "x", "1"))),
            (1, Init),
            (1, InitApply(cm("b", "y", "1"))),
            (0, InitDone),
            // Namespace a changes before b has listed: held, then applied.
            (0, Apply(cm("a", "x", "2"))),
            (0, Apply(cm("a", "z", "1"))),
            (1, InitApply(cm("b", "w", "1"))),
            (1, InitDone),
        ])
        .await;
        assert!(ready, "ready once both namespaces listed");
        assert_eq!(got, ["a/x=2", "a/z=1", "b/w=1", "b/y=1"]);
    }

    #[tokio::test]
    async fn not_ready_until_every_namespace_listed() {
        let (got, ready) = store_after(vec![
            (0, Init),
            (0, InitApply(cm("a", "x", "1"))),
            (0, InitDone),
            (1, Init),
        ])
        .await;
        assert!(!ready);
        assert!(got.is_empty(), "{got:?}");
    }

    #[tokio::test]
    async fn a_relist_of_one_namespace_drops_only_its_vanished_objects() {
        let (got, _) = store_after(vec![
            (0, Init),
            (0, InitApply(cm("a", "x", "1"))),
            (0, InitApply(cm("a", "gone", "1"))),
            (0, InitDone),
            (1, Init),
            (1, InitApply(cm("b", "y", "1"))),
            (1, InitDone),
            // The watch of a broke; its re-list no longer holds `gone`.
            (0, Init),
            (0, InitApply(cm("a", "x", "3"))),
            (0, InitDone),
            (1, Delete(cm("b", "y", "1"))),
            (1, Apply(cm("b", "v", "1"))),
        ])
        .await;
        assert_eq!(got, ["a/x=3", "b/v=1"]);
    }

    #[test]
    fn an_empty_scope_covers_every_namespace() {
        assert!(Scope::new(&[]).covers("any"));
        let s = Scope::new(&["b".into(), " a ".into(), "".into(), "b".into()]);
        assert_eq!(s.namespaces, ["a", "b"]);
        assert!(s.covers("a") && !s.covers("c"));
    }
}
