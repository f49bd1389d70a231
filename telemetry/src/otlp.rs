//! Logs, and OpenTelemetry traces and metrics over OTLP/HTTP (protobuf) when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or a per-signal `..._TRACES_ENDPOINT` / `..._METRICS_ENDPOINT`)
//! is set. The rest of the standard variables apply as the OpenTelemetry SDK reads them:
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_METRIC_EXPORT_INTERVAL`, headers.

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{ExporterBuildError, MetricExporter, SpanExporter};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

const ENDPOINT_VARIABLES: [&str; 3] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
];

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot set up the OTLP {signal} exporter for {endpoint}: {source}")]
    Exporter {
        signal: &'static str,
        endpoint: String,
        source: ExporterBuildError,
    },
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text { ansi: bool },
    Json,
}

/// The process's telemetry; flushes what is still buffered when dropped.
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

/// The configured OTLP endpoint, shown as `scheme://host:port` only (its path or query may carry
/// a token); `None` when export is off.
fn otlp_endpoint() -> Option<String> {
    let raw = ENDPOINT_VARIABLES
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))?;
    Some(match url::Url::parse(&raw) {
        Ok(url) => match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
            _ => format!("{}://", url.scheme()),
        },
        Err(_) => "an unparsable URL".to_owned(),
    })
}

impl Telemetry {
    /// Installs the global log subscriber (level from `RUST_LOG`, `info` by default) and, with an
    /// OTLP endpoint, the trace and metric exporters. Call it before starting any async runtime:
    /// the exporters' HTTP client runs on threads of its own.
    pub fn init(service_name: &'static str, format: LogFormat) -> Result<Self, TelemetryError> {
        let endpoint = otlp_endpoint();
        let (tracer_provider, meter_provider) = match &endpoint {
            Some(endpoint) => {
                let resource = resource(service_name);
                let failed = |signal| {
                    move |source| TelemetryError::Exporter {
                        signal,
                        endpoint: endpoint.clone(),
                        source,
                    }
                };
                let spans = SpanExporter::builder()
                    .with_http()
                    .build()
                    .map_err(failed("trace"))?;
                let metrics = MetricExporter::builder()
                    .with_http()
                    .build()
                    .map_err(failed("metric"))?;
                (
                    Some(
                        SdkTracerProvider::builder()
                            .with_resource(resource.clone())
                            .with_batch_exporter(spans)
                            .build(),
                    ),
                    Some(
                        SdkMeterProvider::builder()
                            .with_resource(resource)
                            .with_reader(PeriodicReader::builder(metrics).build())
                            .build(),
                    ),
                )
            }
            None => (None, None),
        };

        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let logs = match format {
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .boxed(),
            LogFormat::Text { ansi } => tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .boxed(),
        };
        let traces = tracer_provider.as_ref().map(|provider| {
            tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name))
        });
        tracing_subscriber::registry()
            .with(filter)
            .with(logs)
            .with(traces)
            .try_init()?;
        if let Some(endpoint) = &endpoint {
            tracing::info!(%endpoint, "exporting traces and metrics over OTLP/HTTP");
        }
        Ok(Self {
            tracer_provider,
            meter_provider,
        })
    }

    /// A meter for instruments exported over OTLP; `None` when export is off.
    pub fn meter(&self, scope: &'static str) -> Option<Meter> {
        self.meter_provider
            .as_ref()
            .map(|provider| provider.meter(scope))
    }
}

/// `service.name` from `OTEL_SERVICE_NAME` if set, else the program's own name; the SDK adds
/// `OTEL_RESOURCE_ATTRIBUTES`.
fn resource(service_name: &'static str) -> Resource {
    let builder = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        builder.build()
    } else {
        builder.with_service_name(service_name).build()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // Errors here mean the collector is unreachable; nothing more can be done at exit.
        if let Some(provider) = self.tracer_provider.take() {
            let _ = provider.shutdown();
        }
        if let Some(provider) = self.meter_provider.take() {
            let _ = provider.shutdown();
        }
    }
}
