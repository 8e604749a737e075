//! Custom resources: structural-schema defaulting and pruning, OpenAPI validation with the
//! `jsonschema` crate, and CEL `x-kubernetes-validations` rules (incl. transition rules that
//! use `oldSelf`) with the `cel` crate.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

/// One failed check: field path (`spec.series`) and the message after it.
pub type Cause = (String, String);

/// Applies `default`s from the schema to absent fields, recursively.
pub fn apply_defaults(schema: &Value, v: &mut Value) {
    if let (Some(props), Some(obj)) = (schema["properties"].as_object(), v.as_object_mut()) {
        for (k, ps) in props {
            if !obj.contains_key(k)
                && let Some(d) = ps.get("default")
            {
                obj.insert(k.clone(), d.clone());
            }
            if let Some(child) = obj.get_mut(k) {
                apply_defaults(ps, child);
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array_mut()) {
        for i in arr {
            apply_defaults(items, i);
        }
    }
    if let (Some(ap), Some(obj)) = (
        schema.get("additionalProperties").filter(|a| a.is_object()),
        v.as_object_mut(),
    ) {
        for (_, child) in obj.iter_mut() {
            apply_defaults(ap, child);
        }
    }
}

/// Drops fields the schema does not declare (unless it preserves unknown fields), like the
/// real server's pruning. The top level keeps apiVersion, kind and metadata.
pub fn prune(schema: &Value, v: &mut Value, top: bool) {
    if schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true)
        && schema.get("properties").is_none()
    {
        return;
    }
    if let Some(obj) = v.as_object_mut() {
        let props = schema["properties"].as_object();
        let additional = schema
            .get("additionalProperties")
            .filter(|a| a.is_object() || a.as_bool() == Some(true));
        let preserve = schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true);
        let embedded = schema["x-kubernetes-embedded-resource"].as_bool() == Some(true);
        let keys: Vec<String> = obj.keys().cloned().collect();
        for k in keys {
            if (top || embedded) && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            let field_schema = props
                .and_then(|p| p.get(&k))
                .or(additional.filter(|a| a.is_object()));
            // like the real server: null in a field that is not nullable is dropped (and may
            // then be defaulted)
            if obj[&k].is_null()
                && field_schema.is_some_and(|fs| fs["nullable"].as_bool() != Some(true))
            {
                obj.remove(&k);
                continue;
            }
            match props.and_then(|p| p.get(&k)) {
                Some(ps) => prune(ps, obj.get_mut(&k).expect("key exists"), false),
                None => match additional {
                    Some(ap) if ap.is_object() => {
                        prune(ap, obj.get_mut(&k).expect("key exists"), false)
                    }
                    Some(_) => {}
                    None if preserve => {}
                    None => {
                        obj.remove(&k);
                    }
                },
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array_mut()) {
        for i in arr {
            prune(items, i, false);
        }
    }
}

/// Turns a structural OpenAPI v3 schema into plain JSON Schema the validator understands:
/// `nullable`, `x-kubernetes-int-or-string` and embedded resources.
pub fn to_json_schema(s: &Value) -> Value {
    let Some(m) = s.as_object() else {
        return s.clone();
    };
    let mut out = Map::new();
    for (k, v) in m {
        if k.starts_with("x-kubernetes-") || k == "nullable" || k == "default" {
            continue;
        }
        let v = match k.as_str() {
            "properties" | "patternProperties" | "definitions" => Value::Object(
                v.as_object()
                    .map(|p| {
                        p.iter()
                            .map(|(k, v)| (k.clone(), to_json_schema(v)))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            "items" | "additionalProperties" | "not" => to_json_schema(v),
            "allOf" | "anyOf" | "oneOf" => Value::Array(
                v.as_array()
                    .map(|a| a.iter().map(to_json_schema).collect())
                    .unwrap_or_default(),
            ),
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    if m.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        out.remove("type");
        out.insert(
            "anyOf".into(),
            json!([{"type": "integer"}, {"type": "string"}]),
        );
    }
    if m.get("nullable").and_then(Value::as_bool) == Some(true)
        && let Some(t) = out.get("type").and_then(Value::as_str).map(str::to_string)
    {
        out.insert("type".into(), json!([t, "null"]));
    }
    Value::Object(out)
}

fn pointer_to_path(p: &str) -> String {
    p.trim_start_matches('/').replace('/', ".")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::Bool(_) => "boolean",
        Value::Null => "null",
    }
}

/// Validates against the schema; each cause names the field like the real server does.
pub fn validate_schema(schema: &Value, obj: &Value) -> Vec<Cause> {
    let mut body = obj.clone();
    if let Some(m) = body.as_object_mut() {
        // metadata is validated by the server itself, not the CRD schema.
        m.remove("metadata");
    }
    let mut js = to_json_schema(schema);
    if let Some(p) = js.get_mut("properties").and_then(Value::as_object_mut) {
        p.remove("metadata");
    }
    let validator = match jsonschema::validator_for(&js) {
        Ok(v) => v,
        Err(e) => {
            return vec![(
                String::new(),
                format!("Internal error: the CRD schema does not compile: {e}"),
            )];
        }
    };
    validator
        .iter_errors(&body)
        .map(|e| {
            use jsonschema::error::ValidationErrorKind as K;
            let mut path = pointer_to_path(&e.instance_path().to_string());
            let instance = e.instance();
            let shown = match instance.as_ref() {
                Value::String(s) => format!("{s:?}"),
                other if other.is_object() || other.is_array() => format!("{:?}", type_name(other)),
                other => other.to_string(),
            };
            let quoted = |v: &Value| -> String {
                v.as_array()
                    .map(|a| a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            };
            let field = if path.is_empty() { "<nil>".to_string() } else { path.clone() };
            // the real server's wording for the common keywords
            let message = match e.kind() {
                K::Enum { options } => format!("Unsupported value: {shown}: supported values: {}", quoted(options)),
                K::Required { property } => {
                    let p = property.as_str().unwrap_or_default();
                    path = if path.is_empty() { p.to_string() } else { format!("{path}.{p}") };
                    return (path, "Required value".to_string());
                }
                K::Minimum { limit } => format!("Invalid value: {shown}: {field} in body should be greater than or equal to {limit}"),
                K::Maximum { limit } => format!("Invalid value: {shown}: {field} in body should be less than or equal to {limit}"),
                K::Type { .. } => format!("Invalid value: {shown}: {field} in body must be of type {}: {shown}", expected_type(&e.to_string())),
                K::Pattern { pattern } => format!("Invalid value: {shown}: {field} in body should match '{pattern}'"),
                K::MaxLength { limit } => format!("Too long: may not be more than {limit} bytes"),
                K::MinLength { limit } => format!("Invalid value: {shown}: {field} in body should be at least {limit} chars long"),
                K::MaxItems { limit } => format!("Too many: {}: must have at most {limit} items", instance.as_array().map(|a| a.len()).unwrap_or(0)),
                K::MinItems { limit } => format!("Invalid value: {}: {field} in body should have at least {limit} items", instance.as_array().map(|a| a.len()).unwrap_or(0)),
                _ => format!("Invalid value: {shown}: {e}"),
            };
            (field, message)
        })
        .collect()
}

/// The expected type named in a jsonschema type error (`... is not of type "integer"`).
fn expected_type(msg: &str) -> String {
    msg.rsplit("of type")
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"')
        .to_string()
}

/// JSON → CEL value (integers stay `int`, as in Kubernetes CEL).
pub fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => cel::Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(a) => cel::Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => {
            let map: HashMap<cel::objects::Key, cel::Value> = m
                .iter()
                .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
        }
    }
}

/// Evaluates one rule; Ok(true) when it holds.
pub fn eval_rule(rule: &str, this: &Value, old: Option<&Value>) -> Result<bool, String> {
    let program = cel::Program::compile(rule).map_err(|e| format!("compilation failed: {e}"))?;
    let mut ctx = cel::Context::default();
    ctx.add_variable_from_value("self", to_cel(this));
    if let Some(o) = old {
        ctx.add_variable_from_value("oldSelf", to_cel(o));
    }
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("rule did not evaluate to a bool: {other:?}")),
        Err(e) => Err(format!("evaluation failed: {e}")),
    }
}

fn message_for(rule: &Value, this: &Value, old: Option<&Value>) -> String {
    if let Some(expr) = rule["messageExpression"].as_str()
        && let Ok(p) = cel::Program::compile(expr)
    {
        let mut ctx = cel::Context::default();
        ctx.add_variable_from_value("self", to_cel(this));
        if let Some(o) = old {
            ctx.add_variable_from_value("oldSelf", to_cel(o));
        }
        if let Ok(cel::Value::String(s)) = p.execute(&ctx) {
            return s.to_string();
        }
    }
    match rule["message"].as_str() {
        Some(m) => m.to_string(),
        None => format!("failed rule: {}", rule["rule"].as_str().unwrap_or_default()),
    }
}

/// Runs every `x-kubernetes-validations` rule in the schema against `new` (and, for
/// transition rules, the matching part of `old`). Transition rules are skipped where there is
/// no old value, as on create.
pub fn validate_cel(schema: &Value, new: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = vec![];
    walk_cel(schema, new, old, "", &mut causes);
    causes
}

fn walk_cel(schema: &Value, new: &Value, old: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    if let Some(rules) = schema["x-kubernetes-validations"].as_array() {
        for r in rules {
            let Some(rule) = r["rule"].as_str() else {
                continue;
            };
            let transition = rule.contains("oldSelf");
            if transition && old.is_none() {
                continue;
            }
            let field = match r["fieldPath"].as_str() {
                Some(fp) if path.is_empty() => fp.trim_start_matches('.').to_string(),
                Some(fp) => format!("{path}{fp}"),
                None if path.is_empty() => "<nil>".to_string(),
                None => path.to_string(),
            };
            match eval_rule(rule, new, if transition { old } else { None }) {
                Ok(true) => {}
                Ok(false) => causes.push((
                    field,
                    format!(
                        "Invalid value: {:?}: {}",
                        type_name(new),
                        message_for(r, new, old)
                    ),
                )),
                Err(e) => causes.push((field, format!("Invalid value: {:?}: {e}", type_name(new)))),
            }
        }
    }
    if let (Some(props), Some(obj)) = (schema["properties"].as_object(), new.as_object()) {
        for (k, ps) in props {
            if path.is_empty() && k == "metadata" {
                continue;
            }
            if let Some(child) = obj.get(k) {
                let child_path = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk_cel(ps, child, old.and_then(|o| o.get(k)), &child_path, causes);
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), new.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            // Old items are matched by position; good enough for transition rules on lists.
            walk_cel(
                items,
                item,
                old.and_then(|o| o.get(i)),
                &format!("{path}[{i}]"),
                causes,
            );
        }
    }
    if let (Some(ap), Some(obj)) = (
        schema.get("additionalProperties").filter(|a| a.is_object()),
        new.as_object(),
    ) {
        for (k, child) in obj {
            walk_cel(
                ap,
                child,
                old.and_then(|o| o.get(k)),
                &format!("{path}[{k}]"),
                causes,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object",
                "x-kubernetes-validations": [
                    {"rule": "self.series == oldSelf.series", "message": "series is immutable"},
                    {"rule": "self.replicas <= 5", "messageExpression": "'too many replicas: ' + string(self.replicas)"}],
                "properties": {
                    "series": {"type": "string", "enum": ["professional", "platinum"]},
                    "replicas": {"type": "integer", "default": 1, "minimum": 0},
                    "port": {"x-kubernetes-int-or-string": true},
                    "note": {"type": "string", "nullable": true}}}}})
    }

    #[test]
    fn defaults_fill_absent_fields_and_prune_drops_unknown_ones() {
        let mut o = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"series": "platinum", "bogus": 1}, "extra": true});
        apply_defaults(&schema(), &mut o);
        prune(&schema(), &mut o, true);
        assert_eq!(o["spec"]["replicas"], 1);
        assert!(o["spec"].get("bogus").is_none());
        assert!(o.get("extra").is_none());
        assert_eq!(o["metadata"]["name"], "a");
    }

    #[test]
    fn schema_validation_reports_field_paths() {
        let bad = json!({"spec": {"series": "gold", "replicas": -1, "port": "amqp", "note": null}});
        let causes = validate_schema(&schema(), &bad);
        let fields: Vec<&str> = causes.iter().map(|c| c.0.as_str()).collect();
        assert!(fields.contains(&"spec.series"), "{causes:?}");
        assert!(fields.contains(&"spec.replicas"), "{causes:?}");
        assert_eq!(
            causes.len(),
            2,
            "int-or-string and nullable are accepted: {causes:?}"
        );
        assert!(
            validate_schema(
                &schema(),
                &json!({"spec": {"series": "platinum", "port": 5672}})
            )
            .is_empty()
        );
        // worded like the real server
        assert!(
            causes.contains(&(
                "spec.series".to_string(),
                "Unsupported value: \"gold\": supported values: \"professional\", \"platinum\""
                    .to_string()
            )),
            "{causes:?}"
        );
        assert!(
            causes.contains(&(
                "spec.replicas".to_string(),
                "Invalid value: -1: spec.replicas in body should be greater than or equal to 0"
                    .to_string()
            )),
            "{causes:?}"
        );
        let typed = validate_schema(
            &schema(),
            &json!({"spec": {"series": "platinum", "replicas": "two"}}),
        );
        assert_eq!(
            typed[0].1,
            "Invalid value: \"two\": spec.replicas in body must be of type integer: \"two\""
        );
        let required = json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["series"]}}});
        assert_eq!(
            validate_schema(&required, &json!({"spec": {}})),
            vec![("spec.series".to_string(), "Required value".to_string())]
        );
    }

    #[test]
    fn cel_transition_rules_compare_with_old_self() {
        let old = json!({"spec": {"series": "professional", "replicas": 1}});
        let new = json!({"spec": {"series": "platinum", "replicas": 1}});
        assert!(
            validate_cel(&schema(), &new, None).is_empty(),
            "transition rules skip on create"
        );
        let causes = validate_cel(&schema(), &new, Some(&old));
        assert_eq!(
            causes,
            vec![(
                "spec".to_string(),
                "Invalid value: \"object\": series is immutable".to_string()
            )]
        );
        let many = json!({"spec": {"series": "platinum", "replicas": 9}});
        let causes = validate_cel(&schema(), &many, None);
        assert_eq!(
            causes[0].1,
            "Invalid value: \"object\": too many replicas: 9"
        );
    }

    #[test]
    fn cel_supports_has_and_list_macros() {
        let v = json!({"items": [1, 2, 3], "name": "x"});
        assert_eq!(
            eval_rule("has(self.name) && self.items.all(i, i > 0)", &v, None),
            Ok(true)
        );
        assert_eq!(eval_rule("self.items.size() == 2", &v, None), Ok(false));
        assert!(eval_rule("self.(", &v, None).is_err());
    }
}

#[cfg(test)]
mod root_rule_tests {
    use super::*;

    #[test]
    fn root_rules_see_metadata_and_report_a_nil_field() {
        let schema = json!({"type": "object",
            "x-kubernetes-validations": [{"rule": "self.metadata.name.size() <= 5", "message": "name too long"}],
            "properties": {"spec": {"type": "object"}}});
        assert!(validate_cel(&schema, &json!({"metadata": {"name": "short"}}), None).is_empty());
        let causes = validate_cel(
            &schema,
            &json!({"metadata": {"name": "much-too-long"}}),
            None,
        );
        assert_eq!(
            causes,
            vec![(
                "<nil>".to_string(),
                "Invalid value: \"object\": name too long".to_string()
            )]
        );
    }
}
