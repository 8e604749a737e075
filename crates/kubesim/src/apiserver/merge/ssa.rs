//! Server-side apply (`application/apply-patch+yaml`) and the field ownership every write records
//! in `metadata.managedFields`.
//!
//! Ownership is tracked per leaf field in the real `FieldsV1` format (`f:<field>`,
//! `k:<merge key json>` for keyed list items, `v:<json>` for set items, `.` for the item itself).
//! List semantics ([`Lists`]): built-in kinds use the merge keys of [`super`]; custom resources
//! use their schema's `x-kubernetes-list-type` (`map` with `x-kubernetes-list-map-keys`, `set`)
//! and are atomic otherwise, as on the real server.
//!
//! Limits: a conflict is a leaf field (or a field under an atomic leaf) owned by another manager
//! whose current value differs from the applied one; fields a manager stops applying are removed
//! only if no other manager owns them; `Update` operations take ownership of the leaves they
//! change.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::{is_set_field, merge_key};

/// A field path in FieldsV1 notation, one segment (`f:`, `k:`, `v:`) per element.
pub type Path = Vec<String>;

/// How a list is merged and owned.
#[derive(Debug, Clone, PartialEq)]
pub enum ListSem {
    /// Replaced and owned as a whole.
    Atomic,
    /// A set of scalars, owned per member (`v:`).
    Set,
    /// Items identified by these key fields, owned per item (`k:`).
    Map(Vec<String>),
}

/// Where list semantics come from: built-in kinds use merge keys by field name (see
/// [`super::merge_key`]); custom resources use their schema's `x-kubernetes-list-type` and
/// `x-kubernetes-list-map-keys`, atomic when absent, as on the real server.
#[derive(Debug, Clone, Copy)]
pub enum Lists<'a> {
    /// Built-in kinds (and every object's metadata): by field name.
    ByName,
    /// A custom resource: from this (sub)schema; None where the schema says nothing.
    Schema(Option<&'a Value>),
}

impl<'a> Lists<'a> {
    /// The context of the object property `field`.
    pub fn child(self, field: &str) -> Lists<'a> {
        match self {
            Lists::ByName => Lists::ByName,
            Lists::Schema(s) => Lists::Schema(s.and_then(|s| {
                s["properties"]
                    .get(field)
                    .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
            })),
        }
    }

    /// The context of a list's items.
    pub fn items(self) -> Lists<'a> {
        match self {
            Lists::ByName => Lists::ByName,
            Lists::Schema(s) => Lists::Schema(s.and_then(|s| s.get("items"))),
        }
    }

    /// Semantics of the list in field `field` (this context is the field's own).
    pub fn semantics(self, field: &str, sample: Option<&Value>) -> ListSem {
        match self {
            Lists::ByName if is_set_field(field) => ListSem::Set,
            Lists::ByName => match merge_key(field, sample) {
                Some(k) => ListSem::Map(vec![k.to_string()]),
                None => ListSem::Atomic,
            },
            Lists::Schema(s) => match s.and_then(|s| s["x-kubernetes-list-type"].as_str()) {
                Some("set") => ListSem::Set,
                Some("map") => ListSem::Map(
                    s.and_then(|s| s["x-kubernetes-list-map-keys"].as_array())
                        .map(|a| {
                            a.iter()
                                .filter_map(|k| k.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                ),
                _ => ListSem::Atomic,
            },
        }
    }
}

fn key_segment(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    for k in keys {
        m.insert(k.clone(), item[k].clone());
    }
    format!("k:{}", Value::Object(m))
}

/// The FieldsV1 tree of the fields set in `v`, with the list semantics of `lists` (the context of
/// `v` itself). `top` restricts metadata to the fields apply manages (labels, annotations,
/// finalizers, ownerReferences).
pub fn fields_of(v: &Value, top: bool, lists: Lists<'_>) -> Value {
    let Some(m) = v.as_object() else {
        return json!({});
    };
    let mut out = Map::new();
    for (k, child) in m {
        if top && (k == "apiVersion" || k == "kind") {
            continue;
        }
        if top && k == "metadata" {
            let mut meta = Map::new();
            for f in ["labels", "annotations", "finalizers", "ownerReferences"] {
                if let Some(c) = child.get(f) {
                    meta.insert(format!("f:{f}"), child_fields(f, c, Lists::ByName));
                }
            }
            if !meta.is_empty() {
                out.insert("f:metadata".into(), Value::Object(meta));
            }
            continue;
        }
        out.insert(format!("f:{k}"), child_fields(k, child, lists.child(k)));
    }
    Value::Object(out)
}

fn child_fields(field: &str, child: &Value, lists: Lists<'_>) -> Value {
    match child {
        Value::Object(o) if !o.is_empty() => fields_of(child, false, lists),
        Value::Array(a) if !a.is_empty() => match lists.semantics(field, a.first()) {
            ListSem::Set => {
                Value::Object(a.iter().map(|i| (format!("v:{i}"), json!({}))).collect())
            }
            ListSem::Map(keys)
                if !keys.is_empty()
                    && a.iter().all(|i| keys.iter().all(|k| i.get(k).is_some())) =>
            {
                let mut m = Map::new();
                for i in a {
                    let mut f = fields_of(i, false, lists.items());
                    f.as_object_mut()
                        .expect("object")
                        .insert(".".into(), json!({}));
                    m.insert(key_segment(i, &keys), f);
                }
                Value::Object(m)
            }
            _ => json!({}),
        },
        _ => json!({}),
    }
}

/// Leaf paths of a FieldsV1 tree (a `.` entry makes its item a leaf too).
pub fn leaves(tree: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    fn walk(t: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(m) = t.as_object() else { return };
        if m.is_empty() {
            out.insert(prefix.clone());
            return;
        }
        for (k, c) in m {
            if k == "." {
                out.insert(prefix.clone());
                continue;
            }
            prefix.push(k.clone());
            walk(c, prefix, out);
            prefix.pop();
        }
    }
    walk(tree, &mut vec![], &mut out);
    out.remove(&Vec::new());
    out
}

/// Rebuilds a FieldsV1 tree from leaf paths.
pub fn tree_of(paths: &BTreeSet<Path>) -> Value {
    let mut root = json!({});
    for p in paths {
        let mut cur = &mut root;
        for (i, seg) in p.iter().enumerate() {
            let m = cur.as_object_mut().expect("tree nodes are objects");
            let entry = m.entry(seg.clone()).or_insert(json!({}));
            if i + 1 == p.len() && seg.starts_with("k:") {
                entry
                    .as_object_mut()
                    .expect("object")
                    .insert(".".into(), json!({}));
            }
            cur = entry;
        }
    }
    root
}

fn find_item(list: &[Value], seg: &str) -> Option<usize> {
    if let Some(k) = seg.strip_prefix("k:") {
        let want: Value = serde_json::from_str(k).ok()?;
        let want = want.as_object()?;
        list.iter()
            .position(|e| want.iter().all(|(kk, vv)| &e[kk] == vv))
    } else if let Some(v) = seg.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        list.iter().position(|e| *e == want)
    } else {
        None
    }
}

/// The value at a FieldsV1 path, if present.
pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path {
        cur = if let Some(f) = seg.strip_prefix("f:") {
            cur.get(f)?
        } else {
            let list = cur.as_array()?;
            &list[find_item(list, seg)?]
        };
    }
    Some(cur)
}

/// Removes the field or list item at a path (no-op if absent).
pub fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for seg in parent {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)
        } else {
            match cur.as_array().and_then(|l| find_item(l, seg)) {
                Some(i) => cur.get_mut(i),
                None => None,
            }
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(i) = cur.as_array().and_then(|l| find_item(l, last))
        && let Some(l) = cur.as_array_mut()
    {
        l.remove(i);
    }
}

/// Merges an applied configuration into the live object with the list semantics of `lists`:
/// maps recurse, keyed lists merge by key, set lists union, other lists and scalars are replaced.
pub fn apply_merge(target: &mut Value, applied: &Value, lists: Lists<'_>) {
    let Some(am) = applied.as_object() else {
        *target = applied.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (k, v) in am {
        let tm = target.as_object_mut().expect("object");
        // metadata lists follow the built-in rules for every kind
        let ctx = if k == "metadata" {
            Lists::ByName
        } else {
            lists.child(k)
        };
        match v {
            Value::Object(_) => apply_merge(tm.entry(k.clone()).or_insert(Value::Null), v, ctx),
            Value::Array(items) => {
                let cur = tm.entry(k.clone()).or_insert(Value::Null);
                match ctx.semantics(k, items.first()) {
                    ListSem::Set => {
                        let mut out = cur.as_array().cloned().unwrap_or_default();
                        for i in items {
                            if !out.contains(i) {
                                out.push(i.clone());
                            }
                        }
                        *cur = Value::Array(out);
                    }
                    ListSem::Map(keys)
                        if !keys.is_empty()
                            && cur.is_array()
                            && items
                                .iter()
                                .all(|i| keys.iter().all(|kk| i.get(kk).is_some())) =>
                    {
                        let list = cur.as_array_mut().expect("checked above");
                        for item in items {
                            match list
                                .iter()
                                .position(|e| keys.iter().all(|kk| e[kk] == item[kk]))
                            {
                                Some(p) => apply_merge(&mut list[p], item, ctx.items()),
                                None => list.push(item.clone()),
                            }
                        }
                    }
                    _ => *cur = v.clone(),
                }
            }
            _ => {
                tm.insert(k.clone(), v.clone());
            }
        }
    }
}

/// A path in the dotted form conflicts are reported in (`.spec.replicas`,
/// `.spec.containers[name="app"].image`).
pub fn dotted(path: &[String]) -> String {
    let mut s = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let kv: Value = serde_json::from_str(k).unwrap_or(Value::Null);
            let inner: Vec<String> = kv
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            s.push_str(&format!("[{}]", inner.join(",")));
        } else if let Some(v) = seg.strip_prefix("v:") {
            s.push_str(&format!("[{v}]"));
        }
    }
    s
}

fn is_prefix(a: &[String], b: &[String]) -> bool {
    a.len() <= b.len() && b[..a.len()] == *a
}

/// One entry of `metadata.managedFields`.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    /// The field manager (`kubectl`, `tiermq-operator`, ...).
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The apiVersion the manager wrote with.
    pub api_version: String,
    /// `status` or `scale` when written through that subresource, else empty.
    pub subresource: String,
    /// When the manager last changed its fields.
    pub time: String,
    /// The leaf fields the manager owns.
    pub fields: BTreeSet<Path>,
}

/// The `managedFields` of an object.
pub fn read_managed(obj: &Value) -> Vec<ManagedEntry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| ManagedEntry {
                    manager: e["manager"].as_str().unwrap_or_default().into(),
                    operation: e["operation"].as_str().unwrap_or("Update").into(),
                    api_version: e["apiVersion"].as_str().unwrap_or_default().into(),
                    subresource: e["subresource"].as_str().unwrap_or_default().into(),
                    time: e["time"].as_str().unwrap_or_default().into(),
                    fields: leaves(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Sets an object's `managedFields` (entries that own nothing are left out).
pub fn write_managed(obj: &mut Value, entries: &[ManagedEntry]) {
    let arr: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": tree_of(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if obj.is_object() && !obj["metadata"].is_object() && !arr.is_empty() {
        obj["metadata"] = json!({});
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if arr.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(arr));
        }
    }
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The manager that owns the field.
    pub manager: String,
    /// The apiVersion it wrote with.
    pub api_version: String,
    /// The field, dotted (`.spec.replicas`).
    pub field: String,
}

/// Outcome of a server-side apply: the new object (managedFields updated) or the conflicts.
#[allow(clippy::too_many_arguments)]
pub fn server_side_apply(
    live: &Value,
    applied: &Value,
    manager: &str,
    api_version: &str,
    subresource: &str,
    force: bool,
    now: &str,
    lists: Lists<'_>,
) -> Result<Value, Vec<Conflict>> {
    let mut applied_body = applied.clone();
    // Only the part of the object this endpoint writes is owned: status on /status, the rest
    // on the main resource.
    if let Some(m) = applied_body.as_object_mut()
        && subresource == "status"
    {
        m.retain(|k, _| k == "status" || k == "apiVersion" || k == "kind" || k == "metadata");
    }
    let mut new_fields = leaves(&fields_of(&applied_body, true, lists));
    if subresource == "status" {
        new_fields.retain(|p| p.first().map(String::as_str) == Some("f:status"));
    }
    let mut entries = read_managed(live);
    let mut conflicts = vec![];
    let mut stolen: Vec<(usize, Path)> = vec![];
    for (idx, e) in entries.iter().enumerate() {
        if e.manager == manager && e.operation == "Apply" {
            continue;
        }
        for owned in &e.fields {
            for p in &new_fields {
                if !(is_prefix(p, owned) || is_prefix(owned, p)) {
                    continue;
                }
                let cmp = if owned.len() < p.len() { owned } else { p };
                // a keyed list item or set member is owned by existence; its fields are
                // compared one by one as their own leaves
                let item = cmp
                    .last()
                    .is_some_and(|s| s.starts_with("k:") || s.starts_with("v:"));
                if !item && value_at(live, cmp) != value_at(&applied_body, cmp) {
                    conflicts.push(Conflict {
                        manager: e.manager.clone(),
                        api_version: e.api_version.clone(),
                        field: dotted(cmp),
                    });
                    stolen.push((idx, owned.clone()));
                }
            }
        }
    }
    if !conflicts.is_empty() && !force {
        conflicts.dedup();
        return Err(conflicts);
    }
    for (idx, p) in stolen {
        entries[idx].fields.remove(&p);
    }
    let mut obj = live.clone();
    let previous: BTreeSet<Path> = entries
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply" && e.subresource == subresource)
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: BTreeSet<Path> = entries
        .iter()
        .filter(|e| {
            !(e.manager == manager && e.operation == "Apply" && e.subresource == subresource)
        })
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let gone: BTreeSet<&Path> = previous
        .iter()
        .filter(|p| !new_fields.contains(*p) && !others.contains(*p))
        .collect();
    // A keyed item that goes is removed as a whole, not field by field: once its key fields
    // were gone it could no longer be found, and a shell of its other fields would stay.
    for p in &gone {
        let within_gone = gone.iter().any(|q| q.len() < p.len() && is_prefix(q, p));
        if !within_gone {
            remove_at(&mut obj, p);
        }
    }
    let mut body = applied_body.clone();
    if let Some(m) = body.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "labels" | "annotations" | "finalizers" | "ownerReferences"
                )
            });
        }
    }
    apply_merge(&mut obj, &body, lists);
    let entry = ManagedEntry {
        manager: manager.into(),
        operation: "Apply".into(),
        api_version: api_version.into(),
        subresource: subresource.into(),
        time: now.into(),
        fields: new_fields,
    };
    // in place, so that re-applying the same configuration is a no-op
    match entries
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == "Apply" && e.subresource == subresource)
    {
        Some(e) => *e = entry,
        None => entries.push(entry),
    }
    write_managed(&mut obj, &entries);
    Ok(obj)
}

/// Records an `Update` by `manager`: it takes ownership of every leaf whose value changed.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: &str,
    now: &str,
    lists: Lists<'_>,
) {
    // A client that rewrites managedFields (kubectl does when it moves client-side apply
    // ownership over to server-side apply) sets the starting point, as on the real server.
    let client_set = !new["metadata"]["managedFields"].is_null()
        && old.is_some_and(|o| o["metadata"]["managedFields"] != new["metadata"]["managedFields"]);
    let mut entries = if client_set {
        read_managed(new)
    } else {
        old.map(read_managed).unwrap_or_default()
    };
    let mut changed: BTreeSet<Path> = leaves(&fields_of(new, true, lists))
        .into_iter()
        .filter(|p| old.is_none_or(|o| value_at(o, p) != value_at(new, p)))
        .collect();
    if subresource == "status" {
        changed.retain(|p| p.first().map(String::as_str) == Some("f:status"));
    } else {
        changed.retain(|p| p.first().map(String::as_str) != Some("f:status"));
    }
    // Fields that disappeared are no longer owned by anyone.
    for e in entries.iter_mut() {
        e.fields.retain(|p| value_at(new, p).is_some());
    }
    if !changed.is_empty() {
        for e in entries.iter_mut() {
            if e.manager != manager || e.operation != "Update" {
                e.fields
                    .retain(|p| !changed.iter().any(|c| is_prefix(c, p)));
            }
        }
        match entries.iter_mut().find(|e| {
            e.manager == manager && e.operation == "Update" && e.subresource == subresource
        }) {
            Some(e) => {
                e.fields.extend(changed);
                e.time = now.into();
            }
            None => entries.push(ManagedEntry {
                manager: manager.into(),
                operation: "Update".into(),
                api_version: api_version.into(),
                subresource: subresource.into(),
                time: now.into(),
                fields: changed,
            }),
        }
    }
    write_managed(new, &entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_tree_round_trips_through_leaves() {
        let o = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "1"}},
            "spec": {"containers": [{"name": "c", "image": "i"}], "args": ["x"]}});
        let t = fields_of(&o, true, Lists::ByName);
        assert_eq!(t["f:metadata"]["f:labels"]["f:a"], json!({}));
        assert!(t["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["."].is_object());
        assert_eq!(tree_of(&leaves(&t)), t);
        let p: Path = vec![
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"c\"}".into(),
            "f:image".into(),
        ];
        assert_eq!(value_at(&o, &p), Some(&json!("i")));
        assert_eq!(dotted(&p), ".spec.containers[name=\"c\"].image");
    }

    #[test]
    fn apply_conflicts_with_another_manager_unless_forced() {
        let now = "2026-01-01T00:00:00Z";
        let live = server_side_apply(
            &json!({}),
            &json!({"spec": {"replicas": 1, "image": "a"}}),
            "one",
            "v1",
            "",
            false,
            now,
            Lists::ByName,
        )
        .unwrap();
        // Same value from another manager: shared ownership, no conflict.
        let shared = server_side_apply(
            &live,
            &json!({"spec": {"replicas": 1}}),
            "two",
            "v1",
            "",
            false,
            now,
            Lists::ByName,
        )
        .unwrap();
        assert_eq!(read_managed(&shared).len(), 2);
        let err = server_side_apply(
            &shared,
            &json!({"spec": {"replicas": 3}}),
            "two",
            "v1",
            "",
            false,
            now,
            Lists::ByName,
        )
        .unwrap_err();
        assert_eq!(err[0].manager, "one");
        assert_eq!(err[0].field, ".spec.replicas");
        let forced = server_side_apply(
            &shared,
            &json!({"spec": {"replicas": 3}}),
            "two",
            "v1",
            "",
            true,
            now,
            Lists::ByName,
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        let one = read_managed(&forced)
            .into_iter()
            .find(|e| e.manager == "one")
            .unwrap();
        assert!(!one.fields.iter().any(|p| dotted(p) == ".spec.replicas"));
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying() {
        let now = "t";
        let a = server_side_apply(
            &json!({}),
            &json!({"metadata": {"labels": {"x": "1", "y": "2"}}}),
            "m",
            "v1",
            "",
            false,
            now,
            Lists::ByName,
        )
        .unwrap();
        let b = server_side_apply(
            &a,
            &json!({"metadata": {"labels": {"x": "1"}}}),
            "m",
            "v1",
            "",
            false,
            now,
            Lists::ByName,
        )
        .unwrap();
        assert_eq!(b["metadata"]["labels"], json!({"x": "1"}));
    }

    #[test]
    fn apply_removes_a_keyed_item_the_manager_stopped_applying_as_a_whole() {
        let port =
            |n: &str, p: u16| json!({"name": n, "port": p, "protocol": "TCP", "targetPort": p});
        let ssa = |live: &Value, ports: Vec<Value>| {
            server_side_apply(
                live,
                &json!({"spec": {"ports": ports}}),
                "m",
                "v1",
                "",
                false,
                "t",
                Lists::ByName,
            )
            .unwrap()
        };
        let both = ssa(&json!({}), vec![port("amqp", 5672), port("amqps", 5671)]);
        assert_eq!(both["spec"]["ports"].as_array().unwrap().len(), 2);
        let one = ssa(&both, vec![port("amqp", 5672)]);
        assert_eq!(one["spec"]["ports"], json!([port("amqp", 5672)]));
    }

    #[test]
    fn update_takes_ownership_of_changed_fields() {
        let now = "t";
        let a = server_side_apply(
            &json!({}),
            &json!({"spec": {"replicas": 1}}),
            "applier",
            "v1",
            "",
            false,
            now,
            Lists::ByName,
        )
        .unwrap();
        let mut b = a.clone();
        b["spec"]["replicas"] = json!(5);
        record_update(Some(&a), &mut b, "kubectl", "v1", "", now, Lists::ByName);
        let m = read_managed(&b);
        assert!(
            m.iter()
                .any(|e| e.manager == "kubectl" && e.operation == "Update")
        );
        // the applier no longer owns replicas, so a new apply with another value conflicts
        let err = server_side_apply(
            &b,
            &json!({"spec": {"replicas": 2}}),
            "applier",
            "v1",
            "",
            false,
            now,
            Lists::ByName,
        )
        .unwrap_err();
        assert_eq!(err[0].manager, "kubectl");
    }
}

#[cfg(test)]
mod schema_list_tests {
    use super::*;

    fn schema(list_type: Option<&str>) -> Value {
        let mut conditions = json!({"type": "array", "items": {"type": "object", "properties": {
            "type": {"type": "string"}, "status": {"type": "string"}}}});
        if let Some(t) = list_type {
            conditions["x-kubernetes-list-type"] = json!(t);
            conditions["x-kubernetes-list-map-keys"] = json!(["type"]);
        }
        json!({"type": "object", "properties": {"status": {"type": "object", "properties": {"conditions": conditions}}}})
    }

    fn apply(live: &Value, cond: &str, manager: &str, s: &Value) -> Result<Value, Vec<Conflict>> {
        server_side_apply(
            live,
            &json!({"status": {"conditions": [{"type": cond, "status": "True"}]}}),
            manager,
            "x/v1",
            "",
            false,
            "t",
            Lists::Schema(Some(s)),
        )
    }

    #[test]
    fn custom_resource_lists_are_atomic_unless_the_schema_says_map() {
        let atomic = schema(None);
        let a = apply(&json!({}), "Ready", "one", &atomic).unwrap();
        // another manager's different list conflicts with the whole list
        let err = apply(&a, "Synced", "two", &atomic).unwrap_err();
        assert_eq!(err[0].field, ".status.conditions");

        let keyed = schema(Some("map"));
        let a = apply(&json!({}), "Ready", "one", &keyed).unwrap();
        let b = apply(&a, "Synced", "two", &keyed).unwrap();
        let types: Vec<&str> = b["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Ready", "Synced"]);
        let owned = read_managed(&b)
            .into_iter()
            .find(|e| e.manager == "two")
            .unwrap();
        assert!(
            owned
                .fields
                .iter()
                .any(|p| dotted(p) == ".status.conditions[type=\"Synced\"].status")
        );
    }
}
