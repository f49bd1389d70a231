//! Prometheus metrics of the controllers.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub controller: &'static str,
    pub reason: &'static str,
}

#[derive(Clone)]
pub struct Metrics {
    pub reconciliations: Family<ControllerLabel, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub duration: Family<ControllerLabel, Histogram>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciliations: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 14))
            }),
        };
        registry.register(
            "swarm_operator_reconciliations",
            "Reconciliations started",
            metrics.reconciliations.clone(),
        );
        registry.register(
            "swarm_operator_reconcile_failures",
            "Reconciliations that failed, by reason",
            metrics.failures.clone(),
        );
        registry.register(
            "swarm_operator_reconcile_duration_seconds",
            "Time one reconciliation took",
            metrics.duration.clone(),
        );
        metrics
    }

    /// Counts a reconciliation and times it until the returned guard drops.
    pub fn start(&self, controller: &'static str) -> ReconcileTimer {
        self.reconciliations
            .get_or_create(&ControllerLabel { controller })
            .inc();
        ReconcileTimer {
            histogram: self
                .duration
                .get_or_create(&ControllerLabel { controller })
                .clone(),
            started: Instant::now(),
        }
    }

    pub fn failed(&self, controller: &'static str, reason: &'static str) {
        self.failures
            .get_or_create(&FailureLabels { controller, reason })
            .inc();
    }
}

pub struct ReconcileTimer {
    histogram: Histogram,
    started: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn exposes_counts_failures_and_durations() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        drop(metrics.start("swarm"));
        metrics.failed("swarm", "Conflict");
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("swarm_operator_reconciliations_total{controller=\"swarm\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("swarm_operator_reconcile_failures_total{controller=\"swarm\",reason=\"Conflict\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "swarm_operator_reconcile_duration_seconds_count{controller=\"swarm\"} 1"
            ),
            "{text}"
        );
    }
}
