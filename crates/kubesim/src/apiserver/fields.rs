//! Unknown-field detection for `fieldValidation=Strict|Warn` (kubectl sends Strict by
//! default): built-in kinds are checked against k8s-openapi's schemas, custom resources
//! against their `openAPIV3Schema`, and `metadata` of both against ObjectMeta.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};

use super::registry::{ResourceType, SchemaFn};

type Defs = Map<String, Value>;

/// A root schema and the definitions its `$ref`s point into.
struct Compiled {
    root: Value,
    defs: Defs,
}

fn compiled(key: &str, f: SchemaFn) -> Arc<Compiled> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Compiled>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().expect("schema cache lock").get(key) {
        return c.clone();
    }
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let root = f(&mut generator).to_value();
    let defs = generator.take_definitions(true);
    let c = Arc::new(Compiled { root, defs });
    cache
        .lock()
        .expect("schema cache lock")
        .insert(key.to_string(), c.clone());
    c
}

fn object_meta() -> Arc<Compiled> {
    compiled("ObjectMeta", |g| {
        g.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>()
    })
}

fn resolve<'a>(s: &'a Value, defs: &'a Defs) -> &'a Value {
    let mut cur = s;
    for _ in 0..16 {
        if let Some(r) = cur.get("$ref").and_then(Value::as_str) {
            match r.rsplit('/').next().and_then(|n| defs.get(n)) {
                Some(d) => cur = d,
                None => return cur,
            }
        } else if let Some(first) = cur
            .get("allOf")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 1)
        {
            cur = &first[0];
        } else {
            return cur;
        }
    }
    cur
}

fn walk(schema: &Value, defs: &Defs, v: &Value, path: &str, out: &mut Vec<String>) {
    let schema = resolve(schema, defs);
    if schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true)
        && schema.get("properties").is_none()
    {
        return;
    }
    match v {
        Value::Object(m) => {
            let props = schema["properties"].as_object().filter(|p| !p.is_empty());
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let embedded = schema["x-kubernetes-embedded-resource"].as_bool() == Some(true);
            for (k, child) in m {
                if k.starts_with('$') {
                    continue; // strategic-merge directives
                }
                if embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (props.and_then(|ps| ps.get(k)), additional) {
                    (Some(s), _) => walk(s, defs, child, &p, out),
                    (None, Some(a)) => walk(a, defs, child, &p, out),
                    (None, None) if props.is_some() => {
                        if schema["x-kubernetes-preserve-unknown-fields"].as_bool() != Some(true) {
                            out.push(p);
                        }
                    }
                    (None, None) => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(s, defs, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// Dotted paths of fields in `body` that the kind does not declare.
pub fn unknown_fields(rt: &ResourceType, body: &Value) -> Vec<String> {
    let mut out = vec![];
    let Some(m) = body.as_object() else {
        return out;
    };
    if let Some(meta) = m.get("metadata") {
        let om = object_meta();
        walk(&om.root, &om.defs, meta, "metadata", &mut out);
    }
    let rest: Map<String, Value> = m
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let rest = Value::Object(rest);
    if let Some(f) = rt.schema_fn {
        let c = compiled(&format!("{}/{}", rt.group, rt.kind), f);
        walk(&c.root, &c.defs, &rest, "", &mut out);
    } else if let Some(schema) = rt.crd.as_ref().and_then(|c| c.schema.as_ref()) {
        walk(schema, &Defs::new(), &rest, "", &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_typos_in_built_in_kinds_and_metadata() {
        let rt = super::super::registry::builtins()
            .into_iter()
            .find(|r| r.plural == "statefulsets")
            .unwrap();
        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "a", "lables": {}},
            "spec": {"replicas": 1, "replica": 2, "template": {"spec": {"containers": [{"name": "c", "imge": "x",
                "resources": {"limits": {"cpu": "1"}}}]}}},
            "$setElementOrder/x": []});
        assert_eq!(
            unknown_fields(&rt, &sts),
            vec![
                "metadata.lables",
                "spec.replica",
                "spec.template.spec.containers[0].imge"
            ]
        );
    }

    #[test]
    fn custom_resources_use_their_schema() {
        let crd: Value =
            serde_yaml::from_str(include_str!("../../tests/fixtures/crd-broker.yaml")).unwrap();
        let rt = super::super::registry::from_crd(&crd).unwrap().remove(0);
        let b = json!({"metadata": {"name": "x"}, "spec": {"series": "platinum", "bogus": 1}, "status": {}});
        assert_eq!(unknown_fields(&rt, &b), vec!["spec.bogus"]);
    }
}
