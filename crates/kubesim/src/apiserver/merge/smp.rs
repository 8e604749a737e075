//! Strategic merge patch (`application/strategic-merge-patch+json`), the subset kubectl needs.
//!
//! Maps merge recursively (null deletes), lists follow the built-in list semantics of
//! [`super`]. Directives handled: `$patch: replace|delete` (in maps and list elements),
//! `$deleteFromPrimitiveList/<f>`, `$setElementOrder/<f>` and `$retainKeys` (ignored: order and
//! retention follow the patch).

use serde_json::{Map, Value};

use super::{is_set_field, merge_key};

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .filter(|(_, v)| !v.is_null())
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Applies a strategic merge patch to `target` in place.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(pm) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    for (k, v) in pm {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(del)) = (target[field].as_array_mut(), v.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        let tm = target.as_object_mut().expect("target is an object");
        match v {
            Value::Null => {
                tm.remove(k);
            }
            Value::Array(items) => {
                let cur = tm.entry(k.clone()).or_insert(Value::Null);
                merge_list(cur, items, k);
            }
            Value::Object(o) if o.get("$patch").and_then(Value::as_str) == Some("delete") => {
                tm.remove(k);
            }
            Value::Object(_) => {
                let cur = tm.entry(k.clone()).or_insert(Value::Null);
                strategic_merge(cur, v);
            }
            _ => {
                tm.insert(k.clone(), v.clone());
            }
        }
    }
}

fn merge_list(cur: &mut Value, items: &[Value], field: &str) {
    if is_set_field(field) {
        let mut out = cur.as_array().cloned().unwrap_or_default();
        for i in items {
            if !out.contains(i) {
                out.push(i.clone());
            }
        }
        *cur = Value::Array(out);
        return;
    }
    let key = merge_key(field, items.first());
    let keyed = key.is_some() && items.iter().all(|i| i.is_object());
    if !keyed || !cur.is_array() {
        let kept: Vec<Value> = items
            .iter()
            .filter(|i| i.get("$patch").and_then(Value::as_str) != Some("delete"))
            .map(strip_directives)
            .collect();
        *cur = Value::Array(kept);
        return;
    }
    let key = key.expect("checked above");
    let list = cur.as_array_mut().expect("checked above");
    for item in items {
        let id = &item[key];
        let pos = list.iter().position(|e| &e[key] == id);
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(p) = pos {
                list.remove(p);
            }
            continue;
        }
        match pos {
            Some(p) => strategic_merge(&mut list[p], item),
            None => list.push(strip_directives(item)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_by_name_and_honours_directives() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "x:1", "env": [{"name": "E", "value": "1"}]},
            {"name": "b", "image": "y:1"}]}, "metadata": {"finalizers": ["f1"]}});
        strategic_merge(
            &mut pod,
            &json!({
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "spec": {"containers": [
                {"name": "a", "image": "x:2", "env": [{"name": "F", "value": "2"}]},
                {"name": "b", "$patch": "delete"}]},
            "metadata": {"finalizers": ["f2"]}}),
        );
        assert_eq!(pod["spec"]["containers"].as_array().unwrap().len(), 1);
        assert_eq!(pod["spec"]["containers"][0]["image"], "x:2");
        assert_eq!(
            pod["spec"]["containers"][0]["env"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(pod["metadata"]["finalizers"], json!(["f1", "f2"]));
        strategic_merge(&mut pod, &json!({"spec": {"containers": null}}));
        assert!(pod["spec"].get("containers").is_none());
    }

    #[test]
    fn strategic_merge_replaces_unkeyed_lists() {
        let mut o = json!({"spec": {"args": ["a", "b"]}});
        strategic_merge(&mut o, &json!({"spec": {"args": ["c"]}}));
        assert_eq!(o["spec"]["args"], json!(["c"]));
    }
}
