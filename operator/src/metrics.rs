//! Metrics of the controllers, on `/metrics` and, when exporting, over OTLP.

use std::time::Instant;

use swarm_telemetry::{Counter, Histogram, exponential_buckets};

#[derive(Clone)]
pub struct Metrics {
    /// Every request the operator sends to the API server, by HTTP method and resource.
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
                "Requests sent to the Kubernetes API server, by method and resource",
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
            let resource = resource_of(request.uri().path());
            requests.inc(&[
                ("method", request.method().as_str()),
                ("resource", resource.as_str()),
            ]);
            request
        })
    }

    pub fn failed(&self, controller: &'static str, reason: &'static str) {
        self.failures
            .inc(&[("controller", controller), ("reason", reason)]);
    }
}

/// The resource a request path addresses, as `pods` or `swarms/status`: the segment after the
/// group version (and namespace), with the subresource after the name.
fn resource_of(path: &str) -> String {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let after_version = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    }
    .unwrap_or_default();
    let within = match after_version {
        ["namespaces", _, rest @ ..] if !rest.is_empty() => rest,
        all => all,
    };
    match within {
        [resource] | [resource, _] => (*resource).to_owned(),
        [resource, _, subresource, ..] => format!("{resource}/{subresource}"),
        [] => "other".to_owned(),
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
        for (method, path) in [
            (http::Method::GET, "/api/v1/namespaces/research/pods/demo-0"),
            (
                http::Method::PATCH,
                "/apis/rlswarm.dev/v1alpha1/namespaces/research/swarms/demo/status",
            ),
            (http::Method::GET, "/api/v1/namespaces/research/pods/demo-1"),
        ] {
            let request = http::Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap();
            service.clone().oneshot(request).await.unwrap();
        }
        let count = |method: &str, resource: &str| {
            metrics
                .api_requests
                .get(&[("method", method), ("resource", resource)])
        };
        assert_eq!(count("GET", "pods"), 2);
        assert_eq!(count("PATCH", "swarms/status"), 1);
        assert_eq!(count("POST", "pods"), 0);
    }

    #[test]
    fn requests_are_named_by_resource() {
        for (path, resource) in [
            ("/api/v1/namespaces/ns/pods", "pods"),
            ("/api/v1/namespaces/ns/pods/a", "pods"),
            ("/api/v1/namespaces/ns/pods/a/status", "pods/status"),
            ("/apis/events.k8s.io/v1/namespaces/ns/events", "events"),
            ("/apis/rlswarm.dev/v1alpha1/swarms", "swarms"),
            (
                "/apis/coordination.k8s.io/v1/namespaces/ops/leases/x",
                "leases",
            ),
            ("/api/v1/namespaces/ns", "namespaces"),
            ("/version", "other"),
        ] {
            assert_eq!(resource_of(path), resource, "{path}");
        }
    }
}
