//! The protobuf bodies kubectl's typed clients send for authentication and authorization:
//! TokenRequest (`kubectl create token`), SelfSubjectAccessReview (`kubectl auth can-i`),
//! SelfSubjectRulesReview (`can-i --list`), SelfSubjectReview (`kubectl auth whoami`) and
//! SubjectAccessReview, decoded into their JSON form. Field numbers are those of
//! `k8s.io/api/{authentication,authorization}/v1/generated.proto`.

use serde_json::{Map, Value, json};

use super::proto::{Wire, envelope, fields, object_meta, string};

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
