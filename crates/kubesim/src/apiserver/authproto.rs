//! The protobuf bodies kubectl's typed clients send for authentication and authorization:
//! TokenRequest (`kubectl create token`), SelfSubjectAccessReview (`kubectl auth can-i`),
//! SelfSubjectRulesReview (`can-i --list`), SelfSubjectReview (`kubectl auth whoami`) and
//! SubjectAccessReview, decoded into their JSON form; and the RBAC objects `kubectl create
//! role|clusterrole|rolebinding|clusterrolebinding` send ([`decode_rbac`]). Field numbers are
//! those of `k8s.io/api/{authentication,authorization,rbac}/v1/generated.proto`.

use serde_json::{Map, Value, json};

use super::proto::{Wire, envelope, fields, map_entry, object_meta, string};

/// Decodes a `k8s\0`-prefixed body of one of the kinds above.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let (api_version, kind, raw) = envelope(body)?;
    let spec_of: fn(&[u8]) -> Result<Value, String> = match (api_version.as_str(), kind.as_str()) {
        ("authentication.k8s.io/v1", "TokenRequest") => token_request_spec,
        ("authentication.k8s.io/v1", "SelfSubjectReview") => |_| Ok(json!({})),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview" | "SubjectAccessReview") => {
            access_review_spec
        }
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => rules_review_spec,
        _ => {
            return Err(format!(
                "kubesim cannot read a protobuf {api_version} {kind}; send JSON"
            ));
        }
    };
    let mut obj = json!({"apiVersion": api_version, "kind": kind, "metadata": {}, "spec": {}});
    for (n, w) in fields(raw)? {
        match (n, w) {
            (1, Wire::Bytes(x)) => obj["metadata"] = object_meta(x)?,
            (2, Wire::Bytes(x)) => obj["spec"] = spec_of(x)?,
            _ => {}
        }
    }
    Ok(obj)
}

/// Decodes the object bytes of an `rbac.authorization.k8s.io/v1` Role, ClusterRole,
/// RoleBinding or ClusterRoleBinding; None for other kinds.
pub fn decode_rbac(api_version: &str, kind: &str, raw: &[u8]) -> Option<Result<Value, String>> {
    let binding = match (api_version, kind) {
        ("rbac.authorization.k8s.io/v1", "Role" | "ClusterRole") => false,
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => true,
        _ => return None,
    };
    let decoded = (|| -> Result<Value, String> {
        let mut obj = json!({"apiVersion": api_version, "kind": kind});
        let mut list = vec![];
        for (n, w) in fields(raw)? {
            let Wire::Bytes(x) = w else { continue };
            match (n, binding) {
                (1, _) => obj["metadata"] = object_meta(x)?,
                (2, false) => list.push(policy_rule(x)?),
                (2, true) => list.push(strings_of(
                    x,
                    &[(1, "kind"), (2, "apiGroup"), (3, "name"), (4, "namespace")],
                )?),
                (3, true) => {
                    obj["roleRef"] = strings_of(x, &[(1, "apiGroup"), (2, "kind"), (3, "name")])?
                }
                (3, false) => {
                    let mut selectors = vec![];
                    for (sn, sw) in fields(x)? {
                        if let (1, Wire::Bytes(sel)) = (sn, sw) {
                            selectors.push(label_selector(sel)?);
                        }
                    }
                    obj["aggregationRule"] = json!({"clusterRoleSelectors": selectors});
                }
                _ => {}
            }
        }
        obj[if binding { "subjects" } else { "rules" }] = Value::Array(list);
        Ok(obj)
    })();
    Some(decoded)
}

fn policy_rule(b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    for (n, w) in fields(b)? {
        let Wire::Bytes(x) = w else { continue };
        let key = match n {
            1 => "verbs",
            2 => "apiGroups",
            3 => "resources",
            4 => "resourceNames",
            5 => "nonResourceURLs",
            _ => continue,
        };
        let list = m.entry(key).or_insert_with(|| json!([]));
        if let Value::Array(a) = list {
            a.push(json!(string(x)?));
        }
    }
    Ok(Value::Object(m))
}

/// A message of string fields, by field number.
fn strings_of(b: &[u8], names: &[(u64, &str)]) -> Result<Value, String> {
    let mut m = Map::new();
    for (n, w) in fields(b)? {
        if let Wire::Bytes(x) = w
            && let Some((_, k)) = names.iter().find(|(num, _)| *num == n)
        {
            put(&mut m, k, string(x)?);
        }
    }
    Ok(Value::Object(m))
}

/// `metav1.LabelSelector`: matchLabels = 1, matchExpressions = 2 (key, operator, values).
fn label_selector(b: &[u8]) -> Result<Value, String> {
    let (mut labels, mut exprs) = (Map::new(), vec![]);
    for (n, w) in fields(b)? {
        let Wire::Bytes(x) = w else { continue };
        match n {
            1 => {
                let (k, v) = map_entry(x, false)?;
                labels.insert(k, v);
            }
            2 => {
                let mut e = strings_of(x, &[(1, "key"), (2, "operator")])?;
                let values: Vec<Value> = fields(x)?
                    .into_iter()
                    .filter_map(|(vn, vw)| match (vn, vw) {
                        (3, Wire::Bytes(v)) => string(v).ok().map(Value::String),
                        _ => None,
                    })
                    .collect();
                e["values"] = Value::Array(values);
                exprs.push(e);
            }
            _ => {}
        }
    }
    let mut sel = json!({});
    if !labels.is_empty() {
        sel["matchLabels"] = Value::Object(labels);
    }
    if !exprs.is_empty() {
        sel["matchExpressions"] = Value::Array(exprs);
    }
    Ok(sel)
}

fn put(m: &mut Map<String, Value>, k: &str, v: String) {
    if !v.is_empty() {
        m.insert(k.into(), json!(v));
    }
}

fn token_request_spec(b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    let mut audiences = vec![];
    for (n, w) in fields(b)? {
        match (n, w) {
            (1, Wire::Bytes(x)) => audiences.push(json!(string(x)?)),
            (3, Wire::Bytes(x)) => {
                let mut r = Map::new();
                for (rn, rw) in fields(x)? {
                    if let Wire::Bytes(v) = rw {
                        let key = match rn {
                            1 => "kind",
                            2 => "apiVersion",
                            3 => "name",
                            4 => "uid",
                            _ => continue,
                        };
                        put(&mut r, key, string(v)?);
                    }
                }
                m.insert("boundObjectRef".into(), Value::Object(r));
            }
            (4, Wire::Varint(v)) => drop(m.insert("expirationSeconds".into(), json!(v as i64))),
            _ => {}
        }
    }
    m.insert("audiences".into(), Value::Array(audiences));
    Ok(Value::Object(m))
}

fn access_review_spec(b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    let mut groups = vec![];
    let mut extra = Map::new();
    for (n, w) in fields(b)? {
        let Wire::Bytes(x) = w else { continue };
        match n {
            1 => {
                let mut r = Map::new();
                for (rn, rw) in fields(x)? {
                    if let Wire::Bytes(v) = rw {
                        let key = match rn {
                            1 => "namespace",
                            2 => "verb",
                            3 => "group",
                            4 => "version",
                            5 => "resource",
                            6 => "subresource",
                            7 => "name",
                            _ => continue,
                        };
                        put(&mut r, key, string(v)?);
                    }
                }
                m.insert("resourceAttributes".into(), Value::Object(r));
            }
            2 => {
                let mut r = Map::new();
                for (rn, rw) in fields(x)? {
                    if let Wire::Bytes(v) = rw {
                        match rn {
                            1 => put(&mut r, "path", string(v)?),
                            2 => put(&mut r, "verb", string(v)?),
                            _ => {}
                        }
                    }
                }
                m.insert("nonResourceAttributes".into(), Value::Object(r));
            }
            3 => put(&mut m, "user", string(x)?),
            4 => groups.push(json!(string(x)?)),
            5 => {
                // map entry: key = 1, value = ExtraValue { items = 1 }
                let (mut k, mut items) = (String::new(), vec![]);
                for (en, ew) in fields(x)? {
                    match (en, ew) {
                        (1, Wire::Bytes(v)) => k = string(v)?,
                        (2, Wire::Bytes(v)) => {
                            for (_, iw) in fields(v)? {
                                if let Wire::Bytes(i) = iw {
                                    items.push(json!(string(i)?));
                                }
                            }
                        }
                        _ => {}
                    }
                }
                extra.insert(k, Value::Array(items));
            }
            6 => put(&mut m, "uid", string(x)?),
            _ => {}
        }
    }
    if !groups.is_empty() {
        m.insert("groups".into(), Value::Array(groups));
    }
    if !extra.is_empty() {
        m.insert("extra".into(), Value::Object(extra));
    }
    Ok(Value::Object(m))
}

fn rules_review_spec(b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    for (n, w) in fields(b)? {
        if let (1, Wire::Bytes(x)) = (n, w) {
            put(&mut m, "namespace", string(x)?);
        }
    }
    Ok(Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, b: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8, b.len() as u8];
        out.extend_from_slice(b);
        out
    }

    fn envelope_of(api_version: &[u8], kind: &[u8], raw: &[u8]) -> Vec<u8> {
        let tm = [field(1, api_version), field(2, kind)].concat();
        [b"k8s\0".to_vec(), field(1, &tm), field(2, raw)].concat()
    }

    #[test]
    fn decodes_a_self_subject_access_review() {
        let attrs = [
            field(1, b"ns"),
            field(2, b"get"),
            field(5, b"pods"),
            field(6, b"log"),
            field(7, b"x"),
        ]
        .concat();
        let raw = field(2, &field(1, &attrs));
        let v = decode(&envelope_of(
            b"authorization.k8s.io/v1",
            b"SelfSubjectAccessReview",
            &raw,
        ))
        .unwrap();
        assert_eq!(
            v["spec"]["resourceAttributes"],
            json!({"namespace": "ns", "verb": "get", "resource": "pods", "subresource": "log", "name": "x"})
        );
    }

    #[test]
    fn decodes_a_token_request() {
        let bound = [field(1, b"Pod"), field(3, b"p")].concat();
        let spec = [field(1, b"aud"), field(3, &bound), vec![4 << 3, 0xd8, 0x04]].concat();
        let v = decode(&envelope_of(
            b"authentication.k8s.io/v1",
            b"TokenRequest",
            &field(2, &spec),
        ))
        .unwrap();
        assert_eq!(
            v["spec"],
            json!({"audiences": ["aud"], "boundObjectRef": {"kind": "Pod", "name": "p"}, "expirationSeconds": 600})
        );
        assert!(decode(&envelope_of(b"v1", b"Pod", &[])).is_err());
    }
}
