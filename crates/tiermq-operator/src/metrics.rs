//! Prometheus metrics: what the operator does (reconciles, errors, leadership) and where the
//! conversions are (instances by phase and condition, how long they have been in a phase, drain
//! backlog, rate and ETA, finished conversions, phase durations). Every metric is listed with its
//! labels and a query in `docs/metrics.md`; a test holds the two together.
//!
//! Label cardinality stays bounded: labels take values from fixed sets (controllers, error
//! categories, stages and steps, tiers, phases, condition types, outcomes), except the drain
//! gauges, which carry `namespace` and `instance` and exist only while that instance drains.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tiermq_crd::{MigrationOutcome, MigrationPhase, RabbitMQInstanceStatus, Tier, conditions};

/// Labels of a reconcile count or duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// The controller that reconciled (`instance` or `sharedcluster`).
    pub controller: &'static str,
}

/// Labels of a failed reconcile: which controller, which kind of error, where it happened.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The controller whose reconcile failed (`instance` or `sharedcluster`).
    pub controller: &'static str,
    /// The error's category (`KubernetesApi`, `BrokerApi`, `NotReady`, ...), from
    /// [`crate::error::Error::category`].
    pub category: &'static str,
    /// The reconcile stage (`observe`, `execute`, ...), empty when unknown.
    pub stage: &'static str,
    /// The plan step that failed (`RouteService`, ...), empty outside `execute`.
    pub step: &'static str,
}

/// Labels of the instance count: effective tier and migration phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierPhaseLabels {
    /// The tier the instance runs on now (`Shared`, `Dedicated`, or `Unknown` before the first
    /// status).
    pub tier: String,
    /// The migration phase (`Stable` when none is recorded).
    pub phase: String,
}

/// A migration phase, for the per-phase gauges and histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// The phase's name as in the status (`DrainingSource`, ...).
    pub phase: String,
}

/// A condition type (`Degraded`, `DrainTimedOut`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    /// One of [`tiermq_crd::conditions::ALL`].
    pub condition: &'static str,
}

/// How a conversion ended and which tier it went to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `Completed` or `Aborted`.
    pub outcome: &'static str,
    /// The conversion's destination tier.
    pub to: &'static str,
}

/// Labels of the per-instance drain gauges (series exist only while that instance drains).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    /// The RabbitMQInstance's namespace.
    pub namespace: String,
    /// The RabbitMQInstance's name.
    pub instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// The HTTP method of a management-API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// `GET`, `PUT`, `POST` or `DELETE`.
    pub method: String,
}

/// A gauge holding a float (rates, timestamps).
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// All metrics, registered once; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// 1 while this replica runs the controllers (the leader, or the only replica), else 0.
    pub leader: Gauge,
    /// Reconciles started, per controller (counted by [`Metrics::reconcile_timer`]).
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Failed reconciles (counted by [`Metrics::reconcile_failed`]).
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// Seconds per reconcile, per controller (observed when a [`ReconcileTimer`] drops).
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    /// Passes due but waiting for the controller's bound (see `controller::gate`).
    pub reconciles_waiting: Family<ControllerLabels, Gauge>,
    /// Seconds a pass waited for the controller's bound before it started.
    pub reconcile_wait: Family<ControllerLabels, Histogram>,
    /// Instances by tier and phase; recounted from scratch by [`Metrics::record_fleet`].
    pub instances: Family<TierPhaseLabels, Gauge>,
    /// Instances whose condition of each type is True, every known type present (0 if none).
    pub instances_with_condition: Family<ConditionLabels, Gauge>,
    /// Unix time (seconds) at which the longest stay in each phase began; a phase no instance
    /// is in has no series.
    pub phase_oldest_start: Family<PhaseLabels, FloatGauge>,
    /// Seconds a conversion spent in each phase.
    pub phase_duration: Family<PhaseLabels, Histogram>,
    /// Messages left on a draining source, per instance (see [`Metrics::record_drain`]).
    pub drain_backlog: Family<InstanceLabels, Gauge>,
    /// Messages per second leaving a draining source, per instance.
    pub drain_rate: Family<InstanceLabels, FloatGauge>,
    /// Estimated seconds until a draining source is empty, per instance.
    pub drain_eta: Family<InstanceLabels, Gauge>,
    /// Finished conversions (counted by [`Metrics::conversion_finished`]).
    pub migrations_finished: Family<OutcomeLabels, Counter>,
    /// Requests sent to brokers' management APIs, by method (see [`Metrics::broker_observer`]).
    pub broker_requests: Family<MethodLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tiermq");
        registry.register(
            "build",
            "The operator's version",
            Info::new(VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica runs the controllers (the elected leader), 0 while it stands by",
            leader.clone(),
        );
        let reconciles = Family::<ControllerLabels, Counter>::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error category, stage and plan step",
            reconcile_errors.clone(),
        );
        let reconcile_duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            });
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        let reconciles_waiting = Family::<ControllerLabels, Gauge>::default();
        registry.register(
            "reconciles_waiting",
            "Passes that fell due and wait for the controller's bound on passes at once \
             (--max-concurrent-reconciles); they start first come, first served",
            reconciles_waiting.clone(),
        );
        let reconcile_wait = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register(
            "reconcile_wait_seconds",
            "Time a pass waited for the controller's bound on passes at once before it started",
            reconcile_wait.clone(),
        );
        let instances = Family::<TierPhaseLabels, Gauge>::default();
        registry.register(
            "instances",
            "RabbitMQInstances by effective tier and migration phase",
            instances.clone(),
        );
        let instances_with_condition = Family::<ConditionLabels, Gauge>::default();
        registry.register(
            "instances_with_condition",
            "RabbitMQInstances whose condition of this type is True",
            instances_with_condition.clone(),
        );
        let phase_oldest_start = Family::<PhaseLabels, FloatGauge>::default();
        registry.register(
            "migration_phase_oldest_start_timestamp_seconds",
            "When the instance that has been in this phase longest entered it (Unix time); \
             absent when no instance is in the phase",
            phase_oldest_start.clone(),
        );
        let phase_duration = Family::<PhaseLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.5, 2.0, 16))
        });
        registry.register(
            "migration_phase_duration_seconds",
            "Time a conversion spent in each phase",
            phase_duration.clone(),
        );
        let drain_backlog = Family::<InstanceLabels, Gauge>::default();
        registry.register(
            "drain_backlog_messages",
            "Messages left on a draining source (ready + unacked + delayed), from the last sample",
            drain_backlog.clone(),
        );
        let drain_rate = Family::<InstanceLabels, FloatGauge>::default();
        registry.register(
            "drain_rate_messages_per_second",
            "Messages per second leaving a draining source, from the last samples",
            drain_rate.clone(),
        );
        let drain_eta = Family::<InstanceLabels, Gauge>::default();
        registry.register(
            "drain_eta_seconds",
            "Estimated seconds until a draining source is empty",
            drain_eta.clone(),
        );
        let migrations_finished = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "migrations_finished",
            "Conversions finished, by outcome and destination tier",
            migrations_finished.clone(),
        );
        let broker_requests = Family::<MethodLabels, Counter>::default();
        registry.register(
            "broker_requests",
            "Requests sent to brokers' management APIs (every attempt), by HTTP method: anything \
             but GET changes a broker",
            broker_requests.clone(),
        );
        Self {
            registry: Arc::new(registry),
            leader,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            reconciles_waiting,
            reconcile_wait,
            instances,
            instances_with_condition,
            phase_oldest_start,
            phase_duration,
            drain_backlog,
            drain_rate,
            drain_eta,
            migrations_finished,
            broker_requests,
        }
    }
}

impl Metrics {
    /// A management-client observer counting each request in `tiermq_broker_requests_total`.
    pub fn broker_observer(&self) -> tiermq_broker::RequestObserver {
        let family = self.broker_requests.clone();
        tiermq_broker::RequestObserver(Arc::new(move |method: &str| {
            family
                .get_or_create(&MethodLabels {
                    method: method.to_string(),
                })
                .inc();
        }))
    }

    /// Text exposition format for `/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Counts a reconcile and observes its duration when the guard drops.
    pub fn reconcile_timer(&self, controller: &'static str) -> ReconcileTimer {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .inc();
        ReconcileTimer {
            metrics: self.clone(),
            controller,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile of `controller` by the error's category, stage and step.
    pub fn reconcile_failed(&self, controller: &'static str, err: &crate::error::Error) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                controller,
                category: err.category(),
                stage: err.stage().map_or("", crate::error::Stage::as_str),
                step: err.step().unwrap_or(""),
            })
            .inc();
    }

    /// Counts a finished conversion.
    pub fn conversion_finished(&self, outcome: MigrationOutcome, to: Tier) {
        let outcome = match outcome {
            MigrationOutcome::Completed => "Completed",
            MigrationOutcome::Aborted => "Aborted",
        };
        self.migrations_finished
            .get_or_create(&OutcomeLabels {
                outcome,
                to: to.as_str(),
            })
            .inc();
    }

    /// The drain gauges of one instance from its status: set while it reports a backlog, rate
    /// or ETA, removed otherwise (so a finished conversion leaves no series behind).
    pub fn record_drain(&self, labels: &InstanceLabels, status: Option<&RabbitMQInstanceStatus>) {
        let m = status.and_then(|s| s.migration.as_ref());
        match m.and_then(|m| m.remaining_messages) {
            Some(n) => {
                self.drain_backlog.get_or_create(labels).set(n);
            }
            None => {
                self.drain_backlog.remove(labels);
            }
        }
        match m.and_then(|m| m.drain_rate).filter(|r| r.is_finite()) {
            Some(r) => {
                self.drain_rate.get_or_create(labels).set(r);
            }
            None => {
                self.drain_rate.remove(labels);
            }
        }
        match m.and_then(|m| m.eta_seconds) {
            Some(s) => {
                self.drain_eta.get_or_create(labels).set(s);
            }
            None => {
                self.drain_eta.remove(labels);
            }
        }
    }

    /// The fleet gauges from every instance's status (one recount, so they never drift):
    /// instances by tier and phase, by True condition, and when the longest stay in each phase
    /// began.
    pub fn record_fleet<'a>(&self, statuses: impl IntoIterator<Item = &'a RabbitMQInstanceStatus>) {
        let mut by_phase: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut by_condition: BTreeMap<&'static str, i64> =
            conditions::ALL.iter().map(|c| (*c, 0)).collect();
        let mut oldest: BTreeMap<MigrationPhase, f64> = BTreeMap::new();
        for st in statuses {
            let tier = st.tier.map_or("Unknown".to_string(), |t| t.to_string());
            let phase = st.migration_phase.unwrap_or(MigrationPhase::Stable);
            *by_phase
                .entry((tier, phase.as_str().to_string()))
                .or_default() += 1;
            for c in st.conditions.iter().filter(|c| c.status == "True") {
                if let Some(n) = by_condition.get_mut(c.type_.as_str()) {
                    *n += 1;
                }
            }
            if let Some(since) = phase_start(st, phase) {
                let e = oldest.entry(phase).or_insert(since);
                *e = e.min(since);
            }
        }
        self.instances.clear();
        for ((tier, phase), n) in by_phase {
            self.instances
                .get_or_create(&TierPhaseLabels { tier, phase })
                .set(n);
        }
        for (condition, n) in by_condition {
            self.instances_with_condition
                .get_or_create(&ConditionLabels { condition })
                .set(n);
        }
        self.phase_oldest_start.clear();
        for (phase, since) in oldest {
            self.phase_oldest_start
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str().to_string(),
                })
                .set(since);
        }
    }
}

impl Metrics {
    /// Metrics with one series in every family. `/metrics` shows a family only once it has a
    /// series, so tests that hold docs, dashboards and alerting rules to the exported names
    /// read the names from this; a family missing here fails the docs test.
    pub fn with_every_family() -> Self {
        let m = Self::default();
        m.leader.set(1);
        drop(m.reconcile_timer("instance"));
        let instance = ControllerLabels {
            controller: "instance",
        };
        m.reconciles_waiting.get_or_create(&instance).set(0);
        m.reconcile_wait.get_or_create(&instance).observe(0.0);
        m.reconcile_failed(
            "instance",
            &crate::error::Error::at("CopyTopology")(crate::error::Error::NotReady(
                "example".into(),
            )),
        );
        m.record_fleet([&RabbitMQInstanceStatus::default()]);
        let phase = PhaseLabels {
            phase: MigrationPhase::DrainingSource.as_str().to_string(),
        };
        m.phase_duration.get_or_create(&phase).observe(1.0);
        m.phase_oldest_start.get_or_create(&phase).set(0.0);
        let example = InstanceLabels {
            namespace: "example".into(),
            instance: "example".into(),
        };
        m.drain_backlog.get_or_create(&example).set(0);
        m.drain_rate.get_or_create(&example).set(0.0);
        m.drain_eta.get_or_create(&example).set(0);
        m.conversion_finished(MigrationOutcome::Completed, Tier::Dedicated);
        (m.broker_observer().0)("GET");
        m
    }
}

/// When the instance entered its current `phase` (Unix seconds): the recorded phase start of a
/// running conversion, or for a held flip when `ConversionBlocked` turned True. `None` while
/// `Stable`.
fn phase_start(st: &RabbitMQInstanceStatus, phase: MigrationPhase) -> Option<f64> {
    let seconds = |t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| {
        crate::controller::plan::from_time(t).timestamp_millis() as f64 / 1000.0
    };
    match phase {
        MigrationPhase::Stable => None,
        MigrationPhase::Blocked => st
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::CONVERSION_BLOCKED && c.status == "True")
            .map(|c| seconds(&c.last_transition_time)),
        _ => st
            .migration
            .as_ref()
            .and_then(|m| m.phases.last())
            .filter(|p| p.phase == phase)
            .map(|p| seconds(&p.started)),
    }
}

/// Guard from [`Metrics::reconcile_timer`]: observes the reconcile's duration when dropped.
pub struct ReconcileTimer {
    metrics: Metrics,
    controller: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.metrics
            .reconcile_duration
            .get_or_create(&ControllerLabels {
                controller: self.controller,
            })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_reconcile_is_counted_and_timed() {
        let m = Metrics::default();
        drop(m.reconcile_timer("instance"));
        let err = crate::error::Error::at("EnsureTenant")(crate::error::Error::NotReady(
            "the management API of shared/ops/main has no admin Secret or address yet".into(),
        ));
        m.reconcile_failed("instance", &err);
        let text = m.encode();
        assert!(
            text.contains(r#"tiermq_reconciles_total{controller="instance"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"tiermq_reconcile_errors_total{controller="instance",category="NotReady",stage="execute",step="EnsureTenant"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"tiermq_reconcile_duration_seconds_count{controller="instance"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                r#"tiermq_build_info{{version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(text.contains("tiermq_leader 0"), "{text}");
    }

    fn status(v: serde_json::Value) -> RabbitMQInstanceStatus {
        serde_json::from_value(v).unwrap()
    }

    fn cond(t: &str, s: &str, at: &str) -> serde_json::Value {
        json!({"type": t, "status": s, "reason": "R", "message": "", "lastTransitionTime": at})
    }

    #[test]
    fn the_fleet_is_counted_by_phase_condition_and_longest_stay() {
        let migration = |phase: &str, started: &str| {
            json!({"from": "Shared", "to": "Dedicated",
                "source": {"kind": "Shared", "name": "main", "namespace": "ops"},
                "destination": {"kind": "Dedicated", "name": "o-dedicated", "namespace": "a"},
                "drainStrategy": "Consume", "connectionPolicy": "Keep",
                "started": "2026-01-01T00:00:00Z",
                "phases": [{"phase": "PreparingDestination", "started": "2026-01-01T00:00:00Z"},
                           {"phase": phase, "started": started}]})
        };
        let fleet = [
            status(json!({"tier": "Shared", "migrationPhase": "Stable",
                "conditions": [cond("Ready", "True", "2026-01-01T00:00:00Z"),
                               cond("Degraded", "True", "2026-01-01T00:00:00Z")]})),
            status(json!({"tier": "Shared", "migrationPhase": "DrainingSource",
                "migration": migration("DrainingSource", "2026-01-01T00:10:00Z"),
                "conditions": [cond("DrainTimedOut", "True", "2026-01-01T01:10:00Z"),
                               cond("Degraded", "False", "2026-01-01T00:00:00Z")]})),
            status(
                json!({"tier": "Dedicated", "migrationPhase": "DrainingSource",
                "migration": migration("DrainingSource", "2026-01-01T00:05:00Z")}),
            ),
            status(json!({"tier": "Dedicated", "migrationPhase": "Blocked",
                "conditions": [cond("ConversionBlocked", "True", "2026-01-01T00:00:30Z")]})),
            status(json!({})),
        ];
        let m = Metrics::default();
        m.record_fleet(&fleet);
        let text = m.encode();
        for line in [
            r#"tiermq_instances{tier="Shared",phase="Stable"} 1"#,
            r#"tiermq_instances{tier="Shared",phase="DrainingSource"} 1"#,
            r#"tiermq_instances{tier="Dedicated",phase="DrainingSource"} 1"#,
            r#"tiermq_instances{tier="Unknown",phase="Stable"} 1"#,
            r#"tiermq_instances_with_condition{condition="Degraded"} 1"#,
            r#"tiermq_instances_with_condition{condition="DrainTimedOut"} 1"#,
            r#"tiermq_instances_with_condition{condition="InvalidSpec"} 0"#,
            // 2026-01-01T00:05:00Z and T00:00:30Z.
            r#"tiermq_migration_phase_oldest_start_timestamp_seconds{phase="DrainingSource"} 1767225900.0"#,
            r#"tiermq_migration_phase_oldest_start_timestamp_seconds{phase="Blocked"} 1767225630.0"#,
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        assert!(!text.contains(r#"phase="Stable"} 17"#), "{text}");
        // A recount replaces the old counts: nothing lingers for phases no instance is in.
        m.record_fleet(&fleet[..1]);
        let text = m.encode();
        assert!(!text.contains("DrainingSource"), "{text}");
        assert!(
            !text.contains("tiermq_migration_phase_oldest_start_timestamp_seconds{"),
            "{text}"
        );
    }

    #[test]
    fn drain_gauges_follow_the_status_and_go_away_with_the_drain() {
        let m = Metrics::default();
        let labels = InstanceLabels {
            namespace: "team-a".into(),
            instance: "orders".into(),
        };
        let draining = status(json!({"migration": {"from": "Dedicated", "to": "Shared",
            "source": {"kind": "Dedicated", "name": "orders-dedicated", "namespace": "team-a"},
            "destination": {"kind": "Shared", "name": "main", "namespace": "ops"},
            "drainStrategy": "Consume", "connectionPolicy": "Close",
            "started": "2026-01-01T00:00:00Z",
            "remainingMessages": 1200, "drainRate": 40.5, "etaSeconds": 30}}));
        m.record_drain(&labels, Some(&draining));
        let text = m.encode();
        for line in [
            r#"tiermq_drain_backlog_messages{namespace="team-a",instance="orders"} 1200"#,
            r#"tiermq_drain_rate_messages_per_second{namespace="team-a",instance="orders"} 40.5"#,
            r#"tiermq_drain_eta_seconds{namespace="team-a",instance="orders"} 30"#,
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        m.record_drain(&labels, None);
        assert!(!m.encode().contains("orders"));
    }

    #[test]
    fn finished_conversions_are_counted_by_outcome_and_destination() {
        let m = Metrics::default();
        m.conversion_finished(MigrationOutcome::Completed, Tier::Dedicated);
        m.conversion_finished(MigrationOutcome::Aborted, Tier::Shared);
        let text = m.encode();
        assert!(
            text.contains(
                r#"tiermq_migrations_finished_total{outcome="Completed",to="Dedicated"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"tiermq_migrations_finished_total{outcome="Aborted",to="Shared"} 1"#),
            "{text}"
        );
    }

    /// docs/metrics.md documents every metric the operator exports, and nothing else.
    #[test]
    fn every_exported_metric_is_documented_and_every_documented_one_exported() {
        let text = Metrics::with_every_family().encode();
        let exported: std::collections::BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|rest| {
                let mut parts = rest.split_whitespace();
                let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
                match kind {
                    "counter" => format!("{name}_total"),
                    "info" => format!("{name}_info"),
                    _ => name.to_string(),
                }
            })
            .collect();
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/metrics.md"
        ))
        .expect("docs/metrics.md");
        // Every table row of the metrics table starts with the metric name in backticks.
        let documented: std::collections::BTreeSet<String> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `tiermq_"))
            .filter_map(|rest| rest.split('`').next())
            .map(|name| format!("tiermq_{name}"))
            .collect();
        assert_eq!(documented, exported, "docs/metrics.md vs the registry");
    }
}
