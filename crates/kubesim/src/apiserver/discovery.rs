//! Discovery documents: `/api`, `/apis`, per group-version resource lists and `/version`.
//!
//! kubectl and kube-rs' `Discovery::run_aggregated` ask for aggregated discovery v2
//! (`APIGroupDiscoveryList`) through the Accept header; they get it. Other clients get the
//! plain forms (APIVersions, APIGroupList, APIResourceList).

use serde_json::{Value, json};

use super::registry::{Registry, ResourceType};

/// `/version`: Kubernetes 1.33, the API level of the built-in types served.
pub fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-kubesim", "gitCommit": "kubesim",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.0",
        "compiler": "gc", "platform": "linux/amd64",
    })
}

/// `/api`: the core group's versions (just `v1`) and the address clients reach the server at.
pub fn api_versions(addr: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr}]})
}

/// `/apis`: every named group with its versions.
pub fn api_group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .group_versions()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_json(&g, &vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn group_json(g: &str, vs: &[String]) -> Value {
    let versions: Vec<Value> = vs
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
}

/// `/apis/{group}`: one group's versions; None for a group not served.
pub fn api_group(reg: &Registry, group: &str) -> Option<Value> {
    let vs = reg.group_versions().remove(group)?;
    let mut v = group_json(group, &vs);
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Some(v)
}

fn verbs(rt: &ResourceType) -> Vec<&'static str> {
    // SelfSubjectAccessReview and the other create-only reviews
    if rt.plural.ends_with("reviews") {
        return vec!["create"];
    }
    vec![
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ]
    .into_iter()
    .filter(|v| !(rt.plural == "namespaces" && *v == "deletecollection"))
    .collect()
}

/// `/api/v1` or `/apis/{group}/{version}`: the resources of a group-version with their verbs
/// and subresources; None for a group-version not served.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = reg.in_group_version(group, version);
    if types.is_empty() {
        return None;
    }
    let mut resources = vec![];
    for rt in types {
        let mut r = json!({
            "name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
            "kind": rt.kind, "verbs": verbs(rt),
        });
        if !rt.short_names.is_empty() {
            r["shortNames"] = json!(rt.short_names);
        }
        if !rt.categories.is_empty() {
            r["categories"] = json!(rt.categories);
        }
        resources.push(r);
        if rt.status_subresource {
            resources.push(
                json!({"name": format!("{}/status", rt.plural), "singularName": "",
                "namespaced": rt.namespaced, "kind": rt.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
        if rt.scale.is_some() {
            resources.push(json!({"name": format!("{}/scale", rt.plural), "singularName": "",
                "namespaced": rt.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale",
                "verbs": ["get", "patch", "update"]}));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// The Content-Type of aggregated discovery answers.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an Accept header asks for aggregated discovery v2 (kubectl and kube-rs'
/// `Discovery::run_aggregated` do).
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p = part.replace(' ', "");
        p.contains("g=apidiscovery.k8s.io")
            && p.contains("v=v2")
            && !p.contains("v=v2beta1")
            && p.contains("as=APIGroupDiscoveryList")
    })
}

fn aggregated_resource(rt: &ResourceType) -> Value {
    let mut subresources = vec![];
    if rt.status_subresource {
        subresources.push(
            json!({"subresource": "status", "verbs": ["get", "patch", "update"],
            "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind}}),
        );
    }
    if rt.scale.is_some() {
        subresources.push(
            json!({"subresource": "scale", "verbs": ["get", "patch", "update"],
            "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}}),
        );
    }
    let mut r = json!({
        "resource": rt.plural,
        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": rt.singular,
        "verbs": verbs(rt),
    });
    if !rt.short_names.is_empty() {
        r["shortNames"] = json!(rt.short_names);
    }
    if !rt.categories.is_empty() {
        r["categories"] = json!(rt.categories);
    }
    if !subresources.is_empty() {
        r["subresources"] = json!(subresources);
    }
    r
}

/// `APIGroupDiscoveryList` for `/api` (core = true) or `/apis`.
pub fn aggregated(reg: &Registry, core: bool) -> Value {
    let items: Vec<Value> = reg
        .group_versions()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = reg
                        .in_group_version(&g, v)
                        .into_iter()
                        .map(aggregated_resource)
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let meta = if g.is_empty() {
                json!({})
            } else {
                json!({"name": g})
            };
            json!({"metadata": meta, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_only_when_v2_is_asked_for() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        ));
        assert!(!wants_aggregated("application/json, */*"));
    }

    #[test]
    fn aggregated_lists_subresources_and_scope() {
        let reg = Registry::with_builtins();
        let apis = aggregated(&reg, false);
        let apps = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .unwrap();
        let sts = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "statefulsets")
            .unwrap();
        assert_eq!(sts["scope"], "Namespaced");
        assert_eq!(sts["shortNames"], json!(["sts"]));
        let subs: Vec<&str> = sts["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["subresource"].as_str())
            .collect();
        assert_eq!(subs, ["status", "scale"]);
        let core = aggregated(&reg, true);
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        assert_eq!(core["items"][0]["metadata"], json!({}));
    }
}
