//! The Helm chart: lint, render, values schema, and acceptance of what it renders by the real API server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use swarm_e2e::*;
use swarm_operator::api::labels;

fn template(env: &Env, values: &[&str]) -> String {
    let chart = env.chart();
    let mut args = vec![
        "template",
        "rlso",
        chart.to_str().unwrap(),
        "--namespace",
        "rl-swarm-system",
    ];
    args.extend_from_slice(values);
    env.helm(&args)
}

/// The rendered objects.
fn documents(rendered: &str) -> Vec<Value> {
    rendered
        .split("\n---")
        .filter_map(|doc| serde_yaml_ng::from_str::<Value>(doc).ok())
        .filter(Value::is_object)
        .collect()
}

/// The one rendered object of `kind`.
fn only(rendered: &str, kind: &str) -> Value {
    let mut found: Vec<Value> = documents(rendered)
        .into_iter()
        .filter(|v| v["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} expected in\n{rendered}");
    found.remove(0)
}

/// Kinds and names of the rendered objects.
fn objects(rendered: &str) -> Vec<(String, String)> {
    documents(rendered)
        .into_iter()
        .map(|v| {
            (
                v["kind"].as_str().unwrap_or_default().to_owned(),
                v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

#[test]
fn chart_lints_clean() {
    let env = Env::from_env();
    let out = env.helm(&["lint", "--strict", env.chart().to_str().unwrap()]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn cluster_scope_renders_crds_cluster_role_and_deployment() {
    let env = Env::from_env();
    let rendered = template(&env, &[]);
    let kinds = objects(&rendered);
    for expected in [
        ("CustomResourceDefinition", "swarms.rlswarm.dev"),
        ("CustomResourceDefinition", "swarmmembers.rlswarm.dev"),
        ("ClusterRole", "rlso-swarm-operator"),
        ("ClusterRoleBinding", "rlso-swarm-operator"),
        ("ServiceAccount", "rlso-swarm-operator"),
        ("Deployment", "rlso-swarm-operator"),
        ("Service", "rlso-swarm-operator-metrics"),
    ] {
        assert!(
            kinds
                .iter()
                .any(|(k, n)| (k.as_str(), n.as_str()) == expected),
            "{expected:?} missing from {kinds:?}"
        );
    }
    assert!(
        !kinds.iter().any(|(k, _)| k == "Role"),
        "no leader-election Role with one replica"
    );
    assert!(rendered.contains("helm.sh/resource-policy: keep"));
    assert!(!rendered.contains("--leader-elect"));
}

#[test]
fn namespace_scope_grants_only_a_role_in_the_watched_namespace() {
    let env = Env::from_env();
    let rendered = template(
        &env,
        &[
            "--set",
            "scope=namespace",
            "--set",
            "watchNamespace=team-a",
            "--set",
            "crds.install=false",
        ],
    );
    let kinds = objects(&rendered);
    assert!(
        !kinds
            .iter()
            .any(|(k, _)| k.starts_with("Cluster") || k == "CustomResourceDefinition"),
        "{kinds:?}"
    );
    assert!(rendered.contains("namespace: team-a"));
    assert!(rendered.contains("--watch-namespace=team-a"));
}

#[test]
fn two_replicas_turn_leader_election_on() {
    let env = Env::from_env();
    let rendered = template(&env, &["--set", "replicaCount=2"]);
    assert!(rendered.contains("--leader-elect"));
    assert!(
        objects(&rendered).contains(&("Role".into(), "rlso-swarm-operator-leader-election".into()))
    );
}

#[test]
fn optional_monitoring_and_network_policy_render() {
    let env = Env::from_env();
    let rendered = template(
        &env,
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "networkPolicy.ledgerRpcPorts={8545}",
        ],
    );
    let kinds = objects(&rendered);
    assert!(kinds.iter().any(|(k, _)| k == "ServiceMonitor"));
    assert!(kinds.iter().any(|(k, _)| k == "NetworkPolicy"));
    assert!(rendered.contains("port: 8545"), "{rendered}");
}

#[test]
fn grafana_dashboard_ships_in_a_config_map_the_sidecar_picks_up() {
    let env = Env::from_env();
    assert!(
        !objects(&template(&env, &[]))
            .iter()
            .any(|(k, _)| k == "ConfigMap")
    );
    let rendered = template(
        &env,
        &[
            "--set",
            "grafanaDashboard.enabled=true",
            "--set",
            "grafanaDashboard.annotations.grafana_folder=RL swarm",
        ],
    );
    let config_map = only(&rendered, "ConfigMap");
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        config_map["metadata"]["annotations"]["grafana_folder"],
        "RL swarm"
    );
    let dashboard: Value =
        serde_json::from_str(config_map["data"]["rl-swarm.json"].as_str().unwrap()).unwrap();
    assert_eq!(dashboard["uid"], "rl-swarm");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(
        panels
            .iter()
            .any(|p| p["type"] == "timeseries" && p["targets"][0]["expr"].is_string()),
        "no timeseries panel with a query"
    );
    for panel in panels {
        assert!(panel["gridPos"]["w"].is_u64(), "no gridPos: {panel}");
    }
    let variables: Vec<&Value> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["name"])
        .collect();
    assert_eq!(variables, ["datasource", "namespace", "pod"]);
}

#[test]
fn pod_monitor_scrapes_member_pods_in_the_namespaces_the_operator_manages() {
    let env = Env::from_env();
    assert!(
        !objects(&template(&env, &[]))
            .iter()
            .any(|(k, _)| k == "PodMonitor")
    );
    for (scope, namespaces) in [
        (vec![], json!({"any": true})),
        (
            vec!["--set", "scope=namespace", "--set", "watchNamespace=team-a"],
            json!({"matchNames": ["team-a"]}),
        ),
        (
            vec!["--set", "scope=namespace"],
            json!({"matchNames": ["rl-swarm-system"]}),
        ),
    ] {
        let mut values = vec![
            "--set",
            "metrics.podMonitor.enabled=true",
            "--set",
            "metrics.podMonitor.interval=15s",
            "--set",
            "metrics.podMonitor.labels.release=prometheus",
        ];
        values.extend(&scope);
        let pod_monitor = only(&template(&env, &values), "PodMonitor");
        let spec = &pod_monitor["spec"];
        assert_eq!(spec["namespaceSelector"], namespaces, "{scope:?}");
        assert_eq!(
            spec["selector"]["matchLabels"][labels::MANAGED_BY],
            labels::MANAGED_BY_VALUE
        );
        assert_eq!(spec["selector"]["matchLabels"][labels::COMPONENT], "member");
        assert_eq!(
            spec["podMetricsEndpoints"],
            json!([{"port": "metrics", "path": "/metrics", "interval": "15s"}])
        );
        assert_eq!(pod_monitor["metadata"]["labels"]["release"], "prometheus");
    }
}

#[test]
fn otlp_endpoint_configures_the_operator_and_opens_egress_to_the_collector() {
    let env = Env::from_env();
    let operator_env = |rendered: &str| {
        only(rendered, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .clone()
    };
    let default = template(&env, &[]);
    assert!(
        !operator_env(&default)
            .iter()
            .any(|e| e["name"].as_str().unwrap().starts_with("OTEL_")),
        "OTLP export is off by default"
    );

    let rendered = template(
        &env,
        &[
            "--set",
            "telemetry.otlpEndpoint=http://otel-collector.monitoring:4318",
            "--set",
            "telemetry.metricExportIntervalSeconds=10",
            "--set",
            "networkPolicy.enabled=true",
        ],
    );
    let vars = operator_env(&rendered);
    let position = |name: &str| {
        vars.iter()
            .position(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {vars:?}"))
    };
    let value = |name: &str| vars[position(name)]["value"].clone();
    assert_eq!(
        value("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "http://otel-collector.monitoring:4318"
    );
    assert_eq!(value("OTEL_EXPORTER_OTLP_PROTOCOL"), "http/protobuf");
    assert_eq!(value("OTEL_METRIC_EXPORT_INTERVAL"), "10000");
    assert_eq!(
        value("OTEL_RESOURCE_ATTRIBUTES"),
        "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)"
    );
    // The kubelet expands $(VAR) only from entries defined earlier in the list.
    assert!(position("POD_NAME") < position("OTEL_RESOURCE_ATTRIBUTES"));
    assert!(position("POD_NAMESPACE") < position("OTEL_RESOURCE_ATTRIBUTES"));

    for (endpoint, port) in [
        ("http://otel-collector.monitoring:4318", 4318),
        ("http://otel-collector.monitoring/otlp", 80),
        ("https://otlp.example.com:8443", 8443),
    ] {
        let rendered = template(
            &env,
            &[
                "--set",
                &format!("telemetry.otlpEndpoint={endpoint}"),
                "--set",
                "networkPolicy.enabled=true",
            ],
        );
        let policy = only(&rendered, "NetworkPolicy");
        let egress = policy["spec"]["egress"].as_array().unwrap();
        assert!(
            egress.contains(&json!({"ports": [{"port": port, "protocol": "TCP"}]})),
            "{endpoint}: no egress rule for port {port} in {egress:?}"
        );
    }
}

#[test]
fn values_schema_rejects_wrong_values_with_clear_messages() {
    let env = Env::from_env();
    let chart = env.chart();
    for (value, expected) in [
        ("replicaCount=-1", "replicaCount"),
        ("scope=everywhere", "scope"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("adminPort=80", "adminPort"),
        ("networkPolicy.ledgerRpcPorts={0}", "ledgerRpcPorts"),
        ("telemetry.otlpEndpoint=collector:4317", "otlpEndpoint"),
        (
            "telemetry.otlpEndpoint=grpc://collector:4317",
            "otlpEndpoint",
        ),
        (
            "telemetry.metricExportIntervalSeconds=0",
            "metricExportIntervalSeconds",
        ),
        (
            "telemetry.metricExportIntervalSeconds=3601",
            "metricExportIntervalSeconds",
        ),
        ("metrics.podMonitor.interval=30", "interval"),
        (
            "grafanaDashboard.labels.grafana_dashboard=1",
            "grafana_dashboard",
        ),
        ("unknownKey=1", "unknownKey"),
    ] {
        let output = env.try_run(
            &env.helm,
            &["template", "rlso", chart.to_str().unwrap(), "--set", value],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{value} was accepted");
        assert!(stderr.contains(expected), "{value}: {stderr}");
    }
}

#[tokio::test]
async fn rendered_manifests_are_accepted_by_the_api_server_without_warnings() {
    let env = Env::from_env();
    ensure_crds(&env).await;
    for values in [
        vec![],
        vec![
            "--set",
            "scope=namespace",
            "--set",
            "crds.install=false",
            "--set",
            "replicaCount=3",
        ],
        vec!["--set", "networkPolicy.enabled=true"],
        vec![
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "telemetry.otlpEndpoint=http://otel-collector.monitoring:4318",
            "--set",
            "grafanaDashboard.enabled=true",
        ],
    ] {
        let rendered = template(&env, &values);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rendered.yaml");
        std::fs::write(&path, rendered).unwrap();
        // Server-side apply: client-side apply would warn about the objects helm created without
        // its last-applied annotation; only the API server's own warnings count here.
        env.run_without_warnings(
            &env.kubectl,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--dry-run=server",
                "--namespace",
                "rl-swarm-system",
                "-f",
                path.to_str().unwrap(),
            ],
        );
    }
}
