//! The whole path's test bed: a namespace with the chart installed, an anvil chain, an
//! OpenTelemetry Collector, the kubelet harness running member pods as `swarm-node` processes, and
//! the operator exporting to the collector.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use swarm_ledger::anvil::{ANVIL_CHAIN_ID, Anvil, anvil_binary};
use swarm_ledger::{Address, LedgerClient, LedgerOptions, PrivateKeySigner};
use swarm_operator::api::Swarm;

use crate::collector::Collector;
use crate::kubelet::{Instance, Kubelet, host_path_volume};
use crate::*;

/// The Swarm every scenario on the test bed runs.
pub const SWARM: &str = "sapo";
/// Long enough for six debug-build members to sample and train a tiny model on two shared cores.
pub const ROUND_SECONDS: u32 = 6;
/// Waits for training progress: a few rounds, with room for a loaded machine.
pub const TRAINING: Duration = Duration::from_secs(180);

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

/// Everything the scenarios run on: the chart's namespace, anvil, a collector, the kubelet
/// harness and the operator.
pub struct Testbed {
    pub f: Fixture,
    pub anvil: Anvil,
    pub operator_key: String,
    pub collector: Collector,
    pub kubelet: Kubelet,
    pub operator: OperatorProcess,
    operators_started: usize,
}

impl Testbed {
    pub async fn new(test: &str) -> Self {
        let f = Fixture::new(test, &[]).await;
        let binary = anvil_binary(&f.env.root.join("scripts/install-ledger-tools")).unwrap();
        // Its state survives a restart, as a real chain survives an RPC node's restart.
        let state = f.dir.path().join("anvil-state.json");
        let anvil = Anvil::start(&binary, &["--state", &state.to_string_lossy()]).unwrap();
        let operator_key = anvil.dev_keys()[0].clone();
        let collector = Collector::start(&f.env.otelcol(), f.dir.path());
        create_ledger_secret(&f, &operator_key).await;
        create_model_volume(&f).await;
        let kubelet = Kubelet::start(
            f.client.clone(),
            &f.ns.name,
            &f.env.node_binary(),
            f.dir.path(),
        );
        let operator = start_operator(&f, &collector, 0);
        Self {
            f,
            anvil,
            operator_key,
            collector,
            kubelet,
            operator,
            operators_started: 1,
        }
    }

    pub fn swarm_yaml(&self, replicas: u32) -> String {
        format!(
            r#"apiVersion: rlswarm.dev/v1alpha1
kind: Swarm
metadata:
  name: {SWARM}
spec:
  replicas: {replicas}
  member:
    resources:
      requests: {{cpu: 100m, memory: 512Mi}}
{TINY_MODEL_AND_TRAINING}  rounds:
    durationSeconds: {ROUND_SECONDS}
  checkpoints:
    size: 1Gi
    everyRounds: 1
  ledger:
    rpcUrl: {rpc}
    chainId: {ANVIL_CHAIN_ID}
    contract: {{deploy: {{}}}}
    operatorKeySecret: {{name: ledger-operator}}
    memberFunding: "1"
  telemetry:
    otlpEndpoint: {otlp}
    metricExportIntervalSeconds: 2
"#,
            rpc = self.anvil.url(),
            otlp = self.collector.http_endpoint(),
        )
    }

    /// One line per member process the harness ran: rounds trained, the last one's peers, rounds
    /// recorded on the ledger; and what reached the collector.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for instance in self.kubelet.all_instances() {
            let rounds = instance.rounds();
            let last = rounds.last();
            out += &format!(
                "{} (uid {}, {}): {} starts, resumed from {:?}, {} rounds (last {:?}, {} peers), {} recorded on the ledger\n",
                instance.pod,
                &instance.uid[..8],
                if instance.running {
                    "running"
                } else {
                    "stopped"
                },
                instance.starts().len(),
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

    /// Kills the operator at once and starts a fresh process, as a crashed pod is replaced.
    pub fn restart_operator(&mut self) {
        self.operator.kill();
        self.operator = start_operator(&self.f, &self.collector, self.operators_started);
        self.operators_started += 1;
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
            &[&self.operator],
            &|| self.kubelet.diagnostics(),
            what,
            timeout,
            check,
        )
        .await
    }

    /// Waits until the Swarm says `replicas` members are ready, and the harness runs exactly their pods.
    pub async fn wait_members(&self, replicas: usize) {
        self.f
            .wait_ready(SWARM, replicas as i32, &[&self.operator])
            .await;
        let expected: BTreeSet<String> = (0..replicas).map(|i| format!("{SWARM}-{i}")).collect();
        self.wait(
            &format!("the harness to run exactly {expected:?}"),
            Duration::from_secs(60),
            || async {
                let running: BTreeSet<String> = self.kubelet.running().into_keys().collect();
                if running == expected {
                    Ok(())
                } else {
                    Err(running)
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
                let running = self.kubelet.running();
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
                    Err(lagging)
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

pub fn start_operator(f: &Fixture, collector: &Collector, index: usize) -> OperatorProcess {
    OperatorProcess::start(
        &f.env,
        OperatorOptions {
            name: &format!("operator-{index}"),
            namespace: &f.ns.name,
            kubeconfig: &f.kubeconfig,
            leader_election: None,
            log_dir: f.dir.path(),
            otlp_endpoint: Some(&collector.http_endpoint()),
        },
    )
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

/// The harness's newest instance of `pod`.
pub fn newest(kubelet: &Kubelet, pod: &str) -> Instance {
    kubelet.instances(pod).pop().unwrap()
}

/// Pods of the swarm, by name.
pub async fn pods(client: &Client, namespace: &str) -> BTreeMap<String, Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("rlswarm.dev/swarm={SWARM}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.name_any(), p))
        .collect()
}
