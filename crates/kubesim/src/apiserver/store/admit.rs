//! What a write must pass and what it gets on its way in: built-in validation (see
//! `validate`), CRD schema pruning, defaults and CEL rules (see `crd`), defaults per kind on
//! create, ClusterIP allocation, and serving a CRD's resources once it is stored.

use serde_json::{Value, json};

use super::{State, meta_str, now_rfc3339};
use crate::apiserver::crd;
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::registry::{self, ResourceType};
use crate::apiserver::validate;

impl State {
    /// Secret normalisation and built-in validation (see `validate`).
    pub(super) fn admit_builtin(&self, rt: &ResourceType, obj: &mut Value) -> ApiResult<()> {
        if rt.group.is_empty() && rt.plural == "secrets" {
            validate::normalize_secret(obj).map_err(ApiError::bad_request)?;
        }
        let causes = validate::builtin(rt, obj);
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(
                &rt.kind,
                meta_str(obj, "name").unwrap_or(""),
                &rt.group,
                causes,
            ))
        }
    }

    pub(super) fn admit_crd(
        &self,
        rt: &ResourceType,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> ApiResult<()> {
        let Some(crd_info) = &rt.crd else {
            return Ok(());
        };
        let Some(schema) = &crd_info.schema else {
            return Ok(());
        };
        crd::prune(schema, obj, true);
        crd::apply_defaults(schema, obj);
        let mut causes = crd::validate_schema(schema, obj);
        if causes.is_empty() {
            causes = crd::validate_cel(schema, obj, old);
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(
                &rt.kind,
                meta_str(obj, "name").unwrap_or(""),
                &rt.group,
                causes,
            ))
        }
    }

    fn allocate_ip(&mut self) -> ApiResult<String> {
        let n = (1u8..=254)
            .find(|n| !self.used_ips.contains(n))
            .ok_or_else(|| ApiError::internal("no free ClusterIP left in the service range"))?;
        self.used_ips.insert(n);
        let [a, b, c] = self.ip_prefix;
        Ok(format!("{a}.{b}.{c}.{n}"))
    }

    pub(super) fn ip_octet(&self, ip: &str) -> Option<u8> {
        let [a, b, c] = self.ip_prefix;
        ip.strip_prefix(&format!("{a}.{b}.{c}."))
            .and_then(|n| n.parse().ok())
    }

    /// Kind-specific defaults on create.
    pub(super) fn defaults_on_create(
        &mut self,
        rt: &ResourceType,
        obj: &mut Value,
    ) -> ApiResult<()> {
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "namespaces") => {
                obj["status"] = json!({"phase": "Active"});
                if obj["metadata"]["labels"]["kubernetes.io/metadata.name"].is_null() {
                    let name = obj["metadata"]["name"].clone();
                    obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
                }
            }
            ("", "services") => {
                let spec = &mut obj["spec"];
                if spec["type"].is_null() {
                    spec["type"] = json!("ClusterIP");
                }
                if spec["sessionAffinity"].is_null() {
                    spec["sessionAffinity"] = json!("None");
                }
                if let Some(ports) = spec["ports"].as_array_mut() {
                    for p in ports {
                        if p["protocol"].is_null() {
                            p["protocol"] = json!("TCP");
                        }
                        if p["targetPort"].is_null() {
                            p["targetPort"] = p["port"].clone();
                        }
                    }
                }
                if spec["type"] != "ExternalName" {
                    match spec["clusterIP"].as_str() {
                        Some("None") => spec["clusterIPs"] = json!(["None"]),
                        Some(ip) if !ip.is_empty() => {
                            let ip = ip.to_string();
                            if let Some(n) = self.ip_octet(&ip)
                                && !self.used_ips.insert(n)
                            {
                                {
                                    return Err(ApiError::invalid(
                                        "Service",
                                        meta_str(obj, "name").unwrap_or(""),
                                        "",
                                        vec![(
                                            "spec.clusterIPs".into(),
                                            format!(
                                                "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated"
                                            ),
                                        )],
                                    ));
                                }
                            }
                            obj["spec"]["clusterIPs"] = json!([ip]);
                        }
                        _ => {
                            let ip = self.allocate_ip()?;
                            obj["spec"]["clusterIP"] = json!(ip);
                            obj["spec"]["clusterIPs"] = json!([ip]);
                        }
                    }
                }
            }
            ("apps", "statefulsets") | ("apps", "deployments") | ("apps", "replicasets") => {
                if obj["spec"]["replicas"].is_null() {
                    obj["spec"]["replicas"] = json!(1);
                }
                if rt.plural == "statefulsets" {
                    if obj["spec"]["podManagementPolicy"].is_null() {
                        obj["spec"]["podManagementPolicy"] = json!("OrderedReady");
                    }
                    if obj["spec"]["updateStrategy"].is_null() {
                        obj["spec"]["updateStrategy"] =
                            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}});
                    }
                }
                if rt.plural != "replicasets" && obj["spec"]["revisionHistoryLimit"].is_null() {
                    obj["spec"]["revisionHistoryLimit"] = json!(10);
                }
            }
            ("", "pods") => {
                if obj["spec"]["restartPolicy"].is_null() {
                    obj["spec"]["restartPolicy"] = json!("Always");
                }
                if obj["status"]["phase"].is_null() {
                    obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
                }
            }
            ("", "secrets") if obj["type"].is_null() => obj["type"] = json!("Opaque"),
            ("", "persistentvolumeclaims") if obj["status"]["phase"].is_null() => {
                obj["status"] = json!({"phase": "Pending"})
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                let types = registry::from_crd(obj).map_err(|why| {
                    ApiError::invalid(
                        "CustomResourceDefinition",
                        meta_str(obj, "name").unwrap_or(""),
                        "apiextensions.k8s.io",
                        vec![("spec".into(), format!("Invalid value: \"object\": {why}"))],
                    )
                })?;
                let want = format!("{}.{}", types[0].plural, types[0].group);
                if meta_str(obj, "name") != Some(want.as_str()) {
                    return Err(ApiError::invalid(
                        "CustomResourceDefinition",
                        meta_str(obj, "name").unwrap_or(""),
                        "apiextensions.k8s.io",
                        vec![(
                            "metadata.name".into(),
                            format!(
                                "Invalid value: {:?}: must be spec.names.plural+\".\"+spec.group",
                                meta_str(obj, "name").unwrap_or("")
                            ),
                        )],
                    ));
                }
                obj["status"] = registry::crd_established_status(obj, &now_rfc3339());
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn register_crd(&mut self, crd_obj: &Value) {
        if let Ok(types) = registry::from_crd(crd_obj) {
            self.registry
                .remove_group_resource(&types[0].group, &types[0].plural);
            for t in types {
                self.registry.insert(t);
            }
        }
    }
}
