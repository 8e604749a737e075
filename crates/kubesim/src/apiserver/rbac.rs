//! Authorization: RBAC evaluated the way the real authorizer evaluates it, over the Role,
//! ClusterRole, RoleBinding and ClusterRoleBinding objects in the store.
//!
//! - `system:masters` may do everything, whatever the bindings say (the real server's
//!   privileged-group authorizer).
//! - Otherwise a request is allowed when a rule of a role bound to the user allows it:
//!   ClusterRoleBindings everywhere, RoleBindings (to a Role or a ClusterRole) only in their own
//!   namespace. Subjects are `User`, `Group` and `ServiceAccount` (its namespace defaults to the
//!   binding's).
//! - A rule allows a resource request when its verbs (`*` or the verb), apiGroups (`*` or the
//!   group), resources (`*`, `pods`, `pods/log` for a subresource, `*/status` for one subresource
//!   of every resource) and resourceNames (none, or the requested name) all match; a non-resource
//!   request when its verbs and nonResourceURLs (`*`, exact, or a `prefix*`) match.
//! - ClusterRoles with an `aggregationRule` also carry the rules of every ClusterRole its
//!   selectors match (what the aggregation controller writes into them on a real cluster).
//! - Denials are 403 with the real server's wording, including `RBAC: clusterrole... not found`
//!   when a binding names a missing role ([`forbidden`]).
//!
//! [`bootstrap`] creates the roles every cluster starts with: `cluster-admin` (bound to
//! `system:masters`), `system:discovery`, `system:basic-user` and `system:public-info-viewer`.
//! The user-facing aggregated roles `admin`, `edit` and `view` are not created.

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde_json::{Value, json};

use super::authn::{MASTERS, UserInfo};
use super::error::ApiError;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{State, WriteOpts};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// What is asked: the authorizer's view of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Who asks (after impersonation).
    pub user: UserInfo,
    /// RBAC verb: get, list, watch, create, update, patch, delete, deletecollection (or
    /// impersonate, ...); for non-resource requests the lower-case HTTP method.
    pub verb: String,
    /// Whether this is a request on a resource (else on a non-resource URL).
    pub resource_request: bool,
    /// API group ("" for core).
    pub api_group: String,
    /// API version.
    pub api_version: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource ("" for none).
    pub subresource: String,
    /// Namespace ("" for cluster scope, or all namespaces).
    pub namespace: String,
    /// Object name ("" for collections and creates).
    pub name: String,
    /// URL path (non-resource requests).
    pub path: String,
}

impl Attributes {
    /// A resource request.
    pub fn resource(
        user: &UserInfo,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Self {
        Attributes {
            user: user.clone(),
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    /// The same request on a subresource.
    pub fn with_subresource(mut self, sub: &str) -> Self {
        self.subresource = sub.into();
        self
    }

    /// A non-resource request (`/healthz`, `/version`, ...).
    pub fn non_resource(user: &UserInfo, verb: &str, path: &str) -> Self {
        Attributes {
            user: user.clone(),
            verb: verb.into(),
            path: path.into(),
            ..Default::default()
        }
    }
}

/// The authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; the reason names the binding that allowed it (empty for `system:masters`).
    Allow(String),
    /// Not allowed; the reason lists RBAC evaluation errors (missing roles), often empty.
    Deny(String),
}

impl Decision {
    /// Whether the request may go ahead.
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// Decides a request.
pub fn authorize(st: &State, a: &Attributes) -> Decision {
    if a.user.groups.iter().any(|g| g == MASTERS) {
        return Decision::Allow(String::new());
    }
    let mut allowed_by = None;
    let errors = visit_rules(st, &a.user, &a.namespace, &mut |source, rule| {
        if rule_allows(a, rule) {
            allowed_by = Some(source.to_string());
            false
        } else {
            true
        }
    });
    match allowed_by {
        Some(by) => Decision::Allow(format!("RBAC: allowed by {by}")),
        None if errors.is_empty() => Decision::Deny(String::new()),
        None if errors.len() == 1 => Decision::Deny(format!("RBAC: {}", errors[0])),
        None => Decision::Deny(format!("RBAC: [{}]", errors.join(", "))),
    }
}

/// The 403 a denied request gets, worded like the real server's:
/// `pods "x" is forbidden: User "u" cannot get resource "pods" in API group "" in the
/// namespace "ns"` (`at the cluster scope` without a namespace; `forbidden: User "u" cannot get
/// path "/x"` for non-resource URLs).
pub fn forbidden(a: &Attributes, reason: &str) -> ApiError {
    let who = &a.user.username;
    let mut why = if !a.resource_request {
        format!("User {who:?} cannot {} path {:?}", a.verb, a.path)
    } else {
        let resource = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let scope = if a.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", a.namespace)
        };
        format!(
            "User {who:?} cannot {} resource {resource:?} in API group {:?} {scope}",
            a.verb, a.api_group
        )
    };
    if !reason.is_empty() {
        why = format!("{why}: {reason}");
    }
    let qualified = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let message = if qualified.is_empty() {
        format!("forbidden: {why}")
    } else if a.name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} {:?} is forbidden: {why}", a.name)
    };
    let mut details = json!({"kind": a.resource});
    if !a.name.is_empty() {
        details["name"] = json!(a.name);
    }
    if !a.api_group.is_empty() {
        details["group"] = json!(a.api_group);
    }
    ApiError::new(403, "Forbidden", message).with_details(details)
}

/// Every rule that applies to `user` in `namespace` ("" for cluster-wide rules only), and the
/// evaluation errors (what a SelfSubjectRulesReview reports).
pub fn rules_for(st: &State, user: &UserInfo, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
    let mut rules = vec![];
    let errors = visit_rules(st, user, namespace, &mut |_, rule| {
        rules.push(rule.clone());
        true
    });
    (rules, errors)
}

/// Whether one rule allows the request (the real `RuleAllows`).
pub fn rule_allows(a: &Attributes, rule: &PolicyRule) -> bool {
    let verb_ok = rule.verbs.iter().any(|v| v == "*" || *v == a.verb);
    if !verb_ok {
        return false;
    }
    if !a.resource_request {
        return rule.non_resource_urls.iter().flatten().any(|u| {
            u == "*"
                || *u == a.path
                || (u.ends_with('*') && a.path.starts_with(u.trim_end_matches('*')))
        });
    }
    let group_ok = rule
        .api_groups
        .iter()
        .flatten()
        .any(|g| g == "*" || *g == a.api_group);
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resource_ok = rule.resources.iter().flatten().any(|r| {
        r == "*"
            || *r == combined
            || (!a.subresource.is_empty()
                && r.len() == a.subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(&a.subresource))
    });
    let name_ok = match &rule.resource_names {
        None => true,
        Some(names) if names.is_empty() => true,
        Some(names) => names.contains(&a.name),
    };
    group_ok && resource_ok && name_ok
}

/// Where a rule came from, for the "allowed by" reason.
struct Source<'a> {
    binding_kind: &'static str,
    binding: String,
    role_kind: &'a str,
    role: &'a str,
    subject: String,
}

impl std::fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} of {} {:?} to {}",
            self.binding_kind, self.binding, self.role_kind, self.role, self.subject
        )
    }
}

fn all_of(st: &State, plural: &str, namespace: Option<&str>) -> Vec<Value> {
    match st.registry.get(RBAC_GROUP, "v1", plural) {
        Some(rt) => st.list(
            rt,
            namespace,
            &LabelSelector(vec![]),
            &FieldSelector(vec![]),
        ),
        None => vec![],
    }
}

/// Calls `visit` with every rule bound to `user` that applies in `namespace` until it returns
/// false; returns the errors met (roles that do not exist).
fn visit_rules(
    st: &State,
    user: &UserInfo,
    namespace: &str,
    visit: &mut dyn FnMut(&Source<'_>, &PolicyRule) -> bool,
) -> Vec<String> {
    let mut errors = vec![];
    let cluster_roles: Vec<ClusterRole> = all_of(st, "clusterroles", None)
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    let cluster_role_rules = |name: &str| -> Option<Vec<PolicyRule>> {
        let role = cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))?;
        let mut rules = role.rules.clone().unwrap_or_default();
        if let Some(agg) = &role.aggregation_rule {
            for sel in agg.cluster_role_selectors.iter().flatten() {
                let Ok(sel) = serde_json::to_value(sel)
                    .map_err(|e| e.to_string())
                    .and_then(|v| LabelSelector::from_object(&v))
                else {
                    continue;
                };
                for other in &cluster_roles {
                    if other.metadata.name.as_deref() != Some(name)
                        && sel.matches(&json!(other.metadata.labels))
                    {
                        rules.extend(other.rules.clone().unwrap_or_default());
                    }
                }
            }
        }
        Some(rules)
    };
    for v in all_of(st, "clusterrolebindings", None) {
        let Ok(b) = serde_json::from_value::<ClusterRoleBinding>(v) else {
            continue;
        };
        let Some(subject) = applies_to(user, b.subjects.as_deref().unwrap_or_default(), "") else {
            continue;
        };
        let rules = if b.role_ref.kind == "ClusterRole" {
            cluster_role_rules(&b.role_ref.name)
        } else {
            errors.push(format!(
                "unsupported role reference kind: {:?}",
                b.role_ref.kind
            ));
            continue;
        };
        let Some(rules) = rules else {
            errors.push(format!(
                "clusterrole.rbac.authorization.k8s.io {:?} not found",
                b.role_ref.name
            ));
            continue;
        };
        let source = Source {
            binding_kind: "ClusterRoleBinding",
            binding: b.metadata.name.clone().unwrap_or_default(),
            role_kind: &b.role_ref.kind,
            role: &b.role_ref.name,
            subject,
        };
        for r in &rules {
            if !visit(&source, r) {
                return errors;
            }
        }
    }
    if namespace.is_empty() {
        return errors;
    }
    for v in all_of(st, "rolebindings", Some(namespace)) {
        let Ok(b) = serde_json::from_value::<RoleBinding>(v) else {
            continue;
        };
        let Some(subject) = applies_to(user, b.subjects.as_deref().unwrap_or_default(), namespace)
        else {
            continue;
        };
        let rules = match b.role_ref.kind.as_str() {
            "ClusterRole" => cluster_role_rules(&b.role_ref.name).ok_or_else(|| {
                format!(
                    "clusterrole.rbac.authorization.k8s.io {:?} not found",
                    b.role_ref.name
                )
            }),
            "Role" => st
                .registry
                .get(RBAC_GROUP, "v1", "roles")
                .and_then(|rt| st.get(rt, Some(namespace), &b.role_ref.name).ok())
                .and_then(|v| serde_json::from_value::<Role>(v).ok())
                .map(|r| r.rules.unwrap_or_default())
                .ok_or_else(|| {
                    format!(
                        "role.rbac.authorization.k8s.io {:?} not found",
                        b.role_ref.name
                    )
                }),
            other => Err(format!("unsupported role reference kind: {other:?}")),
        };
        let rules = match rules {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let source = Source {
            binding_kind: "RoleBinding",
            binding: format!(
                "{}/{namespace}",
                b.metadata.name.clone().unwrap_or_default()
            ),
            role_kind: &b.role_ref.kind,
            role: &b.role_ref.name,
            subject,
        };
        for r in &rules {
            if !visit(&source, r) {
                return errors;
            }
        }
    }
    errors
}

/// The first subject that is `user` (a RoleBinding's ServiceAccount subjects default to its
/// namespace), described as the real server describes it.
fn applies_to(
    user: &UserInfo,
    subjects: &[k8s_openapi::api::rbac::v1::Subject],
    binding_ns: &str,
) -> Option<String> {
    subjects.iter().find_map(|s| {
        let hit = match s.kind.as_str() {
            "User" => user.username == s.name,
            "Group" => user.groups.contains(&s.name),
            "ServiceAccount" => {
                let ns = s
                    .namespace
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(binding_ns);
                !ns.is_empty()
                    && user.username == super::authn::service_account_username(ns, &s.name)
            }
            _ => false,
        };
        hit.then(|| match s.kind.as_str() {
            "ServiceAccount" => {
                let ns = s
                    .namespace
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(binding_ns);
                format!("ServiceAccount \"{}/{ns}\"", s.name)
            }
            kind => format!("{kind} {:?}", s.name),
        })
    })
}

/// Creates the roles and bindings every cluster starts with (see the module docs).
pub fn bootstrap(st: &mut State) {
    let meta = |name: &str| {
        json!({"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}})
    };
    let roles = [
        (
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                   {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
            vec!["system:masters"],
        ),
        (
            "system:discovery",
            json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                "/openapi", "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
            vec!["system:authenticated"],
        ),
        (
            "system:basic-user",
            json!([{"apiGroups": ["authorization.k8s.io"],
                    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                   {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]}]),
            vec!["system:authenticated"],
        ),
        (
            "system:public-info-viewer",
            json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"],
                "verbs": ["get"]}]),
            vec!["system:authenticated", "system:unauthenticated"],
        ),
    ];
    let opts = WriteOpts {
        field_manager: "kube-apiserver".into(),
        ..Default::default()
    };
    let (Some(cr), Some(crb)) = (
        st.registry.get(RBAC_GROUP, "v1", "clusterroles").cloned(),
        st.registry
            .get(RBAC_GROUP, "v1", "clusterrolebindings")
            .cloned(),
    ) else {
        return;
    };
    for (name, rules, groups) in roles {
        let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": meta(name), "rules": rules});
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"kind": "Group", "apiGroup": RBAC_GROUP, "name": g}))
            .collect();
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": meta(name), "subjects": subjects,
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name}});
        st.create(&cr, None, role, &opts)
            .expect("bootstrap ClusterRoles are valid");
        st.create(&crb, None, binding, &opts)
            .expect("bootstrap ClusterRoleBindings are valid");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: Value) -> PolicyRule {
        serde_json::from_value(v).unwrap()
    }

    fn sa() -> UserInfo {
        UserInfo::service_account("ns", "sa")
    }

    #[test]
    fn rules_match_verbs_groups_resources_subresources_and_names() {
        let get_pod_x = Attributes::resource(&sa(), "get", "", "pods", "ns", "x");
        let r = rule(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}));
        assert!(rule_allows(&get_pod_x, &r));
        assert!(!rule_allows(
            &Attributes::resource(&sa(), "list", "", "pods", "ns", ""),
            &r
        ));
        assert!(!rule_allows(
            &Attributes::resource(&sa(), "get", "apps", "pods", "ns", "x"),
            &r
        ));
        // a subresource needs its own rule, `*/sub` or `*`
        let log = get_pod_x.clone().with_subresource("log");
        assert!(!rule_allows(&log, &r));
        assert!(rule_allows(
            &log,
            &rule(json!({"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}))
        ));
        assert!(rule_allows(
            &log,
            &rule(json!({"apiGroups": ["*"], "resources": ["*/log"], "verbs": ["*"]}))
        ));
        assert!(!rule_allows(
            &log,
            &rule(json!({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]}))
        ));
        assert!(rule_allows(
            &log,
            &rule(json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}))
        ));
        // resourceNames limit to those names; a list has no name
        let named = rule(
            json!({"apiGroups": [""], "resources": ["pods"], "resourceNames": ["x"], "verbs": ["get", "list"]}),
        );
        assert!(rule_allows(&get_pod_x, &named));
        assert!(!rule_allows(
            &Attributes::resource(&sa(), "get", "", "pods", "ns", "y"),
            &named
        ));
        assert!(!rule_allows(
            &Attributes::resource(&sa(), "list", "", "pods", "ns", ""),
            &named
        ));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_prefix() {
        let r = rule(json!({"nonResourceURLs": ["/healthz", "/metrics/*"], "verbs": ["get"]}));
        let get = |p: &str| Attributes::non_resource(&sa(), "get", p);
        assert!(rule_allows(&get("/healthz"), &r));
        assert!(!rule_allows(&get("/healthz/ping"), &r));
        assert!(rule_allows(&get("/metrics/x/y"), &r));
        assert!(!rule_allows(
            &Attributes::non_resource(&sa(), "post", "/healthz"),
            &r
        ));
        // a resource rule never matches a non-resource request
        let res = rule(json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}));
        assert!(!rule_allows(&get("/healthz"), &res));
    }

    #[test]
    fn forbidden_messages_are_worded_like_the_real_server() {
        let m = |a: &Attributes| forbidden(a, "").message;
        assert_eq!(
            m(&Attributes::resource(&sa(), "get", "", "pods", "ns", "x")),
            r#"pods "x" is forbidden: User "system:serviceaccount:ns:sa" cannot get resource "pods" in API group "" in the namespace "ns""#
        );
        assert_eq!(
            m(&Attributes::resource(
                &sa(),
                "list",
                "apps",
                "statefulsets",
                "",
                ""
            )),
            r#"statefulsets.apps is forbidden: User "system:serviceaccount:ns:sa" cannot list resource "statefulsets" in API group "apps" at the cluster scope"#
        );
        assert_eq!(
            m(&Attributes::resource(&sa(), "get", "", "pods", "ns", "x").with_subresource("log")),
            r#"pods "x" is forbidden: User "system:serviceaccount:ns:sa" cannot get resource "pods/log" in API group "" in the namespace "ns""#
        );
        assert_eq!(
            m(&Attributes::non_resource(&sa(), "get", "/metrics")),
            r#"forbidden: User "system:serviceaccount:ns:sa" cannot get path "/metrics""#
        );
        let e = forbidden(
            &Attributes::resource(&sa(), "get", "", "pods", "ns", "x"),
            r#"RBAC: role.rbac.authorization.k8s.io "r" not found"#,
        );
        assert!(
            e.message.ends_with(
                r#"in the namespace "ns": RBAC: role.rbac.authorization.k8s.io "r" not found"#
            ),
            "{}",
            e.message
        );
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
    }
}
