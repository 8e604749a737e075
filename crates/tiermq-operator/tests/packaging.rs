//! Packaging checks that need no cluster and no Helm: generated CRDs have not drifted, the chart's
//! values match its schema and its templates, the kustomize base renders into valid Kubernetes
//! objects with least-privilege RBAC, and the examples are valid resources. The same chart and base
//! through real Helm and kubectl, on kubesim, are in `packaging_tools/`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tiermq_crd::{RabbitMQInstance, SharedCluster};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("valid YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_file(rel: &str) -> Value {
    let docs = yaml_docs(&read(rel));
    assert_eq!(docs.len(), 1, "{rel} must hold one document");
    docs.into_iter().next().unwrap()
}

fn files_in(rel: &str, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root().join(rel))
        .unwrap_or_else(|e| panic!("list {rel}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    out
}

/// Every field of `want` is in `got` with the same value (`got` may add defaults). A field that a
/// typed round trip drops is a field the type does not know: a typo or a wrong place.
fn missing_fields(want: &Value, got: &Value, path: &str, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => missing_fields(wv, gv, &format!("{path}.{k}"), out),
                    None if wv.is_null() => {}
                    None => out.push(format!("{path}.{k} is not a field of this kind")),
                }
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                missing_fields(wv, gv, &format!("{path}[{i}]"), out);
            }
        }
        _ if want == got => {}
        // YAML tools may print 7.0 as 7; the API server sees the same number.
        (Value::Number(w), Value::Number(g)) if w.as_f64() == g.as_f64() => {}
        _ => out.push(format!("{path}: wrote {want}, reads back as {got}")),
    }
}

/// Deserializes `doc` into `K` and checks nothing was lost on the way.
fn typed<K: DeserializeOwned + Serialize>(doc: &Value, what: &str) -> K {
    let obj: K = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{what} does not deserialize: {e}"));
    let back = serde_json::to_value(&obj).unwrap();
    let mut problems = Vec::new();
    missing_fields(doc, &back, "", &mut problems);
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
    obj
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::validator_for(schema).expect("schema compiles")
}

fn schema_errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

// ---- CRDs ----------------------------------------------------------------------------------

#[test]
fn crd_files_in_the_repo_and_the_chart_match_the_rust_types() {
    let generated = tiermq_crd::crd_files();
    assert_eq!(generated.len(), 2);
    // crd/ holds nothing but the CRDs, so `kubectl apply -f crd/` installs exactly them.
    for dir in ["crd", "charts/tiermq/crds", "deploy/crds"] {
        let on_disk: BTreeSet<String> = files_in(dir, "yaml")
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        let expected: BTreeSet<String> = generated.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(
            on_disk, expected,
            "{dir}/ holds other CRD files than the Rust types generate; run `make generate`"
        );
        for (name, yaml) in &generated {
            let file = read(&format!("{dir}/{name}"));
            assert!(
                file == *yaml,
                "{dir}/{name} differs from what the Rust types generate; run `make generate` \
                 (never edit the generated CRD files by hand)"
            );
        }
    }
}

#[test]
fn crd_files_are_valid_crds_with_the_series_cel_rule() {
    for (name, _) in tiermq_crd::crd_files() {
        typed::<CustomResourceDefinition>(&yaml_file(&format!("crd/{name}")), &name);
    }
    let crd = yaml_file("crd/rabbitmqinstances.tiermq.io.yaml");
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let rules = spec["x-kubernetes-validations"]
        .as_array()
        .expect("x-kubernetes-validations on spec");
    let rule = rules
        .iter()
        .find(|r| r["rule"] == "self.series == oldSelf.series")
        .expect("the transition rule that keeps spec.series immutable");
    assert!(
        rule["message"].as_str().unwrap().contains("immutable"),
        "{rule}"
    );
}

// ---- chart ---------------------------------------------------------------------------------

fn values() -> Value {
    yaml_file("charts/tiermq/values.yaml")
}

fn values_schema() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(&read("charts/tiermq/values.schema.json")).expect("schema is JSON");
    validator(&schema)
}

#[test]
fn chart_metadata_is_helm_v2() {
    let chart = yaml_file("charts/tiermq/Chart.yaml");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "tiermq");
    assert!(chart["version"].is_string() && chart["appVersion"].is_string());
}

#[test]
fn values_yaml_validates_against_values_schema() {
    let errors = schema_errors(&values_schema(), &values());
    assert!(errors.is_empty(), "values.yaml: {errors:#?}");
}

#[test]
fn values_schema_rejects_typos_and_bad_values() {
    let v = values_schema();
    let mut typo = values();
    typo["operator"]["logLevle"] = "debug".into();
    assert!(!schema_errors(&v, &typo).is_empty(), "unknown key accepted");
    let mut bad = values();
    bad["operator"]["logFormat"] = "xml".into();
    assert!(
        !schema_errors(&v, &bad).is_empty(),
        "bad log format accepted"
    );
    let mut bad = values();
    bad["metrics"]["port"] = 70000.into();
    assert!(!schema_errors(&v, &bad).is_empty(), "bad port accepted");
}

/// `.Values.a.b` paths used in the chart's templates.
fn template_value_paths() -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    let dir = root().join("charts/tiermq/templates");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for (i, _) in text.match_indices(".Values.") {
            let rest = &text[i + ".Values.".len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            let path = path.trim_end_matches('.');
            if !path.is_empty() {
                paths.insert(path.to_string());
            }
        }
    }
    paths
}

#[test]
fn every_value_the_templates_use_exists_in_values_yaml() {
    let values = values();
    let paths = template_value_paths();
    assert!(paths.len() >= 15, "too few .Values paths found: {paths:?}");
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| {
            p.split('.')
                .try_fold(&values, |v, key| v.get(key))
                .is_none()
        })
        .collect();
    assert!(
        missing.is_empty(),
        "used in templates, absent from values.yaml: {missing:?}"
    );
}

#[test]
fn every_top_level_value_is_used_by_a_template() {
    let used: BTreeSet<String> = template_value_paths()
        .iter()
        .map(|p| p.split('.').next().unwrap().to_string())
        .collect();
    let unused: Vec<String> = values()
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !used.contains(*k))
        .cloned()
        .collect();
    assert!(
        unused.is_empty(),
        "values.yaml keys no template reads: {unused:?}"
    );
}

/// The template actions (`{{ ... }}`) of a chart file, without delimiters and trim markers.
fn template_actions(text: &str, file: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .unwrap_or_else(|| panic!("{file}: `{{{{` without `}}}}`"));
        let action = after[..end]
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        out.push(action.to_string());
        rest = &after[end + 2..];
    }
    assert!(!rest.contains("}}"), "{file}: `}}}}` without `{{{{`");
    out
}

#[test]
fn chart_templates_are_balanced_and_their_includes_resolve() {
    let dir = root().join("charts/tiermq/templates");
    let mut defined = BTreeSet::new();
    let mut included = BTreeSet::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        files += 1;
        let mut depth: i32 = 0;
        for a in template_actions(&text, &file) {
            if a.starts_with("/*") {
                assert!(a.ends_with("*/"), "{file}: unclosed comment {a:?}");
                continue;
            }
            let word = a.split_whitespace().next().unwrap_or("");
            match word {
                "if" | "with" | "range" | "define" | "block" => depth += 1,
                "end" => depth -= 1,
                _ => {}
            }
            assert!(depth >= 0, "{file}: `end` without an opening action");
            if word == "define" {
                defined.insert(a.split('"').nth(1).expect("define name").to_string());
            }
            for (i, _) in a.match_indices("include \"") {
                let name = a[i + "include \"".len()..].split('"').next().unwrap();
                included.insert(name.to_string());
            }
        }
        assert_eq!(depth, 0, "{file}: if/with/range/define without `end`");
    }
    assert!(files >= 8, "templates missing");
    let unknown: Vec<&String> = included.difference(&defined).collect();
    assert!(
        unknown.is_empty(),
        "include of undefined templates: {unknown:?}"
    );
}

/// The `rules:` list of a chart template (everything after `rules:` up to the closing `end`).
fn chart_rules(template: &str) -> Vec<PolicyRule> {
    let text = read(&format!("charts/tiermq/templates/{template}"));
    let start = text.find("\nrules:\n").expect("rules: in template") + "\nrules:\n".len();
    let body = &text[start..];
    let body = &body[..body.find("{{").unwrap_or(body.len())];
    serde_yaml::from_str(body).expect("static rules parse")
}

// ---- kustomize -----------------------------------------------------------------------------

fn kustomize_docs() -> Vec<Value> {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .arg(root().join("deploy"))
        .output()
        .unwrap_or_else(|e| {
            panic!("run `{kubectl} kustomize deploy/` (is kubectl installed?): {e}")
        });
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/ failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_docs(&String::from_utf8(out.stdout).unwrap())
}

fn assert_no_wildcards(rules: &[PolicyRule], what: &str) {
    assert!(!rules.is_empty(), "{what} has no rules");
    for r in rules {
        let all = r
            .verbs
            .iter()
            .chain(r.resources.iter().flatten())
            .chain(r.api_groups.iter().flatten())
            .chain(r.resource_names.iter().flatten())
            .chain(r.non_resource_urls.iter().flatten());
        for s in all {
            assert!(!s.contains('*'), "{what} grants a wildcard: {r:?}");
        }
    }
}

/// (apiGroup, resource) → verbs.
fn grants(rules: &[PolicyRule]) -> Vec<(String, String, BTreeSet<String>)> {
    let mut out = Vec::new();
    for r in rules {
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                out.push((g.clone(), res.clone(), r.verbs.iter().cloned().collect()));
            }
        }
    }
    out
}

fn verbs_for(rules: &[PolicyRule], group: &str, resource: &str) -> BTreeSet<String> {
    grants(rules)
        .into_iter()
        .filter(|(g, r, _)| g == group && r == resource)
        .flat_map(|(_, _, v)| v)
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn kustomize_base_renders_valid_kubernetes_objects() {
    let docs = kustomize_docs();
    let mut kinds = BTreeSet::new();
    let mut cluster_role = None;
    let mut role = None;
    let mut deployment = None;
    let mut crds = 0;
    for doc in &docs {
        let api = doc["apiVersion"].as_str().expect("apiVersion");
        let kind = doc["kind"].as_str().expect("kind");
        let name = doc["metadata"]["name"].as_str().expect("metadata.name");
        let what = format!("{kind} {name}");
        kinds.insert(kind.to_string());
        match (api, kind) {
            ("v1", "Namespace") => {
                typed::<Namespace>(doc, &what);
            }
            ("v1", "ServiceAccount") => {
                typed::<ServiceAccount>(doc, &what);
            }
            ("v1", "Service") => {
                typed::<Service>(doc, &what);
            }
            ("apps/v1", "Deployment") => deployment = Some(typed::<Deployment>(doc, &what)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                cluster_role = Some(typed::<ClusterRole>(doc, &what))
            }
            ("rbac.authorization.k8s.io/v1", "Role") => role = Some(typed::<Role>(doc, &what)),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                let b = typed::<ClusterRoleBinding>(doc, &what);
                let s = &b.subjects.unwrap()[0];
                assert_eq!(
                    (s.kind.as_str(), s.namespace.as_deref()),
                    ("ServiceAccount", Some("tiermq-system"))
                );
            }
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                typed::<RoleBinding>(doc, &what);
            }
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                typed::<CustomResourceDefinition>(doc, &what);
                assert!(
                    doc["metadata"]["namespace"].is_null(),
                    "CRDs are cluster-scoped"
                );
                crds += 1;
            }
            (
                "admissionregistration.k8s.io/v1",
                "ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding",
            ) => {
                // Cluster-scoped; kubectl 1.32's kustomize does not know that of these kinds and
                // sets the base's namespace, which the API server clears on cluster-scoped
                // objects.
                assert!(
                    doc["metadata"]["namespace"].is_null()
                        || doc["metadata"]["namespace"] == "tiermq-system",
                    "{what}"
                );
                if kind == "ValidatingAdmissionPolicyBinding" {
                    assert_eq!(
                        doc["spec"]["policyName"], "tiermq-operator-managed-objects",
                        "{what}"
                    );
                }
            }
            _ => panic!("unexpected object in kustomize output: {api} {kind}"),
        }
        if kind != "Namespace"
            && kind != "CustomResourceDefinition"
            && !kind.starts_with("Cluster")
            && !kind.starts_with("ValidatingAdmissionPolicy")
        {
            assert_eq!(doc["metadata"]["namespace"], "tiermq-system", "{what}");
        }
    }
    assert_eq!(crds, 2);
    assert_eq!(
        kinds,
        set(&[
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Namespace",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ])
    );

    let d = deployment.unwrap();
    let pod = d.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("tiermq-operator"));
    let c = &pod.containers[0];
    assert_eq!(c.args, Some(vec!["run".to_string()]));
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone()
    };
    assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);

    let cr = cluster_role.unwrap().rules.unwrap();
    assert_no_wildcards(&cr, "ClusterRole");
    let lease = role.unwrap().rules.unwrap();
    assert_no_wildcards(&lease, "Role");
    assert!(verbs_for(&lease, "coordination.k8s.io", "leases").contains("update"));
    assert!(
        grants(&cr)
            .iter()
            .all(|(g, _, _)| g != "coordination.k8s.io"),
        "leases belong in the namespaced Role"
    );
}

#[test]
fn rbac_files_match_what_the_operator_manages() {
    for (path, yaml) in tiermq_operator::rbac::files() {
        assert!(
            read(path) == yaml,
            "{path} differs from what crates/tiermq-operator/src/rbac.rs generates; run \
             `make generate` (never edit the generated RBAC files by hand)"
        );
    }
}

#[test]
fn rbac_grants_what_the_operator_needs_and_no_more() {
    let cr = chart_rules("clusterrole.yaml");
    // Every write is a PATCH (server-side apply or merge patch): no `update` on owned objects.
    let owned = set(&["get", "list", "watch", "create", "patch", "delete"]);
    for (g, r) in [
        ("apps", "statefulsets"),
        ("", "services"),
        ("", "configmaps"),
        ("discovery.k8s.io", "endpointslices"),
        ("policy", "poddisruptionbudgets"),
        ("networking.k8s.io", "networkpolicies"),
    ] {
        assert_eq!(verbs_for(&cr, g, r), owned, "{g}/{r}");
    }
    // Generated Secrets are created once and read by name only: no list or watch, so the
    // operator cannot read every Secret of the cluster; no update (patch only moves an
    // instance's credentials between amqp and amqps).
    assert_eq!(
        verbs_for(&cr, "", "secrets"),
        set(&["get", "create", "patch", "delete"])
    );
    // Instances and SharedClusters are patched only for their finalizers (a SharedCluster's
    // keeps it while instances are placed on it); specs are never written.
    for r in ["rabbitmqinstances", "sharedclusters"] {
        assert_eq!(
            verbs_for(&cr, "tiermq.io", r),
            set(&["get", "list", "watch", "patch"]),
            "{r}"
        );
    }
    // Pods are only listed and watched; volume claims go with their StatefulSet (retention
    // policy), so the operator has no right on them at all.
    assert_eq!(verbs_for(&cr, "", "pods"), set(&["list", "watch"]));
    assert!(verbs_for(&cr, "", "persistentvolumeclaims").is_empty());
    // Events through events.k8s.io only.
    assert!(verbs_for(&cr, "", "events").is_empty());
    assert_eq!(
        verbs_for(&cr, "events.k8s.io", "events"),
        set(&["create", "patch"])
    );
    for r in ["rabbitmqinstances", "sharedclusters"] {
        assert!(verbs_for(&cr, "tiermq.io", r).contains("watch"));
        assert!(
            !verbs_for(&cr, "tiermq.io", r).contains("delete"),
            "{r}: users delete, not us"
        );
        assert!(verbs_for(&cr, "tiermq.io", &format!("{r}/status")).contains("patch"));
        assert_eq!(
            verbs_for(&cr, "tiermq.io", &format!("{r}/finalizers")),
            set(&["update"])
        );
    }
    // Nothing beyond the listed resources.
    let resources: BTreeSet<String> = grants(&cr).into_iter().map(|(_, r, _)| r).collect();
    assert_eq!(resources.len(), 15, "{resources:?}");
}

#[test]
fn chart_and_kustomize_base_carry_the_same_rbac_rules() {
    let docs = kustomize_docs();
    let rules_of = |kind: &str| -> Vec<PolicyRule> {
        let doc = docs.iter().find(|d| d["kind"] == kind).unwrap();
        serde_json::from_value(doc["rules"].clone()).unwrap()
    };
    assert_eq!(
        chart_rules("clusterrole.yaml"),
        rules_of("ClusterRole"),
        "charts/tiermq/templates/clusterrole.yaml and deploy/rbac.yaml differ"
    );
    assert_eq!(
        chart_rules("role.yaml"),
        rules_of("Role"),
        "charts/tiermq/templates/role.yaml and deploy/rbac.yaml differ"
    );
    assert_no_wildcards(&chart_rules("clusterrole.yaml"), "chart ClusterRole");
}

// ---- examples ------------------------------------------------------------------------------

/// The CRD's OpenAPI schema for `kind`, from the generated file.
fn crd_schema(kind: &str) -> jsonschema::Validator {
    let file = match kind {
        "RabbitMQInstance" => "crd/rabbitmqinstances.tiermq.io.yaml",
        "SharedCluster" => "crd/sharedclusters.tiermq.io.yaml",
        other => panic!("no CRD for {other}"),
    };
    validator(&yaml_file(file)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
}

#[test]
fn examples_are_valid_against_the_crds() {
    let files = files_in("examples", "yaml");
    let mut kinds = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(root()).unwrap().display().to_string();
        for doc in yaml_docs(&read(&rel)) {
            let kind = doc["kind"].as_str().expect("kind").to_string();
            assert_eq!(doc["apiVersion"], "tiermq.io/v1alpha1", "{rel}");
            assert!(
                doc["metadata"]["namespace"].is_string(),
                "{rel}: name a namespace"
            );
            let errors = schema_errors(&crd_schema(&kind), &doc);
            assert!(errors.is_empty(), "{rel}: {errors:#?}");
            match kind.as_str() {
                "RabbitMQInstance" => {
                    typed::<RabbitMQInstance>(&doc, &rel);
                }
                "SharedCluster" => {
                    typed::<SharedCluster>(&doc, &rel);
                }
                other => panic!("{rel}: unexpected kind {other}"),
            }
            kinds.push((kind, doc["spec"]["tier"].as_str().map(str::to_string)));
        }
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            (
                "RabbitMQInstance".to_string(),
                Some("Dedicated".to_string())
            ),
            ("RabbitMQInstance".to_string(), Some("Shared".to_string())),
            ("SharedCluster".to_string(), None),
            ("SharedCluster".to_string(), None),
        ]
    );
}

#[test]
fn crd_schema_rejects_what_the_api_server_would() {
    let mut doc = yaml_file("examples/dedicated-instance.yaml");
    let schema = crd_schema("RabbitMQInstance");
    doc["spec"]["tier"] = "Gold".into();
    assert!(
        !schema_errors(&schema, &doc).is_empty(),
        "bad tier accepted"
    );
    let mut doc = yaml_file("examples/dedicated-instance.yaml");
    doc["spec"]["dedicated"]["replicas"] = 9.into();
    assert!(
        !schema_errors(&schema, &doc).is_empty(),
        "9 replicas accepted"
    );
    // An unknown field is caught by the typed round trip.
    let mut doc = yaml_file("examples/shared-instance.yaml");
    doc["spec"]["teir"] = "Shared".into();
    let r = std::panic::catch_unwind(|| typed::<RabbitMQInstance>(&doc, "typo"));
    assert!(r.is_err(), "unknown field went unnoticed");
}

// ---- operator configuration ----------------------------------------------------------------

/// Environment variables the operator reads: every `env = "NAME"` of its clap arguments.
fn operator_env_names() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, _) in text.match_indices("env = \"") {
                    let rest = &text[i + "env = \"".len()..];
                    out.insert(rest[..rest.find('"').unwrap()].to_string());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    // Read by the tracing subscriber's filter, not by a flag.
    out.insert("RUST_LOG".into());
    out
}

/// `- name: X` entries under `env:` in a Deployment manifest or template.
fn env_names_in(rel: &str) -> BTreeSet<String> {
    read(rel)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- name: "))
        .map(|n| n.trim().to_string())
        .filter(|n| n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect()
}

#[test]
fn chart_and_kustomize_set_only_environment_the_operator_reads() {
    let known = operator_env_names();
    assert!(
        known.contains("TIERMQ_METRICS_ADDR"),
        "operator flags not found: {known:?}"
    );
    for rel in [
        "charts/tiermq/templates/deployment.yaml",
        "deploy/deployment.yaml",
    ] {
        let set = env_names_in(rel);
        assert!(set.len() >= 8, "{rel}: {set:?}");
        // A variable the operator does not read may only be there for `$(NAME)` references in
        // other values (Kubernetes expands them), which the file then names.
        let text = read(rel);
        let unknown: Vec<&String> = set
            .difference(&known)
            .filter(|n| !text.contains(&format!("$({n})")))
            .collect();
        assert!(
            unknown.is_empty(),
            "{rel} sets {unknown:?}, which the operator does not read (see src/config.rs)"
        );
    }
    assert_eq!(
        env_names_in("charts/tiermq/templates/deployment.yaml"),
        env_names_in("deploy/deployment.yaml"),
        "the chart and deploy/ configure the operator differently"
    );
}
