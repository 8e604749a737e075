//! Validation of built-in kinds: the checks of the real API server that an operator's object
//! builders are most likely to trip over (names, labels, selectors that must match templates,
//! required container fields, Service ports, data keys, EndpointSlice addresses). Each failure is
//! a `(field, message)` cause in the real server's wording.

use base64::Engine;
use serde_json::Value;

use super::crd::Cause;
use super::registry::ResourceType;
use super::selector::LabelSelector;

const DNS1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: what most object names must be.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_dns1035(s: &str) -> bool {
    is_dns_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// `prefix/name` keys of labels and annotations.
fn qualified_name_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return Some(format!("prefix part {DNS1123_SUBDOMAIN}"));
    }
    if name.is_empty() {
        return Some("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    if !is_label_value(name) {
        return Some(QUALIFIED_NAME.into());
    }
    None
}

/// Why `name` is not a valid name for this kind, if it is not.
pub fn name_problem(rt: &ResourceType, name: &str) -> Option<String> {
    let ok = match (rt.group.as_str(), rt.plural.as_str()) {
        // RBAC names are path segments: `system:controller:x` is fine
        ("rbac.authorization.k8s.io", _) => {
            !name.is_empty()
                && name != "."
                && name != ".."
                && !name.contains('/')
                && !name.contains('%')
        }
        ("", "services") => is_dns1035(name),
        ("", "namespaces") => is_dns_label(name),
        _ => is_dns_subdomain(name),
    };
    if ok {
        return None;
    }
    Some(match (rt.group.as_str(), rt.plural.as_str()) {
        ("rbac.authorization.k8s.io", _) => {
            "may not be '.' or '..' and may not contain '/' or '%'".into()
        }
        ("", "services") => DNS1035_LABEL.into(),
        ("", "namespaces") => DNS1123_LABEL.into(),
        _ => DNS1123_SUBDOMAIN.into(),
    })
}

fn invalid(field: &str, value: impl std::fmt::Display, why: &str) -> Cause {
    (field.to_string(), format!("Invalid value: {value}: {why}"))
}

fn required(field: &str) -> Cause {
    (field.to_string(), "Required value".into())
}

fn go_map(m: &Value) -> String {
    let inner: Vec<String> = m
        .as_object()
        .map(|o| o.iter().map(|(k, v)| format!("{k:?}:{}", v)).collect())
        .unwrap_or_default();
    format!("map[string]string{{{}}}", inner.join(", "))
}

fn metadata(obj: &Value, out: &mut Vec<Cause>) {
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            if let Some(p) = qualified_name_problem(k) {
                out.push(invalid("metadata.labels", format!("{k:?}"), &p));
            }
            match v.as_str() {
                Some(s) if s.len() > 63 => out.push(invalid(
                    "metadata.labels",
                    format!("{s:?}"),
                    "must be no more than 63 characters",
                )),
                Some(s) if !is_label_value(s) => {
                    out.push(invalid("metadata.labels", format!("{s:?}"), LABEL_VALUE))
                }
                Some(_) => {}
                None => out.push(invalid(
                    "metadata.labels",
                    v,
                    "label values must be strings",
                )),
            }
        }
    }
    if let Some(ann) = obj["metadata"]["annotations"].as_object() {
        for k in ann.keys() {
            if let Some(p) = qualified_name_problem(k) {
                out.push(invalid("metadata.annotations", format!("{k:?}"), &p));
            }
        }
    }
}

fn containers(spec: &Value, path: &str, out: &mut Vec<Cause>) {
    match spec["containers"].as_array() {
        None => out.push(required(&format!("{path}.containers"))),
        Some(cs) if cs.is_empty() => out.push(required(&format!("{path}.containers"))),
        Some(cs) => {
            for (i, c) in cs.iter().enumerate() {
                let p = format!("{path}.containers[{i}]");
                match c["name"].as_str() {
                    None | Some("") => out.push(required(&format!("{p}.name"))),
                    Some(n) if !is_dns_label(n) => out.push(invalid(
                        &format!("{p}.name"),
                        format!("{n:?}"),
                        DNS1123_LABEL,
                    )),
                    Some(_) => {}
                }
                if c["image"].as_str().is_none_or(str::is_empty) {
                    out.push(required(&format!("{p}.image")));
                }
            }
        }
    }
}

fn workload(obj: &Value, out: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    if spec["replicas"].as_i64().is_some_and(|r| r < 0) {
        out.push(invalid(
            "spec.replicas",
            &spec["replicas"],
            "must be greater than or equal to 0",
        ));
    }
    match spec.get("selector").filter(|s| s.is_object()) {
        None => out.push(required("spec.selector")),
        Some(sel) => match LabelSelector::from_object(sel) {
            Ok(s) if s.0.is_empty() => out.push(invalid(
                "spec.selector",
                "v1.LabelSelector{}",
                "empty selector is invalid for deployment",
            )),
            Ok(s) => {
                let labels = &spec["template"]["metadata"]["labels"];
                if !s.matches(labels) {
                    out.push(invalid(
                        "spec.template.metadata.labels",
                        go_map(labels),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
            Err(e) => out.push(invalid("spec.selector", "selector", &e)),
        },
    }
    containers(&spec["template"]["spec"], "spec.template.spec", out);
}

fn service(obj: &Value, out: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    if !matches!(
        ty,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        out.push((
            "spec.type".into(),
            format!("Unsupported value: {ty:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
        ));
    }
    let headless = spec["clusterIP"].as_str() == Some("None");
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && !headless && ty != "ExternalName" {
        out.push(required("spec.ports"));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        match p["port"].as_i64() {
            Some(n) if (1..=65535).contains(&n) => {}
            Some(n) => out.push(invalid(
                &format!("{path}.port"),
                n,
                "must be between 1 and 65535, inclusive",
            )),
            None => out.push(required(&format!("{path}.port"))),
        }
        match p["name"].as_str() {
            None | Some("") if ports.len() > 1 => out.push(required(&format!("{path}.name"))),
            Some(n) if !names.insert(n.to_string()) => {
                out.push((format!("{path}.name"), format!("Duplicate value: {n:?}")))
            }
            _ => {}
        }
    }
}

fn data_keys(obj: &Value, field: &str, out: &mut Vec<Cause>) {
    if let Some(m) = obj[field].as_object() {
        for k in m.keys() {
            let ok = !k.is_empty()
                && k.len() <= 253
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
            if !ok {
                out.push(invalid(
                    &format!("{field}[{k}]"),
                    format!("{k:?}"),
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                ));
            }
        }
    }
}

fn endpoint_slice(obj: &Value, out: &mut Vec<Cause>) {
    let at = obj["addressType"].as_str();
    match at {
        Some("IPv4" | "IPv6" | "FQDN") => {}
        Some(other) => out.push((
            "addressType".into(),
            format!("Unsupported value: {other:?}: supported values: \"FQDN\", \"IPv4\", \"IPv6\""),
        )),
        None => out.push(required("addressType")),
    }
    for (i, e) in obj["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let addrs = e["addresses"].as_array().cloned().unwrap_or_default();
        if addrs.is_empty() {
            out.push(required(&format!("endpoints[{i}].addresses")));
        }
        for (j, a) in addrs.iter().enumerate() {
            let s = a.as_str().unwrap_or_default();
            let ok = match at {
                Some("IPv4") => s.parse::<std::net::Ipv4Addr>().is_ok(),
                Some("IPv6") => s.parse::<std::net::Ipv6Addr>().is_ok(),
                _ => true,
            };
            if !ok {
                out.push(invalid(
                    &format!("endpoints[{i}].addresses[{j}]"),
                    format!("{s:?}"),
                    "must be a valid IP address",
                ));
            }
        }
    }
}

/// Causes of an invalid built-in object (empty when it is valid or not a built-in).
pub fn builtin(rt: &ResourceType, obj: &Value) -> Vec<Cause> {
    let mut out = vec![];
    metadata(obj, &mut out);
    if rt.crd.is_some() {
        return out;
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("apps", "statefulsets") | ("apps", "deployments") | ("apps", "replicasets") => {
            workload(obj, &mut out)
        }
        ("", "pods") => containers(&obj["spec"], "spec", &mut out),
        ("", "services") => service(obj, &mut out),
        ("", "configmaps") => {
            data_keys(obj, "data", &mut out);
            data_keys(obj, "binaryData", &mut out);
        }
        ("", "secrets") => data_keys(obj, "data", &mut out),
        ("discovery.k8s.io", "endpointslices") => endpoint_slice(obj, &mut out),
        ("policy", "poddisruptionbudgets")
            if obj["spec"].get("minAvailable").is_some()
                && obj["spec"].get("maxUnavailable").is_some() =>
        {
            out.push(invalid(
                "spec",
                "spec",
                "minAvailable and maxUnavailable cannot be both set",
            ));
        }
        _ => {}
    }
    out
}

/// Write-time normalisation of Secrets: `stringData` is write-only and lands in `data`
/// (base64); `data` values must be base64. Returns a message when `data` is not base64.
pub fn normalize_secret(obj: &mut Value) -> Result<(), String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
        && let Some(sd) = sd.as_object()
    {
        if !obj["data"].is_object() {
            obj["data"] = Value::Object(Default::default());
        }
        for (k, v) in sd {
            obj["data"][k] = Value::String(b64.encode(v.as_str().unwrap_or_default()));
        }
    }
    if let Some(data) = obj["data"].as_object() {
        for (k, v) in data {
            let s = v.as_str().unwrap_or_default();
            if b64.decode(s).is_err() {
                return Err(format!(
                    "Secret data[{k:?}] is not valid base64 (use stringData for plain text)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rt(plural: &str) -> ResourceType {
        super::super::registry::builtins()
            .into_iter()
            .find(|r| r.plural == plural)
            .unwrap()
    }

    #[test]
    fn names_follow_the_rules_of_their_kind() {
        assert!(name_problem(&rt("services"), "rmq-1").is_none());
        assert!(name_problem(&rt("services"), "1rmq").is_some());
        assert!(name_problem(&rt("services"), "a.b").is_some());
        assert!(name_problem(&rt("configmaps"), "a.b-c").is_none());
        assert!(name_problem(&rt("configmaps"), "Upper").is_some());
        assert!(name_problem(&rt("clusterroles"), "system:controller:x").is_none());
        assert!(name_problem(&rt("namespaces"), "a.b").is_some());
    }

    #[test]
    fn labels_must_be_valid() {
        let bad = json!({"metadata": {"labels": {"app": "x".repeat(64), "bad key!": "v", "ok/x": "y_z"}}});
        let causes = builtin(&rt("configmaps"), &bad);
        assert_eq!(causes.len(), 2, "{causes:?}");
        assert!(causes.iter().all(|c| c.0 == "metadata.labels"));
    }

    #[test]
    fn workloads_need_a_selector_matching_the_template() {
        let sts = json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let causes = builtin(&rt("statefulsets"), &sts);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].0, "spec.template.metadata.labels");
        assert!(
            causes[0]
                .1
                .contains("`selector` does not match template `labels`")
        );
        let no_image = json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c"}]}}}});
        assert_eq!(
            builtin(&rt("statefulsets"), &no_image),
            vec![required("spec.template.spec.containers[0].image")]
        );
    }

    #[test]
    fn services_and_slices_are_checked() {
        let svc = json!({"spec": {"ports": [{"port": 5672}, {"port": 15672, "name": "http"}]}});
        assert_eq!(
            builtin(&rt("services"), &svc),
            vec![required("spec.ports[0].name")]
        );
        assert!(builtin(&rt("services"), &json!({"spec": {"clusterIP": "None"}})).is_empty());
        let slice =
            json!({"addressType": "IPv4", "endpoints": [{"addresses": ["127.0.1.1", "nope"]}]});
        assert_eq!(builtin(&rt("endpointslices"), &slice).len(), 1);
    }

    #[test]
    fn secret_string_data_lands_in_data() {
        let mut s = json!({"data": {"a": "eA=="}, "stringData": {"password": "s3cret"}});
        normalize_secret(&mut s).unwrap();
        assert_eq!(s, json!({"data": {"a": "eA==", "password": "czNjcmV0"}}));
        assert!(normalize_secret(&mut json!({"data": {"a": "not base64!"}})).is_err());
    }
}
