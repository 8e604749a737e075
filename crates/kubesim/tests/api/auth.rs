//! Authentication and authorization as a real API server does them: ServiceAccount tokens from
//! `kubectl create token`, 401 for bad ones, RBAC decisions and their 403 wording, `kubectl auth
//! can-i` / `whoami` / `--as`, and the request log.

use std::time::Duration;

use futures::StreamExt;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use serde_json::{Value, json};

use crate::common::{World, kubectl};

fn status_of<T: std::fmt::Debug>(r: kube::Result<T>) -> Box<kube::core::Status> {
    match r {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn cm(ns: &str, name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "data": {"k": "v"}}))
        .unwrap()
}

#[tokio::test]
async fn kubectl_create_token_issues_tokens_that_authenticate_as_the_service_account() {
    let w = World::new().await;
    let admin = w.admin_kubeconfig();
    w.service_account("team", "robot").await;
    let made = kubectl(&admin, &["-n", "team", "create", "token", "robot"], None).await;
    assert!(made.ok, "{}", made.stderr);
    let token = made.stdout.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let robot = w.token_kubeconfig("robot", token);
    let who = kubectl(&robot, &["auth", "whoami", "-o", "json"], None).await;
    assert!(who.ok, "{}", who.stderr);
    let who: Value = serde_json::from_str(&who.stdout).unwrap();
    let info = &who["status"]["userInfo"];
    assert_eq!(info["username"], "system:serviceaccount:team:robot");
    assert_eq!(
        info["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:team",
            "system:authenticated"
        ])
    );
    let sa_uid =
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(w.admin.clone(), "team")
            .get("robot")
            .await
            .unwrap()
            .metadata
            .uid;
    assert_eq!(info["uid"].as_str(), sa_uid.as_deref());
    assert!(
        info["extra"]["authentication.kubernetes.io/credential-id"][0]
            .as_str()
            .is_some_and(|c| c.starts_with("JTI=")),
        "{info}"
    );
    // the real server's limits on the lifetime
    let short = kubectl(
        &admin,
        &["-n", "team", "create", "token", "robot", "--duration=5m"],
        None,
    )
    .await;
    assert!(!short.ok);
    assert!(
        short.stderr.contains(r#"TokenRequest.authentication.k8s.io "robot" is invalid: spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes"#),
        "{}",
        short.stderr
    );
    let missing = kubectl(&admin, &["-n", "team", "create", "token", "nobody"], None).await;
    assert!(
        missing
            .stderr
            .contains(r#"serviceaccounts "nobody" not found"#),
        "{}",
        missing.stderr
    );

    // a token bound to a Pod dies with the Pod
    let unbound_pod = kubectl(
        &admin,
        &[
            "-n",
            "team",
            "create",
            "token",
            "robot",
            "--bound-object-kind=Pod",
            "--bound-object-name=p",
        ],
        None,
    )
    .await;
    assert!(
        unbound_pod.stderr.contains(r#"pods "p" not found"#),
        "{}",
        unbound_pod.stderr
    );
    let pods: Api<Pod> = Api::namespaced(w.admin.clone(), "team");
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}))
        .unwrap(),
    )
    .await
    .unwrap();
    let bound = kubectl(
        &admin,
        &[
            "-n",
            "team",
            "create",
            "token",
            "robot",
            "--bound-object-kind=Pod",
            "--bound-object-name=p",
        ],
        None,
    )
    .await;
    assert!(bound.ok, "{}", bound.stderr);
    let bound_kc = w.token_kubeconfig("bound", bound.stdout.trim());
    let who = kubectl(&bound_kc, &["auth", "whoami", "-o", "json"], None).await;
    let who: Value = serde_json::from_str(&who.stdout).unwrap();
    assert_eq!(
        who["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["p"]),
        "{who}"
    );
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    let after = kubectl(&bound_kc, &["auth", "whoami"], None).await;
    assert!(!after.ok);
    assert!(
        after
            .stderr
            .contains("You must be logged in to the server (Unauthorized)"),
        "{}",
        after.stderr
    );
}

#[tokio::test]
async fn bad_expired_and_orphaned_tokens_get_401() {
    let w = World::new().await;
    w.service_account("team", "robot").await;
    let get = |token: &str| {
        let c = w.token_client(token);
        async move { Api::<ConfigMap>::namespaced(c, "team").get("x").await }
    };
    let s = status_of(get("not-a-token").await);
    assert_eq!(
        (s.code, s.reason.as_str(), s.message.as_str()),
        (401, "Unauthorized", "Unauthorized")
    );
    // a well-formed token this server did not sign
    let forged = "eyJhbGciOiJIUzI1NiIsImtpZCI6Imt1YmVzaW0ifQ.e30.c2lnbmF0dXJl";
    assert_eq!(status_of(get(forged).await).code, 401);
    // expired
    let short = w
        .server
        .issue_token("team", "robot", Duration::from_secs(1))
        .unwrap();
    assert_eq!(
        status_of(get(&short.token).await).code,
        403,
        "valid: authenticated, not authorized"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(status_of(get(&short.token).await).code, 401, "expired");
    // its ServiceAccount deleted
    let t = w.token("team", "robot");
    assert_eq!(status_of(get(&t.token).await).code, 403);
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(w.admin.clone(), "team")
        .delete("robot", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(status_of(get(&t.token).await).code, 401);
    // kubectl says what a real server makes it say
    let kc = w.token_kubeconfig("bad", "not-a-token");
    let out = kubectl(&kc, &["get", "pods"], None).await;
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("error: You must be logged in to the server (the server has asked for the client to provide credentials)"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn forbidden_answers_are_worded_like_the_real_server() {
    let w = World::new().await;
    w.service_account("team", "robot").await;
    let t = w.token("team", "robot");
    let c = w.token_client(&t.token);
    let robot = "system:serviceaccount:team:robot";
    let forbid = |s: Box<kube::core::Status>| {
        assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"), "{s:?}");
        s.message
    };
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "team");
    assert_eq!(
        forbid(status_of(cms.get("x").await)),
        format!(
            r#"configmaps "x" is forbidden: User "{robot}" cannot get resource "configmaps" in API group "" in the namespace "team""#
        )
    );
    assert_eq!(
        forbid(status_of(cms.list(&ListParams::default()).await)),
        format!(
            r#"configmaps is forbidden: User "{robot}" cannot list resource "configmaps" in API group "" in the namespace "team""#
        )
    );
    // a create names no object: the name is in the body
    assert_eq!(
        forbid(status_of(
            cms.create(&PostParams::default(), &cm("team", "x")).await
        )),
        format!(
            r#"configmaps is forbidden: User "{robot}" cannot create resource "configmaps" in API group "" in the namespace "team""#
        )
    );
    assert_eq!(
        forbid(status_of(
            Api::<Namespace>::all(c.clone())
                .list(&ListParams::default())
                .await
        )),
        format!(
            r#"namespaces is forbidden: User "{robot}" cannot list resource "namespaces" in API group "" at the cluster scope"#
        )
    );
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::all(c.clone());
    assert_eq!(
        forbid(status_of(
            sts.watch(&WatchParams::default(), "0").await.map(|_| ())
        )),
        format!(
            r#"statefulsets.apps is forbidden: User "{robot}" cannot watch resource "statefulsets" in API group "apps" at the cluster scope"#
        )
    );
    let pods: Api<Pod> = Api::namespaced(c.clone(), "team");
    assert_eq!(
        forbid(status_of(
            pods.patch_status("p", &PatchParams::default(), &Patch::Merge(json!({})))
                .await
        )),
        format!(
            r#"pods "p" is forbidden: User "{robot}" cannot patch resource "pods/status" in API group "" in the namespace "team""#
        )
    );
    // the details name the resource and object
    let s = status_of(cms.get("x").await);
    assert_eq!(
        s.details
            .as_ref()
            .map(|d| (d.name.as_str(), d.kind.as_str())),
        Some(("x", "configmaps"))
    );
    // a binding to a role that does not exist is reported, as the real RBAC authorizer does
    w.create::<RoleBinding>(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "dangling", "namespace": "team"},
        "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "team"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "missing"}}),
    )
    .await;
    assert!(forbid(status_of(cms.get("x").await)).ends_with(
        r#"in the namespace "team": RBAC: role.rbac.authorization.k8s.io "missing" not found"#
    ));
    // anonymous: version and health are public, the rest is not
    let mut anon_cfg = w.server.token_config("");
    anon_cfg.auth_info = Default::default();
    let anon = kube::Client::try_from(anon_cfg).unwrap();
    assert!(anon.apiserver_version().await.is_ok());
    assert_eq!(
        forbid(status_of(
            Api::<Secret>::all(anon).list(&ListParams::default()).await
        )),
        r#"secrets is forbidden: User "system:anonymous" cannot list resource "secrets" in API group "" at the cluster scope"#
    );
    // kubectl prints it as it prints a real server's
    let kc = w.token_kubeconfig("robot", &t.token);
    let out = kubectl(&kc, &["-n", "team", "get", "configmap", "x"], None).await;
    assert!(
        out.stderr.contains(&format!(r#"Error from server (Forbidden): configmaps "x" is forbidden: User "{robot}" cannot get resource "configmaps" in API group "" in the namespace "team""#)),
        "{}",
        out.stderr
    );
}

/// `kubectl auth can-i` for a user; true for "yes" (exit 0), false for "no" (exit 1).
async fn can_i(kc: &std::path::Path, args: &[&str]) -> bool {
    let mut a = vec!["auth", "can-i"];
    a.extend_from_slice(args);
    let out = kubectl(kc, &a, None).await;
    match out.stdout.trim() {
        "yes" => {
            assert!(out.ok);
            true
        }
        "no" => false,
        other => panic!("kubectl auth can-i {args:?}: {other} {}", out.stderr),
    }
}

#[tokio::test]
async fn can_i_answers_from_rbac_for_names_subresources_and_non_resource_urls() {
    let w = World::new().await;
    w.service_account("team", "robot").await;
    w.service_account("other", "x").await;
    w.grant(
        "team",
        "robot",
        "reader",
        json!([{"apiGroups": [""], "resources": ["pods"], "resourceNames": ["web-0"], "verbs": ["get"]},
               {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
               {"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["update"]},
               {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]),
    )
    .await;
    w.create::<ClusterRole>(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "metrics-reader"},
        "rules": [{"nonResourceURLs": ["/metrics", "/debug/*"], "verbs": ["get"]}]}),
    )
    .await;
    w.create::<ClusterRoleBinding>(json!({"apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding", "metadata": {"name": "robot-metrics"},
        "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "team"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "metrics-reader"}}))
        .await;
    let t = w.token("team", "robot");
    let kc = w.token_kubeconfig("robot", &t.token);
    let yes = [
        vec!["get", "pods/web-0", "-n", "team"],
        vec!["get", "pods", "--subresource=log", "-n", "team"],
        vec!["get", "pods/web-1", "--subresource=log", "-n", "team"],
        vec![
            "update",
            "statefulsets",
            "--subresource=scale",
            "-n",
            "team",
        ],
        vec!["delete", "configmaps", "-n", "team"],
        vec!["get", "/metrics"],
        vec!["get", "/debug/pprof/heap"],
        vec!["get", "/healthz"],
        vec!["create", "selfsubjectaccessreviews.authorization.k8s.io"],
    ];
    let no = [
        vec!["get", "pods/web-1", "-n", "team"],
        vec!["list", "pods", "-n", "team"],
        vec!["get", "pods", "--subresource=exec", "-n", "team"],
        vec!["update", "statefulsets", "-n", "team"],
        vec!["delete", "configmaps", "-n", "other"],
        vec!["delete", "configmaps", "--all-namespaces"],
        vec!["post", "/metrics"],
        vec!["get", "/debug"],
        vec!["get", "/logs"],
    ];
    // independent questions: asked a few at a time to keep the test short
    let asked: Vec<(bool, bool, &Vec<&str>)> = futures::stream::iter(
        yes.iter()
            .map(|a| (true, a))
            .chain(no.iter().map(|a| (false, a))),
    )
    .map(|(want, args)| {
        let kc = kc.clone();
        async move { (want, can_i(&kc, args).await, args) }
    })
    .buffer_unordered(4)
    .collect()
    .await;
    for (want, got, args) in asked {
        assert_eq!(got, want, "kubectl auth can-i {args:?} as the robot");
    }
    // the admin answers for the robot with --as
    let admin = w.admin_kubeconfig();
    let as_robot = "--as=system:serviceaccount:team:robot";
    assert!(can_i(&admin, &["get", "pods/web-0", "-n", "team", as_robot]).await);
    assert!(!can_i(&admin, &["get", "pods/web-1", "-n", "team", as_robot]).await);
    assert!(
        can_i(&admin, &["get", "pods/web-1", "-n", "team"]).await,
        "the admin may"
    );
    // the robot may not impersonate anyone
    let out = kubectl(&kc, &["auth", "can-i", "get", "pods", "--as=alice"], None).await;
    assert!(
        out.stderr.contains(r#"users "alice" is forbidden: User "system:serviceaccount:team:robot" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{}",
        out.stderr
    );
    // --list shows the rules, names and non-resource URLs included
    let list = kubectl(&kc, &["auth", "can-i", "--list", "-n", "team"], None).await;
    assert!(list.ok, "{}", list.stderr);
    let line = |resource: &str| {
        list.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(resource))
            .unwrap_or_else(|| panic!("no {resource} in\n{}", list.stdout))
            .to_string()
    };
    assert!(
        line("pods").contains("[web-0]") && line("pods").contains("[get]"),
        "{}",
        list.stdout
    );
    assert!(line("pods/log").contains("[get]"));
    assert!(list.stdout.contains("[/metrics]"), "{}", list.stdout);
    // what the robot may do, it can do
    let made = kubectl(
        &kc,
        &[
            "-n",
            "team",
            "create",
            "configmap",
            "c",
            "--from-literal=a=b",
        ],
        None,
    )
    .await;
    assert!(made.ok, "{}", made.stderr);
    let got = kubectl(&kc, &["-n", "team", "get", "pod", "web-0"], None).await;
    assert!(
        got.stderr.contains(r#"pods "web-0" not found"#),
        "authorized, then 404: {}",
        got.stderr
    );
}

#[tokio::test]
async fn aggregated_cluster_roles_and_group_subjects_grant_like_the_real_authorizer() {
    let w = World::new().await;
    w.service_account("team", "robot").await;
    w.create::<ClusterRole>(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "tenant"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"tenant-part": "true"}}]}}),
    )
    .await;
    w.create::<ClusterRole>(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "tenant-configmaps", "labels": {"tenant-part": "true"}},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]}),
    )
    .await;
    // bound to every ServiceAccount of the namespace, in that namespace only
    w.create::<RoleBinding>(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "tenants", "namespace": "team"},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:serviceaccounts:team"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tenant"}}))
        .await;
    let c = w.token_client(&w.token("team", "robot").token);
    let in_team: Api<ConfigMap> = Api::namespaced(c.clone(), "team");
    assert!(in_team.list(&ListParams::default()).await.is_ok());
    assert_eq!(
        status_of(
            Api::<ConfigMap>::namespaced(c.clone(), "default")
                .list(&ListParams::default())
                .await
        )
        .code,
        403
    );
    assert_eq!(
        status_of(in_team.delete("x", &DeleteParams::default()).await).code,
        403
    );
    // a SubjectAccessReview asks for anyone
    let sar = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "system:serviceaccount:team:robot",
                 "groups": ["system:serviceaccounts:team"],
                 "resourceAttributes": {"namespace": "team", "verb": "list", "resource": "configmaps"}}});
    let req = http::Request::post("/apis/authorization.k8s.io/v1/subjectaccessreviews")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&sar).unwrap())
        .unwrap();
    let answer: Value = w.admin.request(req).await.unwrap();
    assert_eq!(answer["status"]["allowed"], true, "{answer}");
    assert!(
        answer["status"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(r#"RoleBinding "tenants/team" of ClusterRole "tenant""#)),
        "{answer}"
    );
}

#[tokio::test]
async fn the_request_log_has_one_line_per_request_with_its_rbac_verb_and_code() {
    let w = World::new().await;
    w.service_account("team", "robot").await;
    w.grant(
        "team",
        "robot",
        "cms",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]),
    )
    .await;
    let t = w.token("team", "robot");
    let cms: Api<ConfigMap> = Api::namespaced(w.token_client(&t.token), "team");
    cms.create(&PostParams::default(), &cm("team", "a"))
        .await
        .unwrap();
    cms.get("a").await.unwrap();
    cms.list(&ListParams::default()).await.unwrap();
    drop(
        cms.watch(&WatchParams::default().timeout(1), "0")
            .await
            .unwrap(),
    );
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap();
    let mut a = cms.get("a").await.unwrap();
    a.data = None;
    cms.replace("a", &PostParams::default(), &a).await.unwrap();
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    cms.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    let _ = Api::<Secret>::namespaced(w.token_client(&t.token), "team")
        .get("s")
        .await;
    let _ = cms.get("gone").await;

    let robot = "system:serviceaccount:team:robot";
    let seen: Vec<(String, String, String, String, u16)> = w
        .server
        .request_log()
        .records_of(robot)
        .into_iter()
        .map(|r| (r.verb, r.resource, r.namespace, r.name, r.code))
        .collect();
    let want = |v: &str, res: &str, name: &str, code: u16| {
        (
            v.to_string(),
            res.to_string(),
            "team".to_string(),
            name.to_string(),
            code,
        )
    };
    assert_eq!(
        seen,
        vec![
            want("create", "configmaps", "", 201),
            want("get", "configmaps", "a", 200),
            want("list", "configmaps", "", 200),
            want("watch", "configmaps", "", 200),
            want("patch", "configmaps", "a", 200),
            want("get", "configmaps", "a", 200),
            want("update", "configmaps", "a", 200),
            want("delete", "configmaps", "a", 200),
            want("deletecollection", "configmaps", "", 200),
            want("get", "secrets", "s", 403),
            want("get", "configmaps", "gone", 404),
        ]
    );
    let records = w.server.request_log().records_of(robot);
    assert!(
        records
            .iter()
            .all(|r| r.credential_id.as_deref() == Some(t.credential_id.as_str()))
    );
    assert!(records.windows(2).all(|p| p[0].time <= p[1].time));
    // the same lines are in the file, as JSON
    let file =
        kubesim::apiserver::RequestLog::read_file(&w.dir.path().join("requests.log")).unwrap();
    let from_file: Vec<_> = file.into_iter().filter(|r| r.user == robot).collect();
    assert_eq!(from_file, records);
    let raw = std::fs::read_to_string(w.dir.path().join("requests.log")).unwrap();
    let line = raw
        .lines()
        .find(|l| l.contains(r#""verb":"patch""#))
        .expect("a patch line");
    let v: Value = serde_json::from_str(line).unwrap();
    for key in [
        "time",
        "user",
        "verb",
        "apiGroup",
        "resource",
        "subresource",
        "namespace",
        "name",
        "code",
    ] {
        assert!(v.get(key).is_some(), "{key} in {line}");
    }
    // the admin's non-resource requests are logged by path
    let _ = w.admin.apiserver_version().await.unwrap();
    let version = w
        .server
        .request_log()
        .records_of("kubernetes-admin")
        .into_iter()
        .find(|r| r.path == "/version")
        .expect("the /version request");
    assert_eq!((version.verb.as_str(), version.code), ("get", 200));
}

/// `OwnerReferencesPermissionEnforcement`: setting `blockOwnerDeletion` on a reference needs
/// `update` on the owner's `finalizers`; the check is refused like the real plugin refuses it and
/// is written to the request log either way.
#[tokio::test]
async fn block_owner_deletion_needs_update_on_the_owners_finalizers() {
    let w = World::new().await;
    w.service_account("team", "robot").await;
    w.grant(
        "team",
        "robot",
        "cms",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]),
    )
    .await;
    let owner = Api::<ConfigMap>::namespaced(w.admin.clone(), "team")
        .create(&PostParams::default(), &cm("team", "owner"))
        .await
        .unwrap();
    let owned = |name: &str, block: bool| {
        let mut c = cm("team", name);
        c.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "owner".into(),
                uid: owner.metadata.uid.clone().unwrap(),
                controller: Some(true),
                block_owner_deletion: Some(block),
            },
        ]);
        c
    };
    let t = w.token("team", "robot");
    let cms: Api<ConfigMap> = Api::namespaced(w.token_client(&t.token), "team");
    // Without blockOwnerDeletion no finalizers permission is needed.
    cms.create(&PostParams::default(), &owned("free", false))
        .await
        .unwrap();
    let s = status_of(
        cms.create(&PostParams::default(), &owned("blocking", true))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"), "{s:?}");
    assert_eq!(
        s.message,
        r#"configmaps "blocking" is forbidden: cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on: , <nil>"#
    );
    // The same through a server-side apply.
    let s = status_of(
        cms.patch(
            "blocking",
            &PatchParams::apply("robot"),
            &Patch::Apply(owned("blocking", true)),
        )
        .await,
    );
    assert_eq!(s.code, 403, "{s:?}");
    w.grant(
        "team",
        "robot",
        "finalizers",
        json!([{"apiGroups": [""], "resources": ["configmaps/finalizers"], "verbs": ["update"]}]),
    )
    .await;
    cms.create(&PostParams::default(), &owned("blocking", true))
        .await
        .unwrap();
    let checks: Vec<(String, String, String, u16)> = w
        .server
        .request_log()
        .records_of("system:serviceaccount:team:robot")
        .into_iter()
        .filter(|r| r.subresource == "finalizers")
        .map(|r| (r.verb, r.resource, r.name, r.code))
        .collect();
    let check = |code| {
        (
            "update".to_string(),
            "configmaps".to_string(),
            "owner".to_string(),
            code,
        )
    };
    assert_eq!(checks, vec![check(403), check(403), check(200)]);
}
