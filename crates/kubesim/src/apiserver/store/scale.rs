//! The `scale` subresource: the `autoscaling/v1` Scale view of an object (StatefulSet,
//! Deployment, or a custom resource with a scale subresource) and writing its replicas back.

use serde_json::{Value, json};

use super::{State, WriteOpts, lists_for, meta_str, now_rfc3339};
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::merge::ssa;
use crate::apiserver::registry::ResourceType;
use crate::apiserver::selector::LabelSelector;
use crate::apiserver::table::json_path;

impl State {
    /// The autoscaling/v1 Scale view of an object with a scale subresource.
    pub fn get_scale(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        let spec = rt
            .scale
            .as_ref()
            .ok_or_else(|| ApiError::not_found(&rt.group, &format!("{}/scale", rt.plural), name))?;
        let obj = self.get(rt, ns, name)?;
        let replicas = json_path(&obj, &spec.spec_replicas)
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        let status_replicas = json_path(&obj, &spec.status_replicas)
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        let selector = spec
            .label_selector
            .as_ref()
            .and_then(|p| json_path(&obj, p))
            .map(|s| match s {
                Value::String(s) => s,
                sel => LabelSelector::from_object(&sel)
                    .map(|l| l.to_query())
                    .unwrap_or_default(),
            });
        let mut meta = json!({"name": name, "uid": obj["metadata"]["uid"], "resourceVersion": obj["metadata"]["resourceVersion"],
            "creationTimestamp": obj["metadata"]["creationTimestamp"]});
        if let Some(n) = meta_str(&obj, "namespace") {
            meta["namespace"] = json!(n);
        }
        let mut status = json!({"replicas": status_replicas});
        if let Some(s) = selector {
            status["selector"] = json!(s);
        }
        Ok(
            json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta,
            "spec": {"replicas": replicas}, "status": status}),
        )
    }

    /// Writes `spec.replicas` from a Scale (after PUT or PATCH on `/scale`).
    pub fn set_scale(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        scale: &Value,
        manager: &str,
    ) -> ApiResult<Value> {
        let spec = rt
            .scale
            .clone()
            .ok_or_else(|| ApiError::not_found(&rt.group, &format!("{}/scale", rt.plural), name))?;
        let old = self.get(rt, ns, name)?;
        if let Some(rv) = meta_str(scale, "resourceVersion")
            && !rv.is_empty()
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let replicas = scale["spec"]["replicas"]
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("Scale spec.replicas is required"))?;
        let mut new = old.clone();
        let mut cur = &mut new;
        let segs: Vec<&str> = spec
            .spec_replicas
            .trim_start_matches('.')
            .split('.')
            .collect();
        for (i, s) in segs.iter().enumerate() {
            if i + 1 == segs.len() {
                cur[*s] = json!(replicas);
            } else {
                if !cur[*s].is_object() {
                    cur[*s] = json!({});
                }
                cur = &mut cur[*s];
            }
        }
        ssa::record_update(
            Some(&old),
            &mut new,
            manager,
            &rt.api_version(),
            "scale",
            &now_rfc3339(),
            lists_for(rt),
        );
        self.commit_update(
            rt,
            ns,
            name,
            old,
            new,
            &WriteOpts {
                field_manager: manager.into(),
                ..Default::default()
            },
        )?;
        self.get_scale(rt, ns, name)
    }
}
