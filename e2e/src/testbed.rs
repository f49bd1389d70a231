//! The whole path's test bed: a namespace with the chart installed and the operator running as a pod
//! of its image on the real node, an anvil chain and an OpenTelemetry Collector on the node's bridge,
//! the volume provisioner, and member pods as containers of the node image there. What a member's
//! node did is read back from its container's log through the API server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::{Client, ResourceExt};
use swarm_ledger::anvil::{ANVIL_CHAIN_ID, Anvil, anvil_binary};
use swarm_ledger::{Address, LedgerClient, LedgerOptions, PrivateKeySigner};
use swarm_node::report::{NodeEvent, RoundReport, Started};
use swarm_operator::api::Swarm;

use crate::collector::Collector;
use crate::containers::{container_pid, pod_container_id};
use crate::provisioner::{Provisioner, host_path_volume};
use crate::*;

/// The Swarm every scenario on the test bed runs.
pub const SWARM: &str = "sapo";
/// Long enough for six members to sample and train a tiny model on two shared cores.
pub const ROUND_SECONDS: u32 = 6;
/// Waits for training progress: a few rounds, with room for a loaded machine.
pub const TRAINING: Duration = Duration::from_secs(180);
/// The node's container in a member pod.
pub const NODE_CONTAINER: &str = "node";
/// The label the chart puts on the operator's pods.
const OPERATOR_SELECTOR: &str = "app.kubernetes.io/name=swarm-operator";

/// A Swarm spec's `model` and `training` for the tests' tiny model on the `tiny-model` claim
/// ([`create_model_volume`]): rounds small enough for several members on two shared cores.
pub const TINY_MODEL_AND_TRAINING: &str = "  model:
    source:
      pvc: {claimName: tiny-model}
    dtype: f32
  training:
    questionsPerRound: 4
    localRollouts: 2
    externalRollouts: 4
    completionsPerQuestion: 4
    learningRate: 5.0e-4
    maxNewTokens: 16
    microBatchSize: 64
    seed: 7
    difficulty: 1
    tasks: [{family: basic_arithmetic}]
";

/// A Swarm whose members run on the real node `node` from `image`, with `env` (YAML list entries)
/// added to the node's environment.
pub fn real_node_swarm_yaml(
    name: &str,
    replicas: u32,
    node: &str,
    image: &str,
    env: &str,
) -> String {
    format!(
        r#"apiVersion: rlswarm.dev/v1alpha1
kind: Swarm
metadata:
  name: {name}
spec:
  replicas: {replicas}
  member:
    image: {image}
    # Imported into containerd; there is no registry to pull from.
    imagePullPolicy: Never
    nodeSelector: {{kubernetes.io/hostname: {node}}}
    tolerations:
    - {{key: {REAL_NODE_TAINT}, operator: Exists, effect: NoSchedule}}
    resources:
      requests: {{cpu: 100m, memory: 256Mi}}
    env:
    # Several members share two cores.
    - {{name: SWARM_TORCH_THREADS, value: "1"}}
{env}
{TINY_MODEL_AND_TRAINING}  rounds:
    durationSeconds: {ROUND_SECONDS}
"#
    )
}

/// A Swarm spec's `ledger` (a contract the operator deploys on the chain at `rpc`, paid for by the
/// `ledger-operator` Secret's key) and `telemetry` (OTLP/HTTP to `otlp`).
pub fn ledger_and_telemetry_yaml(rpc: &str, otlp: &str) -> String {
    format!(
        r#"  ledger:
    rpcUrl: {rpc}
    chainId: {ANVIL_CHAIN_ID}
    contract: {{deploy: {{}}}}
    operatorKeySecret: {{name: ledger-operator}}
    memberFunding: "1"
  telemetry:
    otlpEndpoint: {otlp}
    metricExportIntervalSeconds: 2
"#
    )
}

/// The node in a member pod's current container, as the real node runs it, and what it printed.
#[derive(Debug, Clone)]
pub struct Instance {
    pub pod: String,
    pub uid: String,
    /// The pod's address on the node's bridge.
    pub ip: Option<String>,
    /// Times the kubelet restarted the node's container in this pod.
    pub restarts: i32,
    /// Whether the container runs now.
    pub running: bool,
    /// The current container's log (stdout and stderr).
    pub log: String,
}

impl Instance {
    fn events(&self) -> impl Iterator<Item = NodeEvent> + '_ {
        self.log.lines().filter_map(NodeEvent::parse)
    }

    /// The `started` report (one per container start: the current container's).
    pub fn starts(&self) -> Vec<Started> {
        self.events()
            .filter_map(|e| match e {
                NodeEvent::Started(started) => Some(started),
                _ => None,
            })
            .collect()
    }

    pub fn rounds(&self) -> Vec<RoundReport> {
        self.events()
            .filter_map(|e| match e {
                NodeEvent::Round(report) => Some(report),
                _ => None,
            })
            .collect()
    }

    /// Where the node serves `/metrics`, at its pod address.
    pub fn metrics_address(&self) -> Option<String> {
        let listen = self.starts().first()?.metrics.clone()?;
        let port = listen.rsplit_once(':')?.1;
        Some(format!("{}:{port}", self.ip.as_deref()?))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let all: Vec<&str> = self.log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Everything the scenarios run on.
pub struct Testbed {
    pub f: Fixture,
    pub real: RealNode,
    pub anvil: Anvil,
    pub operator_key: String,
    pub collector: Collector,
    provisioner: Provisioner,
    /// The collector's folder (the fixture's is made after the release the collector is named in).
    _telemetry_dir: tempfile::TempDir,
}

impl Testbed {
    pub async fn new(test: &str) -> Self {
        let real = RealNode::from_env();
        let env = Env::from_env();
        let telemetry_dir = tempfile::tempdir().unwrap();
        // The pods reach the host only at its bridge address, so the collector and anvil listen there.
        let collector = Collector::start_on(&env.otelcol(), telemetry_dir.path(), real.host_ip());
        let mut values = real.operator_release_values();
        values.extend([
            "--set".into(),
            format!("telemetry.otlpEndpoint={}", collector.http_endpoint()),
            "--set".into(),
            "telemetry.metricExportIntervalSeconds=1".into(),
        ]);
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        // `helm install --wait`: the operator's pod is Ready by its own probe.
        let f = Fixture::new(test, &values).await;
        let binary = anvil_binary(&f.env.root.join("scripts/install-ledger-tools")).unwrap();
        // Its state survives a restart, as a real chain survives an RPC node's restart.
        let state = f.dir.path().join("anvil-state.json");
        let anvil = Anvil::start_on(
            &binary,
            real.host_ip(),
            &["--state", &state.to_string_lossy()],
        )
        .unwrap();
        let operator_key = anvil.dev_keys()[0].clone();
        create_ledger_secret(&f, &operator_key).await;
        create_model_volume(&f).await;
        let provisioner = Provisioner::start(f.client.clone(), &f.ns.name, f.dir.path());
        Self {
            f,
            real,
            anvil,
            operator_key,
            collector,
            provisioner,
            _telemetry_dir: telemetry_dir,
        }
    }

    pub fn swarm_yaml(&self, replicas: u32) -> String {
        self.swarm_yaml_with_env(replicas, "")
    }

    /// The bed's Swarm: members on the real node, checkpoints every round, the bed's chain and
    /// collector; `env` (YAML list entries) added to the node's environment.
    pub fn swarm_yaml_with_env(&self, replicas: u32, env: &str) -> String {
        format!(
            "{}  checkpoints:\n    size: 1Gi\n    everyRounds: 1\n{}",
            real_node_swarm_yaml(SWARM, replicas, &self.real.node, &self.real.node_image, env),
            ledger_and_telemetry_yaml(&self.anvil.url(), &self.collector.http_endpoint()),
        )
    }

    /// The member pods as the real node runs them, by pod name: terminating ones too, until the
    /// kubelet has confirmed their containers stopped and the pod is gone.
    pub async fn instances(&self) -> Result<BTreeMap<String, Instance>, String> {
        let mut out = BTreeMap::new();
        for (name, pod) in pods_of(&self.f.client, &self.f.ns.name).await? {
            out.insert(name, self.observe(pod).await?);
        }
        Ok(out)
    }

    /// A member pod as the real node runs it: its node container's state, and the current
    /// container's log once it has started.
    async fn observe(&self, pod: Pod) -> Result<Instance, String> {
        let name = pod.name_any();
        let container = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|all| all.iter().find(|c| c.name == NODE_CONTAINER));
        let state = container.and_then(|c| c.state.as_ref());
        let running = state.is_some_and(|s| s.running.is_some());
        let started = running || state.is_some_and(|s| s.terminated.is_some());
        let log = if started {
            node_log(&self.f.api::<Pod>(), &name).await?
        } else {
            String::new()
        };
        Ok(Instance {
            uid: pod.uid().unwrap_or_default(),
            ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
            restarts: container.map_or(0, |c| c.restart_count),
            running,
            log,
            pod: name,
        })
    }

    /// The member pods whose node runs now.
    pub async fn running(&self) -> Result<BTreeMap<String, Instance>, String> {
        let mut all = self.instances().await?;
        all.retain(|_, instance| instance.running);
        Ok(all)
    }

    /// The member pod `pod` as the real node runs it.
    pub async fn instance(&self, pod: &str) -> Result<Instance, String> {
        let found = self
            .f
            .api::<Pod>()
            .get_opt(pod)
            .await
            .map_err(|e| format!("pod {pod}: {e}"))?
            .ok_or_else(|| format!("no pod {pod}"))?;
        self.observe(found).await
    }

    /// How many times the kubelet started a member's node container in this namespace: its
    /// `Started` events, with their repeat counts.
    pub async fn node_containers_started(&self) -> i32 {
        let field = format!("spec.containers{{{NODE_CONTAINER}}}");
        self.f
            .api::<Event>()
            .list(&ListParams::default().fields("reason=Started"))
            .await
            .unwrap()
            .items
            .iter()
            .filter(|e| e.involved_object.field_path.as_deref() == Some(field.as_str()))
            .map(|e| e.count.unwrap_or(1))
            .sum()
    }

    /// One line per member pod: its node's starts, rounds trained, the last one's peers, rounds
    /// recorded on the ledger; and what reached the collector.
    pub async fn summary(&self) -> String {
        let mut out = String::new();
        for instance in self.instances().await.unwrap_or_default().values() {
            let rounds = instance.rounds();
            let last = rounds.last();
            out += &format!(
                "{} (uid {}, {}, {} restarts): resumed from {:?}, {} rounds (last {:?}, {} peers), {} recorded on the ledger\n",
                instance.pod,
                &instance.uid[..8],
                if instance.running {
                    "running"
                } else {
                    "stopped"
                },
                instance.restarts,
                instance.starts().first().and_then(|s| s.resumed_from),
                rounds.len(),
                last.map(|r| r.round),
                last.map_or(0, |r| r.peers),
                last.and_then(|r| r.ledger_recorded).unwrap_or(0),
            );
        }
        out += &format!(
            "collector: {} spans, {} metric exports\n",
            self.collector.spans().len(),
            self.collector.metrics().len()
        );
        out
    }

    /// Kills the operator's process at once, as a crash would, and has its pod replaced (deleted
    /// at once, so the kubelet's crash-loop backoff never delays the new one, and no two
    /// operators run side by side).
    pub async fn restart_operator(&self) {
        let pods = self.f.api::<Pod>();
        let operators = pods
            .list(&ListParams::default().labels(OPERATOR_SELECTOR))
            .await
            .unwrap()
            .items;
        for pod in operators {
            // None if it was not running (or had just stopped); the deletion follows either way.
            if let Some(pid) = pod_container_id(&pod).and_then(|id| container_pid(&id)) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            let now = DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            // A pod already being replaced may be gone; its replacement is what counts.
            let _ = pods.delete(&pod.name_any(), &now).await;
        }
    }

    /// What the operator pods, the member pods and the provisioner say, for a red run.
    pub fn diagnostics(&self) -> String {
        let ns = self.f.ns.name.as_str();
        let logs = |args: &[&str]| {
            let output = self.f.env.try_run(&self.f.env.kubectl, args);
            format!(
                "$ kubectl {}\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        };
        let members = format!("rlswarm.dev/swarm={SWARM}");
        [
            logs(&["logs", "-n", ns, "-l", OPERATOR_SELECTOR, "--tail=40"]),
            logs(&[
                "logs",
                "-n",
                ns,
                "-l",
                &members,
                "-c",
                NODE_CONTAINER,
                "--prefix",
                "--tail=12",
            ]),
            self.provisioner.journal(),
        ]
        .join("\n")
    }

    pub async fn wait<T, O, F, Fut>(&self, what: &str, timeout: Duration, check: F) -> T
    where
        O: std::fmt::Debug,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, O>>,
    {
        wait_for_explained(
            &self.f.env,
            &self.f.ns.name,
            &[],
            &|| self.diagnostics(),
            what,
            timeout,
            check,
        )
        .await
    }

    /// Waits until the Swarm says `replicas` members are ready (by their pods' readiness probes),
    /// and the real node runs exactly their pods: any others stopped and gone.
    pub async fn wait_members(&self, replicas: usize) {
        self.f.wait_ready(SWARM, replicas as i32, &[]).await;
        let expected: BTreeSet<String> = (0..replicas).map(|i| format!("{SWARM}-{i}")).collect();
        self.wait(
            &format!("the real node to run exactly {expected:?}"),
            SETTLE,
            || async {
                let all = self.instances().await?;
                let running: BTreeSet<&String> =
                    all.values().filter(|i| i.running).map(|i| &i.pod).collect();
                if all.keys().eq(expected.iter()) && running.len() == expected.len() {
                    Ok(())
                } else {
                    Err(format!("pods {:?}, running {running:?}", all.keys()))
                }
            },
        )
        .await;
    }

    /// Waits until every running member has trained a round with all `replicas - 1` peers
    /// connected and their rollouts received, and has recorded a round on the ledger.
    pub async fn wait_training_together(&self, replicas: usize) {
        let peers = replicas - 1;
        self.wait(
            &format!(
                "{replicas} members training with {peers} peers each and recording on the ledger"
            ),
            TRAINING,
            || async {
                let running = self.running().await?;
                let lagging: Vec<String> = running
                    .values()
                    .filter(|instance| {
                        let rounds = instance.rounds();
                        let together = rounds
                            .iter()
                            .any(|r| r.peers == peers && r.external_peers == peers);
                        let recorded = rounds
                            .last()
                            .is_some_and(|r| r.ledger_recorded.unwrap_or(0) >= 1);
                        !(together && recorded)
                    })
                    .map(|instance| {
                        let last = instance
                            .rounds()
                            .last()
                            .map(|r| (r.round, r.peers, r.external_peers, r.ledger_recorded));
                        format!(
                            "{} (round, peers, peers heard, recorded) = {last:?}",
                            instance.pod
                        )
                    })
                    .collect();
                if running.len() == replicas && lagging.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{} running; {lagging:?}", running.len()))
                }
            },
        )
        .await;
    }

    /// A read-only view of the Swarm's contract.
    pub async fn ledger(&self) -> LedgerClient {
        let swarm: Swarm = self.f.api::<Swarm>().get(SWARM).await.unwrap();
        let contract: Address = swarm
            .status
            .and_then(|s| s.ledger)
            .and_then(|l| l.contract_address)
            .expect("the operator deployed a contract")
            .parse()
            .unwrap();
        let signer: PrivateKeySigner = self.operator_key.parse().unwrap();
        LedgerClient::connect(
            &self.anvil.url(),
            ANVIL_CHAIN_ID,
            signer,
            contract,
            LedgerOptions::default(),
        )
        .await
        .unwrap()
    }

    /// Waits until exactly the live members are registered on the chain, each under its own PeerId.
    pub async fn wait_registered(&self) {
        let ledger = &self.ledger().await;
        self.wait(
            "exactly the live members to be registered on the ledger",
            Duration::from_secs(60),
            || async {
                let members = self.f.members().await;
                let count = ledger.member_count().await.map_err(|e| e.to_string())?;
                let mut problems = Vec::new();
                for member in &members {
                    let status = member.status.clone().unwrap_or_default();
                    let address: Address = status
                        .address
                        .as_deref()
                        .ok_or("no address in status")?
                        .parse()
                        .map_err(|_| "bad address")?;
                    let record = ledger
                        .member_by_account(address)
                        .await
                        .map_err(|e| e.to_string())?;
                    match record {
                        Some(r) if r.registered && Some(&r.peer_id) == status.peer_id.as_ref() => {}
                        other => problems.push(format!("{}: {other:?}", member.name_any())),
                    }
                }
                if problems.is_empty() && count == members.len() as u64 {
                    Ok(())
                } else {
                    Err(format!("{count} registered on chain; {problems:?}"))
                }
            },
        )
        .await;
    }
}

pub async fn create_ledger_secret(f: &Fixture, key: &str) {
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ledger-operator"},
        "stringData": {"private-key": key},
    }))
    .unwrap();
    f.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// The model claim `tiny-model`, bound to a hostPath volume holding the tests' tiny Qwen2 (the
/// warmed-up base the local swarm trains).
pub async fn create_model_volume(f: &Fixture) {
    let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "tiny-model", "namespace": f.ns.name},
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }))
    .unwrap();
    let model = f.env.root.join("rl/fixtures/learning-base");
    let volume = host_path_volume(
        &format!("{}-tiny-model", f.ns.name),
        &model.canonicalize().unwrap(),
        &claim,
    );
    Api::<PersistentVolume>::all(f.client.clone())
        .create(&PostParams::default(), &volume)
        .await
        .unwrap();
    f.api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();
}

/// The log of the node container now running (or last run) in pod `name`, through the API server.
pub async fn node_log(pods: &Api<Pod>, name: &str) -> Result<String, String> {
    let params = LogParams {
        container: Some(NODE_CONTAINER.into()),
        ..Default::default()
    };
    pods.logs(name, &params)
        .await
        .map_err(|e| format!("{name}'s log: {e}"))
}

/// Pods of the swarm, by name.
pub async fn pods_of(client: &Client, namespace: &str) -> Result<BTreeMap<String, Pod>, String> {
    Ok(Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("rlswarm.dev/swarm={SWARM}")))
        .await
        .map_err(|e| format!("listing the member pods: {e}"))?
        .items
        .into_iter()
        .map(|p| (p.name_any(), p))
        .collect())
}
