//! Status writing: the status subresource is patched only when the new status differs from the
//! stored one, with a JSON merge patch that carries exactly the difference (removed fields as
//! `null`, so an ended migration really disappears). Events go out after the status was written,
//! so a failed write never announces a transition that was not recorded.

use kube::api::{Api, Patch};
use kube::runtime::events::{Event, EventType as KubeEventType};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::controller::apply::merge_patch_params;
use crate::controller::context::Context;
use crate::controller::plan::{EventType, PlannedEvent};
use crate::error::{Error, Result, kube_err};

/// RFC 7386 merge patch turning `old` into `new`: changed and added keys with their new value,
/// removed keys as `null`, nested objects diffed recursively, arrays replaced whole. `None` when
/// nothing differs.
pub fn merge_diff(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) => {
                        if let Some(d) = merge_diff(ov, nv) {
                            out.insert(k.clone(), d);
                        }
                    }
                    None => {
                        out.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    out.insert(k.clone(), Value::Null);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        _ if old == new => None,
        _ => Some(new.clone()),
    }
}

/// The status patch for `old` → `new`, `None` when they are equal.
pub fn status_patch<S: Serialize>(old: Option<&S>, new: &S) -> Result<Option<Value>> {
    let old = match old {
        Some(o) => serde_json::to_value(o)?,
        None => Value::Object(Map::new()),
    };
    let new = serde_json::to_value(new)?;
    Ok(merge_diff(&old, &new).map(|d| json!({ "status": d })))
}

/// Whether a status write is a compare-and-swap on the object's resourceVersion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// The write fails with [`Error::Conflict`] when the object changed since `obj` was read:
    /// a status computed from an older state is never recorded (a second writer, a hand edit).
    Unchanged,
    /// Applies to whatever is stored (for writes that only add a condition).
    None,
}

/// Writes `new` as the status of `K` `ns/name` if it differs from `old`. Returns whether it wrote.
pub async fn write<K, S>(
    client: &kube::Client,
    obj: &K,
    old: Option<&S>,
    new: &S,
    precondition: Precondition,
) -> Result<bool>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
    S: Serialize,
{
    let Some(mut patch) = status_patch(old, new)? else {
        return Ok(false);
    };
    if precondition == Precondition::Unchanged
        && let Some(rv) = obj.resource_version()
    {
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    let ns = obj.namespace().unwrap_or_default();
    let what = format!("{} {ns}/{}", K::kind(&()), obj.name_any());
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    match api
        .patch_status(
            &obj.name_any(),
            &merge_patch_params(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::Conflict(what)),
        Err(e) => Err(kube_err("patch status of", what)(e)),
    }
}

/// Publishes planned Events on `obj`; a failure to publish is logged, never fatal (the state was
/// recorded already).
pub async fn emit<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K, events: &[PlannedEvent]) {
    let reference = obj.object_ref(&());
    for e in events {
        let ev = Event {
            type_: match e.type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: e.reason.to_string(),
            note: Some(e.note.clone()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&ev, &reference).await {
            tracing::warn!(reason = e.reason, error = %err, "could not publish Event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiermq_crd::RabbitMQInstanceStatus;

    #[test]
    fn an_equal_status_gives_no_patch() {
        let s = json!({"tier": "Shared", "conditions": [{"type": "Ready"}]});
        assert_eq!(merge_diff(&s, &s.clone()), None);
        let st = RabbitMQInstanceStatus::default();
        assert_eq!(status_patch(Some(&st), &st).unwrap(), None);
    }

    #[test]
    fn removed_fields_become_null_and_nested_objects_are_diffed() {
        let old = json!({"tier": "Shared", "migrationPhase": "DrainingSource",
                         "migration": {"from": "Shared", "remainingMessages": 5}});
        let new = json!({"tier": "Dedicated", "migrationPhase": "Stable",
                         "history": [{"from": "Shared"}]});
        assert_eq!(
            merge_diff(&old, &new).unwrap(),
            json!({"tier": "Dedicated", "migrationPhase": "Stable",
                   "history": [{"from": "Shared"}], "migration": null})
        );
        let old = json!({"migration": {"from": "Shared", "remainingMessages": 5, "etaSeconds": 3}});
        let new = json!({"migration": {"from": "Shared", "remainingMessages": 0}});
        assert_eq!(
            merge_diff(&old, &new).unwrap(),
            json!({"migration": {"remainingMessages": 0, "etaSeconds": null}})
        );
    }

    #[test]
    fn arrays_are_replaced_whole() {
        let old = json!({"conditions": [{"type": "Ready", "status": "False"}]});
        let new = json!({"conditions": [{"type": "Ready", "status": "True"}]});
        assert_eq!(merge_diff(&old, &new).unwrap(), new);
    }

    #[test]
    fn a_first_status_is_written_whole() {
        let st = RabbitMQInstanceStatus {
            observed_generation: Some(3),
            ..Default::default()
        };
        assert_eq!(
            status_patch(None, &st).unwrap().unwrap(),
            json!({"status": {"observedGeneration": 3}})
        );
    }
}
