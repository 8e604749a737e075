//! Just enough of Kubernetes' protobuf wire format to accept the objects `kubectl create
//! namespace|configmap|secret|serviceaccount` send (kubectl's typed clients write protobuf and
//! do not fall back to JSON). Other protobuf bodies get 415 with a message saying to use
//! `kubectl apply`, which sends JSON.

use base64::Engine;
use serde_json::{Map, Value, json};

pub(crate) enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err("varint too long".into())
}

pub(crate) fn fields(buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
    let mut out = vec![];
    let mut pos = 0;
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let (num, wire) = (tag >> 3, tag & 7);
        match wire {
            0 => out.push((num, Wire::Varint(varint(buf, &mut pos)?))),
            2 => {
                let len = varint(buf, &mut pos)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or("truncated field")?;
                out.push((num, Wire::Bytes(&buf[pos..end])));
                pos = end;
            }
            1 => pos += 8,
            5 => pos += 4,
            other => return Err(format!("unsupported wire type {other}")),
        }
    }
    Ok(out)
}

pub(crate) fn string(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
}

/// A `map<string, string|bytes>` field: entries of (key = 1, value = 2).
pub(crate) fn map_entry(b: &[u8], bytes_values: bool) -> Result<(String, Value), String> {
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    for (n, w) in fields(b)? {
        if let Wire::Bytes(x) = w {
            match n {
                1 => k = string(x)?,
                2 if bytes_values => v = json!(base64::engine::general_purpose::STANDARD.encode(x)),
                2 => v = json!(string(x)?),
                _ => {}
            }
        }
    }
    Ok((k, v))
}

fn owner_reference(b: &[u8]) -> Result<Value, String> {
    let mut o = Map::new();
    for (n, w) in fields(b)? {
        match (n, w) {
            (1, Wire::Bytes(x)) => drop(o.insert("kind".into(), json!(string(x)?))),
            (3, Wire::Bytes(x)) => drop(o.insert("name".into(), json!(string(x)?))),
            (4, Wire::Bytes(x)) => drop(o.insert("uid".into(), json!(string(x)?))),
            (5, Wire::Bytes(x)) => drop(o.insert("apiVersion".into(), json!(string(x)?))),
            (6, Wire::Varint(v)) => drop(o.insert("controller".into(), json!(v != 0))),
            (7, Wire::Varint(v)) => drop(o.insert("blockOwnerDeletion".into(), json!(v != 0))),
            _ => {}
        }
    }
    Ok(Value::Object(o))
}

pub(crate) fn object_meta(b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    let (mut labels, mut annotations, mut finalizers, mut owners) =
        (Map::new(), Map::new(), vec![], vec![]);
    for (n, w) in fields(b)? {
        match (n, w) {
            (1, Wire::Bytes(x)) => drop(m.insert("name".into(), json!(string(x)?))),
            (2, Wire::Bytes(x)) => drop(m.insert("generateName".into(), json!(string(x)?))),
            (3, Wire::Bytes(x)) => drop(m.insert("namespace".into(), json!(string(x)?))),
            (6, Wire::Bytes(x)) => drop(m.insert("resourceVersion".into(), json!(string(x)?))),
            (11, Wire::Bytes(x)) => {
                let (k, v) = map_entry(x, false)?;
                labels.insert(k, v);
            }
            (12, Wire::Bytes(x)) => {
                let (k, v) = map_entry(x, false)?;
                annotations.insert(k, v);
            }
            (13, Wire::Bytes(x)) => owners.push(owner_reference(x)?),
            (14, Wire::Bytes(x)) => finalizers.push(json!(string(x)?)),
            _ => {}
        }
    }
    // proto3 sends empty strings for unset fields
    m.retain(|_, v| v.as_str() != Some(""));
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    if !owners.is_empty() {
        m.insert("ownerReferences".into(), Value::Array(owners));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    Ok(Value::Object(m))
}

/// The `k8s\0` envelope of a protobuf body: apiVersion, kind and the object's own bytes.
pub(crate) fn envelope(body: &[u8]) -> Result<(String, String, &[u8]), String> {
    let rest = body
        .strip_prefix(b"k8s\0")
        .ok_or("the body lacks the Kubernetes protobuf envelope")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, w) in fields(rest)? {
        match (n, w) {
            (1, Wire::Bytes(tm)) => {
                for (tn, tw) in fields(tm)? {
                    match (tn, tw) {
                        (1, Wire::Bytes(x)) => api_version = string(x)?,
                        (2, Wire::Bytes(x)) => kind = string(x)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    Ok((api_version, kind, raw))
}

/// Decodes a `k8s\0`-prefixed protobuf body of a supported kind into its JSON form.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let (api_version, kind, raw) = envelope(body)?;
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    let mut data = Map::new();
    let mut string_data = Map::new();
    let mut binary = Map::new();
    let supported = matches!(
        (api_version.as_str(), kind.as_str()),
        (
            "v1",
            "Namespace" | "ConfigMap" | "Secret" | "ServiceAccount"
        )
    );
    if !supported {
        // `kubectl create role|rolebinding|clusterrole|clusterrolebinding`
        if let Some(rbac) = super::authproto::decode_rbac(&api_version, &kind, raw) {
            return rbac;
        }
        return Err(format!(
            "kubesim reads protobuf only for Namespace, ConfigMap, Secret, ServiceAccount and RBAC objects, not {api_version} {kind}; send JSON or YAML (e.g. kubectl apply -f)"
        ));
    }
    for (n, w) in fields(raw)? {
        match (kind.as_str(), n, w) {
            (_, 1, Wire::Bytes(x)) => drop(obj.insert("metadata".into(), object_meta(x)?)),
            ("Namespace", 2, Wire::Bytes(x)) => {
                let fins: Vec<Value> = fields(x)?
                    .into_iter()
                    .filter_map(|(n, w)| match (n, w) {
                        (1, Wire::Bytes(f)) => string(f).ok().map(Value::String),
                        _ => None,
                    })
                    .collect();
                obj.insert("spec".into(), json!({"finalizers": fins}));
            }
            ("ConfigMap", 2, Wire::Bytes(x)) => {
                let (k, v) = map_entry(x, false)?;
                data.insert(k, v);
            }
            ("ConfigMap", 3, Wire::Bytes(x)) => {
                let (k, v) = map_entry(x, true)?;
                binary.insert(k, v);
            }
            ("ConfigMap", 4, Wire::Varint(v)) | ("Secret", 5, Wire::Varint(v)) => {
                drop(obj.insert("immutable".into(), json!(v != 0)))
            }
            ("Secret", 2, Wire::Bytes(x)) => {
                let (k, v) = map_entry(x, true)?;
                data.insert(k, v);
            }
            ("Secret", 3, Wire::Bytes(x)) => drop(obj.insert("type".into(), json!(string(x)?))),
            ("Secret", 4, Wire::Bytes(x)) => {
                let (k, v) = map_entry(x, false)?;
                string_data.insert(k, v);
            }
            ("ServiceAccount", 4, Wire::Varint(v)) => {
                drop(obj.insert("automountServiceAccountToken".into(), json!(v != 0)))
            }
            _ => {}
        }
    }
    // stringData is write-only: it lands in data, base64-encoded
    for (k, v) in string_data {
        let s = v.as_str().unwrap_or_default();
        data.insert(
            k,
            json!(base64::engine::general_purpose::STANDARD.encode(s)),
        );
    }
    obj.retain(|_, v| v.as_str() != Some(""));
    if !data.is_empty() {
        obj.insert("data".into(), Value::Object(data));
    }
    if !binary.is_empty() {
        obj.insert("binaryData".into(), Value::Object(binary));
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, b: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8, b.len() as u8];
        out.extend_from_slice(b);
        out
    }

    #[test]
    fn decodes_a_configmap_envelope() {
        let meta = [
            field(1, b"cfg"),
            field(
                11,
                &[field(1, b"app").as_slice(), field(2, b"x").as_slice()].concat(),
            ),
        ]
        .concat();
        let entry = [field(1, b"k"), field(2, b"v")].concat();
        let raw = [field(1, &meta), field(2, &entry)].concat();
        let tm = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [b"k8s\0".to_vec(), field(1, &tm), field(2, &raw)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cfg", "labels": {"app": "x"}}, "data": {"k": "v"}})
        );
    }

    #[test]
    fn refuses_kinds_it_cannot_read() {
        let tm = [field(1, b"apps/v1"), field(2, b"Deployment")].concat();
        let body = [b"k8s\0".to_vec(), field(1, &tm)].concat();
        assert!(decode(&body).unwrap_err().contains("kubectl apply"));
        assert!(decode(b"garbage").is_err());
    }
}
