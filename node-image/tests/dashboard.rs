//! The Grafana dashboard shipped with the chart and the node's and operator's `/metrics` agree:
//! every series a panel queries is exposed, and every metric has a panel, so a renamed metric cannot
//! leave a panel silently empty.

// clippy's allow-unwrap-in-tests covers #[test] functions only, not this file's helpers.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use prometheus_client::encoding::text::encode;
use serde_json::Value;
use swarm_node::metrics::{LedgerOutcome, NodeMetrics};
use swarm_node::report::RoundReport;
use swarm_telemetry::Metrics;

/// Renders one process's `/metrics` text.
type Exposition = fn() -> String;

/// Who exposes the metrics with a prefix.
const SOURCES: [(&str, Exposition); 2] = [
    ("swarm_node_", node_exposition),
    ("swarm_operator_", operator_exposition),
];

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/swarm-operator/files/dashboards/rl-swarm.json"
);

/// The node's `/metrics` text. A family with no sample is not encoded at all, so every recording
/// method runs once, on a round that sets every field a metric comes from.
fn node_exposition() -> String {
    let mut metrics = Metrics::new(None);
    let node = NodeMetrics::register(&mut metrics);
    node.record_round(&RoundReport {
        external_reward: Some(0.5),
        reward_by_source: BTreeMap::from([("basic_arithmetic".to_owned(), 0.5)]),
        loss: Some(0.1),
        sample_seconds: 1.0,
        messages_rejected: BTreeMap::from([("wrong_round".to_owned(), 1)]),
        ledger_pending: Some(1),
        ..RoundReport::default()
    });
    node.ledger_settled(LedgerOutcome::Recorded);
    node.ledger_failed();
    let mut text = String::new();
    encode(&mut text, &metrics.into_registry()).unwrap();
    text
}

/// The operator's `/metrics` text, every metric recorded once.
fn operator_exposition() -> String {
    let mut metrics = Metrics::new(None);
    let operator = swarm_operator::metrics::Metrics::register(&mut metrics);
    drop(operator.start("swarm"));
    operator.failed("swarm", "Conflict");
    operator
        .api_requests
        .inc(&[("method", "GET"), ("resource", "pods")]);
    let mut text = String::new();
    encode(&mut text, &metrics.into_registry()).unwrap();
    text
}

/// Each metric family in an exposition, with the series names Prometheus scrapes for it: a
/// counter's `_total`, a histogram's `_bucket`, `_sum` and `_count`, a gauge's own name.
fn exposed(exposition: &str) -> BTreeMap<String, Vec<String>> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|line| {
            let (name, kind) = line.split_once(' ').unwrap();
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            let series = suffixes.iter().map(|s| format!("{name}{s}")).collect();
            (name.to_owned(), series)
        })
        .collect()
}

/// Series names starting with `prefix` in the dashboard's PromQL.
fn queried(prefix: &str) -> BTreeSet<String> {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let mut queries = Vec::new();
    promql(&dashboard, &mut queries);
    queries
        .iter()
        .flat_map(|query| query.match_indices(prefix).map(|(at, _)| &query[at..]))
        .map(|rest| {
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            rest[..end].to_owned()
        })
        .collect()
}

/// Panel targets' `expr` and template variables' `definition`, at any depth (rows nest panels).
fn promql<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                match (key.as_str(), field) {
                    ("expr" | "definition", Value::String(query)) => out.push(query),
                    _ => promql(field, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| promql(item, out)),
        _ => {}
    }
}

#[test]
fn every_series_the_dashboard_queries_is_exposed() {
    for (prefix, exposition) in SOURCES {
        let exposed = exposed(&exposition());
        let series: BTreeSet<&String> = exposed.values().flatten().collect();
        let queried = queried(prefix);
        assert!(!queried.is_empty(), "no {prefix} series in {DASHBOARD}");
        let unknown: Vec<&String> = queried.iter().filter(|s| !series.contains(s)).collect();
        assert!(
            unknown.is_empty(),
            "the dashboard queries {unknown:?}, which nothing exposes; exposed: {series:?}"
        );
    }
}

#[test]
fn every_metric_is_on_the_dashboard() {
    for (prefix, exposition) in SOURCES {
        let queried = queried(prefix);
        let missing: Vec<String> = exposed(&exposition())
            .into_iter()
            .filter(|(name, series)| {
                name.starts_with(prefix) && !series.iter().any(|s| queried.contains(s))
            })
            .map(|(name, _)| name)
            .collect();
        assert!(missing.is_empty(), "no dashboard panel plots {missing:?}");
    }
}
