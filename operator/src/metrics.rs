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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRequestLabel {
    pub method: String,
}

#[derive(Clone)]
pub struct Metrics {
    /// Every request the operator sends to the API server, by HTTP method.
    pub api_requests: Family<ApiRequestLabel, Counter>,
    pub reconciliations: Family<ControllerLabel, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub duration: Family<ControllerLabel, Histogram>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            api_requests: Family::default(),
            reconciliations: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 14))
            }),
        };
        registry.register(
            "swarm_operator_api_requests",
            "Requests sent to the Kubernetes API server, by method",
            metrics.api_requests.clone(),
        );
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

    /// A client layer that counts every request the operator sends.
    pub fn count_requests<B>(
        &self,
    ) -> tower::util::MapRequestLayer<impl Fn(http::Request<B>) -> http::Request<B> + Clone + use<B>>
    {
        let requests = self.api_requests.clone();
        tower::util::MapRequestLayer::new(move |request: http::Request<B>| {
            requests
                .get_or_create(&ApiRequestLabel {
                    method: request.method().to_string(),
                })
                .inc();
            request
        })
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

    #[tokio::test]
    async fn counts_api_requests_by_method() {
        use tower::{Layer, ServiceExt};
        let metrics = Metrics::register(&mut Registry::default());
        let service = metrics.count_requests().layer(tower::service_fn(
            |_request: http::Request<()>| async { Ok::<_, std::convert::Infallible>(()) },
        ));
        for method in [http::Method::GET, http::Method::PATCH, http::Method::GET] {
            let request = http::Request::builder().method(method).body(()).unwrap();
            service.clone().oneshot(request).await.unwrap();
        }
        let count = |method: &str| {
            metrics
                .api_requests
                .get_or_create(&ApiRequestLabel {
                    method: method.into(),
                })
                .get()
        };
        assert_eq!((count("GET"), count("PATCH"), count("POST")), (2, 1, 0));
    }
}
