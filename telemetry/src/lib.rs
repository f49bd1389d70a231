//! Observability shared by the operator and the training node:
//! - [`Telemetry`]: logs on standard error, and — when an OTLP endpoint is configured through the
//!   standard `OTEL_EXPORTER_OTLP_*` variables — OpenTelemetry traces (every `tracing` span) and
//!   metrics exported over OTLP/HTTP;
//! - [`Metrics`]: instruments recorded once and exposed twice, to Prometheus (`/metrics`, always)
//!   and to OpenTelemetry (when exporting);
//! - [`admin`]: the `/healthz`, `/readyz` and `/metrics` server.

pub mod admin;
mod metrics;
mod otlp;

pub use metrics::{Counter, Gauge, Histogram, Metrics, exponential_buckets};
pub use otlp::{LogFormat, Telemetry, TelemetryError};
