//! Metrics of the controllers, on `/metrics` and, when exporting, over OTLP.

use std::time::Instant;

use swarm_telemetry::{Counter, Histogram, exponential_buckets};

#[derive(Clone)]
pub struct Metrics {
    /// Every request the operator sends to the API server, by HTTP method.
    pub api_requests: Counter,
    pub reconciliations: Counter,
    pub failures: Counter,
    pub duration: Histogram,
}

impl Metrics {
    pub fn register(metrics: &mut swarm_telemetry::Metrics) -> Self {
        Self {
            api_requests: metrics.counter(
                "swarm_operator_api_requests",
                "Requests sent to the Kubernetes API server, by method",
            ),
            reconciliations: metrics
                .counter("swarm_operator_reconciliations", "Reconciliations started"),
            failures: metrics.counter(
                "swarm_operator_reconcile_failures",
                "Reconciliations that failed, by reason",
            ),
            duration: metrics.histogram(
                "swarm_operator_reconcile_duration_seconds",
                "Time one reconciliation took",
                exponential_buckets(0.001, 2.0, 14),
            ),
        }
    }

    /// Counts a reconciliation and times it until the returned guard drops.
    pub fn start(&self, controller: &'static str) -> ReconcileTimer {
        self.reconciliations.inc(&[("controller", controller)]);
        ReconcileTimer {
            histogram: self.duration.clone(),
            controller,
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
            requests.inc(&[("method", request.method().as_str())]);
            request
        })
    }

    pub fn failed(&self, controller: &'static str, reason: &'static str) {
        self.failures
            .inc(&[("controller", controller), ("reason", reason)]);
    }
}

pub struct ReconcileTimer {
    histogram: Histogram,
    controller: &'static str,
    started: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(
            self.started.elapsed().as_secs_f64(),
            &[("controller", self.controller)],
        );
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn exposes_counts_failures_and_durations() {
        let mut registry = swarm_telemetry::Metrics::new(None);
        let metrics = Metrics::register(&mut registry);
        drop(metrics.start("swarm"));
        metrics.failed("swarm", "Conflict");
        let mut text = String::new();
        encode(&mut text, &registry.into_registry()).unwrap();
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
        let metrics = Metrics::register(&mut swarm_telemetry::Metrics::new(None));
        let service = metrics.count_requests().layer(tower::service_fn(
            |_request: http::Request<()>| async { Ok::<_, std::convert::Infallible>(()) },
        ));
        for method in [http::Method::GET, http::Method::PATCH, http::Method::GET] {
            let request = http::Request::builder().method(method).body(()).unwrap();
            service.clone().oneshot(request).await.unwrap();
        }
        let count = |method: &str| metrics.api_requests.get(&[("method", method)]);
        assert_eq!((count("GET"), count("PATCH"), count("POST")), (2, 1, 0));
    }
}
