//! Create, update (PUT) and patch: every write but deletion ends in `commit_update` (or, for a
//! create, its own tail), which applies the status-subresource rules, keeps immutable metadata,
//! runs admission, moves `metadata.generation`, skips no-op writes and records field ownership.

use rand::Rng;
use serde_json::{Value, json};

use super::{State, finalizers, lists_for, meta_str, now_rfc3339};
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::merge::{smp, ssa};
use crate::apiserver::registry::{self, ResourceType};
use crate::apiserver::validate;

/// How a write was asked for, from its query parameters.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// Who writes (`?fieldManager=`, else the User-Agent's program name): the owner of the
    /// fields it sets.
    pub field_manager: String,
    /// `?dryRun=All`: answer with the result, store nothing.
    pub dry_run: bool,
    /// `status` or `scale` when written through that subresource.
    pub subresource: Option<String>,
    /// `?force=true` on an apply: take over conflicting fields.
    pub force: bool,
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

impl State {
    /// POST: a new object (`generateName`, uid, creationTimestamp, defaults, admission).
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
        if let Some(why) = validate::name_problem(rt, &name) {
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
        if self.all_owners_gone(&obj) {
            // Created for an owner that is already gone (say by a controller acting on a stale
            // cache): the garbage collector removes it, as the real one does.
            self.gc();
        }
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
    pub(super) fn commit_update(
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
            ("apps", "statefulsets") if sub.is_empty() => {
                // As the real server: only these spec fields may change.
                const MUTABLE: [&str; 6] = [
                    "replicas",
                    "ordinals",
                    "template",
                    "updateStrategy",
                    "persistentVolumeClaimRetentionPolicy",
                    "minReadySeconds",
                ];
                let fixed = |v: &Value| {
                    let mut spec = v["spec"].as_object().cloned().unwrap_or_default();
                    for k in MUTABLE {
                        spec.remove(k);
                    }
                    spec
                };
                if fixed(&old) != fixed(&new) {
                    return Err(ApiError::invalid(
                        "StatefulSet",
                        name,
                        "apps",
                        vec![(
                            "spec".into(),
                            "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden".into(),
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
        let owners_changed =
            old["metadata"]["ownerReferences"] != new["metadata"]["ownerReferences"];
        self.objects.insert(key.clone(), new.clone());
        self.emit_change(
            "MODIFIED",
            &rt.group,
            &rt.plural,
            &key.2,
            new.clone(),
            Some(old),
        );
        if owners_changed && self.all_owners_gone(&new) {
            self.gc();
        }
        Ok(new)
    }
}

/// RFC 6902 with the Kubernetes reading of `test`: an absent field tests equal to null
/// (kube-rs' `finalizer()` relies on it when it adds the first finalizer).
fn apply_json_patch(
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

/// A random version-4 UUID, as object uids are.
pub(crate) fn new_uid() -> String {
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
