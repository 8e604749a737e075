//! `events.k8s.io/v1` Events are a second view of the core `v1` Events, as on a real cluster:
//! one storage (core form), field names converted on the way in and out. So events that
//! kube-rs' `Recorder` writes through events.k8s.io show up in `kubectl describe`.

use serde_json::{Map, Value};

/// (events.k8s.io/v1 name, core/v1 name) of the fields that differ.
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(v: &Value, to_core: bool) -> Value {
    let Some(m) = v.as_object() else {
        return v.clone();
    };
    let mut out = Map::new();
    for (k, val) in m {
        let key = RENAMES
            .iter()
            .find(|(new, core)| if to_core { k == new } else { k == core })
            .map(|(new, core)| if to_core { *core } else { *new })
            .unwrap_or(k.as_str());
        out.insert(key.to_string(), val.clone());
    }
    Value::Object(out)
}

/// An events.k8s.io/v1 Event (or a patch of one) in core/v1 form.
pub fn to_core(v: &Value) -> Value {
    let mut o = rename(v, true);
    if o.get("apiVersion").is_some() {
        o["apiVersion"] = Value::String("v1".into());
    }
    o
}

/// A core/v1 Event in events.k8s.io/v1 form.
pub fn from_core(v: &Value) -> Value {
    let mut o = rename(v, false);
    if o.get("apiVersion").is_some() {
        o["apiVersion"] = Value::String("events.k8s.io/v1".into());
    }
    o
}

/// A JSON-patch path or field-selector path in core form.
pub fn path_to_core(path: &str, sep: char) -> String {
    let trimmed = path.trim_start_matches(sep);
    let (first, rest) = trimmed
        .split_once(sep)
        .map(|(a, b)| (a, Some(b)))
        .unwrap_or((trimmed, None));
    let first = RENAMES
        .iter()
        .find(|(new, _)| *new == first)
        .map(|(_, core)| *core)
        .unwrap_or(first);
    let lead = if path.starts_with(sep) {
        sep.to_string()
    } else {
        String::new()
    };
    match rest {
        Some(r) => format!("{lead}{first}{sep}{r}"),
        None => format!("{lead}{first}"),
    }
}

/// Converts any response document (Event, EventList, Table rows) to events.k8s.io/v1 form.
pub fn response_from_core(v: &Value) -> Value {
    match v["kind"].as_str() {
        Some("Event") => from_core(v),
        Some("EventList") => {
            let mut l = v.clone();
            l["apiVersion"] = Value::String("events.k8s.io/v1".into());
            if let Some(items) = l["items"].as_array_mut() {
                for i in items.iter_mut() {
                    *i = from_core(i);
                }
            }
            l
        }
        Some("Table") => {
            let mut t = v.clone();
            if let Some(rows) = t["rows"].as_array_mut() {
                for r in rows.iter_mut() {
                    if r["object"]["kind"] == "Event" {
                        r["object"] = from_core(&r["object"]);
                    }
                }
            }
            t
        }
        _ => v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_convert_both_ways() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "hello", "reason": "Started",
            "reportingController": "tiermq", "eventTime": "2026-01-01T00:00:00.000000Z"});
        let core = to_core(&v1);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "hello");
        assert_eq!(core["reportingComponent"], "tiermq");
        assert_eq!(from_core(&core), v1);
        assert_eq!(path_to_core("/note", '/'), "/message");
        assert_eq!(path_to_core("regarding.name", '.'), "involvedObject.name");
        assert_eq!(path_to_core("metadata.name", '.'), "metadata.name");
    }
}
