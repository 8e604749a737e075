//! What the server serves: one [`ResourceType`] per group/resource, built-in or from a CRD.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    admissionregistration::v1 as admissionregistration, apps::v1 as apps,
    coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
    events::v1 as events, policy::v1 as policy, rbac::v1 as rbac,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
use serde_json::{Value, json};

use super::table::{self, Column};

/// JSON paths of a scale subresource (`spec.replicas`, `status.replicas`, label selector).
#[derive(Debug, Clone)]
pub struct ScaleSpec {
    /// Where the desired replica count is (`.spec.replicas`).
    pub spec_replicas: String,
    /// Where the observed replica count is (`.status.replicas`).
    pub status_replicas: String,
    /// Where the label selector is, reported in the Scale's `status.selector`.
    pub label_selector: Option<String>,
}

/// Builds the JSON Schema of a built-in kind into an OpenAPI generator (its definitions land
/// in the generator, the returned schema is a `$ref`).
pub type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

/// What a resource served from a CustomResourceDefinition adds to a built-in one.
#[derive(Debug, Clone)]
pub struct CrdVersion {
    /// `openAPIV3Schema` of this version (validation, defaults, CEL rules).
    pub schema: Option<Value>,
}

/// One served group/version/resource: its names as discovery announces them, its scope and
/// subresources, its printer columns and where its schema comes from.
#[derive(Clone)]
pub struct ResourceType {
    /// API group; empty for the core group.
    pub group: String,
    /// API version within the group (`v1`).
    pub version: String,
    /// Resource name in URLs (`statefulsets`).
    pub plural: String,
    /// Singular name (`statefulset`), accepted by kubectl.
    pub singular: String,
    /// Kind of its objects (`StatefulSet`).
    pub kind: String,
    /// Whether its objects live in a namespace.
    pub namespaced: bool,
    /// Short names (`sts`), accepted by kubectl.
    pub short_names: Vec<String>,
    /// Categories (`all`) `kubectl get <category>` expands to.
    pub categories: Vec<String>,
    /// Whether it has a `status` subresource (then the main resource ignores status writes).
    pub status_subresource: bool,
    /// Its `scale` subresource, if any.
    pub scale: Option<ScaleSpec>,
    /// Table columns for `kubectl get`.
    pub columns: Vec<Column>,
    /// The JSON Schema of a built-in kind, for OpenAPI and unknown-field checks.
    pub schema_fn: Option<SchemaFn>,
    /// Set for resources served from a CustomResourceDefinition.
    pub crd: Option<CrdVersion>,
}

impl std::fmt::Debug for ResourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} {}", self.group, self.version, self.plural)
    }
}

impl ResourceType {
    /// `group/version`, or just `version` for the core group: the objects' `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group`, or just `plural` for the core group: how errors name the resource.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

fn schema_of<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
    schema_fn: SchemaFn,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: vec![],
        status_subresource: status,
        scale: None,
        columns: table::builtin_columns(group, plural),
        schema_fn: Some(schema_fn),
        crd: None,
    }
}

fn replicas_scale() -> Option<ScaleSpec> {
    Some(ScaleSpec {
        spec_replicas: ".spec.replicas".into(),
        status_replicas: ".status.replicas".into(),
        label_selector: Some(".spec.selector".into()),
    })
}

/// Every built-in kind the server serves.
pub fn builtins() -> Vec<ResourceType> {
    let all = vec!["all".to_string()];
    let mut v = vec![
        builtin(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            true,
            schema_of::<core::Namespace>,
        ),
        builtin(
            "",
            "v1",
            "pods",
            "Pod",
            true,
            &["po"],
            true,
            schema_of::<core::Pod>,
        ),
        builtin(
            "",
            "v1",
            "services",
            "Service",
            true,
            &["svc"],
            true,
            schema_of::<core::Service>,
        ),
        builtin(
            "",
            "v1",
            "endpoints",
            "Endpoints",
            true,
            &["ep"],
            false,
            schema_of::<core::Endpoints>,
        ),
        builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            false,
            schema_of::<core::ConfigMap>,
        ),
        builtin(
            "",
            "v1",
            "secrets",
            "Secret",
            true,
            &[],
            false,
            schema_of::<core::Secret>,
        ),
        builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            false,
            schema_of::<core::ServiceAccount>,
        ),
        builtin(
            "",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            false,
            schema_of::<core::Event>,
        ),
        builtin(
            "",
            "v1",
            "persistentvolumeclaims",
            "PersistentVolumeClaim",
            true,
            &["pvc"],
            true,
            schema_of::<core::PersistentVolumeClaim>,
        ),
        builtin(
            "apps",
            "v1",
            "statefulsets",
            "StatefulSet",
            true,
            &["sts"],
            true,
            schema_of::<apps::StatefulSet>,
        ),
        builtin(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            true,
            schema_of::<apps::Deployment>,
        ),
        builtin(
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            true,
            &["rs"],
            true,
            schema_of::<apps::ReplicaSet>,
        ),
        builtin(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "EndpointSlice",
            true,
            &[],
            false,
            schema_of::<discovery::EndpointSlice>,
        ),
        builtin(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            false,
            schema_of::<events::Event>,
        ),
        builtin(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            &["pdb"],
            true,
            schema_of::<policy::PodDisruptionBudget>,
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            false,
            schema_of::<coordination::Lease>,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            "Role",
            true,
            &[],
            false,
            schema_of::<rbac::Role>,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
            &[],
            false,
            schema_of::<rbac::RoleBinding>,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
            &[],
            false,
            schema_of::<rbac::ClusterRole>,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            false,
            schema_of::<rbac::ClusterRoleBinding>,
        ),
        builtin(
            "admissionregistration.k8s.io",
            "v1",
            "validatingadmissionpolicies",
            "ValidatingAdmissionPolicy",
            false,
            &[],
            true,
            schema_of::<admissionregistration::ValidatingAdmissionPolicy>,
        ),
        builtin(
            "admissionregistration.k8s.io",
            "v1",
            "validatingadmissionpolicybindings",
            "ValidatingAdmissionPolicyBinding",
            false,
            &[],
            false,
            schema_of::<admissionregistration::ValidatingAdmissionPolicyBinding>,
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
            schema_of::<apiext::CustomResourceDefinition>,
        ),
        // create-only review: answered at once, never stored (see `http::access_review`)
        builtin(
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            false,
            &[],
            false,
            schema_of::<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview>,
        ),
    ];
    for rt in v.iter_mut() {
        match rt.plural.as_str() {
            "statefulsets" | "deployments" | "replicasets" => {
                rt.scale = replicas_scale();
                rt.categories = all.clone();
            }
            "pods" | "services" => rt.categories = all.clone(),
            _ => {}
        }
    }
    v
}

/// The resource types a CRD object declares (one per served version), or a message saying
/// why the CRD cannot be served.
pub fn from_crd(crd: &Value) -> Result<Vec<ResourceType>, String> {
    let spec = crd.get("spec").ok_or("spec is required")?;
    let group = spec["group"].as_str().ok_or("spec.group is required")?;
    let names = &spec["names"];
    let plural = names["plural"]
        .as_str()
        .ok_or("spec.names.plural is required")?;
    let kind = names["kind"]
        .as_str()
        .ok_or("spec.names.kind is required")?;
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let versions = spec["versions"]
        .as_array()
        .ok_or("spec.versions is required")?;
    let mut out = vec![];
    for ver in versions {
        if ver["served"].as_bool() == Some(false) {
            continue;
        }
        let name = ver["name"]
            .as_str()
            .ok_or("spec.versions[].name is required")?;
        let subs = &ver["subresources"];
        let scale = subs
            .get("scale")
            .filter(|s| s.is_object())
            .map(|s| ScaleSpec {
                spec_replicas: s["specReplicasPath"]
                    .as_str()
                    .unwrap_or(".spec.replicas")
                    .into(),
                status_replicas: s["statusReplicasPath"]
                    .as_str()
                    .unwrap_or(".status.replicas")
                    .into(),
                label_selector: s["labelSelectorPath"].as_str().map(str::to_string),
            });
        let mut columns = vec![table::name_column()];
        let mut has_age = false;
        if let Some(cols) = ver["additionalPrinterColumns"].as_array() {
            for c in cols {
                let path = c["jsonPath"].as_str().unwrap_or_default().to_string();
                if path == ".metadata.creationTimestamp" {
                    has_age = true;
                }
                columns.push(Column::json_path(
                    c["name"].as_str().unwrap_or("?"),
                    c["type"].as_str().unwrap_or("string"),
                    c["format"].as_str().unwrap_or(""),
                    c["description"].as_str().unwrap_or(""),
                    c["priority"].as_i64().unwrap_or(0),
                    &path,
                ));
            }
        }
        if !has_age
            && ver["additionalPrinterColumns"]
                .as_array()
                .is_none_or(|a| a.is_empty())
        {
            columns.push(table::age_column());
        }
        out.push(ResourceType {
            group: group.into(),
            version: name.into(),
            plural: plural.into(),
            singular: singular.clone(),
            kind: kind.into(),
            namespaced,
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            status_subresource: subs.get("status").is_some_and(|s| s.is_object()),
            scale,
            columns,
            schema_fn: None,
            crd: Some(CrdVersion {
                schema: ver["schema"].get("openAPIV3Schema").cloned(),
            }),
        });
    }
    if out.is_empty() {
        return Err("no version is served".into());
    }
    Ok(out)
}

/// All served types, keyed by (group, plural, version).
#[derive(Clone, Default)]
pub struct Registry {
    /// The served types by (group, plural, version).
    pub types: BTreeMap<(String, String, String), ResourceType>,
}

impl Registry {
    /// The registry of a fresh server: every built-in kind, no custom resources.
    pub fn with_builtins() -> Self {
        let mut r = Registry::default();
        for rt in builtins() {
            r.insert(rt);
        }
        r
    }

    /// Serves `rt` (replacing the same group/plural/version).
    pub fn insert(&mut self, rt: ResourceType) {
        self.types.insert(
            (rt.group.clone(), rt.plural.clone(), rt.version.clone()),
            rt,
        );
    }

    /// Stops serving every version of a group/resource (its CRD was deleted or replaced).
    pub fn remove_group_resource(&mut self, group: &str, plural: &str) {
        self.types
            .retain(|(g, p, _), _| !(g == group && p == plural));
    }

    /// The type served at `group/version/plural`.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .get(&(group.to_string(), plural.to_string(), version.to_string()))
    }

    /// Any version of a group/resource (objects are stored once per group/resource).
    pub fn any_version(&self, group: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .values()
            .find(|rt| rt.group == group && rt.plural == plural)
    }

    /// Group → versions, in a stable order (core group first).
    pub fn group_versions(&self) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for rt in self.types.values() {
            let vs = m.entry(rt.group.clone()).or_default();
            if !vs.contains(&rt.version) {
                vs.push(rt.version.clone());
            }
        }
        m
    }

    /// Every type of a group/version (discovery and OpenAPI documents).
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<&ResourceType> {
        self.types
            .values()
            .filter(|rt| rt.group == group && rt.version == version)
            .collect()
    }
}

/// A CRD's `status` as the real server reports it once the CRD's names are accepted.
pub fn crd_established_status(crd: &Value, now: &str) -> Value {
    let names = crd["spec"]["names"].clone();
    json!({
        "acceptedNames": names,
        "storedVersions": crd["spec"]["versions"].as_array().map(|vs| vs.iter()
            .filter(|v| v["storage"].as_bool() == Some(true))
            .map(|v| v["name"].clone()).collect::<Vec<_>>()).unwrap_or_default(),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ]
    })
}
