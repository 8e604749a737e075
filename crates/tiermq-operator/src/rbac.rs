//! The operator's RBAC rules, derived from what it manages and generated into `deploy/rbac.yaml`
//! and the chart's `clusterrole.yaml` and `role.yaml` (`tiermq-operator rbac`, `make generate`;
//! a packaging test fails when the files drift from this module).
//!
//! The kinds the operator writes come from the builders ([`ClusterObjects::kinds`] for a broker
//! cluster, [`build::instance_kinds`] for an instance's own objects), so a child object added there
//! is granted here without a second list. Each way of writing maps to the fewest verbs it needs:
//! every write is a PATCH (server-side apply or merge patch), so there is no `update` except on
//! `*/finalizers`, which owner references with `blockOwnerDeletion` require.

use std::collections::BTreeMap;

use crate::build::{self, BrokerCluster, ClusterObjects, Secret, Write};

/// One RBAC rule, with the reason it exists (written as a comment above it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// API groups (`""` is the core group).
    pub api_groups: Vec<String>,
    /// Resources, with subresources as `kind/sub`.
    pub resources: Vec<String>,
    /// Verbs, in Kubernetes' usual order.
    pub verbs: Vec<&'static str>,
    /// Why the operator needs it; `None` when the rule above says it (same way of writing).
    pub why: Option<&'static str>,
}

/// Kubernetes' usual verb order, for stable output.
const VERB_ORDER: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

fn verbs_of(write: Write) -> &'static [&'static str] {
    match write {
        // get: read before deciding; list/watch: the controllers' `owns` watches.
        Write::Apply => &["get", "list", "watch", "create", "patch", "delete"],
        // No list/watch: Secrets are read one by one, by name, and never watched, so the
        // operator cannot read every Secret of the cluster. patch: only the instance credentials'
        // `uri`/`port`/`ca.crt` follow TLS (the admission policy keeps it to the operator's own).
        Write::CreateOnce => &["get", "create", "patch", "delete"],
    }
}

fn why_of(write: Write) -> &'static str {
    match write {
        Write::Apply => {
            "Broker clusters and each instance's Service and routing: server-side applied, \
             watched, deleted with their owner."
        }
        Write::CreateOnce => {
            "Secrets (Erlang cookie, admin, instance credentials) are created once, their \
             generated values never changed; patch only makes an instance's credentials name \
             AMQPS (uri, ca.crt) while TLS clusters serve it. Read by name only, never \
             listed or watched."
        }
    }
}

/// The ClusterRole's rules: the API, every managed kind, pods (observed) and Events.
pub fn cluster_rules() -> Vec<Rule> {
    let mut rules = vec![
        rule(
            "tiermq.io",
            &["rabbitmqinstances"],
            &["get", "list", "watch", "patch"],
            "Instances: read, and patched only to add or remove the cleanup finalizer.",
        ),
        rule(
            "tiermq.io",
            &["sharedclusters"],
            &["get", "list", "watch", "patch"],
            "SharedClusters: read, and patched only to add or remove the finalizer that keeps one \
             with instances placed on it.",
        ),
        rule(
            "tiermq.io",
            &["rabbitmqinstances/status", "sharedclusters/status"],
            &["patch"],
            "Status of both, written as merge patches.",
        ),
        rule(
            "tiermq.io",
            &["rabbitmqinstances/finalizers", "sharedclusters/finalizers"],
            &["update"],
            "Owner references with blockOwnerDeletion need update on the owner's finalizers.",
        ),
    ];
    // Managed kinds: one rule per (group, way of writing), resources in first-seen order.
    let mut managed: BTreeMap<(String, Write), Vec<String>> = BTreeMap::new();
    let mut order: Vec<(String, Write)> = Vec::new();
    let mut seen: BTreeMap<(String, String), Write> = BTreeMap::new();
    for k in managed_kinds() {
        let key = (k.resource.group.clone(), k.resource.plural.clone());
        if let Some(w) = seen.get(&key) {
            assert_eq!(
                *w, k.write,
                "{}/{} is written two ways; give it one way",
                key.0, key.1
            );
            continue;
        }
        seen.insert(key, k.write);
        let group = (k.resource.group.clone(), k.write);
        if !managed.contains_key(&group) {
            order.push(group.clone());
        }
        managed.entry(group).or_default().push(k.resource.plural);
    }
    // Grouped by way of writing (stable sort keeps the first-seen order of API groups), the
    // reason said once per way.
    order.sort_by_key(|(_, write)| *write);
    let mut said: Option<Write> = None;
    for group in order {
        let resources = managed.remove(&group).unwrap_or_default();
        let why = (said != Some(group.1)).then(|| why_of(group.1));
        said = Some(group.1);
        rules.push(Rule {
            api_groups: vec![group.0.clone()],
            resources,
            verbs: verbs_of(group.1).to_vec(),
            why,
        });
    }
    rules.push(rule(
        "",
        &["pods"],
        &["list", "watch"],
        "Broker pods are only observed (listed and watched, never read one by one): their IPs and readiness feed the EndpointSlices, their \
         container statuses (a crash loop) the instance's conditions.",
    ));
    rules.push(rule(
        "events.k8s.io",
        &["events"],
        &["create", "patch"],
        "Events on transitions and problems (events.k8s.io/v1; patch adds to a repeated \
         Event's series).",
    ));
    rules
}

/// The namespaced Role's rules: leader election on a Lease in the operator's namespace.
pub fn leader_election_rules() -> Vec<Rule> {
    vec![rule(
        "coordination.k8s.io",
        &["leases"],
        &["get", "create", "update"],
        "Leader election: read the Lease, create it once, renew or take it over with an \
         update that carries its resourceVersion.",
    )]
}

/// Extra ClusterRole rules with `--metrics-auth kubernetes` (the chart adds them only with
/// `metrics.authentication: kubernetes`): reviewing `/metrics` callers' tokens and rights.
pub fn metrics_auth_rules() -> Vec<Rule> {
    vec![
        rule(
            "authentication.k8s.io",
            &["tokenreviews"],
            &["create"],
            "/metrics with authentication: who a scraper's bearer token belongs to.",
        ),
        rule(
            "authorization.k8s.io",
            &["subjectaccessreviews"],
            &["create"],
            "/metrics with authentication: whether that user may get /metrics.",
        ),
    ]
}

/// Every kind the operator writes: a broker cluster's and an instance's own.
fn managed_kinds() -> Vec<build::ManagedKind> {
    // The kinds do not depend on the cluster's settings; any cluster will do.
    let any: BrokerCluster = BrokerCluster::example();
    let placeholder = Secret::new("");
    let objects: ClusterObjects = any.objects(&placeholder, &placeholder);
    let mut kinds = objects.kinds();
    kinds.extend(build::instance_kinds());
    kinds
}

fn rule(group: &str, resources: &[&str], verbs: &[&'static str], why: &'static str) -> Rule {
    let mut verbs = verbs.to_vec();
    verbs.sort_by_key(|v| VERB_ORDER.iter().position(|o| o == v));
    Rule {
        api_groups: vec![group.to_string()],
        resources: resources.iter().map(|r| r.to_string()).collect(),
        verbs,
        why: Some(why),
    }
}

/// `rules` as the YAML list under `rules:`, indented by `indent` spaces, each with its reason.
pub fn rules_yaml(rules: &[Rule], indent: usize) -> String {
    let pad = " ".repeat(indent);
    let list = |items: &[String]| {
        items
            .iter()
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    for r in rules {
        for line in r.why.map(|w| wrap(w, 96 - indent)).unwrap_or_default() {
            out.push_str(&format!("{pad}# {line}\n"));
        }
        out.push_str(&format!("{pad}- apiGroups: [{}]\n", list(&r.api_groups)));
        out.push_str(&format!("{pad}  resources: [{}]\n", list(&r.resources)));
        let verbs: Vec<String> = r.verbs.iter().map(|v| v.to_string()).collect();
        out.push_str(&format!("{pad}  verbs: [{}]\n", list(&verbs)));
    }
    out
}

/// Words of `text` in lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("one line at least");
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

const GENERATED: &str =
    "Generated by `make generate` from crates/tiermq-operator/src/rbac.rs; do not edit.";

/// `deploy/rbac.yaml`: ClusterRole + binding, and the leader-election Role + binding, for the
/// ServiceAccount `tiermq-operator` in `tiermq-system`.
pub fn deploy_yaml() -> String {
    format!(
        "# {GENERATED}\n# Least privilege: no wildcards.\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: tiermq-operator\nrules:\n{}\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: tiermq-operator\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: tiermq-operator\n\
         subjects:\n  - kind: ServiceAccount\n    name: tiermq-operator\n    namespace: tiermq-system\n\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: tiermq-operator-leader-election\nrules:\n{}\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: tiermq-operator-leader-election\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: tiermq-operator-leader-election\n\
         subjects:\n  - kind: ServiceAccount\n    name: tiermq-operator\n    namespace: tiermq-system\n",
        rules_yaml(&cluster_rules(), 2),
        rules_yaml(&leader_election_rules(), 2),
    )
}

/// The chart's `templates/clusterrole.yaml`: a ClusterRole, or with
/// `operator.watchNamespaces` (namespaced mode) the same rules as a Role in each of those
/// namespaces (every rule is on namespaced resources). With `metrics.authentication:
/// kubernetes` the ClusterRole also has [`metrics_auth_rules`] (cluster-scoped reviews, which a
/// Role cannot grant: the chart refuses that setting in namespaced mode).
pub fn chart_cluster_role() -> String {
    format!(
        "# {GENERATED}\n{{{{- if .Values.rbac.create }}}}\n\
         {{{{- range $ns := (.Values.operator.watchNamespaces | default (list \"\")) }}}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: {{{{ if $ns }}}}Role{{{{ else }}}}ClusterRole{{{{ end }}}}\n\
         metadata:\n  name: {{{{ include \"tiermq.fullname\" $ }}}}\n  {{{{- if $ns }}}}\n  namespace: {{{{ $ns }}}}\n  {{{{- end }}}}\n\
         \x20 labels:\n    {{{{- include \"tiermq.labels\" $ | nindent 4 }}}}\n\
         # Least privilege: no wildcards.\nrules:\n{}\
         {{{{- if and (not $ns) (eq $.Values.metrics.authentication \"kubernetes\") }}}}\n{}{{{{- end }}}}\n\
         {{{{- end }}}}\n{{{{- end }}}}\n",
        rules_yaml(&cluster_rules(), 2),
        rules_yaml(&metrics_auth_rules(), 2)
    )
}

/// The chart's `templates/role.yaml` (leader election in the release namespace).
pub fn chart_role() -> String {
    format!(
        "# {GENERATED}\n{{{{- if .Values.rbac.create }}}}\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n\
         metadata:\n  name: {{{{ include \"tiermq.fullname\" . }}}}-leader-election\n  namespace: {{{{ .Release.Namespace }}}}\n\
         \x20 labels:\n    {{{{- include \"tiermq.labels\" . | nindent 4 }}}}\nrules:\n{}{{{{- end }}}}\n",
        rules_yaml(&leader_election_rules(), 2)
    )
}

/// The managed kinds as `(API group, version, plural)`, each once, in first-seen order.
fn managed_resources() -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    for k in managed_kinds() {
        let r = (k.resource.group, k.resource.version, k.resource.plural);
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// A ValidatingAdmissionPolicy and its binding that confine the operator's writes of the kinds
/// it manages to objects labelled as its own. RBAC cannot say "only the EndpointSlices (or
/// Secrets, Services...) I created": its create, patch and delete on those kinds are
/// cluster-wide. With this policy, the operator's identity (`username`) can create only objects
/// carrying `app.kubernetes.io/managed-by: tiermq-operator`, and change or delete only objects
/// that already carry it; so it cannot rewrite another controller's EndpointSlices or delete
/// a Secret it did not make. `name` names both objects; `header` and `footer` wrap them (the
/// chart's condition and labels).
fn admission_policy_yaml(
    name: &str,
    username: &str,
    labels: &str,
    header: &str,
    footer: &str,
) -> String {
    let key = build::LABEL_MANAGED_BY;
    let value = build::MANAGED_BY;
    let managed = |o: &str| {
        format!(
            "has({o}.metadata.labels) && '{key}' in {o}.metadata.labels && \
             {o}.metadata.labels['{key}'] == '{value}'"
        )
    };
    let mut rules = String::new();
    for (group, version, plural) in managed_resources() {
        rules.push_str(&format!(
            "      - apiGroups: [\"{group}\"]\n        apiVersions: [\"{version}\"]\n        \
             operations: [\"CREATE\", \"UPDATE\", \"DELETE\"]\n        resources: [\"{plural}\"]\n"
        ));
    }
    format!(
        "# {GENERATED}\n{header}apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\n\
         metadata:\n  name: {name}\n{labels}\
         spec:\n  # {}\n  failurePolicy: Fail\n  matchConstraints:\n    resourceRules:\n{rules}\
         \x20 matchConditions:\n    - name: tiermq-operator\n      expression: \"request.userInfo.username == '{username}'\"\n\
         \x20 validations:\n\
         \x20   - expression: \"request.operation == 'CREATE' || ({})\"\n\
         \x20     message: \"the tiermq operator changes and deletes only objects labelled {key}={value}\"\n\
         \x20   - expression: \"request.operation == 'DELETE' || ({})\"\n\
         \x20     message: \"the tiermq operator writes only objects labelled {key}={value}\"\n\
         ---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\n\
         metadata:\n  name: {name}\n{labels}\
         spec:\n  policyName: {name}\n  validationActions: [\"Deny\"]\n{footer}",
        "RBAC grants the operator cluster-wide writes of these kinds; this confines them to its own objects.",
        managed("oldObject"),
        managed("object"),
    )
}

/// The chart's `templates/admissionpolicy.yaml` (value `rbac.admissionPolicy`).
pub fn chart_admission_policy() -> String {
    admission_policy_yaml(
        "{{ include \"tiermq.fullname\" . }}-managed-objects",
        "system:serviceaccount:{{ .Release.Namespace }}:{{ include \"tiermq.serviceAccountName\" . }}",
        "  labels:\n    {{- include \"tiermq.labels\" . | nindent 4 }}\n",
        "{{- if and .Values.rbac.create .Values.rbac.admissionPolicy }}\n",
        "{{- end }}\n",
    )
}

/// `deploy/admission-policy.yaml`, for the ServiceAccount `tiermq-operator` in `tiermq-system`.
pub fn deploy_admission_policy() -> String {
    admission_policy_yaml(
        "tiermq-operator-managed-objects",
        "system:serviceaccount:tiermq-system:tiermq-operator",
        "",
        "",
        "",
    )
}

/// Every generated RBAC file as `(path relative to the repository, content)`.
pub fn files() -> Vec<(&'static str, String)> {
    vec![
        ("deploy/rbac.yaml", deploy_yaml()),
        ("deploy/admission-policy.yaml", deploy_admission_policy()),
        (
            "charts/tiermq/templates/admissionpolicy.yaml",
            chart_admission_policy(),
        ),
        (
            "charts/tiermq/templates/clusterrole.yaml",
            chart_cluster_role(),
        ),
        ("charts/tiermq/templates/role.yaml", chart_role()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_managed_kind_is_granted_with_the_verbs_of_its_way_of_writing() {
        let rules = cluster_rules();
        for k in managed_kinds() {
            let r = rules
                .iter()
                .find(|r| {
                    r.api_groups.contains(&k.resource.group)
                        && r.resources.contains(&k.resource.plural)
                })
                .unwrap_or_else(|| panic!("{} not granted", k.resource.plural));
            assert_eq!(r.verbs, verbs_of(k.write), "{}", k.resource.plural);
        }
        let yaml = deploy_yaml();
        assert!(!yaml.contains('*'), "no wildcards");
        assert!(yaml.contains("# Leader election:"), "{yaml}");
    }
}
