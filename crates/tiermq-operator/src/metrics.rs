//! Prometheus metrics for every reconcile and every migration phase.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

/// Labels of a failed reconcile: which controller, which kind of error, where it happened.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub category: &'static str,
    /// The reconcile stage (`observe`, `execute`, ...), empty when unknown.
    pub stage: &'static str,
    /// The plan step that failed (`RouteService`, ...), empty outside `execute`.
    pub step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierPhaseLabels {
    pub tier: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    pub namespace: String,
    pub instance: String,
}

/// All metrics, registered once; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    pub instances: Family<TierPhaseLabels, Gauge>,
    pub phase_duration: Family<PhaseLabels, Histogram>,
    pub drain_backlog: Family<InstanceLabels, Gauge>,
    pub migrations_finished: Family<PhaseLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tiermq");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error category",
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
        let instances = Family::<TierPhaseLabels, Gauge>::default();
        registry.register(
            "instances",
            "RabbitMQInstances by effective tier and migration phase",
            instances.clone(),
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
            "Messages left on a draining source",
            drain_backlog.clone(),
        );
        let migrations_finished = Family::<PhaseLabels, Counter>::default();
        registry.register(
            "migrations_finished",
            "Conversions finished, by outcome",
            migrations_finished.clone(),
        );
        Self {
            registry: Arc::new(registry),
            reconciles,
            reconcile_errors,
            reconcile_duration,
            instances,
            phase_duration,
            drain_backlog,
            migrations_finished,
        }
    }
}

impl Metrics {
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
}

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
    }
}
