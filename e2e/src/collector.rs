//! A real OpenTelemetry Collector (`e2e/tools/otelcol`, built by `e2e/bin/build-tools`) as a local
//! process: OTLP in on a loopback port, everything received written to `otlp.jsonl` as OTLP JSON,
//! which the tests read back as spans and metrics.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const STARTUP: Duration = Duration::from_secs(30);

/// The collector process; killed when dropped.
pub struct Collector {
    child: Child,
    host: IpAddr,
    http_port: u16,
    output: PathBuf,
    log: PathBuf,
}

/// A span as the collector received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedSpan {
    /// The resource attribute `service.name`.
    pub service: String,
    pub name: String,
    /// String values as they are; other values as their OTLP JSON (`42`, `true`, `[...]`).
    pub attributes: BTreeMap<String, String>,
}

/// A metric as the collector received it (one per metric in each export, not per data point).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedMetric {
    /// The resource attribute `service.name`.
    pub service: String,
    pub name: String,
}

impl Collector {
    /// Writes `dir/otelcol.yaml`, starts `binary` with it (log in `dir/otelcol.log`) and returns
    /// once its OTLP/HTTP port, on 127.0.0.1, accepts connections.
    pub fn start(binary: &Path, dir: &Path) -> Self {
        Self::start_on(binary, dir, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// The same, listening on `host` only (e.g. the real node's bridge, which its pods reach).
    pub fn start_on(binary: &Path, dir: &Path, host: IpAddr) -> Self {
        let http_port = super::free_port();
        let output = dir.join("otlp.jsonl");
        let log = dir.join("otelcol.log");
        let config = dir.join("otelcol.yaml");
        let yaml =
            serde_yaml_ng::to_string(&config_yaml(SocketAddr::new(host, http_port), &output))
                .expect("collector config yaml");
        std::fs::write(&config, yaml).expect("write collector config");
        let file = std::fs::File::create(&log).expect("collector log file");
        let child = Command::new(binary)
            .arg(format!("--config=file:{}", config.display()))
            .stdout(file.try_clone().expect("log file handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut collector = Self {
            child,
            host,
            http_port,
            output,
            log,
        };
        collector.wait_until_listening();
        collector
    }

    pub fn http_endpoint(&self) -> String {
        format!("http://{}", SocketAddr::new(self.host, self.http_port))
    }

    /// Every span exported so far (the file exporter flushes every 100 ms).
    pub fn spans(&self) -> Vec<ExportedSpan> {
        parse_spans(&self.exported())
    }

    /// Every metric exported so far (the file exporter flushes every 100 ms).
    pub fn metrics(&self) -> Vec<ExportedMetric> {
        parse_metrics(&self.exported())
    }

    fn exported(&self) -> String {
        // The exporter creates the file when it starts, but a test may look before anything came.
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("otelcol exited ({status}):\n{}", self.log_text());
            }
            if TcpStream::connect((self.host, self.http_port)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "otelcol not listening on {} after {STARTUP:?}:\n{}",
                    self.http_port,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// OTLP over HTTP only: the operator and the node export with OTLP/HTTP.
fn config_yaml(http: SocketAddr, output: &Path) -> Value {
    let pipeline = json!({ "receivers": ["otlp"], "exporters": ["file"] });
    json!({
        "receivers": { "otlp": { "protocols": {
            "http": { "endpoint": http.to_string() },
        } } },
        // The default flush interval is 1 s; shorter keeps the tests' polling short.
        "exporters": { "file": { "path": output, "flush_interval": "100ms" } },
        "service": {
            // Its own metrics would otherwise be served on localhost:8888, one fixed port for all
            // collectors.
            "telemetry": { "metrics": { "level": "none" } },
            "pipelines": { "traces": pipeline, "metrics": pipeline },
        },
    })
}

/// The complete lines of the exporter's output, each one OTLP JSON export request. A flush can
/// land in the middle of a line, so a last line without its newline is left for the next read.
fn export_requests(text: &str) -> impl Iterator<Item = Value> + '_ {
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("otelcol output is not JSON ({e}): {line}"))
        })
}

fn parse_spans(text: &str) -> Vec<ExportedSpan> {
    let mut spans = Vec::new();
    for request in export_requests(text) {
        for resource in array(&request, "resourceSpans") {
            let service = service_name(resource);
            for scope in array(resource, "scopeSpans") {
                for span in array(scope, "spans") {
                    spans.push(ExportedSpan {
                        service: service.clone(),
                        name: string(span, "name"),
                        attributes: attributes(span),
                    });
                }
            }
        }
    }
    spans
}

fn parse_metrics(text: &str) -> Vec<ExportedMetric> {
    let mut metrics = Vec::new();
    for request in export_requests(text) {
        for resource in array(&request, "resourceMetrics") {
            let service = service_name(resource);
            for scope in array(resource, "scopeMetrics") {
                for metric in array(scope, "metrics") {
                    metrics.push(ExportedMetric {
                        service: service.clone(),
                        name: string(metric, "name"),
                    });
                }
            }
        }
    }
    metrics
}

// OTLP JSON leaves out empty fields, so a missing one reads as empty.
fn array<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value[key].as_array().map_or(&[], Vec::as_slice)
}

fn string(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_owned()
}

fn service_name(resource: &Value) -> String {
    attributes(&resource["resource"])
        .remove("service.name")
        .unwrap_or_default()
}

/// `attributes: [{ "key": k, "value": { "<type>Value": v } }]` as k → v.
fn attributes(value: &Value) -> BTreeMap<String, String> {
    array(value, "attributes")
        .iter()
        .map(|kv| {
            let typed = kv["value"].as_object().and_then(|o| o.values().next());
            let text = match typed {
                // stringValue, and intValue, which OTLP JSON writes as a string.
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            (string(kv, "key"), text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as otelcol's file exporter writes them (shortened), the second one cut off by a flush.
    const TRACES: &str = concat!(
        r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"swarm-operator"}}]},"scopeSpans":[{"scope":{"name":"swarm"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"reconcile","kind":1,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000","attributes":[{"key":"swarm","value":{"stringValue":"demo"}},{"key":"round","value":{"intValue":"3"}},{"key":"leader","value":{"boolValue":true}},{"key":"empty","value":{}}],"status":{}}]}]}]}"#,
        "\n",
        r#"{"resourceSpans":[{"resource":{"#,
    );

    const METRICS: &str = concat!(
        r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"swarm-node"}}]},"scopeMetrics":[{"scope":{},"metrics":[{"name":"swarm_node_rounds_total","sum":{"dataPoints":[{"asInt":"2","timeUnixNano":"1544712660300000000"}],"aggregationTemporality":2,"isMonotonic":true}},{"name":"swarm_node_reward","gauge":{"dataPoints":[{"asDouble":0.5}]}}]}]},{"resource":{},"scopeMetrics":[{"metrics":[{"name":"orphan"}]}]}]}"#,
        "\n",
    );

    #[test]
    fn spans_from_file_exporter_json() {
        let attributes = [
            ("swarm", "demo"),
            ("round", "3"),
            ("leader", "true"),
            ("empty", ""),
        ];
        assert_eq!(
            parse_spans(TRACES),
            vec![ExportedSpan {
                service: "swarm-operator".into(),
                name: "reconcile".into(),
                attributes: attributes.map(|(k, v)| (k.into(), v.into())).into(),
            }]
        );
        assert!(parse_metrics(TRACES).is_empty());
    }

    #[test]
    fn metrics_from_file_exporter_json() {
        let metric = |service: &str, name: &str| ExportedMetric {
            service: service.into(),
            name: name.into(),
        };
        assert_eq!(
            parse_metrics(METRICS),
            vec![
                metric("swarm-node", "swarm_node_rounds_total"),
                metric("swarm-node", "swarm_node_reward"),
                metric("", "orphan"),
            ]
        );
        assert!(parse_spans(METRICS).is_empty());
    }
}
