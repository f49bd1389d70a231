//! Operator scale benchmark on the test control plane: for each N, scale one Swarm from 0 to N
//! members and report the seconds until all N are Running (ready), the API requests the operator
//! sent per member, and the operator's peak memory. Run it through `e2e/bin/bench-scale`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use swarm_e2e::*;
use swarm_operator::api::Swarm;

/// kwok nodes hold 110 pods each; the benchmark adds CPU nodes so that every member fits.
const PODS_PER_NODE: usize = 110;

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("member counts, e.g. 100 500"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 500]
    } else {
        sizes
    };
    let env = Env::from_env();
    ensure_crds(&env).await;
    let client = env.admin_client().await;
    add_nodes(&client, sizes.iter().max().copied().unwrap_or(0)).await;

    println!(
        "| members | seconds to all Running | API requests per member | operator peak RSS (MiB) |"
    );
    println!("| ---: | ---: | ---: | ---: |");
    for n in sizes {
        let row = run(&env, &client, n).await;
        println!(
            "| {n} | {:.1} | {:.2} | {:.0} |",
            row.seconds,
            row.requests as f64 / n as f64,
            row.peak_rss_kib as f64 / 1024.0
        );
        eprintln!("  requests per member for {n}, by method and resource:");
        for (kind, count) in &row.by_kind {
            eprintln!("    {kind}: {:.2}", *count as f64 / n as f64);
        }
    }
}

struct Row {
    seconds: f64,
    requests: u64,
    by_kind: BTreeMap<String, u64>,
    peak_rss_kib: u64,
}

async fn run(env: &Env, client: &kube::Client, n: usize) -> Row {
    let ns = TestNamespace::create(env, client, &format!("bench{n}")).await;
    let release = install_release(env, &ns.name, &[]);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig(env, client, &release, dir.path()).await;
    let operator = OperatorProcess::start(
        env,
        OperatorOptions {
            name: "operator",
            namespace: &ns.name,
            kubeconfig: &kubeconfig,
            leader_election: None,
            log_dir: dir.path(),
            otlp_endpoint: None,
        },
    );
    let manifest = dir.path().join("swarm.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: rlswarm.dev/v1alpha1\nkind: Swarm\nmetadata:\n  name: bench\nspec:\n  replicas: 0\n  model:\n    source:\n      hub:\n        id: Qwen/Qwen2.5-0.5B-Instruct\n",
    )
    .unwrap();
    env.kubectl(&["apply", "-n", &ns.name, "-f", manifest.to_str().unwrap()]);
    let swarms: Api<Swarm> = Api::namespaced(client.clone(), &ns.name);
    // Settled at zero members: the operator has written the status and is idle.
    wait_for(
        env,
        &ns.name,
        &[&operator],
        "the empty Swarm to settle",
        Duration::from_secs(60),
        || async {
            let swarm = swarms.get("bench").await.map_err(|e| e.to_string())?;
            let observed = swarm.status.as_ref().and_then(|s| s.observed_generation);
            if observed == swarm.metadata.generation {
                Ok(())
            } else {
                Err(format!("{observed:?}"))
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = requests(&operator).await;

    let started = Instant::now();
    env.kubectl(&[
        "scale",
        "-n",
        &ns.name,
        "swarm/bench",
        &format!("--replicas={n}"),
    ]);
    wait_for(
        env,
        &ns.name,
        &[&operator],
        &format!("{n} members Running"),
        Duration::from_secs(1800),
        || async {
            let status = swarms
                .get("bench")
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            if status.ready_replicas as usize == n {
                Ok(())
            } else {
                Err(format!("{} ready", status.ready_replicas))
            }
        },
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    // Let the status writes that follow readiness finish before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = requests(&operator).await;
    let by_kind: BTreeMap<String, u64> = after
        .iter()
        .map(|(method, count)| {
            (
                method.clone(),
                count - before.get(method).copied().unwrap_or(0),
            )
        })
        .collect();
    Row {
        seconds,
        requests: by_kind.values().sum(),
        by_kind,
        peak_rss_kib: operator.peak_rss_kib().unwrap_or(0),
    }
}

/// `swarm_operator_api_requests_total` by "METHOD resource", from the operator's /metrics.
async fn requests(operator: &OperatorProcess) -> BTreeMap<String, u64> {
    let text = operator.metrics().await.expect("operator metrics");
    text.lines()
        .filter_map(|line| line.strip_prefix("swarm_operator_api_requests_total{"))
        .filter_map(|rest| {
            let (labels, value) = rest.split_once("} ")?;
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|pair| pair.strip_prefix(&format!("{name}=\"")))
                    .map(|v| v.trim_end_matches('"').to_owned())
            };
            let key = format!("{} {}", label("method")?, label("resource")?);
            Some((key, value.trim().parse().ok()?))
        })
        .collect()
}

async fn add_nodes(client: &kube::Client, members: usize) {
    let nodes: Api<Node> = Api::all(client.clone());
    let existing = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    let wanted = members.div_ceil(PODS_PER_NODE) + 1;
    for i in 0..wanted.saturating_sub(existing.saturating_sub(1)) {
        let name = format!("kwok-bench-{i}");
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {"type": "kwok", "kubernetes.io/hostname": name}
            },
            "status": {
                "allocatable": {"cpu": "96", "memory": "1536Gi", "pods": PODS_PER_NODE.to_string()},
                "capacity": {"cpu": "96", "memory": "1536Gi", "pods": PODS_PER_NODE.to_string()}
            }
        }))
        .unwrap();
        nodes
            .patch(
                &name,
                &PatchParams::apply("swarm-e2e").force(),
                &Patch::Apply(&node),
            )
            .await
            .unwrap();
        nodes
            .patch_status(
                &name,
                &PatchParams::apply("swarm-e2e").force(),
                &Patch::Apply(&node),
            )
            .await
            .unwrap();
    }
}
