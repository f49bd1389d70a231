//! Instruments recorded once and exposed twice: in the Prometheus registry that `/metrics` serves,
//! and, when OTLP export is on, through an OpenTelemetry meter.

use std::sync::atomic::AtomicU64;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge as PromGauge;
use prometheus_client::metrics::histogram::Histogram as PromHistogram;
use prometheus_client::registry::Registry;

pub use prometheus_client::metrics::histogram::exponential_buckets;

/// Label names are fixed by the code; values vary.
type Labels = Vec<(&'static str, String)>;

/// The set of instruments of one process.
pub struct Metrics {
    registry: Registry,
    meter: Option<Meter>,
}

impl Metrics {
    /// Instruments exported through `meter` as well as to Prometheus, or only to Prometheus.
    pub fn new(meter: Option<Meter>) -> Self {
        Self {
            registry: Registry::default(),
            meter,
        }
    }

    /// A monotonic count; Prometheus shows it as `<name>_total`.
    pub fn counter(&mut self, name: &'static str, help: &'static str) -> Counter {
        let prometheus = Family::default();
        self.registry.register(name, help, prometheus.clone());
        let otel = self
            .meter
            .as_ref()
            .map(|meter| meter.u64_counter(name).with_description(help).build());
        Counter { prometheus, otel }
    }

    /// A value that goes up and down.
    pub fn gauge(&mut self, name: &'static str, help: &'static str) -> Gauge {
        let prometheus = Family::default();
        self.registry.register(name, help, prometheus.clone());
        let otel = self
            .meter
            .as_ref()
            .map(|meter| meter.f64_gauge(name).with_description(help).build());
        Gauge { prometheus, otel }
    }

    /// A distribution over `buckets` (upper bounds).
    pub fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        buckets: impl Iterator<Item = f64>,
    ) -> Histogram {
        let bounds: Vec<f64> = buckets.collect();
        let prometheus = Family::new_with_constructor(Buckets(bounds.clone()));
        self.registry.register(name, help, prometheus.clone());
        let otel = self.meter.as_ref().map(|meter| {
            meter
                .f64_histogram(name)
                .with_description(help)
                .with_boundaries(bounds)
                .build()
        });
        Histogram { prometheus, otel }
    }

    /// The Prometheus side, for the admin server.
    pub fn into_registry(self) -> Registry {
        self.registry
    }
}

fn owned(labels: &[(&'static str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(name, value)| (*name, (*value).to_owned()))
        .collect()
}

fn key_values(labels: &[(&'static str, &str)]) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(name, value)| KeyValue::new(*name, (*value).to_owned()))
        .collect()
}

#[derive(Clone, Debug)]
pub struct Counter {
    prometheus: Family<Labels, PromCounter>,
    otel: Option<opentelemetry::metrics::Counter<u64>>,
}

impl Counter {
    pub fn inc(&self, labels: &[(&'static str, &str)]) {
        self.inc_by(1, labels);
    }

    pub fn inc_by(&self, by: u64, labels: &[(&'static str, &str)]) {
        self.prometheus.get_or_create(&owned(labels)).inc_by(by);
        if let Some(otel) = &self.otel {
            otel.add(by, &key_values(labels));
        }
    }

    pub fn get(&self, labels: &[(&'static str, &str)]) -> u64 {
        self.prometheus.get_or_create(&owned(labels)).get()
    }
}

#[derive(Clone, Debug)]
pub struct Gauge {
    prometheus: Family<Labels, PromGauge<f64, AtomicU64>>,
    otel: Option<opentelemetry::metrics::Gauge<f64>>,
}

impl Gauge {
    pub fn set(&self, value: f64, labels: &[(&'static str, &str)]) {
        self.prometheus.get_or_create(&owned(labels)).set(value);
        if let Some(otel) = &self.otel {
            otel.record(value, &key_values(labels));
        }
    }

    pub fn get(&self, labels: &[(&'static str, &str)]) -> f64 {
        self.prometheus.get_or_create(&owned(labels)).get()
    }
}

/// Makes each labelled histogram of a family with the family's bucket bounds.
#[derive(Clone, Debug)]
struct Buckets(Vec<f64>);

impl MetricConstructor<PromHistogram> for Buckets {
    fn new_metric(&self) -> PromHistogram {
        PromHistogram::new(self.0.iter().copied())
    }
}

#[derive(Clone, Debug)]
pub struct Histogram {
    prometheus: Family<Labels, PromHistogram, Buckets>,
    otel: Option<opentelemetry::metrics::Histogram<f64>>,
}

impl Histogram {
    pub fn observe(&self, value: f64, labels: &[(&'static str, &str)]) {
        self.prometheus.get_or_create(&owned(labels)).observe(value);
        if let Some(otel) = &self.otel {
            otel.record(value, &key_values(labels));
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn prometheus_sees_every_instrument_with_its_labels() {
        let mut metrics = Metrics::new(None);
        let rounds = metrics.counter("demo_rounds", "Rounds");
        let reward = metrics.gauge("demo_reward", "Reward");
        let step = metrics.histogram(
            "demo_step_seconds",
            "Step",
            exponential_buckets(0.1, 2.0, 3),
        );
        rounds.inc(&[]);
        rounds.inc_by(2, &[("source", "local")]);
        reward.set(0.25, &[("family", "basic_arithmetic")]);
        step.observe(0.15, &[]);
        assert_eq!(rounds.get(&[("source", "local")]), 2);
        assert_eq!(reward.get(&[("family", "basic_arithmetic")]), 0.25);

        let mut text = String::new();
        encode(&mut text, &metrics.into_registry()).unwrap();
        for line in [
            "demo_rounds_total 1",
            "demo_rounds_total{source=\"local\"} 2",
            "demo_reward{family=\"basic_arithmetic\"} 0.25",
            "demo_step_seconds_bucket{le=\"0.2\"} 1",
            "demo_step_seconds_count 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
