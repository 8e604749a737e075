//! Per-client faults: one identity (a user, or one token) is refused, left hanging or answered
//! with an error, its open watches break, and every other client keeps working.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kubesim::apiserver::{ClientFaultMode, ClientSelector};
use serde_json::{Value, json};

use crate::common::{World, eventually, kubectl};

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

/// A namespace `team` with ServiceAccounts `a` and `b`, each allowed everything on ConfigMaps.
async fn two_service_accounts() -> World {
    let w = World::new().await;
    for sa in ["a", "b"] {
        w.service_account("team", sa).await;
        w.grant(
            "team",
            sa,
            &format!("cms-{sa}"),
            json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]),
        )
        .await;
    }
    w
}

async fn watch_from_now(
    api: &Api<ConfigMap>,
) -> futures::stream::BoxStream<'static, kube::Result<WatchEvent<ConfigMap>>> {
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.watch(&WatchParams::default().timeout(60), &rv)
        .await
        .unwrap()
        .boxed()
}

fn broken(next: Option<kube::Result<WatchEvent<ConfigMap>>>) -> bool {
    matches!(next, None | Some(Err(_)))
}

#[tokio::test]
async fn a_refused_client_is_cut_off_and_its_watch_breaks_while_another_keeps_working() {
    let w = two_service_accounts().await;
    let a: Api<ConfigMap> = Api::namespaced(w.token_client(&w.token("team", "a").token), "team");
    let b: Api<ConfigMap> = Api::namespaced(w.token_client(&w.token("team", "b").token), "team");
    let mut watch_a = watch_from_now(&a).await;
    let mut watch_b = watch_from_now(&b).await;

    w.server.client_faults().start(
        ClientSelector::user("system:serviceaccount:team:a"),
        ClientFaultMode::Refuse,
        Some(Duration::from_secs(3)),
    );
    let next = tokio::time::timeout(Duration::from_secs(2), watch_a.next())
        .await
        .expect("a's open watch breaks at once");
    assert!(broken(next), "a's watch must end, not deliver");
    // a's requests get no answer: a connection error, not a Status
    match a.get_opt("anything").await {
        Err(kube::Error::Api(s)) => panic!("a got an answer: {s:?}"),
        Err(_) => {}
        Ok(o) => panic!("a got an answer: {o:?}"),
    }
    // b reads, writes and watches as before
    b.create(&PostParams::default(), &cm("made-by-b"))
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(2), watch_b.next())
        .await
        .expect("b's watch goes on");
    match ev {
        Some(Ok(WatchEvent::Added(o))) => assert_eq!(o.name_any(), "made-by-b"),
        other => panic!("b's watch: {other:?}"),
    }
    // the window ends: a works again
    let seen = eventually(6, "a to be served again", || async {
        a.get_opt("made-by-b").await.ok().flatten()
    })
    .await;
    assert_eq!(seen.name_any(), "made-by-b");
    let refused: Vec<_> = w
        .server
        .request_log()
        .records_of("system:serviceaccount:team:a")
        .into_iter()
        .filter(|r| r.fault.as_deref() == Some("refuse"))
        .collect();
    assert!(!refused.is_empty(), "a's refused requests are logged");
    assert!(refused.iter().all(|r| r.code == 0));
    assert!(
        w.server
            .request_log()
            .records_of("system:serviceaccount:team:b")
            .iter()
            .all(|r| r.fault.is_none())
    );
}

#[tokio::test]
async fn error_and_hang_faults_hit_one_token_and_spare_another_of_the_same_account() {
    let w = two_service_accounts().await;
    let (t1, t2) = (w.token("team", "a"), w.token("team", "a"));
    let one: Api<ConfigMap> = Api::namespaced(w.token_client(&t1.token), "team");
    let two: Api<ConfigMap> = Api::namespaced(w.token_client(&t2.token), "team");
    let faults = w.server.client_faults();

    let mut watch_one = watch_from_now(&one).await;
    let conflict = faults.start(
        ClientSelector::credential(&t1.credential_id),
        ClientFaultMode::Error(409),
        None,
    );
    // the server ends the open watch; the client's re-watch would get the error
    let next = tokio::time::timeout(Duration::from_secs(2), watch_one.next())
        .await
        .expect("the watch ends at once");
    assert!(next.is_none(), "ended by the server: {next:?}");
    match one.create(&PostParams::default(), &cm("x")).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict")),
        other => panic!("expected 409, got {other:?}"),
    }
    two.create(&PostParams::default(), &cm("x")).await.unwrap();
    assert!(faults.stop(conflict));
    faults.start(
        ClientSelector::credential(&t1.credential_id),
        ClientFaultMode::Error(500),
        Some(Duration::from_secs(30)),
    );
    match one.get("x").await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (500, "InternalError")),
        other => panic!("expected 500, got {other:?}"),
    }
    faults.clear();

    // hang: no answer, the open watch goes silent, and breaks when the window ends
    let mut watch_one = watch_from_now(&one).await;
    let t0 = Instant::now();
    faults.start(
        ClientSelector::credential(&t1.credential_id),
        ClientFaultMode::Hang,
        Some(Duration::from_millis(1500)),
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(700), one.get_opt("x"))
            .await
            .is_err(),
        "a hung request gets no answer"
    );
    two.create(&PostParams::default(), &cm("during-hang"))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(4), watch_one.next())
        .await
        .expect("the watch breaks when the window ends");
    assert!(broken(next), "the hung watch must not deliver");
    assert!(
        t0.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t0.elapsed()
    );
    assert!(one.get_opt("during-hang").await.unwrap().is_some());

    let modes: Vec<(Option<String>, u16)> = w
        .server
        .request_log()
        .records()
        .into_iter()
        .filter(|r| {
            r.credential_id.as_deref() == Some(t1.credential_id.as_str()) && r.fault.is_some()
        })
        .map(|r| (r.fault, r.code))
        .collect();
    assert!(modes.contains(&(Some("error".into()), 409)), "{modes:?}");
    assert!(modes.contains(&(Some("error".into()), 500)), "{modes:?}");
    assert!(modes.contains(&(Some("hang".into()), 0)), "{modes:?}");
    assert!(
        w.server
            .request_log()
            .records()
            .iter()
            .filter(|r| r.credential_id.as_deref() == Some(t2.credential_id.as_str()))
            .all(|r| r.fault.is_none())
    );
}

#[tokio::test]
async fn the_fault_endpoint_is_for_the_admin_only() {
    let w = two_service_accounts().await;
    let admin = w.admin_kubeconfig();
    let a = w.token_kubeconfig("a", &w.token("team", "a").token);
    let fault =
        r#"{"user": "system:serviceaccount:team:a", "mode": "error", "code": 500, "seconds": 60}"#;
    let denied = kubectl(
        &a,
        &["create", "--raw", "/kubesim/v1/client-faults", "-f", "-"],
        Some(fault),
    )
    .await;
    assert!(!denied.ok);
    assert!(
        denied.stderr.contains(r#"forbidden: User "system:serviceaccount:team:a" cannot post path "/kubesim/v1/client-faults""#),
        "{}",
        denied.stderr
    );
    let made = kubectl(
        &admin,
        &["create", "--raw", "/kubesim/v1/client-faults", "-f", "-"],
        Some(fault),
    )
    .await;
    assert!(made.ok, "{}", made.stderr);
    let made: Value = serde_json::from_str(&made.stdout).unwrap();
    assert_eq!(made["mode"], "error");
    let id = made["id"].as_u64().expect("an id");
    let listed = kubectl(&admin, &["get", "--raw", "/kubesim/v1/client-faults"], None).await;
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed["items"][0]["id"], id);
    // a fails, the admin and b do not
    let failed = kubectl(
        &a,
        &["get", "--raw", "/api/v1/namespaces/team/configmaps"],
        None,
    )
    .await;
    assert!(
        failed.stderr.contains(
            "Error from server (InternalError): Internal error occurred: injected failure (kubesim client fault)"
        ),
        "{}",
        failed.stderr
    );
    let b = w.token_kubeconfig("b", &w.token("team", "b").token);
    assert!(
        kubectl(&b, &["-n", "team", "get", "configmaps"], None)
            .await
            .ok
    );
    let bad = kubectl(
        &admin,
        &["create", "--raw", "/kubesim/v1/client-faults", "-f", "-"],
        Some(r#"{"mode": "refuse"}"#),
    )
    .await;
    assert!(
        bad.stderr
            .contains("give exactly one of user and credentialId"),
        "{}",
        bad.stderr
    );
    let path = format!("/kubesim/v1/client-faults/{id}");
    assert!(kubectl(&admin, &["delete", "--raw", &path], None).await.ok);
    assert!(
        kubectl(&a, &["-n", "team", "get", "configmaps"], None)
            .await
            .ok
    );
    assert!(w.server.client_faults().active().is_empty());
}
