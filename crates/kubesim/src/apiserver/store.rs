//! The object store and Kubernetes write semantics: one global resourceVersion counter, a
//! bounded event history for watches, optimistic concurrency, generation, status subresource,
//! finalizers, deletion propagation and owner-reference garbage collection.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::crd;
use super::error::{ApiError, ApiResult};
use super::merge::{smp, ssa};
use super::registry::{self, Registry, ResourceType};
use super::selector::{FieldSelector, LabelSelector};

/// How many watch events are kept for resuming watches; older resourceVersions get 410 Gone.
pub const HISTORY_LEN: usize = 10_000;

#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub rv: u64,
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub type_: &'static str,
    pub object: Value,
    /// The object before a MODIFIED event, when its labels or fields may have changed: a
    /// filtered watch turns the event into ADDED or DELETED when the object enters or leaves
    /// the selection.
    pub old: Option<Value>,
}

type Key = (String, String, String, String);

/// Past events after a resourceVersion and a receiver for the ones to come.
pub type Subscription = (Vec<Arc<WatchEvent>>, broadcast::Receiver<Arc<WatchEvent>>);

#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    pub field_manager: String,
    pub dry_run: bool,
    pub subresource: Option<String>,
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

pub struct State {
    pub registry: Registry,
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Arc<WatchEvent>>,
    /// Highest resourceVersion dropped from the history: watches from before it get 410.
    compacted: u64,
    pub tx: broadcast::Sender<Arc<WatchEvent>>,
    ip_prefix: [u8; 3],
    used_ips: BTreeSet<u8>,
}

/// Locks the state. A panic while it was held (a bug) must not take the whole server down
/// with it, so a poisoned lock is used as is: every write is staged on copies and committed
/// at its end.
pub fn lock(state: &std::sync::Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn now_rfc3339() -> String {
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

/// The part of an object that `metadata.generation` follows: all but metadata, and status
/// unless it is an ordinary field (a custom resource without a status subresource).
fn spec_part(o: &Value, status_counts: bool) -> Value {
    let mut v = o.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        if !status_counts {
            m.remove("status");
        }
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

/// List semantics for field ownership: by field name for built-ins, from the schema for CRs.
fn lists_for(rt: &ResourceType) -> ssa::Lists<'_> {
    match &rt.crd {
        Some(c) => ssa::Lists::Schema(c.schema.as_ref()),
        None => ssa::Lists::ByName,
    }
}

/// The grace period a Pod deletion gets, for pods that terminate gracefully: scheduled
/// (`spec.nodeName` set) and not finished, as on the real server. None for anything else.
fn graceful_pod_seconds(rt: &ResourceType, pod: &Value, requested: Option<i64>) -> Option<i64> {
    let scheduled = pod["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    let is_pod = rt.group.is_empty() && rt.plural == "pods";
    if !(is_pod && scheduled) || finished {
        return None;
    }
    Some(
        requested
            .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30)
            .max(0),
    )
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

fn owner_uids(o: &Value) -> Vec<String> {
    o["metadata"]["ownerReferences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["uid"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl State {
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

    /// Forgets the watch history: watches resuming from any version before now get 410 Gone
    /// (what a real server does after etcd compaction).
    pub fn compact_history(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    fn emit(&mut self, type_: &'static str, group: &str, plural: &str, ns: &str, object: Value) {
        self.emit_change(type_, group, plural, ns, object, None);
    }

    fn emit_change(
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

    fn key(rt: &ResourceType, ns: Option<&str>, name: &str) -> Key {
        (
            rt.group.clone(),
            rt.plural.clone(),
            ns_key(rt, ns),
            name.to_string(),
        )
    }

    fn shown(rt: &ResourceType, mut o: Value) -> Value {
        o["apiVersion"] = json!(rt.api_version());
        o["kind"] = json!(rt.kind);
        o
    }

    pub fn get(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        self.objects
            .get(&Self::key(rt, ns, name))
            .cloned()
            .map(|o| Self::shown(rt, o))
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

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

    fn namespace_exists(&self, ns: &str) -> Option<&Value> {
        self.objects.get(&(
            String::new(),
            "namespaces".into(),
            String::new(),
            ns.to_string(),
        ))
    }

    /// Secret normalisation and built-in validation (see `validate`).
    fn admit_builtin(&self, rt: &ResourceType, obj: &mut Value) -> ApiResult<()> {
        if rt.group.is_empty() && rt.plural == "secrets" {
            super::validate::normalize_secret(obj).map_err(ApiError::bad_request)?;
        }
        let causes = super::validate::builtin(rt, obj);
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(
                &rt.kind,
                meta_str(obj, "name").unwrap_or(""),
                &rt.group,
                causes,
            ))
        }
    }

    fn admit_crd(&self, rt: &ResourceType, obj: &mut Value, old: Option<&Value>) -> ApiResult<()> {
        let Some(crd_info) = &rt.crd else {
            return Ok(());
        };
        let Some(schema) = &crd_info.schema else {
            return Ok(());
        };
        crd::prune(schema, obj, true);
        crd::apply_defaults(schema, obj);
        let mut causes = crd::validate_schema(schema, obj);
        if causes.is_empty() {
            causes = crd::validate_cel(schema, obj, old);
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(
                &rt.kind,
                meta_str(obj, "name").unwrap_or(""),
                &rt.group,
                causes,
            ))
        }
    }

    fn allocate_ip(&mut self) -> ApiResult<String> {
        let n = (1u8..=254)
            .find(|n| !self.used_ips.contains(n))
            .ok_or_else(|| ApiError::internal("no free ClusterIP left in the service range"))?;
        self.used_ips.insert(n);
        let [a, b, c] = self.ip_prefix;
        Ok(format!("{a}.{b}.{c}.{n}"))
    }

    fn ip_octet(&self, ip: &str) -> Option<u8> {
        let [a, b, c] = self.ip_prefix;
        ip.strip_prefix(&format!("{a}.{b}.{c}."))
            .and_then(|n| n.parse().ok())
    }

    /// Kind-specific defaults on create.
    fn defaults_on_create(&mut self, rt: &ResourceType, obj: &mut Value) -> ApiResult<()> {
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "namespaces") => {
                obj["status"] = json!({"phase": "Active"});
                if obj["metadata"]["labels"]["kubernetes.io/metadata.name"].is_null() {
                    let name = obj["metadata"]["name"].clone();
                    obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
                }
            }
            ("", "services") => {
                let spec = &mut obj["spec"];
                if spec["type"].is_null() {
                    spec["type"] = json!("ClusterIP");
                }
                if spec["sessionAffinity"].is_null() {
                    spec["sessionAffinity"] = json!("None");
                }
                if let Some(ports) = spec["ports"].as_array_mut() {
                    for p in ports {
                        if p["protocol"].is_null() {
                            p["protocol"] = json!("TCP");
                        }
                        if p["targetPort"].is_null() {
                            p["targetPort"] = p["port"].clone();
                        }
                    }
                }
                if spec["type"] != "ExternalName" {
                    match spec["clusterIP"].as_str() {
                        Some("None") => spec["clusterIPs"] = json!(["None"]),
                        Some(ip) if !ip.is_empty() => {
                            let ip = ip.to_string();
                            if let Some(n) = self.ip_octet(&ip)
                                && !self.used_ips.insert(n)
                            {
                                {
                                    return Err(ApiError::invalid(
                                        "Service",
                                        meta_str(obj, "name").unwrap_or(""),
                                        "",
                                        vec![(
                                            "spec.clusterIPs".into(),
                                            format!(
                                                "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated"
                                            ),
                                        )],
                                    ));
                                }
                            }
                            obj["spec"]["clusterIPs"] = json!([ip]);
                        }
                        _ => {
                            let ip = self.allocate_ip()?;
                            obj["spec"]["clusterIP"] = json!(ip);
                            obj["spec"]["clusterIPs"] = json!([ip]);
                        }
                    }
                }
            }
            ("apps", "statefulsets") | ("apps", "deployments") => {
                if obj["spec"]["replicas"].is_null() {
                    obj["spec"]["replicas"] = json!(1);
                }
                if rt.plural == "statefulsets" {
                    if obj["spec"]["podManagementPolicy"].is_null() {
                        obj["spec"]["podManagementPolicy"] = json!("OrderedReady");
                    }
                    if obj["spec"]["updateStrategy"].is_null() {
                        obj["spec"]["updateStrategy"] =
                            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}});
                    }
                }
                if obj["spec"]["revisionHistoryLimit"].is_null() {
                    obj["spec"]["revisionHistoryLimit"] = json!(10);
                }
            }
            ("", "pods") => {
                if obj["spec"]["restartPolicy"].is_null() {
                    obj["spec"]["restartPolicy"] = json!("Always");
                }
                if obj["status"]["phase"].is_null() {
                    obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
                }
            }
            ("", "secrets") if obj["type"].is_null() => obj["type"] = json!("Opaque"),
            ("", "persistentvolumeclaims") if obj["status"]["phase"].is_null() => {
                obj["status"] = json!({"phase": "Pending"})
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                let types = registry::from_crd(obj).map_err(|why| {
                    ApiError::invalid(
                        "CustomResourceDefinition",
                        meta_str(obj, "name").unwrap_or(""),
                        "apiextensions.k8s.io",
                        vec![("spec".into(), format!("Invalid value: \"object\": {why}"))],
                    )
                })?;
                let want = format!("{}.{}", types[0].plural, types[0].group);
                if meta_str(obj, "name") != Some(want.as_str()) {
                    return Err(ApiError::invalid(
                        "CustomResourceDefinition",
                        meta_str(obj, "name").unwrap_or(""),
                        "apiextensions.k8s.io",
                        vec![(
                            "metadata.name".into(),
                            format!(
                                "Invalid value: {:?}: must be spec.names.plural+\".\"+spec.group",
                                meta_str(obj, "name").unwrap_or("")
                            ),
                        )],
                    ));
                }
                obj["status"] = registry::crd_established_status(obj, &now_rfc3339());
            }
            _ => {}
        }
        Ok(())
    }

    fn register_crd(&mut self, crd_obj: &Value) {
        if let Ok(types) = registry::from_crd(crd_obj) {
            self.registry
                .remove_group_resource(&types[0].group, &types[0].plural);
            for t in types {
                self.registry.insert(t);
            }
        }
    }

    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOpts,
    ) -> ApiResult<Value> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        if rt.namespaced {
            let ns = ns.unwrap_or("default");
            if let Some(body_ns) = meta_str(&obj, "namespace")
                && body_ns != ns
            {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})"
                )));
            }
            match self.namespace_exists(ns) {
                None => return Err(ApiError::not_found("", "namespaces", ns)),
                Some(n) if n["metadata"]["deletionTimestamp"].is_string() => {
                    return Err(ApiError::new(
                        403,
                        "Forbidden",
                        format!(
                            "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                            rt.plural,
                            meta_str(&obj, "name").unwrap_or("")
                        ),
                    ));
                }
                Some(_) => {}
            }
            obj["metadata"]["namespace"] = json!(ns);
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        if meta_str(&obj, "name").is_none_or(str::is_empty) {
            let Some(prefix) = meta_str(&obj, "generateName").map(str::to_string) else {
                return Err(ApiError::invalid(
                    &rt.kind,
                    "",
                    &rt.group,
                    vec![(
                        "metadata.name".into(),
                        "Required value: name or generateName is required".into(),
                    )],
                ));
            };
            let mut rng = rand::rng();
            let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
            let suffix: String = (0..5)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
                .collect();
            obj["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
        }
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        if let Some(why) = super::validate::name_problem(rt, &name) {
            return Err(ApiError::invalid(
                &rt.kind,
                &name,
                &rt.group,
                vec![(
                    "metadata.name".into(),
                    format!("Invalid value: {name:?}: {why}"),
                )],
            ));
        }
        let key = Self::key(rt, ns, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        if rt.status_subresource
            && rt.crd.is_some()
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        obj = Self::shown(rt, obj);
        self.admit_crd(rt, &mut obj, None)?;
        self.admit_builtin(rt, &mut obj)?;
        self.defaults_on_create(rt, &mut obj)?;
        let now = now_rfc3339();
        {
            let m = obj["metadata"]
                .as_object_mut()
                .expect("metadata is an object");
            m.insert("uid".into(), json!(new_uid()));
            m.insert("creationTimestamp".into(), json!(now));
            m.insert("generation".into(), json!(1));
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
            m.remove("selfLink");
        }
        ssa::record_update(
            None,
            &mut obj,
            &opts.field_manager,
            &rt.api_version(),
            "",
            &now,
            lists_for(rt),
        );
        if opts.dry_run {
            return Ok(obj);
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            self.register_crd(&obj);
        }
        self.objects.insert(key.clone(), obj.clone());
        self.emit("ADDED", &rt.group, &rt.plural, &key.2, obj.clone());
        Ok(obj)
    }

    /// PUT of a whole object (main resource or `status`).
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        new: Value,
        opts: &WriteOpts,
    ) -> ApiResult<Value> {
        let old = self.get(rt, ns, name)?;
        if let Some(rv) = meta_str(&new, "resourceVersion")
            && !rv.is_empty()
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let mut new = new;
        if let Some(n) = meta_str(&new, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        ssa::record_update(
            Some(&old),
            &mut new,
            &opts.field_manager,
            &rt.api_version(),
            opts.subresource.as_deref().unwrap_or(""),
            &now_rfc3339(),
            lists_for(rt),
        );
        self.commit_update(rt, ns, name, old, new, opts)
    }

    /// Applies a patch of the given content type and commits the result.
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        content_type: &str,
        body: &[u8],
        opts: &WriteOpts,
    ) -> ApiResult<Value> {
        let ct = content_type.split(';').next().unwrap_or("").trim();
        let existing = self.get(rt, ns, name);
        let sub = opts.subresource.clone().unwrap_or_default();
        if ct == "application/apply-patch+yaml" || ct == "application/apply-patch+cbor" {
            let applied: Value = serde_yaml::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            if opts.field_manager.is_empty() {
                return Err(ApiError::bad_request(
                    "PATCH with apply requires the fieldManager parameter",
                ));
            }
            if let Some(n) = meta_str(&applied, "name")
                && n != name
            {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            let live = match &existing {
                Ok(o) => o.clone(),
                Err(e) if e.code == 404 && sub.is_empty() => json!({}),
                Err(e) => return Err(e.clone()),
            };
            let merged = ssa::server_side_apply(&live, &applied, &opts.field_manager, &rt.api_version(), &sub, opts.force, &now_rfc3339(), lists_for(rt))
                .map_err(|conflicts| {
                    let n = conflicts.len();
                    let lines: Vec<String> = conflicts
                        .iter()
                        .map(|c| format!("conflict with \"{}\" using {}: {}", c.manager, c.api_version, c.field))
                        .collect();
                    let msg = if n == 1 {
                        format!("Apply failed with 1 conflict: {}", lines[0])
                    } else {
                        format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
                    };
                    let causes: Vec<Value> = conflicts
                        .iter()
                        .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version), "field": c.field}))
                        .collect();
                    ApiError::new(409, "Conflict", msg).with_details(json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": causes}))
                })?;
            return match existing {
                Ok(old) => self.commit_update(rt, ns, name, old, merged, opts),
                Err(_) => {
                    let mut obj = merged;
                    if !obj.is_object() {
                        return Err(ApiError::bad_request(
                            "an applied configuration must be an object",
                        ));
                    }
                    if !obj["metadata"].is_object() {
                        obj["metadata"] = json!({});
                    }
                    obj["metadata"]["name"] = json!(name);
                    let managed = obj["metadata"]["managedFields"].clone();
                    let mut created = self.create(
                        rt,
                        ns,
                        obj,
                        &WriteOpts {
                            dry_run: opts.dry_run,
                            ..WriteOpts::default()
                        },
                    )?;
                    // the apply's ownership, not the create's, is what was recorded
                    created["metadata"]["managedFields"] = managed;
                    if !opts.dry_run {
                        self.objects
                            .insert(Self::key(rt, ns, name), created.clone());
                    }
                    Ok(created)
                }
            };
        }
        let old = existing?;
        let mut new = old.clone();
        match ct {
            "application/merge-patch+json" => {
                let p: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON merge patch: {e}")))?;
                json_patch::merge(&mut new, &p);
            }
            "application/json-patch+json" => {
                let p: json_patch::Patch = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                apply_json_patch(&mut new, &p).map_err(|e| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "the JSON patch could not be applied to {} \"{name}\": {e}",
                            rt.qualified()
                        ),
                    )
                })?;
            }
            "application/strategic-merge-patch+json" => {
                if rt.crd.is_some() {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!(
                            "strategic merge patch is not supported for custom resources ({}); use a JSON merge patch",
                            rt.qualified()
                        ),
                    ));
                }
                let p: Value = serde_json::from_slice(body).map_err(|e| {
                    ApiError::bad_request(format!("invalid strategic merge patch: {e}"))
                })?;
                smp::strategic_merge(&mut new, &p);
            }
            other => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
                    ),
                ));
            }
        }
        // a patch may carry a resourceVersion precondition; otherwise it applies to the latest
        if meta_str(&new, "resourceVersion") == meta_str(&old, "resourceVersion")
            && let Some(m) = new["metadata"].as_object_mut()
        {
            m.remove("resourceVersion");
        }
        if let Some(rv) = meta_str(&new, "resourceVersion")
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        ssa::record_update(
            Some(&old),
            &mut new,
            &opts.field_manager,
            &rt.api_version(),
            &sub,
            &now_rfc3339(),
            lists_for(rt),
        );
        self.commit_update(rt, ns, name, old, new, opts)
    }

    /// The common tail of PUT and PATCH: status-subresource rules, immutable metadata,
    /// admission, generation, no-op detection, finalizer-driven removal.
    fn commit_update(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        old: Value,
        mut new: Value,
        opts: &WriteOpts,
    ) -> ApiResult<Value> {
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let sub = opts.subresource.as_deref().unwrap_or("");
        if sub == "status" {
            // /status writes only status (and keeps the managedFields bookkeeping)
            let mut merged = old.clone();
            match new.get("status") {
                Some(s) => merged["status"] = s.clone(),
                None => {
                    merged.as_object_mut().expect("object").remove("status");
                }
            }
            merged["metadata"]["managedFields"] = new["metadata"]["managedFields"].clone();
            new = merged;
        } else if rt.status_subresource {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().expect("object").remove("status");
                }
            }
        }
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        for f in [
            "uid",
            "creationTimestamp",
            "namespace",
            "name",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match old["metadata"].get(f) {
                Some(v) => new["metadata"][f] = v.clone(),
                None => {
                    new["metadata"].as_object_mut().expect("object").remove(f);
                }
            }
        }
        if new["metadata"]["managedFields"].is_null() {
            new["metadata"]
                .as_object_mut()
                .expect("object")
                .remove("managedFields");
        }
        new = Self::shown(rt, new);
        if sub != "status" {
            self.admit_crd(rt, &mut new, Some(&old))?;
        } else if rt.crd.is_some() {
            // status is validated too, but transition rules on spec are not re-run
            self.admit_crd(rt, &mut new, Some(&old))?;
        }
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "services") if new["spec"]["type"] != "ExternalName" => {
                let old_ip = &old["spec"]["clusterIP"];
                let new_ip = &new["spec"]["clusterIP"];
                if new_ip.is_null() || new_ip == "" {
                    new["spec"]["clusterIP"] = old_ip.clone();
                    new["spec"]["clusterIPs"] = old["spec"]["clusterIPs"].clone();
                } else if new_ip != old_ip {
                    return Err(ApiError::invalid(
                        "Service",
                        name,
                        "",
                        vec![(
                            "spec.clusterIPs[0]".into(),
                            format!("Invalid value: []string{{{new_ip}}}: may not change once set"),
                        )],
                    ));
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                registry::from_crd(&new).map_err(|why| {
                    ApiError::invalid(
                        "CustomResourceDefinition",
                        name,
                        "apiextensions.k8s.io",
                        vec![("spec".into(), format!("Invalid value: \"object\": {why}"))],
                    )
                })?;
                if sub != "status" {
                    new["status"] = registry::crd_established_status(&new, &now_rfc3339());
                    if let Some(t) = old["status"]["conditions"].as_array() {
                        new["status"]["conditions"] = json!(t);
                    }
                }
            }
            _ => {}
        }
        if sub != "status" {
            self.admit_builtin(rt, &mut new)?;
        }
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        let status_counts = rt.crd.is_some() && !rt.status_subresource;
        if spec_part(&old, status_counts) != spec_part(&new, status_counts) {
            new["metadata"]["generation"] = json!(generation + 1);
        }
        // No-op writes change nothing and emit no event, like the real server. A change of
        // field ownership alone counts (kubectl rewrites managedFields when it moves to
        // server-side apply); a new timestamp alone does not.
        let mut cmp_old = old.clone();
        let mut cmp_new = new.clone();
        for o in [&mut cmp_old, &mut cmp_new] {
            if let Some(m) = o["metadata"].as_object_mut() {
                m.remove("resourceVersion");
                if let Some(entries) = m.get_mut("managedFields").and_then(Value::as_array_mut) {
                    for e in entries.iter_mut() {
                        if let Some(e) = e.as_object_mut() {
                            e.remove("time");
                        }
                    }
                }
            }
        }
        // an object being deleted goes once its last finalizer is gone, unless it is a pod
        // still in its graceful termination period
        let deleting = new["metadata"]["deletionTimestamp"].is_string()
            && new["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0)
                == 0;
        if cmp_old == cmp_new && !(deleting && finalizers(&new).is_empty()) {
            return Ok(old);
        }
        if opts.dry_run {
            // what the write would produce, still at the current version
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
            return Ok(new);
        }
        let key = Self::key(rt, ns, name);
        self.rv += 1;
        new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if deleting && finalizers(&new).is_empty() {
            self.remove(&key, new.clone());
            self.gc();
            return Ok(new);
        }
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            self.register_crd(&new);
        }
        self.objects.insert(key.clone(), new.clone());
        self.emit_change(
            "MODIFIED",
            &rt.group,
            &rt.plural,
            &key.2,
            new.clone(),
            Some(old),
        );
        Ok(new)
    }

    /// Drops an object from the store and tells watchers (rv already bumped by the caller).
    fn remove(&mut self, key: &Key, mut last: Value) {
        self.objects.remove(key);
        if key.0.is_empty()
            && key.1 == "services"
            && let Some(ip) = last["spec"]["clusterIP"].as_str()
            && let Some(n) = self.ip_octet(ip)
        {
            self.used_ips.remove(&n);
        }
        if key.0 == "apiextensions.k8s.io"
            && key.1 == "customresourcedefinitions"
            && let Ok(types) = registry::from_crd(&last)
        {
            let (g, p) = (types[0].group.clone(), types[0].plural.clone());
            // the custom resources go with their definition; watchers see them deleted
            let gone: Vec<Key> = self
                .objects
                .keys()
                .filter(|k| k.0 == g && k.1 == p)
                .cloned()
                .collect();
            for k in gone {
                if let Some(mut o) = self.objects.remove(&k) {
                    self.rv += 1;
                    o["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                    self.emit("DELETED", &k.0, &k.1, &k.2, o);
                }
            }
            self.registry.remove_group_resource(&g, &p);
            self.rv += 1;
        }
        last["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.emit(
            "DELETED",
            &key.0.clone(),
            &key.1.clone(),
            &key.2.clone(),
            last,
        );
    }

    /// DELETE: starts or finishes deletion. Returns the object and whether it is gone.
    #[allow(clippy::too_many_arguments)]
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        policy: Propagation,
        precondition_uid: Option<&str>,
        dry_run: bool,
        grace: Option<i64>,
    ) -> ApiResult<(Value, bool)> {
        let mut obj = self.get(rt, ns, name)?;
        if rt.group.is_empty()
            && rt.plural == "namespaces"
            && matches!(name, "default" | "kube-system" | "kube-public")
        {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
            ));
        }
        if let Some(uid) = precondition_uid
            && Some(uid) != meta_str(&obj, "uid")
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&obj, "uid").unwrap_or("")
                ),
            ));
        }
        if dry_run {
            return Ok((obj, false));
        }
        let key = Self::key(rt, ns, name);
        if rt.group.is_empty() && rt.plural == "namespaces" {
            let members: Vec<(ResourceType, String)> = self
                .objects
                .keys()
                .filter(|k| k.2 == name && !k.2.is_empty())
                .filter_map(|k| {
                    self.registry
                        .any_version(&k.0, &k.1)
                        .map(|t| (t.clone(), k.3.clone()))
                })
                .collect();
            for (t, n) in members {
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
            obj["status"]["phase"] = json!("Terminating");
        }
        let mut fins = finalizers(&obj);
        match policy {
            Propagation::Foreground if !fins.iter().any(|f| f == "foregroundDeletion") => {
                fins.push("foregroundDeletion".into())
            }
            Propagation::Orphan if !fins.iter().any(|f| f == "orphan") => {
                fins.push("orphan".into())
            }
            _ => {}
        }
        if let Some(secs) = graceful_pod_seconds(rt, &obj, grace) {
            if secs > 0 {
                // a scheduled pod terminates gracefully: it stays, marked, until its kubelet
                // confirms with grace period 0 (or a later delete shortens it to 0)
                if obj["metadata"]["deletionTimestamp"].is_null() {
                    let at = chrono::Utc::now() + chrono::Duration::seconds(secs);
                    obj["metadata"]["deletionTimestamp"] =
                        json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                    obj["metadata"]["deletionGracePeriodSeconds"] = json!(secs);
                }
                set_finalizers(&mut obj, &fins);
                if self.objects.get(&key) != Some(&obj) {
                    self.rv += 1;
                    obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                    self.objects.insert(key.clone(), obj.clone());
                    self.emit("MODIFIED", &rt.group, &rt.plural, &key.2, obj.clone());
                }
                self.gc();
                return Ok((obj, false));
            }
            if obj["metadata"]["deletionTimestamp"].is_string() {
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            }
        }
        let namespace_busy = rt.group.is_empty()
            && rt.plural == "namespaces"
            && self.objects.keys().any(|k| k.2 == name);
        if fins.is_empty() && !namespace_busy {
            self.rv += 1;
            self.remove(&key, obj.clone());
            self.gc();
            return Ok((obj, true));
        }
        set_finalizers(&mut obj, &fins);
        if obj["metadata"]["deletionTimestamp"].is_null() {
            obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        }
        if self.objects.get(&key) != Some(&obj) {
            self.rv += 1;
            obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            self.objects.insert(key.clone(), obj.clone());
            self.emit("MODIFIED", &rt.group, &rt.plural, &key.2, obj.clone());
        }
        self.gc();
        let gone = !self.objects.contains_key(&key);
        Ok((obj, gone))
    }

    fn rt_of(&self, k: &Key) -> Option<ResourceType> {
        self.registry.any_version(&k.0, &k.1).cloned()
    }

    fn ns_opt(k: &Key) -> Option<&str> {
        if k.2.is_empty() {
            None
        } else {
            Some(k.2.as_str())
        }
    }

    /// Garbage collection until nothing changes: orphaning, foreground deletion, dependents of
    /// deleted owners, and terminating namespaces that became empty.
    pub fn gc(&mut self) {
        for _round in 0..1000 {
            let uids: BTreeSet<String> = self
                .objects
                .values()
                .filter_map(|o| meta_str(o, "uid").map(str::to_string))
                .collect();
            let mut action: Option<(Key, &'static str)> = None;
            for (k, o) in &self.objects {
                let deleting = o["metadata"]["deletionTimestamp"].is_string();
                let fins = finalizers(o);
                let uid = meta_str(o, "uid").unwrap_or_default();
                if deleting && fins.iter().any(|f| f == "orphan") {
                    action = Some((k.clone(), "orphan"));
                    break;
                }
                if deleting && fins.iter().any(|f| f == "foregroundDeletion") {
                    let dependents: Vec<&Value> = self
                        .objects
                        .values()
                        .filter(|d| owner_uids(d).iter().any(|u| u == uid))
                        .collect();
                    if dependents
                        .iter()
                        .any(|d| d["metadata"]["deletionTimestamp"].is_null())
                    {
                        action = Some((k.clone(), "cascade"));
                        break;
                    }
                    if dependents.is_empty() {
                        action = Some((k.clone(), "unblock"));
                        break;
                    }
                }
                let owners = owner_uids(o);
                if !deleting && !owners.is_empty() && owners.iter().all(|u| !uids.contains(u)) {
                    action = Some((k.clone(), "collect"));
                    break;
                }
                if deleting
                    && k.0.is_empty()
                    && k.1 == "namespaces"
                    && fins.is_empty()
                    && !self.objects.keys().any(|m| m.2 == k.3)
                {
                    action = Some((k.clone(), "namespace"));
                    break;
                }
            }
            let Some((k, what)) = action else { return };
            let Some(rt) = self.rt_of(&k) else { return };
            let obj = self.objects.get(&k).cloned().expect("found above");
            let uid = meta_str(&obj, "uid").unwrap_or_default().to_string();
            match what {
                "orphan" => {
                    let deps: Vec<Key> = self
                        .objects
                        .iter()
                        .filter(|(_, d)| owner_uids(d).contains(&uid))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for dk in deps {
                        if let (Some(drt), Some(mut d)) =
                            (self.rt_of(&dk), self.objects.get(&dk).cloned())
                        {
                            let refs: Vec<Value> = d["metadata"]["ownerReferences"]
                                .as_array()
                                .cloned()
                                .unwrap_or_default()
                                .into_iter()
                                .filter(|r| r["uid"] != uid.as_str())
                                .collect();
                            d["metadata"]["ownerReferences"] = json!(refs);
                            let old = self.objects.get(&dk).cloned().expect("exists");
                            let _ = self.commit_update(
                                &drt,
                                Self::ns_opt(&dk),
                                &dk.3,
                                old,
                                d,
                                &WriteOpts::default(),
                            );
                        }
                    }
                    self.drop_finalizer(&rt, &k, obj, "orphan");
                }
                "unblock" => self.drop_finalizer(&rt, &k, obj, "foregroundDeletion"),
                "cascade" => {
                    let deps: Vec<Key> = self
                        .objects
                        .iter()
                        .filter(|(_, d)| {
                            owner_uids(d).contains(&uid)
                                && d["metadata"]["deletionTimestamp"].is_null()
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                    for dk in deps {
                        if let Some(drt) = self.rt_of(&dk) {
                            let _ = self.delete_no_gc(&drt, &dk, Propagation::Background);
                        }
                    }
                }
                "collect" => {
                    let _ = self.delete_no_gc(&rt, &k, Propagation::Background);
                }
                "namespace" => {
                    self.rv += 1;
                    self.remove(&k, obj);
                }
                _ => return,
            }
        }
    }

    fn drop_finalizer(&mut self, rt: &ResourceType, k: &Key, obj: Value, fin: &str) {
        let mut new = obj.clone();
        let fins: Vec<String> = finalizers(&obj).into_iter().filter(|f| f != fin).collect();
        set_finalizers(&mut new, &fins);
        self.rv += 1;
        let graceful = obj["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(0)
            > 0;
        if fins.is_empty() && !(k.0.is_empty() && k.1 == "namespaces") && !graceful {
            self.remove(k, new);
        } else {
            new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            self.objects.insert(k.clone(), new.clone());
            self.emit("MODIFIED", &rt.group, &rt.plural, &k.2, new);
        }
    }

    /// Deletion of a dependent from inside `gc` (which keeps looping itself).
    fn delete_no_gc(&mut self, rt: &ResourceType, k: &Key, policy: Propagation) -> ApiResult<()> {
        let Some(mut obj) = self.objects.get(k).cloned() else {
            return Ok(());
        };
        let mut fins = finalizers(&obj);
        if policy == Propagation::Foreground && !fins.iter().any(|f| f == "foregroundDeletion") {
            fins.push("foregroundDeletion".into());
        }
        self.rv += 1;
        if let Some(secs) = graceful_pod_seconds(rt, &obj, None).filter(|s| *s > 0) {
            let at = chrono::Utc::now() + chrono::Duration::seconds(secs);
            obj["metadata"]["deletionTimestamp"] =
                json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(secs);
            set_finalizers(&mut obj, &fins);
            obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            self.objects.insert(k.clone(), obj.clone());
            self.emit("MODIFIED", &rt.group, &rt.plural, &k.2, obj);
            return Ok(());
        }
        if fins.is_empty() {
            self.remove(k, obj);
        } else {
            set_finalizers(&mut obj, &fins);
            if obj["metadata"]["deletionTimestamp"].is_null() {
                obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            }
            obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            self.objects.insert(k.clone(), obj.clone());
            self.emit("MODIFIED", &rt.group, &rt.plural, &k.2, obj);
        }
        Ok(())
    }

    /// The autoscaling/v1 Scale view of an object with a scale subresource.
    pub fn get_scale(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        let spec = rt
            .scale
            .as_ref()
            .ok_or_else(|| ApiError::not_found(&rt.group, &format!("{}/scale", rt.plural), name))?;
        let obj = self.get(rt, ns, name)?;
        let replicas = super::table::json_path(&obj, &spec.spec_replicas)
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        let status_replicas = super::table::json_path(&obj, &spec.status_replicas)
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        let selector = spec
            .label_selector
            .as_ref()
            .and_then(|p| super::table::json_path(&obj, p))
            .map(|s| match s {
                Value::String(s) => s,
                sel => LabelSelector::from_object(&sel)
                    .map(|l| l.to_query())
                    .unwrap_or_default(),
            });
        let mut meta = json!({"name": name, "uid": obj["metadata"]["uid"], "resourceVersion": obj["metadata"]["resourceVersion"],
            "creationTimestamp": obj["metadata"]["creationTimestamp"]});
        if let Some(n) = meta_str(&obj, "namespace") {
            meta["namespace"] = json!(n);
        }
        let mut status = json!({"replicas": status_replicas});
        if let Some(s) = selector {
            status["selector"] = json!(s);
        }
        Ok(
            json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta,
            "spec": {"replicas": replicas}, "status": status}),
        )
    }

    /// Writes `spec.replicas` from a Scale (after PUT or PATCH on `/scale`).
    pub fn set_scale(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        scale: &Value,
        manager: &str,
    ) -> ApiResult<Value> {
        let spec = rt
            .scale
            .clone()
            .ok_or_else(|| ApiError::not_found(&rt.group, &format!("{}/scale", rt.plural), name))?;
        let old = self.get(rt, ns, name)?;
        if let Some(rv) = meta_str(scale, "resourceVersion")
            && !rv.is_empty()
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let replicas = scale["spec"]["replicas"]
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("Scale spec.replicas is required"))?;
        let mut new = old.clone();
        let mut cur = &mut new;
        let segs: Vec<&str> = spec
            .spec_replicas
            .trim_start_matches('.')
            .split('.')
            .collect();
        for (i, s) in segs.iter().enumerate() {
            if i + 1 == segs.len() {
                cur[*s] = json!(replicas);
            } else {
                if !cur[*s].is_object() {
                    cur[*s] = json!({});
                }
                cur = &mut cur[*s];
            }
        }
        ssa::record_update(
            Some(&old),
            &mut new,
            manager,
            &rt.api_version(),
            "scale",
            &now_rfc3339(),
            lists_for(rt),
        );
        self.commit_update(
            rt,
            ns,
            name,
            old,
            new,
            &WriteOpts {
                field_manager: manager.into(),
                ..Default::default()
            },
        )?;
        self.get_scale(rt, ns, name)
    }
}

/// RFC 6902 with the Kubernetes reading of `test`: an absent field tests equal to null
/// (kube-rs' `finalizer()` relies on it when it adds the first finalizer).
pub fn apply_json_patch(
    doc: &mut Value,
    patch: &json_patch::Patch,
) -> Result<(), json_patch::PatchError> {
    for op in &patch.0 {
        if let json_patch::PatchOperation::Test(t) = op
            && t.value.is_null()
            && doc.pointer(t.path.as_str()).is_none_or(Value::is_null)
        {
            continue;
        }
        json_patch::patch(doc, std::slice::from_ref(op))?;
    }
    Ok(())
}

pub fn new_uid() -> String {
    let mut rng = rand::rng();
    let b: [u8; 16] = rng.random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}
