//! `meta.k8s.io/v1` Table output for `kubectl get`: printer columns of CRDs and a few sensible
//! default columns per built-in kind.

use serde_json::{Value, json};

/// Where a column's cells come from.
#[derive(Clone)]
pub enum ColumnSource {
    /// `metadata.name`.
    Name,
    /// The age of `metadata.creationTimestamp` (`5m`).
    Age,
    /// A CRD printer column's JSONPath.
    JsonPath(String),
    /// A function of the object, for built-in kinds (a pod's READY, STATUS, RESTARTS).
    Builtin(fn(&Value) -> Value),
}

/// One Table column: its definition as sent in `columnDefinitions` and how to fill its cells.
#[derive(Clone)]
pub struct Column {
    /// Header (`Name`, `Ready`).
    pub name: String,
    /// OpenAPI type of the cells (`string`, `integer`, `date`).
    pub type_: String,
    /// OpenAPI format (`name` for the name column).
    pub format: String,
    /// Description, as `kubectl explain`-style help.
    pub description: String,
    /// 0 for `kubectl get`, higher for `-o wide` only.
    pub priority: i64,
    /// Where the cells come from.
    pub source: ColumnSource,
}

impl Column {
    /// A CRD printer column (`additionalPrinterColumns`); a creationTimestamp path shows as an
    /// age.
    pub fn json_path(
        name: &str,
        type_: &str,
        format: &str,
        description: &str,
        priority: i64,
        path: &str,
    ) -> Self {
        Column {
            name: name.into(),
            type_: type_.into(),
            format: format.into(),
            description: description.into(),
            priority,
            source: if path == ".metadata.creationTimestamp" {
                ColumnSource::Age
            } else {
                ColumnSource::JsonPath(path.into())
            },
        }
    }

    fn builtin(name: &str, priority: i64, f: fn(&Value) -> Value) -> Self {
        Column {
            name: name.into(),
            type_: "string".into(),
            format: String::new(),
            description: String::new(),
            priority,
            source: ColumnSource::Builtin(f),
        }
    }

    /// The column's entry in the Table's `columnDefinitions`.
    pub fn definition(&self) -> Value {
        json!({"name": self.name, "type": self.type_, "format": self.format,
               "description": self.description, "priority": self.priority})
    }

    /// This column's cell for `obj`, ages counted up to `now`.
    pub fn cell(&self, obj: &Value, now: chrono::DateTime<chrono::Utc>) -> Value {
        match &self.source {
            ColumnSource::Name => obj["metadata"]["name"].clone(),
            ColumnSource::Age => age(obj["metadata"]["creationTimestamp"].as_str(), now),
            ColumnSource::JsonPath(p) => {
                let v = json_path(obj, p).unwrap_or(Value::Null);
                match (self.type_.as_str(), &v) {
                    ("date", Value::String(s)) => age(Some(s), now),
                    (_, Value::Null) => Value::Null,
                    ("string", Value::String(_)) => v,
                    ("string", other) => Value::String(other.to_string()),
                    _ => v,
                }
            }
            ColumnSource::Builtin(f) => f(obj),
        }
    }
}

/// The NAME column every Table starts with.
pub fn name_column() -> Column {
    Column {
        name: "Name".into(),
        type_: "string".into(),
        format: "name".into(),
        description: "Name must be unique within a namespace.".into(),
        priority: 0,
        source: ColumnSource::Name,
    }
}

/// The AGE column.
pub fn age_column() -> Column {
    Column {
        name: "Age".into(),
        type_: "string".into(),
        format: String::new(),
        description: "CreationTimestamp of the object.".into(),
        priority: 0,
        source: ColumnSource::Age,
    }
}

/// Evaluates the small JSONPath subset printer columns use: `.a.b`, `.a[0].b`,
/// `.a[?(@.k=="v")].b`. Returns None when a step is missing.
pub fn json_path(obj: &Value, path: &str) -> Option<Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut cur = obj.clone();
    let mut rest = path.trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if !key.is_empty() {
                cur = cur.get(key)?.clone();
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            // a filter may contain ']' only inside quotes; printer columns don't do that.
            let inner = &r[..end];
            rest = &r[end + 1..];
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (k, v) = filter.split_once("==")?;
                let want = v.trim().trim_matches(|c| c == '"' || c == '\'');
                let found = cur.as_array()?.iter().find(|e| {
                    let got = &e[k.trim()];
                    got.as_str()
                        .map(|s| s == want)
                        .unwrap_or_else(|| serde_json::to_string(got).ok().as_deref() == Some(want))
                })?;
                cur = found.clone();
            } else if inner == "*" {
                continue;
            } else {
                let i: usize = inner.parse().ok()?;
                cur = cur.get(i)?.clone();
            }
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Kubernetes-style short age: `42s`, `3m10s`, `25m`, `5h3m`, `20h`, `3d`.
pub fn age(ts: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> Value {
    let Some(ts) = ts.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
        return json!("<unknown>");
    };
    let s = (now - ts.with_timezone(&chrono::Utc)).num_seconds().max(0);
    let text = if s < 120 {
        format!("{s}s")
    } else if s < 600 {
        format!("{}m{}s", s / 60, s % 60)
    } else if s < 3 * 3600 {
        format!("{}m", s / 60)
    } else if s < 8 * 3600 {
        format!("{}h{}m", s / 3600, (s % 3600) / 60)
    } else if s < 48 * 3600 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86400)
    };
    json!(text)
}

fn count(v: &Value) -> usize {
    v.as_object().map(|m| m.len()).unwrap_or(0)
}

fn ready_of(obj: &Value) -> Value {
    let ready = obj["status"]["readyReplicas"].as_i64().unwrap_or(0);
    let want = obj["spec"]["replicas"].as_i64().unwrap_or(1);
    json!(format!("{ready}/{want}"))
}

fn pod_ready(obj: &Value) -> Value {
    let total = obj["spec"]["containers"]
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0);
    let ready = obj["status"]["containerStatuses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["ready"].as_bool() == Some(true))
                .count()
        })
        .unwrap_or(0);
    json!(format!("{ready}/{total}"))
}

fn pod_status(obj: &Value) -> Value {
    if obj["metadata"]["deletionTimestamp"].is_string() {
        return json!("Terminating");
    }
    obj["status"]["phase"]
        .as_str()
        .map(|s| json!(s))
        .unwrap_or(json!("Pending"))
}

fn pod_restarts(obj: &Value) -> Value {
    json!(
        obj["status"]["containerStatuses"]
            .as_array()
            .map(|a| a
                .iter()
                .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                .sum::<i64>())
            .unwrap_or(0)
    )
}

fn svc_ports(obj: &Value) -> Value {
    let ports: Vec<String> = obj["spec"]["ports"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64() {
                        Some(np) => format!("{}:{np}/{proto}", p["port"]),
                        None => format!("{}/{proto}", p["port"]),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    json!(if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    })
}

fn str_or(v: &Value, default: &str) -> Value {
    json!(v.as_str().unwrap_or(default))
}

/// Default columns of a built-in resource, NAME first and AGE among them.
pub fn builtin_columns(group: &str, plural: &str) -> Vec<Column> {
    let mut c = vec![name_column()];
    match (group, plural) {
        ("", "pods") => {
            c.push(Column::builtin("Ready", 0, pod_ready));
            c.push(Column::builtin("Status", 0, pod_status));
            c.push(Column::builtin("Restarts", 0, pod_restarts));
            c.push(age_column());
            c.push(Column::builtin("IP", 1, |o| {
                str_or(&o["status"]["podIP"], "<none>")
            }));
            c.push(Column::builtin("Node", 1, |o| {
                str_or(&o["spec"]["nodeName"], "<none>")
            }));
            return c;
        }
        ("", "namespaces") => c.push(Column::builtin("Status", 0, |o| {
            str_or(&o["status"]["phase"], "Active")
        })),
        ("", "services") => {
            c.push(Column::builtin("Type", 0, |o| {
                str_or(&o["spec"]["type"], "ClusterIP")
            }));
            c.push(Column::builtin("Cluster-IP", 0, |o| {
                str_or(&o["spec"]["clusterIP"], "<none>")
            }));
            c.push(Column::builtin("External-IP", 0, |o| {
                o["status"]["loadBalancer"]["ingress"][0]["ip"]
                    .as_str()
                    .map(|s| json!(s))
                    .unwrap_or(json!("<none>"))
            }));
            c.push(Column::builtin("Port(s)", 0, svc_ports));
        }
        ("", "configmaps") => c.push(Column::builtin("Data", 0, |o| {
            json!(count(&o["data"]) + count(&o["binaryData"]))
        })),
        ("", "secrets") => {
            c.push(Column::builtin("Type", 0, |o| str_or(&o["type"], "Opaque")));
            c.push(Column::builtin("Data", 0, |o| json!(count(&o["data"]))));
        }
        ("", "persistentvolumeclaims") => c.push(Column::builtin("Status", 0, |o| {
            str_or(&o["status"]["phase"], "Pending")
        })),
        ("apps", "statefulsets") => c.push(Column::builtin("Ready", 0, ready_of)),
        ("apps", "replicasets") => {
            c.push(Column::builtin("Desired", 0, |o| {
                json!(o["spec"]["replicas"].as_i64().unwrap_or(1))
            }));
            c.push(Column::builtin("Current", 0, |o| {
                json!(o["status"]["replicas"].as_i64().unwrap_or(0))
            }));
            c.push(Column::builtin("Ready", 0, |o| {
                json!(o["status"]["readyReplicas"].as_i64().unwrap_or(0))
            }));
        }
        ("apps", "deployments") => {
            c.push(Column::builtin("Ready", 0, ready_of));
            c.push(Column::builtin("Up-to-date", 0, |o| {
                json!(o["status"]["updatedReplicas"].as_i64().unwrap_or(0))
            }));
            c.push(Column::builtin("Available", 0, |o| {
                json!(o["status"]["availableReplicas"].as_i64().unwrap_or(0))
            }));
        }
        ("discovery.k8s.io", "endpointslices") => {
            c.push(Column::builtin("AddressType", 0, |o| {
                str_or(&o["addressType"], "")
            }));
            c.push(Column::builtin("Ports", 0, |o| {
                let p: Vec<String> = o["ports"]
                    .as_array()
                    .map(|a| a.iter().map(|p| p["port"].to_string()).collect())
                    .unwrap_or_default();
                json!(if p.is_empty() {
                    "<unset>".into()
                } else {
                    p.join(",")
                })
            }));
            c.push(Column::builtin("Endpoints", 0, |o| {
                let a: Vec<String> = o["endpoints"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                json!(if a.is_empty() {
                    "<unset>".into()
                } else {
                    a.join(",")
                })
            }));
        }
        ("", "events") | ("events.k8s.io", "events") => {
            // like the real server: LAST SEEN first, the name only in -o wide
            c[0].priority = 1;
            c.insert(
                0,
                Column::builtin("Last Seen", 0, |o| {
                    let ts = o["lastTimestamp"]
                        .as_str()
                        .or_else(|| o["deprecatedLastTimestamp"].as_str())
                        .or_else(|| o["series"]["lastObservedTime"].as_str())
                        .or_else(|| o["eventTime"].as_str());
                    age(ts, chrono::Utc::now())
                }),
            );
            c.push(Column::builtin("Type", 0, |o| str_or(&o["type"], "")));
            c.push(Column::builtin("Reason", 0, |o| str_or(&o["reason"], "")));
            c.push(Column::builtin("Object", 0, |o| {
                let r = if o["involvedObject"].is_object() {
                    &o["involvedObject"]
                } else {
                    &o["regarding"]
                };
                json!(format!(
                    "{}/{}",
                    r["kind"].as_str().unwrap_or("").to_lowercase(),
                    r["name"].as_str().unwrap_or("")
                ))
            }));
            c.push(Column::builtin("Message", 0, |o| {
                str_or(
                    if o["message"].is_string() {
                        &o["message"]
                    } else {
                        &o["note"]
                    },
                    "",
                )
            }));
            let name = c.remove(1);
            c.push(name);
            return c;
        }
        ("policy", "poddisruptionbudgets") => {
            c.push(Column::builtin("Min Available", 0, |o| {
                o["spec"]["minAvailable"]
                    .clone()
                    .as_str()
                    .map(|s| json!(s))
                    .unwrap_or_else(|| {
                        if o["spec"]["minAvailable"].is_null() {
                            json!("N/A")
                        } else {
                            json!(o["spec"]["minAvailable"].to_string())
                        }
                    })
            }));
            c.push(Column::builtin("Allowed Disruptions", 0, |o| {
                json!(o["status"]["disruptionsAllowed"].as_i64().unwrap_or(0))
            }));
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            c.push(Column::builtin("Created At", 0, |o| {
                o["metadata"]["creationTimestamp"].clone()
            }));
            return c;
        }
        _ => {}
    }
    c.push(age_column());
    c
}

/// A Table of `objects` with the given columns. `include_object` is "None", "Object" or
/// "Metadata" (the default, PartialObjectMetadata), as the real server's `includeObject`.
pub fn render(
    columns: &[Column],
    objects: &[Value],
    include_object: &str,
    list_meta: Value,
) -> Value {
    let now = chrono::Utc::now();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells: Vec<Value> = columns.iter().map(|c| c.cell(o, now)).collect();
            let object = match include_object {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                }),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns.iter().map(Column::definition).collect::<Vec<_>>(),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_handles_fields_indexes_and_filters() {
        let o = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "Synced", "status": "False"}]},
            "spec": {"ports": [{"port": 5672}]}});
        assert_eq!(json_path(&o, ".spec.ports[0].port"), Some(json!(5672)));
        assert_eq!(
            json_path(&o, ".status.conditions[?(@.type==\"Synced\")].status"),
            Some(json!("False"))
        );
        assert_eq!(json_path(&o, ".status.missing"), None);
    }

    #[test]
    fn age_is_short_and_human() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-03T00:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(age(Some("2026-01-02T23:59:30Z"), now), json!("30s"));
        assert_eq!(age(Some("2026-01-02T23:55:00Z"), now), json!("5m0s"));
        assert_eq!(age(Some("2026-01-01T00:00:00Z"), now), json!("2d"));
    }
}
