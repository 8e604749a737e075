//! The chart's monitoring toggles through real Helm: the monitors select what the operator's code
//! really labels and names (the metrics Service, the broker pods and their `prometheus` port),
//! the alerting rules pass `promtool check rules` and fire in `promtool test rules` exactly when
//! they should, and every metric the rules and the dashboard query is one the operator exports
//! (read from its own registry) or a RabbitMQ metric (those are checked against a real broker's
//! `/metrics` by the `broker_config` test).
//!
//! The Prometheus Operator's CRDs are not available here, so the monitors and the rule are not
//! validated against its schemas; their fields are checked one by one below.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tiermq_operator::build::{self, BrokerCluster};
use tiermq_operator::metrics::Metrics;
use tiermq_testkit::promql::{exposed_names, metric_names};
use tiermq_testkit::tools::{self, Tool};

use crate::common::{Tools, chart, root, yaml_docs};

const RELEASE: &str = "tiermq";
const NAMESPACE: &str = "tiermq-system";

fn monitoring_values() -> String {
    root()
        .join("charts/tiermq/ci/monitoring-values.yaml")
        .display()
        .to_string()
}

async fn render(t: &Tools, extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let values = monitoring_values();
    let mut args = vec![
        "template",
        RELEASE,
        chart.as_str(),
        "-n",
        NAMESPACE,
        "-f",
        values.as_str(),
    ];
    args.extend_from_slice(extra);
    yaml_docs(&t.helm(&args).await.ok())
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

/// `selector.matchLabels` is a subset of `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .expect("matchLabels")
        .iter()
        .all(|(k, v)| &labels[k] == v)
}

fn helm(test: &str) -> Option<Tools> {
    let helm = tools::require(Tool::Helm, test)?;
    Some(Tools::new(Some(helm), tools::MACHINE_KUBECTL.into(), None))
}

#[tokio::test]
async fn monitors_select_the_operator_and_every_broker_the_operator_labels() {
    let Some(t) =
        helm("monitoring::monitors_select_the_operator_and_every_broker_the_operator_labels")
    else {
        return;
    };
    let docs = render(&t, &[]).await;
    let service = find(&docs, "Service");
    let deployment = find(&docs, "Deployment");

    // The operator's ServiceMonitor: the metrics Service, its port, the instance's own labels.
    let sm = find(&docs, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "kube-prometheus-stack");
    assert!(selects(
        &sm["spec"]["selector"],
        &service["metadata"]["labels"]
    ));
    assert_eq!(
        sm["spec"]["namespaceSelector"],
        json!({"matchNames": [NAMESPACE]})
    );
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(ep["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(
        (&ep["path"], &ep["interval"], &ep["honorLabels"]),
        (&json!("/metrics"), &json!("15s"), &json!(true))
    );

    // The brokers' PodMonitor selects the pods the operator's StatefulSet builder makes, on the
    // container port of the same name, in any namespace (dedicated clusters live with their
    // instance), and copies the cluster labels the builder sets.
    let cluster = BrokerCluster::example();
    let sts = build::statefulset::build(&cluster);
    let pod = sts.spec.as_ref().unwrap().template.clone();
    let pod_labels = serde_json::to_value(pod.metadata.unwrap().labels.unwrap()).unwrap();
    let ports: Vec<String> = pod.spec.unwrap().containers[0]
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.clone())
        .collect();
    let pm = find(&docs, "PodMonitor");
    assert!(
        selects(&pm["spec"]["selector"], &pod_labels),
        "{} vs {pod_labels}",
        pm["spec"]["selector"]
    );
    assert!(
        !selects(
            &pm["spec"]["selector"],
            &deployment["spec"]["template"]["metadata"]["labels"]
        ),
        "the broker monitor must not select the operator"
    );
    assert_eq!(pm["spec"]["namespaceSelector"], json!({"any": true}));
    let ep = &pm["spec"]["podMetricsEndpoints"][0];
    assert_eq!(ep["port"], build::PORT_NAME_PROMETHEUS);
    assert!(ports.contains(&build::PORT_NAME_PROMETHEUS.to_string()));
    assert_eq!(
        (&ep["path"], &ep["interval"]),
        (&json!("/metrics"), &json!("1m"))
    );
    // Kubernetes meta labels: non-alphanumerics of the pod label become underscores.
    let meta = |label: &str| {
        format!(
            "__meta_kubernetes_pod_label_{}",
            label.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        )
    };
    assert_eq!(
        ep["relabelings"],
        json!([
            {"sourceLabels": [meta(build::LABEL_CLUSTER)], "targetLabel": "tiermq_cluster"},
            {"sourceLabels": [meta(build::LABEL_CLUSTER_KIND)], "targetLabel": "tiermq_cluster_kind"},
        ])
    );
    assert!(pod_labels[build::LABEL_CLUSTER_KIND].is_string());

    // The other kinds: a PodMonitor for the operator, a ServiceMonitor for the brokers, which
    // finds the port on the cluster Service the operator builds.
    let docs = render(
        &t,
        &[
            "--set",
            "monitoring.operator.kind=PodMonitor,monitoring.brokers.kind=ServiceMonitor",
        ],
    )
    .await;
    let pm = find(&docs, "PodMonitor");
    assert!(selects(
        &pm["spec"]["selector"],
        &deployment["spec"]["template"]["metadata"]["labels"]
    ));
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    let sm = find(&docs, "ServiceMonitor");
    let svc = build::cluster_service::build(&cluster);
    let svc_labels = serde_json::to_value(svc.metadata.labels.unwrap()).unwrap();
    assert!(selects(&sm["spec"]["selector"], &svc_labels));
    assert!(
        svc.spec
            .unwrap()
            .ports
            .unwrap()
            .iter()
            .any(|p| p.name.as_deref() == Some(build::PORT_NAME_PROMETHEUS))
    );
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        build::PORT_NAME_PROMETHEUS
    );

    // A ServiceMonitor without the Service it scrapes is refused with the way out.
    let chart = chart();
    let values = monitoring_values();
    let err = t
        .helm(&[
            "template",
            RELEASE,
            chart.as_str(),
            "-f",
            values.as_str(),
            "--set",
            "metrics.service.enabled=false",
        ])
        .await
        .fails();
    assert!(
        err.contains("metrics.service.enabled") && err.contains("PodMonitor"),
        "{err}"
    );
}

#[tokio::test]
async fn the_dashboard_configmap_carries_the_dashboard_for_grafanas_sidecar() {
    let Some(t) =
        helm("monitoring::the_dashboard_configmap_carries_the_dashboard_for_grafanas_sidecar")
    else {
        return;
    };
    let docs = render(&t, &[]).await;
    let cm = find(&docs, "ConfigMap");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("charts/tiermq/dashboards/tiermq.json")).unwrap(),
    )
    .unwrap();
    let rendered: Value =
        serde_json::from_str(cm["data"]["tiermq.json"].as_str().unwrap()).expect("JSON");
    assert_eq!(rendered, shipped);
    assert_eq!(shipped["uid"], "tiermq-overview");
    // Every query uses the data source variable, so the dashboard works with any Prometheus.
    for p in panels(&shipped) {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        assert!(!targets(p).is_empty(), "{} has no query", p["title"]);
    }
}

fn panels(d: &Value) -> Vec<&Value> {
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .collect()
}

fn targets(p: &Value) -> Vec<String> {
    p["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect()
}

/// The `spec` of the rendered PrometheusRule: a Prometheus rule file.
async fn rule_file(t: &Tools) -> Value {
    find(&render(t, &[]).await, "PrometheusRule")["spec"].clone()
}

fn exprs(rules: &Value) -> Vec<(String, String)> {
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| {
            (
                r["alert"].as_str().unwrap().to_string(),
                r["expr"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_query_is_exported() {
    let Some(t) = helm("monitoring::every_metric_the_rules_and_the_dashboard_query_is_exported")
    else {
        return;
    };
    let exported = exposed_names(&Metrics::with_every_family().encode());
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("charts/tiermq/dashboards/tiermq.json")).unwrap(),
    )
    .unwrap();
    let mut queries: Vec<(String, String)> = exprs(&rule_file(&t).await);
    for p in panels(&dashboard) {
        for e in targets(p) {
            queries.push((p["title"].as_str().unwrap().to_string(), e));
        }
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.split(',').next())
                .unwrap_or(q);
            queries.push((format!("variable {}", v["name"]), inner.to_string()));
        }
    }
    let mut unknown = Vec::new();
    let mut used = BTreeSet::new();
    for (what, q) in &queries {
        let names = metric_names(q);
        assert!(!names.is_empty(), "{what}: no metric found in {q}");
        for n in names {
            if n.starts_with("rabbitmq_") {
                // Checked against a real broker by rabbit_operator's broker_config test.
                continue;
            }
            if !exported.contains(&n) {
                unknown.push(format!("{what}: {n}"));
            }
            used.insert(n);
        }
    }
    assert!(
        unknown.is_empty(),
        "queries name metrics the operator does not export: {unknown:?}\nexported: {exported:?}"
    );
    // The dashboard and the rules between them show what issue 15 asks for.
    for needed in [
        "tiermq_instances",
        "tiermq_drain_backlog_messages",
        "tiermq_drain_rate_messages_per_second",
        "tiermq_drain_eta_seconds",
        "tiermq_reconcile_errors_total",
        "tiermq_leader",
        "tiermq_instances_with_condition",
        "tiermq_migration_phase_oldest_start_timestamp_seconds",
    ] {
        assert!(used.contains(needed), "nothing queries {needed}");
    }
}

fn promtool(test: &str) -> Option<PathBuf> {
    tools::require(Tool::Promtool, test)
}

fn run(bin: &Path, args: &[&str], dir: &Path) -> (bool, String) {
    let out = std::process::Command::new(bin)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn alerting_rules_pass_promtool_and_fire_exactly_when_they_should() {
    let test = "monitoring::alerting_rules_pass_promtool_and_fire_exactly_when_they_should";
    let (Some(t), Some(promtool)) = (helm(test), promtool(test)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rules = rule_file(&t).await;
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(&rules).unwrap(),
    )
    .unwrap();
    let (ok, out) = run(&promtool, &["check", "rules", "rules.yaml"], dir.path());
    assert!(ok, "promtool check rules:\n{out}");
    assert!(out.contains("SUCCESS: 6 rules found"), "{out}");

    // Unit tests over synthetic series (ci/monitoring-values.yaml: stuck after 1800 s, 5 errors
    // a minute). Each alert fires on its cause and stays quiet on the harmless look-alike.
    // Time 0 is 1970-01-01T00:00:00Z, so a phase entered at Unix time 0 is `time()` old.
    // `ann` gives the annotations Prometheus should render: the rule's templates with each
    // placeholder replaced by the value it must become.
    let ann = |alert: &str, fills: &[(&str, &str)]| -> Value {
        let rule = rules["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["alert"] == alert)
            .unwrap_or_else(|| panic!("no rule {alert}"));
        let mut out = serde_json::Map::new();
        for (k, v) in rule["annotations"].as_object().unwrap() {
            let mut text = v.as_str().unwrap().to_string();
            for (placeholder, value) in fills {
                text = text.replace(placeholder, value);
            }
            assert!(
                !text.contains("{{"),
                "{alert}.{k}: unfilled placeholder in {text}"
            );
            out.insert(k.clone(), Value::String(text));
        }
        Value::Object(out)
    };
    let down = ann("TiermqOperatorDown", &[]);
    let stuck = ann(
        "TiermqConversionStuck",
        &[
            ("{{ $labels.phase }}", "DualWriteDualRead"),
            ("{{ $value | humanizeDuration }}", "36m 0s"),
        ],
    );
    let timed_out = ann("TiermqDrainTimedOut", &[("{{ $value }}", "1")]);
    let degraded = ann("TiermqInstanceDegraded", &[("{{ $value }}", "2")]);
    let invalid = ann("TiermqInstanceSpecInvalid", &[("{{ $value }}", "1")]);
    let errors = ann(
        "TiermqReconcileErrors",
        &[
            ("{{ $labels.controller }}", "instance"),
            ("{{ $labels.stage }}", "execute"),
            ("{{ $labels.category }}", "BrokerApi"),
            ("{{ $value | humanize }}", "10"),
        ],
    );
    let tests = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": "operator down: no leader, then no series at all",
                "interval": "1m",
                "input_series": [
                    {"series": "tiermq_leader{pod=\"a\"}", "values": "1x10 0x20"},
                    {"series": "tiermq_leader{pod=\"b\"}", "values": "0x30"}
                ],
                "alert_rule_test": [
                    {"eval_time": "9m", "alertname": "TiermqOperatorDown", "exp_alerts": []},
                    {"eval_time": "14m", "alertname": "TiermqOperatorDown", "exp_alerts": []},
                    {"eval_time": "17m", "alertname": "TiermqOperatorDown",
                     "exp_alerts": [{"exp_labels": {"severity": "critical"}, "exp_annotations": down}]},
                    {"eval_time": "40m", "alertname": "TiermqOperatorDown",
                     "exp_alerts": [{"exp_labels": {"severity": "critical"}, "exp_annotations": down}]}
                ]
            },
            {
                "name": "a conversion stuck in a phase; draining is left to its own timeout",
                "interval": "1m",
                "input_series": [
                    {"series": "tiermq_migration_phase_oldest_start_timestamp_seconds{phase=\"DualWriteDualRead\"}",
                     "values": "0x60"},
                    {"series": "tiermq_migration_phase_oldest_start_timestamp_seconds{phase=\"DrainingSource\"}",
                     "values": "0x60"},
                    {"series": "tiermq_migration_phase_oldest_start_timestamp_seconds{phase=\"PreparingDestination\"}",
                     "values": "2400x60"}
                ],
                "alert_rule_test": [
                    {"eval_time": "30m", "alertname": "TiermqConversionStuck", "exp_alerts": []},
                    {"eval_time": "36m", "alertname": "TiermqConversionStuck",
                     "exp_alerts": [{"exp_labels": {"severity": "warning", "phase": "DualWriteDualRead"},
                                     "exp_annotations": stuck}]}
                ]
            },
            {
                "name": "conditions",
                "interval": "1m",
                "input_series": [
                    {"series": "tiermq_instances_with_condition{condition=\"DrainTimedOut\"}", "values": "0x5 1x30"},
                    {"series": "tiermq_instances_with_condition{condition=\"Degraded\"}", "values": "0x5 2x30"},
                    {"series": "tiermq_instances_with_condition{condition=\"InvalidSpec\"}", "values": "0x5 1x30"},
                    {"series": "tiermq_instances_with_condition{condition=\"Ready\"}", "values": "3x35"}
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "TiermqDrainTimedOut", "exp_alerts": []},
                    {"eval_time": "8m", "alertname": "TiermqDrainTimedOut",
                     "exp_alerts": [{"exp_labels": {"severity": "warning", "condition": "DrainTimedOut"},
                                     "exp_annotations": timed_out}]},
                    {"eval_time": "12m", "alertname": "TiermqInstanceDegraded", "exp_alerts": []},
                    {"eval_time": "17m", "alertname": "TiermqInstanceDegraded",
                     "exp_alerts": [{"exp_labels": {"severity": "warning", "condition": "Degraded"},
                                     "exp_annotations": degraded}]},
                    {"eval_time": "17m", "alertname": "TiermqInstanceSpecInvalid", "exp_alerts": []},
                    {"eval_time": "22m", "alertname": "TiermqInstanceSpecInvalid",
                     "exp_alerts": [{"exp_labels": {"severity": "warning", "condition": "InvalidSpec"},
                                     "exp_annotations": invalid}]}
                ]
            },
            {
                "name": "reconcile errors: a steady 10 a minute fires, a short burst does not",
                "interval": "1m",
                "input_series": [
                    {"series": "tiermq_reconcile_errors_total{controller=\"instance\",category=\"BrokerApi\",stage=\"execute\",step=\"CopyTopology\"}",
                     "values": "0+10x60"},
                    {"series": "tiermq_reconcile_errors_total{controller=\"instance\",category=\"KubernetesApi\",stage=\"status\",step=\"\"}",
                     "values": "0+50x3 150x57"}
                ],
                "alert_rule_test": [
                    {"eval_time": "10m", "alertname": "TiermqReconcileErrors", "exp_alerts": []},
                    {"eval_time": "20m", "alertname": "TiermqReconcileErrors",
                     "exp_alerts": [{"exp_labels": {"severity": "warning", "controller": "instance",
                                                    "category": "BrokerApi", "stage": "execute"},
                                     "exp_annotations": errors}]},
                    {"eval_time": "30m", "alertname": "TiermqReconcileErrors",
                     "exp_alerts": [{"exp_labels": {"severity": "warning", "controller": "instance",
                                                    "category": "BrokerApi", "stage": "execute"},
                                     "exp_annotations": errors}]}
                ]
            }
        ]
    });
    std::fs::write(
        dir.path().join("tests.yaml"),
        serde_yaml::to_string(&tests).unwrap(),
    )
    .unwrap();
    let (ok, out) = run(&promtool, &["test", "rules", "tests.yaml"], dir.path());
    assert!(ok, "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}
