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
        let n = (0..SERVICE_IPS)
            .find(|n| !self.used_ips.contains(n))
            .ok_or_else(|| ApiError::internal("no free ClusterIP left in the service range"))?;
        self.used_ips.insert(n);
        Ok(service_ip(self.ip_prefix, n).to_string())
    }

    /// The index of `ip` in the service range, if it is in it.
    pub(super) fn ip_index(&self, ip: &str) -> Option<u16> {
        service_ip_index(self.ip_prefix, ip.parse().ok()?)
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
                            if let Some(n) = self.ip_index(&ip)
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

/// How many /24 blocks the service range spans: `a.b.c.x`, `a.(b+1).c.x`, ... (the slot `c`
/// stays), so one cluster holds a few thousand Services (1,000 shared instances each have one).
pub const SERVICE_BLOCKS: u8 = 10;
/// ClusterIPs in the service range (254 per block).
pub const SERVICE_IPS: u16 = SERVICE_BLOCKS as u16 * 254;

/// The `n`th address of the service range of `prefix` (block `n / 254`, host `1 + n % 254`).
pub fn service_ip(prefix: [u8; 3], n: u16) -> std::net::Ipv4Addr {
    let [a, b, c] = prefix;
    std::net::Ipv4Addr::new(a, b + (n / 254) as u8, c, 1 + (n % 254) as u8)
}

/// The index of `ip` in the service range of `prefix` ([`service_ip`]'s inverse).
pub fn service_ip_index(prefix: [u8; 3], ip: std::net::Ipv4Addr) -> Option<u16> {
    let [a, b, c, d] = ip.octets();
    let block = b.checked_sub(prefix[1])?;
    (a == prefix[0] && c == prefix[2] && block < SERVICE_BLOCKS && (1..=254).contains(&d))
        .then(|| u16::from(block) * 254 + u16::from(d - 1))
}

#[cfg(test)]
mod service_range_tests {
    use super::*;

    #[test]
    fn the_service_range_spans_ten_blocks_and_maps_back() {
        let p = [127, 20, 3];
        assert_eq!(service_ip(p, 0).to_string(), "127.20.3.1");
        assert_eq!(service_ip(p, 253).to_string(), "127.20.3.254");
        assert_eq!(service_ip(p, 254).to_string(), "127.21.3.1");
        assert_eq!(service_ip(p, SERVICE_IPS - 1).to_string(), "127.29.3.254");
        for n in [0, 1, 253, 254, 999, SERVICE_IPS - 1] {
            assert_eq!(service_ip_index(p, service_ip(p, n)), Some(n));
        }
        for ip in [
            "127.30.3.1",
            "127.20.4.1",
            "127.20.3.0",
            "127.20.3.255",
            "10.20.3.1",
        ] {
            assert_eq!(service_ip_index(p, ip.parse().unwrap()), None, "{ip}");
        }
    }
}
