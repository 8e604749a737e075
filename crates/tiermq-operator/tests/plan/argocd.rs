//! The Argo CD health checks shipped with the chart (`charts/tiermq/argocd/*.lua`), run by
//! `lua5.4` against statuses the operator's own code writes: the planner driven through every
//! migration phase by the simulated world, then `final_status` (as the reconciler records it),
//! and the reconciler's status functions for a permanent problem, repeated failures and a pause.
//! The object reaches Lua as a table literal printed from its JSON, the form Argo CD hands the
//! script (`obj`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::Utc;
use serde_json::{Value, json};
use tiermq_crd::{
    ClusterKind, MigrationPhase, RabbitMQInstance, RabbitMQInstanceStatus, SharedCluster, Tier,
};
use tiermq_operator::controller::instance::{
    degraded_status, final_status, paused_status, permanent_status,
};
use tiermq_operator::controller::plan::Plan;
use tiermq_operator::error::Error;

use crate::common::*;

use MigrationPhase::*;

fn chart_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../charts/tiermq/argocd")
        .join(name)
}

/// `lua5.4` from PATH; `None` (test skipped) when missing outside CI, a panic under CI.
fn lua(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("lua5.4"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let why = "lua5.4 is not installed (run `make setup`, which installs Debian's lua5.4)";
        if tiermq_testkit::tools::under_ci() {
            panic!("{test}: {why}; CI must not skip this test");
        }
        eprintln!("SKIPPED {test}: {why}");
    }
    found
}

/// `v` as a Lua expression: objects as tables with string keys, arrays as sequences, `null`
/// left out (Lua has no nil table entries), strings with every non-printable or quote byte
/// escaped as `\ddd`.
fn lua_literal(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut out = String::from("\"");
            for b in s.bytes() {
                if (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\' {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("\\{b:03}"));
                }
            }
            out.push('"');
            out
        }
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(lua_literal).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(o) => {
            let items: Vec<String> = o
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_literal(&json!(k)), lua_literal(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// Runs the health script on each object; returns `(status, message)` per object, in order.
fn health(lua: &Path, script: &str, objects: &[Value]) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = String::new();
    for o in objects {
        runner.push_str(&format!(
            "obj = {}\nlocal hs = dofile({})\nio.write(hs.status, \"\\t\", hs.message or \"\", \"\\n\")\n",
            lua_literal(o),
            lua_literal(&json!(chart_file(script).to_str().unwrap()))
        ));
    }
    let path = dir.path().join("run.lua");
    std::fs::write(&path, runner).unwrap();
    let out = Command::new(lua).arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "lua5.4 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<(String, String)> = text
        .lines()
        .map(|l| {
            let (s, m) = l.split_once('\t').unwrap();
            (s.to_string(), m.to_string())
        })
        .collect();
    assert_eq!(rows.len(), objects.len(), "one health per object: {text}");
    rows
}

fn instance(w: &World, status: Option<&RabbitMQInstanceStatus>) -> RabbitMQInstance {
    let mut v = json!({
        "apiVersion": "tiermq.io/v1alpha1", "kind": "RabbitMQInstance",
        "metadata": {"name": "orders", "namespace": NS, "uid": "u1", "generation": w.generation},
        "spec": serde_json::to_value(&w.spec).unwrap(),
    });
    if let Some(s) = status {
        v["status"] = serde_json::to_value(s).unwrap();
    }
    serde_json::from_value(v).unwrap()
}

/// The status the reconciler records for plan `p` of world `w`.
fn recorded(w: &World, p: &Plan) -> RabbitMQInstanceStatus {
    final_status(&instance(w, None), p, w.now).unwrap()
}

/// One reconcile of `w`, then what Argo CD is given for it.
fn step(w: &mut World) -> (MigrationPhase, RabbitMQInstance) {
    let p = w.reconcile();
    (p.phase, instance(w, Some(&recorded(w, &p))))
}

/// Reconciles `w` until `done`, keeping the first recorded object of every phase.
fn walk(
    w: &mut World,
    seen: &mut BTreeMap<MigrationPhase, RabbitMQInstance>,
    done: impl Fn(&World) -> bool,
) {
    for _ in 0..300 {
        if w.dedicated.exists {
            w.dedicated.ready = true;
        }
        w.consume(ClusterKind::Shared, 5);
        w.consume(ClusterKind::Dedicated, 5);
        w.tick(10);
        for k in [ClusterKind::Shared, ClusterKind::Dedicated] {
            w.sample_lagging(k);
        }
        let (phase, obj) = step(w);
        seen.entry(phase).or_insert(obj);
        if done(w) {
            return;
        }
    }
    panic!("did not settle: {:?}", w.phases);
}

#[test]
fn the_argo_cd_health_check_reads_every_phase_as_the_operator_writes_it() {
    let Some(lua) = lua("the_argo_cd_health_check_reads_every_phase_as_the_operator_writes_it")
    else {
        return;
    };
    let mut cases: Vec<(&str, RabbitMQInstance, &str)> = Vec::new();

    // Every migration phase of an upgrade, then of an aborted downgrade.
    let mut w = World::new(Tier::Shared);
    let (_, stable_shared) = step(&mut w);
    w.publish_via_service(20);
    w.set_tier(Tier::Dedicated);
    let mut seen = BTreeMap::new();
    walk(&mut w, &mut seen, |w| {
        w.phase() == Stable && w.status.tier == Some(Tier::Dedicated)
    });
    let (_, stable_dedicated) = step(&mut w);
    w.set_tier(Tier::Shared);
    walk(&mut w, &mut seen, |w| w.phase() == DualWriteDualRead);
    w.set_tier(Tier::Dedicated);
    walk(&mut w, &mut seen, |w| w.phase() == Stable);
    for phase in [
        PreparingDestination,
        DualWriteDualRead,
        SingleWriteDualRead,
        DrainingSource,
        DestinationOnly,
        Completed,
        Aborting,
    ] {
        let obj = seen
            .remove(&phase)
            .unwrap_or_else(|| panic!("{phase:?} recorded"));
        cases.push((phase.as_str(), obj, "Progressing"));
    }
    cases.push(("stable shared", stable_shared.clone(), "Healthy"));
    cases.push(("stable dedicated", stable_dedicated, "Healthy"));

    // A held flip.
    let mut w = World::new(Tier::Shared);
    w.shared.ready = false;
    w.set_tier(Tier::Dedicated);
    let (phase, held) = step(&mut w);
    assert_eq!(phase, Blocked);
    cases.push(("held flip", held, "Progressing"));

    // A flip waiting for its maintenance window (it starts by itself when the window opens:
    // Progressing, like a held flip; not Suspended, which Argo CD reads as paused by someone).
    let mut w = World::new(Tier::Shared);
    w.spec.migration.window = Some(tiermq_crd::MaintenanceWindow {
        days: vec![tiermq_crd::Weekday::Sat],
        start_time: "22:00".into(),
        end_time: "02:00".into(),
    });
    w.set_tier(Tier::Dedicated);
    let (phase, waiting) = step(&mut w);
    assert_eq!(phase, Blocked);
    cases.push(("waiting for the window", waiting, "Progressing"));

    // A drain past its timeout (one hour) with nobody consuming.
    let mut w = World::new(Tier::Shared);
    w.publish_via_service(50);
    w.set_tier(Tier::Dedicated);
    let mut timed_out = None;
    for _ in 0..200 {
        if w.dedicated.exists {
            w.dedicated.ready = true;
        }
        w.tick(100);
        for k in [ClusterKind::Shared, ClusterKind::Dedicated] {
            w.sample_lagging(k);
        }
        let (_, obj) = step(&mut w);
        if obj
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.type_ == tiermq_crd::conditions::DRAIN_TIMED_OUT && c.status == "True")
        {
            timed_out = Some(obj);
            break;
        }
    }
    cases.push((
        "drain timed out",
        timed_out.expect("drain timed out"),
        "Degraded",
    ));

    // The reconciler's own status writes on a stable instance.
    let base = stable_shared.status.clone().unwrap();
    let w = World::new(Tier::Shared);
    let (invalid, _) = permanent_status(
        &base,
        1,
        tiermq_crd::conditions::reasons::SHARED_CLUSTER_NOT_FOUND,
        "SharedCluster ops/main does not exist",
        Utc::now(),
    );
    cases.push(("invalid spec", instance(&w, Some(&invalid)), "Degraded"));
    let (degraded, _) = degraded_status(
        &base,
        1,
        &Error::NotReady("the dedicated cluster is not ready".into()),
        Utc::now(),
    );
    cases.push(("degraded", instance(&w, Some(&degraded)), "Degraded"));
    let (paused, _) = paused_status(&base, 1, Utc::now());
    let mut paused = instance(&w, Some(&paused));
    paused.metadata.annotations = Some(
        [("tiermq.io/paused".to_string(), "true".to_string())]
            .into_iter()
            .collect(),
    );
    cases.push(("paused", paused, "Suspended"));
    let mut annotated_only = instance(&w, Some(&base));
    annotated_only.metadata.annotations = Some(
        [("tiermq.io/paused".to_string(), " True".to_string())]
            .into_iter()
            .collect(),
    );
    cases.push(("pause not yet recorded", annotated_only, "Suspended"));
    let mut newer_spec = instance(&w, Some(&base));
    newer_spec.metadata.generation = Some(2);
    cases.push(("generation not observed", newer_spec, "Progressing"));
    cases.push(("no status", instance(&w, None), "Progressing"));

    let objects: Vec<Value> = cases
        .iter()
        .map(|(_, o, _)| serde_json::to_value(o).unwrap())
        .collect();
    let got = health(&lua, "rabbitmqinstance-health.lua", &objects);
    let mut wrong = Vec::new();
    for ((name, _, want), (status, message)) in cases.iter().zip(&got) {
        if status != want {
            wrong.push(format!("{name}: want {want}, got {status} ({message})"));
        }
        assert!(!message.is_empty(), "{name}: a message");
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The messages say why, from the conditions.
    let by_name = |n: &str| &got[cases.iter().position(|c| c.0 == n).unwrap()].1;
    assert!(
        by_name("drain timed out").contains("BacklogRemains"),
        "{}",
        by_name("drain timed out")
    );
    assert!(
        by_name("held flip").contains("InstanceNotInService"),
        "{}",
        by_name("held flip")
    );
    assert!(
        by_name("waiting for the window").contains("OutsideMaintenanceWindow")
            && by_name("waiting for the window").contains("2026-01-03T22:00:00Z"),
        "{}",
        by_name("waiting for the window")
    );
    assert!(
        by_name("paused").contains("PausedByAnnotation"),
        "{}",
        by_name("paused")
    );
}

fn shared_cluster(generation: i64, status: Option<Value>) -> Value {
    let mut v = json!({
        "apiVersion": "tiermq.io/v1alpha1", "kind": "SharedCluster",
        "metadata": {"name": "main", "namespace": "ops", "uid": "s", "generation": generation},
        "spec": {"replicas": 3},
    });
    if let Some(s) = status {
        v["status"] = s;
    }
    v
}

#[test]
fn the_argo_cd_health_check_reads_a_shared_cluster() {
    use tiermq_operator::controller::shared_cluster::desired_status;
    let Some(lua) = lua("the_argo_cd_health_check_reads_a_shared_cluster") else {
        return;
    };
    let me = tiermq_crd::ClusterRef {
        kind: ClusterKind::Shared,
        name: "main".into(),
        namespace: "ops".into(),
    };
    let sts = |ready: i32| -> k8s_openapi::api::apps::v1::StatefulSet {
        serde_json::from_value(json!({"metadata": {"name": "main"},
            "status": {"replicas": 3, "readyReplicas": ready}}))
        .unwrap()
    };
    let sc: SharedCluster = serde_json::from_value(shared_cluster(2, None)).unwrap();
    let status = |ready: i32| {
        serde_json::to_value(desired_status(
            &sc,
            Some(&sts(ready)),
            None,
            std::iter::empty(),
            &me,
            Utc::now(),
        ))
        .unwrap()
    };
    let mut stalled = status(3);
    for c in stalled["conditions"].as_array_mut().unwrap() {
        if c["type"] == "Stalled" {
            c["status"] = json!("True");
            c["reason"] = json!("NameConflict");
        }
    }
    let cases = [
        (shared_cluster(2, Some(status(3))), "Healthy"),
        (shared_cluster(2, Some(status(1))), "Progressing"),
        (shared_cluster(3, Some(status(3))), "Progressing"),
        (shared_cluster(2, None), "Progressing"),
        (shared_cluster(2, Some(stalled)), "Degraded"),
    ];
    let objects: Vec<Value> = cases.iter().map(|c| c.0.clone()).collect();
    let got = health(&lua, "sharedcluster-health.lua", &objects);
    let statuses: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    let want: Vec<&str> = cases.iter().map(|c| c.1).collect();
    assert_eq!(statuses, want, "{got:?}");
}
