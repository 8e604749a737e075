//! ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1), as real servers evaluate it on
//! writes: each binding names a policy; a write matches when the policy's
//! `matchConstraints.resourceRules` cover its group, resource and operation and every
//! `matchConditions` expression holds; then each `validations` expression must hold, or the
//! write is refused with the first failing one's message, worded like the real server
//! (`ValidatingAdmissionPolicy 'p' with binding 'b' denied request: ...`, 422 Invalid unless
//! the validation names another `reason`).
//!
//! CEL variables: `object` (the object as it would be stored, null on DELETE), `oldObject`
//! (null on CREATE), `request` (`operation`, `userInfo.username`/`groups`, `namespace`,
//! `name`, `resource.group`/`resource`) and `params` (always null).
//!
//! Simplifications, all documented here: `paramKind`, `namespaceSelector`, `objectSelector`,
//! `excludeResourceRules`, `variables`, `auditAnnotations` and validation actions other than
//! `Deny` are not supported (a binding using `paramRef` or a policy using `variables` refuses
//! every write it matches, so nothing passes unchecked); subresources are not matched, and a
//! deletecollection is not checked object by object.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::apiserver::authn::UserInfo;
use crate::apiserver::crd::to_cel;
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::registry::ResourceType;
use crate::apiserver::selector::{FieldSelector, LabelSelector};
use crate::apiserver::store::State;

const GROUP: &str = "admissionregistration.k8s.io";

/// One write to check.
pub(super) struct Write<'a> {
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub operation: &'a str,
    /// The resource written.
    pub rt: &'a ResourceType,
    /// Its namespace ("" for cluster-scoped).
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Who writes.
    pub user: &'a UserInfo,
    /// The object as it would be stored (`None` on DELETE).
    pub object: Option<&'a Value>,
    /// The stored object (`None` on CREATE).
    pub old: Option<&'a Value>,
}

/// True when a binding exists, so writes need the object they would store to be checked.
pub(super) fn any_binding(st: &State) -> bool {
    !all(st, "validatingadmissionpolicybindings").is_empty()
}

fn all(st: &State, plural: &str) -> Vec<Value> {
    let Some(rt) = st.registry.any_version(GROUP, plural) else {
        return Vec::new();
    };
    let labels = LabelSelector::parse("").unwrap_or_else(|_| unreachable!());
    let fields = FieldSelector::parse("").unwrap_or_else(|_| unreachable!());
    st.list(rt, None, &labels, &fields)
}

/// Checks `w` against every bound policy; `Err` is the refusal to answer with.
pub(super) fn check(st: &State, w: &Write<'_>) -> ApiResult<()> {
    let policies: HashMap<String, Value> = all(st, "validatingadmissionpolicies")
        .into_iter()
        .filter_map(|p| Some((p["metadata"]["name"].as_str()?.to_string(), p)))
        .collect();
    let mut bindings = all(st, "validatingadmissionpolicybindings");
    bindings.sort_by_key(|b| b["metadata"]["name"].as_str().unwrap_or("").to_string());
    let vars = variables(w);
    for b in &bindings {
        let binding = b["metadata"]["name"].as_str().unwrap_or("");
        let Some(p) = b["spec"]["policyName"]
            .as_str()
            .and_then(|n| policies.get(n))
        else {
            continue;
        };
        let policy = p["metadata"]["name"].as_str().unwrap_or("");
        if !matches_rules(&p["spec"]["matchConstraints"], w) {
            continue;
        }
        let deny = |message: String, reason: Option<&str>| {
            let text = format!(
                "ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: {message}"
            );
            match reason {
                Some("Forbidden") => ApiError::new(403, "Forbidden", text),
                Some("Unauthorized") => ApiError::new(401, "Unauthorized", text),
                Some("RequestEntityTooLarge") => ApiError::new(413, "RequestEntityTooLarge", text),
                _ => ApiError::new(422, "Invalid", text),
            }
        };
        if !b["spec"]["paramRef"].is_null() || !p["spec"]["variables"].is_null() {
            return Err(deny(
                "kubesim does not evaluate paramRef or variables".into(),
                None,
            ));
        }
        let mut applies = true;
        for c in p["spec"]["matchConditions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            match eval(c["expression"].as_str().unwrap_or(""), &vars) {
                Ok(true) => {}
                Ok(false) => {
                    applies = false;
                    break;
                }
                Err(e) => return Err(deny(format!("matchCondition failed: {e}"), None)),
            }
        }
        if !applies {
            continue;
        }
        for v in p["spec"]["validations"].as_array().into_iter().flatten() {
            let expr = v["expression"].as_str().unwrap_or("");
            let ok = eval(expr, &vars)
                .map_err(|e| deny(format!("expression '{expr}' resulted in error: {e}"), None))?;
            if !ok {
                let message = v["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("failed expression: {expr}"));
                return Err(deny(message, v["reason"].as_str()));
            }
        }
    }
    Ok(())
}

fn matches_rules(constraints: &Value, w: &Write<'_>) -> bool {
    let has = |list: &Value, item: &str| {
        list.as_array()
            .is_some_and(|l| l.iter().any(|x| x == "*" || x == item))
    };
    constraints["resourceRules"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| {
            has(&r["apiGroups"], &w.rt.group)
                && has(&r["resources"], &w.rt.plural)
                && has(&r["operations"], w.operation)
        })
}

fn variables(w: &Write<'_>) -> Vec<(&'static str, Value)> {
    vec![
        ("object", w.object.cloned().unwrap_or(Value::Null)),
        ("oldObject", w.old.cloned().unwrap_or(Value::Null)),
        (
            "request",
            json!({
                "operation": w.operation,
                "namespace": w.namespace,
                "name": w.name,
                "userInfo": {"username": w.user.username, "groups": w.user.groups},
                "resource": {"group": w.rt.group, "version": w.rt.version, "resource": w.rt.plural},
            }),
        ),
        ("params", Value::Null),
    ]
}

fn eval(expr: &str, vars: &[(&'static str, Value)]) -> Result<bool, String> {
    let program = cel::Program::compile(expr).map_err(|e| format!("compilation failed: {e}"))?;
    let mut ctx = cel::Context::default();
    for (name, v) in vars {
        ctx.add_variable_from_value(*name, to_cel(v));
    }
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("not a bool: {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}
