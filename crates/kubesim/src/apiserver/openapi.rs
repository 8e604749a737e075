//! OpenAPI v3 documents, one per group-version, as kubectl fetches them for `apply`
//! validation and `explain`. Built-in schemas come from k8s-openapi's `schemars` support; CRD
//! schemas are their `openAPIV3Schema`. Every kind carries `x-kubernetes-group-version-kind`, and
//! each path's operations list the `fieldValidation` query parameter, so kubectl leaves field
//! validation to the server.

use serde_json::{Map, Value, json};

use super::registry::{Registry, ResourceType};

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// `openapi/v3` index: one entry per group-version.
pub fn index(reg: &Registry) -> Value {
    let mut paths = Map::new();
    for (g, vs) in reg.group_versions() {
        for v in vs {
            let p = if g.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{g}/{v}")
            };
            let hash = doc_hash(reg, &g, &v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
            );
        }
    }
    json!({"paths": paths})
}

/// A cheap content hash so kubectl's cache notices CRD changes.
fn doc_hash(reg: &Registry, g: &str, v: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for rt in reg.in_group_version(g, v) {
        rt.plural.hash(&mut h);
        if let Some(c) = &rt.crd {
            c.schema.as_ref().map(|s| s.to_string()).hash(&mut h);
        }
    }
    format!("{:016X}", h.finish())
}

fn schema_name(rt: &ResourceType) -> String {
    let mut parts: Vec<&str> = rt.group.split('.').collect();
    parts.reverse();
    format!("{}.{}.{}", parts.join("."), rt.version, rt.kind)
}

fn gvk(rt: &ResourceType) -> Value {
    json!([{"group": rt.group, "version": rt.version, "kind": rt.kind}])
}

fn op(rt: &ResourceType, action: &str, with_body: bool, schema_ref: &str) -> Value {
    let mut params = vec![
        json!({"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}}),
        json!({"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}}),
    ];
    if with_body {
        params.push(json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}));
    }
    if action == "patch" {
        params.push(json!({"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}));
    }
    let mut o = json!({
        "operationId": format!("{action}{}", rt.kind),
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": schema_ref}}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(rt)[0],
    });
    if with_body {
        o["requestBody"] =
            json!({"content": {"*/*": {"schema": {"$ref": schema_ref}}}, "required": true});
    }
    o
}

/// The OpenAPI v3 document of one group-version, or None if nothing is served there.
pub fn document(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = reg.in_group_version(group, version);
    if types.is_empty() {
        return None;
    }
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>();
    let mut named: Vec<(String, &ResourceType, Option<Value>)> = vec![];
    for rt in &types {
        match (&rt.schema_fn, &rt.crd) {
            (Some(f), _) => {
                let r = f(&mut generator);
                let name = r
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|s| s.rsplit('/').next())
                    .map(str::to_string)
                    .unwrap_or_else(|| schema_name(rt));
                named.push((name, rt, None));
            }
            (None, Some(c)) => {
                let mut s = c.schema.clone().unwrap_or_else(
                    || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
                );
                if let Some(p) = s.get_mut("properties").and_then(Value::as_object_mut) {
                    p.insert("metadata".into(), json!({"allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}], "description": "Standard object's metadata."}));
                    p.entry("apiVersion").or_insert(json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
                    p.entry("kind").or_insert(json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
                }
                named.push((schema_name(rt), rt, Some(s)));
            }
            (None, None) => {}
        }
    }
    let mut schemas = generator.take_definitions(true);
    for (name, rt, crd_schema) in &named {
        if let Some(s) = crd_schema {
            schemas.insert(name.clone(), s.clone());
        }
        if let Some(s) = schemas.get_mut(name).and_then(Value::as_object_mut) {
            s.insert("x-kubernetes-group-version-kind".into(), gvk(rt));
        }
    }
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = Map::new();
    for (name, rt, _) in &named {
        let r = format!("#/components/schemas/{name}");
        let base = if rt.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural)
        } else {
            format!("{prefix}/{}", rt.plural)
        };
        paths.insert(
            base.clone(),
            json!({"get": op(rt, "list", false, &r), "post": op(rt, "post", true, &r)}),
        );
        paths.insert(
            format!("{base}/{{name}}"),
            json!({"get": op(rt, "get", false, &r), "put": op(rt, "put", true, &r),
                   "patch": op(rt, "patch", true, &r), "delete": op(rt, "delete", false, &r)}),
        );
        if rt.status_subresource {
            paths.insert(
                format!("{base}/{{name}}/status"),
                json!({"get": op(rt, "get", false, &r), "put": op(rt, "put", true, &r), "patch": op(rt, "patch", true, &r)}),
            );
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
