//! The Helm chart: lint, render, values schema, and acceptance of what it renders by the real API server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use swarm_e2e::*;

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

/// Kinds and names of the rendered objects.
fn objects(rendered: &str) -> Vec<(String, String)> {
    rendered
        .split("\n---")
        .filter_map(|doc| serde_yaml_ng::from_str::<serde_json::Value>(doc).ok())
        .filter(|v| v.is_object())
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
fn values_schema_rejects_wrong_values_with_clear_messages() {
    let env = Env::from_env();
    let chart = env.chart();
    for (value, expected) in [
        ("replicaCount=-1", "replicaCount"),
        ("scope=everywhere", "scope"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("adminPort=80", "adminPort"),
        ("networkPolicy.ledgerRpcPorts={0}", "ledgerRpcPorts"),
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
async fn rendered_manifests_are_accepted_by_the_api_server() {
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
    ] {
        let rendered = template(&env, &values);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rendered.yaml");
        std::fs::write(&path, rendered).unwrap();
        env.kubectl(&[
            "apply",
            "--dry-run=server",
            "--namespace",
            "rl-swarm-system",
            "-f",
            path.to_str().unwrap(),
        ]);
    }
}
