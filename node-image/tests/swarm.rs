//! Several `swarm-node` processes on loopback, training real rounds over libp2p: they exchange
//! rollouts, a late member joins, a killed member comes back with its PeerId and checkpoint, and a
//! rogue peer's messages are rejected and score it down while the others keep training.
//!
//! Each test starts its own swarm (fresh keys, ports and topic); a lock runs them one at a time,
//! since each keeps both cores of a small machine busy.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use swarm_identity::{MemberKey, PRIVATE_KEY_FILE};
use swarm_node::local::free_port;
use swarm_node::report::{NodeEvent, RoundReport, Started};
use swarm_node_config::{
    CONFIG_VERSION, CheckpointConfig, Dtype, LedgerConfig, ModelConfig, NodeConfig, P2pConfig,
    RoundsConfig, SharingPolicy, SwarmRef, TaskFamily, TaskWeight, TrainingConfig,
};

const ROUND_SECONDS: u32 = 3;
const GROUP_SIZE: u32 = 4;

static ONE_SWARM_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_SWARM_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rl/fixtures/learning-base")
}

struct Swarm {
    root: tempfile::TempDir,
    uid: String,
    start_time: Timestamp,
    max_rounds: u64,
    members: Vec<Member>,
    ledger: Option<LedgerConfig>,
    /// HF_ENDPOINT of the nodes, when they download their model.
    hub_endpoint: Option<String>,
}

struct Member {
    name: String,
    key: MemberKey,
    port: u16,
}

impl Swarm {
    /// `size` members whose round 0 starts a few seconds from now.
    fn new(size: usize, max_rounds: u64) -> Swarm {
        Swarm::with_keys(
            (0..size).map(|_| MemberKey::generate()).collect(),
            max_rounds,
        )
    }

    fn with_keys(keys: Vec<MemberKey>, max_rounds: u64) -> Swarm {
        let members = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| Member {
                name: format!("node-{i}"),
                key,
                port: free_port().unwrap(),
            })
            .collect();
        Swarm {
            root: tempfile::tempdir().unwrap(),
            uid: format!("test-{}", free_port().unwrap()),
            start_time: Timestamp::now()
                .checked_add(SignedDuration::from_secs(4))
                .unwrap(),
            max_rounds,
            members,
            ledger: None,
            hub_endpoint: None,
        }
    }

    fn bootstrap(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "/ip4/127.0.0.1/tcp/{}/p2p/{}",
                    m.port,
                    m.key.peer_id_string()
                )
            })
            .collect()
    }

    fn dir(&self, index: usize) -> PathBuf {
        self.root.path().join(&self.members[index].name)
    }

    fn config(&self, index: usize) -> NodeConfig {
        NodeConfig {
            version: CONFIG_VERSION,
            swarm: SwarmRef {
                name: "test".into(),
                namespace: "test".into(),
                uid: self.uid.clone(),
            },
            p2p: P2pConfig {
                port: self.members[index].port,
                bootstrap_peers: self.bootstrap(),
                external_peers: vec![],
            },
            model: ModelConfig {
                path: Some(model_dir().display().to_string()),
                hub_id: None,
                revision: None,
                dtype: Dtype::F32,
            },
            training: TrainingConfig {
                questions_per_round: 4,
                local_rollouts: 2,
                external_rollouts: 4,
                completions_per_question: GROUP_SIZE,
                learning_rate: 5e-4,
                max_new_tokens: 16,
                micro_batch_size: 64,
                seed: Some(7),
                difficulty: 1,
                tasks: vec![TaskWeight {
                    family: TaskFamily::BasicArithmetic,
                    weight: 1,
                }],
                ..TrainingConfig::default()
            },
            rounds: RoundsConfig {
                start_time: self.start_time,
                duration_seconds: ROUND_SECONDS,
                max_rounds: Some(self.max_rounds),
            },
            checkpoints: Some(CheckpointConfig {
                dir: self.dir(index).join("checkpoints").display().to_string(),
                every_rounds: 1,
            }),
            ledger: self.ledger.clone(),
        }
    }

    /// Starts member `index`'s node; its identity and config files are (re)written first.
    fn start(&self, index: usize) -> Node {
        self.start_with(index, self.config(index))
    }

    /// Writes member `index`'s config file, which a running node reads again every round.
    fn write_config(&self, index: usize, config: &NodeConfig) -> PathBuf {
        let path = self.dir(index).join("node.yaml");
        std::fs::write(&path, config.to_yaml().unwrap()).unwrap();
        path
    }

    /// Starts member `index`'s node with `config`.
    fn start_with(&self, index: usize, config: NodeConfig) -> Node {
        let dir = self.dir(index);
        let identity = dir.join("identity");
        std::fs::create_dir_all(&identity).unwrap();
        std::fs::write(
            identity.join(PRIVATE_KEY_FILE),
            self.members[index].key.secret_data(),
        )
        .unwrap();
        let config = self.write_config(index, &config);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_swarm-node"))
            .arg("--member")
            .arg(&self.members[index].name)
            .arg("--identity-dir")
            .arg(&identity)
            .arg("--config")
            .arg(&config)
            .args(["--listen-host", "127.0.0.1", "--torch-threads", "1"])
            .args(["--metrics-port", "0"])
            .arg("--exit-when-done")
            .env("RUST_LOG", "info")
            .env("HF_HOME", self.root.path().join("hf"))
            .envs(self.hub_endpoint.iter().map(|e| ("HF_ENDPOINT", e)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let (send, events) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(event) = NodeEvent::parse(&line)
                    && send.send(event).is_err()
                {
                    break;
                }
            }
        });
        Node {
            child,
            events,
            log: dir.join("node.log"),
            rounds: Vec::new(),
            started: None,
            finished: false,
        }
    }
}

struct Node {
    child: Child,
    events: Receiver<NodeEvent>,
    log: PathBuf,
    rounds: Vec<RoundReport>,
    started: Option<Started>,
    finished: bool,
}

impl Node {
    /// Reads events until `done` holds for this node, failing after `timeout` with its log.
    fn wait_until(&mut self, what: &str, timeout: Duration, done: impl Fn(&Node) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(NodeEvent::Started(started)) => self.started = Some(started),
                Ok(NodeEvent::Round(report)) => self.rounds.push(report),
                Ok(NodeEvent::Finished(_)) => self.finished = true,
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "node did not {what} within {timeout:?}; rounds {:?}\nlog:\n{}",
                        self.rounds.iter().map(|r| r.round).collect::<Vec<_>>(),
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    )
                }
            }
        }
    }

    fn wait_finished(&mut self, timeout: Duration) {
        self.wait_until("finish", timeout, |n| n.finished);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }

    fn wait_round(&mut self, round: u64, timeout: Duration) {
        self.wait_until(&format!("report round {round}"), timeout, |n| {
            n.rounds.last().is_some_and(|r| r.round >= round)
        });
    }

    fn peer_id(&self) -> &str {
        &self.started.as_ref().unwrap().peer_id
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The response to a plain HTTP GET of `path` at `addr`, status line first.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Long enough for every round of a test swarm on a busy 2-core machine, in a debug build.
fn swarm_timeout(rounds: u64) -> Duration {
    Duration::from_secs(30 + rounds * u64::from(ROUND_SECONDS) * 3)
}

#[test]
fn members_exchange_rollouts_and_train_on_them() {
    let _lock = one_at_a_time();
    let swarm = Swarm::new(4, 6);
    let mut nodes: Vec<Node> = (0..4).map(|i| swarm.start(i)).collect();
    nodes[0].wait_round(3, swarm_timeout(4));
    let admin = nodes[0].started.as_ref().unwrap().metrics.clone().unwrap();
    assert!(http_get(&admin, "/healthz").starts_with("HTTP/1.1 200"));
    assert!(http_get(&admin, "/readyz").starts_with("HTTP/1.1 200"));
    let metrics = http_get(&admin, "/metrics");
    let last = nodes[0].rounds.last().unwrap().clone();
    for line in [
        format!("swarm_node_rounds_total {}", nodes[0].rounds.len()),
        format!("swarm_node_round {}.0", last.round),
        "swarm_node_peers_connected 3.0".to_owned(),
        format!(
            "swarm_node_messages_accepted_total {}",
            last.messages_accepted
        ),
        format!(
            "swarm_node_accuracy{{family=\"basic_arithmetic\"}} {:?}",
            last.reward_by_source["basic_arithmetic"]
        ),
    ] {
        assert!(metrics.contains(&line), "{line} missing from\n{metrics}");
    }
    assert!(
        metrics.contains("swarm_node_reward{source=\"external\"}"),
        "{metrics}"
    );
    assert!(last.messages_accepted > 0 && last.tokens > 0, "{last:?}");
    for node in &mut nodes {
        node.wait_finished(swarm_timeout(6));
    }
    for node in &nodes {
        let rounds: Vec<&RoundReport> = node.rounds.iter().collect();
        assert!(rounds.len() >= 5, "{} rounds", rounds.len());
        // Meshes form during the first round; from then on every peer's rollouts arrive.
        let late = &rounds[rounds.len() - 3..];
        for r in late {
            assert_eq!(r.peers, 3, "round {}: {r:?}", r.round);
            assert_eq!(r.external_peers, 3, "round {}: {r:?}", r.round);
            assert_eq!(r.external_groups, 3 * 4, "round {}: {r:?}", r.round);
            assert!(r.published, "round {}", r.round);
            assert_eq!(r.completions, 4 * GROUP_SIZE as usize);
        }
        assert!(
            rounds.iter().any(|r| r.trained_external > 0),
            "never trained on a peer's group: {rounds:?}"
        );
        assert!(rounds.iter().all(|r| r.messages_rejected.is_empty()));
    }
}

/// Under every sharing policy, members train on their peers' groups: under `importance` that
/// needs the log-probabilities the senders ship, so trained peer completions show they arrived
/// and passed the receivers' token-count check.
#[test]
fn every_sharing_policy_trains_on_peers_groups() {
    let _lock = one_at_a_time();
    for policy in [
        SharingPolicy::Plain,
        SharingPolicy::Positive,
        SharingPolicy::Importance,
        SharingPolicy::Shaping,
    ] {
        let swarm = Swarm::new(2, 4);
        let mut nodes: Vec<Node> = (0..2)
            .map(|i| {
                let mut config = swarm.config(i);
                config.training.sharing.policy = policy;
                swarm.start_with(i, config)
            })
            .collect();
        for node in &mut nodes {
            node.wait_finished(swarm_timeout(4));
            let rounds = &node.rounds;
            assert!(
                rounds
                    .iter()
                    .any(|r| r.trained_external > 0 && r.external_completions_trained > 0),
                "{policy:?}: no peer's completion trained on: {rounds:?}"
            );
            for r in rounds {
                // Each kept group holds at least one completion with a positive advantage, which
                // the positive policy trains on; plain and shaping train them all. (Importance
                // leaves out completions whose sender could not line up its log-probabilities.)
                if policy != SharingPolicy::Importance {
                    assert!(
                        r.external_completions_trained >= r.trained_external,
                        "{policy:?}: {r:?}"
                    );
                }
                if matches!(policy, SharingPolicy::Plain | SharingPolicy::Shaping) {
                    assert_eq!(
                        r.external_completions_trained,
                        r.trained_external * GROUP_SIZE as usize,
                        "{policy:?}: {r:?}"
                    );
                }
                assert!(r.messages_rejected.is_empty(), "{policy:?}: {r:?}");
            }
        }
    }
}

#[test]
fn peers_added_to_the_config_while_running_are_dialled() {
    let _lock = one_at_a_time();
    let swarm = Swarm::new(2, 6);
    // Both start knowing nobody, as a pod started before the operator knew its peers' identities.
    let mut nodes: Vec<Node> = (0..2)
        .map(|i| {
            let mut config = swarm.config(i);
            config.p2p.bootstrap_peers.clear();
            swarm.start_with(i, config)
        })
        .collect();
    nodes[0].wait_round(1, swarm_timeout(2));
    assert!(
        nodes[0].rounds.iter().all(|r| r.peers == 0),
        "{:?}",
        nodes[0].rounds
    );
    // The kubelet updates the mounted ConfigMap in place once the operator lists every member.
    for i in 0..2 {
        swarm.write_config(i, &swarm.config(i));
    }
    for node in &mut nodes {
        node.wait_finished(swarm_timeout(6));
        let last = node.rounds.last().unwrap();
        assert_eq!((last.peers, last.external_peers), (1, 1), "{last:?}");
    }
}

#[test]
fn a_member_started_late_joins_and_receives() {
    let _lock = one_at_a_time();
    let swarm = Swarm::new(4, 7);
    let mut early: Vec<Node> = (0..3).map(|i| swarm.start(i)).collect();
    // The late member's address is in everyone's bootstrap list but nothing listens there yet:
    // the others keep redialling it and train meanwhile.
    early[0].wait_round(2, swarm_timeout(3));
    let mut late = swarm.start(3);
    late.wait_finished(swarm_timeout(7));
    for node in &mut early {
        node.wait_finished(swarm_timeout(7));
    }
    let joined = late.rounds.first().unwrap().round;
    assert!(joined >= 2, "joined at round {joined}");
    let last = late.rounds.last().unwrap();
    assert_eq!(last.external_peers, 3, "{last:?}");
    for node in &early {
        let before = node.rounds.iter().find(|r| r.round == 1).unwrap();
        assert_eq!(before.external_peers, 2, "{before:?}");
        let after = node.rounds.last().unwrap();
        assert_eq!(after.external_peers, 3, "{after:?}");
    }
}

#[test]
fn a_killed_member_comes_back_with_its_peer_id_and_checkpoint() {
    let _lock = one_at_a_time();
    let swarm = Swarm::new(3, 8);
    let mut nodes: Vec<Node> = (0..3).map(|i| swarm.start(i)).collect();
    nodes[0].wait_round(2, swarm_timeout(3));
    let peer_id = nodes[0].peer_id().to_owned();
    let trained = nodes[0].rounds.last().unwrap().round;
    nodes[0].child.kill().unwrap();
    nodes[0].child.wait().unwrap();

    let mut restarted = swarm.start(0);
    restarted.wait_until("start", swarm_timeout(1), |n| n.started.is_some());
    assert_eq!(restarted.peer_id(), peer_id);
    let resumed = restarted.started.as_ref().unwrap().resumed_from.unwrap();
    // Killed after reporting `trained`: at most the round in flight is lost.
    assert!(
        resumed >= trained,
        "resumed from {resumed}, had trained {trained}"
    );
    restarted.wait_finished(swarm_timeout(8));
    assert!(restarted.rounds.first().unwrap().round > resumed);
    assert_eq!(restarted.rounds.last().unwrap().external_peers, 2);
    for node in &mut nodes[1..] {
        node.wait_finished(swarm_timeout(8));
        let last = node.rounds.last().unwrap();
        assert_eq!(last.external_peers, 2, "{last:?}");
    }
}

#[test]
fn a_rogue_peer_is_scored_down_while_the_others_train() {
    let _lock = one_at_a_time();
    let swarm = Swarm::new(3, 8);
    let mut nodes: Vec<Node> = (0..3).map(|i| swarm.start(i)).collect();
    nodes[0].wait_round(0, swarm_timeout(1));
    let rogue_ids = rogue::attack(&swarm.bootstrap(), &swarm.uid, swarm.start_time);
    for node in &mut nodes {
        node.wait_finished(swarm_timeout(8));
    }
    let rejections: Vec<String> = nodes
        .iter()
        .flat_map(|n| n.rounds.last().unwrap().messages_rejected.keys().cloned())
        .collect();
    for reason in [
        "rate_limited",
        "unsupported_version",
        "string_too_long",
        "too_large",
        "round_out_of_window",
        "group_size",
    ] {
        assert!(
            rejections.iter().any(|r| r == reason),
            "no {reason} rejection: {rejections:?}"
        );
    }
    for rogue_id in &rogue_ids {
        let scores: Vec<f64> = nodes
            .iter()
            .flat_map(|n| {
                n.rounds
                    .iter()
                    .filter_map(|r| r.peer_scores.get(rogue_id).copied())
            })
            .collect();
        assert!(
            scores.iter().any(|s| *s < 0.0),
            "rogue {rogue_id} scores {scores:?}"
        );
    }
    for node in &nodes {
        let last = node.rounds.last().unwrap();
        assert_eq!(last.external_peers, 2, "{last:?}");
        for (peer, score) in &last.peer_scores {
            if !rogue_ids.contains(peer) {
                assert!(*score >= 0.0, "honest peer {peer} scored {score}");
            }
        }
    }
}

/// anvil's first four development accounts (funded at start): the contract's owner, then three
/// members. Well known, so never anything but test keys.
const DEV_KEYS: [&str; 4] = [
    "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
];

#[test]
fn members_record_rewards_and_winners_on_the_ledger() {
    use swarm_ledger::testing::{CHAIN_ID as ANVIL_CHAIN_ID, Chain};
    use swarm_ledger::{Address, LedgerClient, LedgerOptions, member_signer};

    let _lock = one_at_a_time();
    let anvil = Chain::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let owner = MemberKey::from_hex(DEV_KEYS[0]).unwrap();
    let operator = runtime.block_on(async {
        let signer = || member_signer(&owner).unwrap();
        let options = LedgerOptions::default();
        let contract =
            LedgerClient::deploy(&anvil.url(), ANVIL_CHAIN_ID, signer(), options.clone())
                .await
                .unwrap();
        LedgerClient::connect(&anvil.url(), ANVIL_CHAIN_ID, signer(), contract, options)
            .await
            .unwrap()
    });
    let contract = operator.contract();
    let keys: Vec<MemberKey> = DEV_KEYS[1..]
        .iter()
        .map(|k| MemberKey::from_hex(k).unwrap())
        .collect();
    let accounts: Vec<Address> = keys.iter().map(|k| k.address().parse().unwrap()).collect();
    // Only the first two are registered before the swarm starts: the third's submissions wait
    // until the operator registers it.
    for (key, account) in keys.iter().zip(&accounts).take(2) {
        runtime
            .block_on(operator.register_member(*account, &key.peer_id_string()))
            .unwrap();
    }
    let mut swarm = Swarm::with_keys(keys, 5);
    swarm.ledger = Some(LedgerConfig {
        rpc_url: anvil.url(),
        chain_id: ANVIL_CHAIN_ID,
        contract_address: contract.to_string(),
    });
    let mut nodes: Vec<Node> = (0..3).map(|i| swarm.start(i)).collect();
    // The contract stays at round 0 while the members train round 1: their submissions for it
    // are deferred, not lost.
    nodes[0].wait_round(1, swarm_timeout(2));
    let key = &swarm.members[2].key;
    runtime
        .block_on(operator.register_member(accounts[2], &key.peer_id_string()))
        .unwrap();
    for round in 0..5 {
        runtime.block_on(operator.advance_round(round)).unwrap();
    }
    for node in &mut nodes {
        node.wait_finished(swarm_timeout(5));
        let last = node.rounds.last().unwrap();
        assert_eq!(last.ledger_recorded.map(|r| r + 1), Some(5), "{last:?}");
        // Read from the contract: 0 while the members trained round 1, 5 once advanced.
        assert!(
            node.rounds.iter().any(|r| r.ledger_round == Some(0)),
            "{:?}",
            node.rounds
        );
        assert_eq!(last.ledger_round, Some(5), "{last:?}");
    }
    let peer_ids: Vec<String> = swarm
        .members
        .iter()
        .map(|m| m.key.peer_id_string())
        .collect();
    let mut wins = 0;
    for (node, account) in nodes.iter().zip(&accounts) {
        for report in &node.rounds {
            let recorded = runtime
                .block_on(operator.submission(report.round, *account))
                .unwrap();
            let expected = swarm_ledger::scaled_reward(report.reward);
            assert_eq!(recorded.reward, Some(expected), "round {}", report.round);
            assert!(recorded.winners_submitted, "round {}", report.round);
        }
    }
    for peer_id in &peer_ids {
        let member = runtime
            .block_on(operator.member_by_peer_id(peer_id))
            .unwrap()
            .unwrap();
        wins += member.wins;
    }
    let rounds: usize = nodes.iter().map(|n| n.rounds.len()).sum();
    assert_eq!(wins, rounds as u64, "one winner per member and round");
}

#[test]
fn the_local_swarm_command_trains_and_records_on_its_ledger() {
    use swarm_ledger::anvil::anvil_binary;

    let _lock = one_at_a_time();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-ledger-tools");
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_swarm-node"))
        .args([
            "local",
            "--members",
            "2",
            "--rounds",
            "3",
            "--round-seconds",
            "3",
        ])
        .args(["--questions", "4", "--group-size", "4", "--out"])
        .arg(out.path())
        .env("ANVIL", anvil_binary(&script).unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("a local anvil ledger"), "{stdout}");
    for member in ["local-0", "local-1"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(member) && l.contains(" 3 rounds recorded")),
            "no ledger line for {member} in:\n{stdout}"
        );
    }
    let csv = std::fs::read_to_string(out.path().join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 3, "{csv}");
    let png = std::fs::read(out.path().join("reward.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "reward.png is not a PNG");
}

/// A member whose config names a hub model downloads it (here from the stand-in Hub), at the
/// revision's commit, and trains on it.
#[test]
fn a_member_trains_on_a_model_from_the_hub() {
    use swarm_hub::test_server::{TAGGED_COMMIT, serve};
    let _lock = one_at_a_time();
    let hub = serve();
    let mut swarm = Swarm::new(1, 2);
    swarm.hub_endpoint = Some(hub.endpoint.clone());
    let mut config = swarm.config(0);
    config.model = ModelConfig {
        path: None,
        hub_id: Some("tests/learning-base".into()),
        revision: Some("v1".into()),
        dtype: Dtype::F32,
    };
    let mut node = swarm.start_with(0, config);
    node.wait_finished(swarm_timeout(2));
    assert!(!node.rounds.is_empty());
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(log.contains(TAGGED_COMMIT), "{log}");
    let cached = swarm_hub::cached(
        &swarm_hub::HubModel {
            id: "tests/learning-base".into(),
            revision: Some("v1".into()),
        },
        &swarm.root.path().join("hf/hub"),
    );
    assert_eq!(cached.unwrap().commit, TAGGED_COMMIT);
}

/// A peer that speaks the protocol but sends what no honest member would.
mod rogue {
    use super::*;
    use libp2p::PeerId;
    use swarm_p2p::{
        Network, NetworkConfig, RolloutMessage, SharedCompletion, SharedGroup, encode,
    };
    use swarm_tasks::{Metadata, Question, Source};

    fn group(completions: usize) -> SharedGroup {
        SharedGroup {
            question: Question {
                source: Source::Procedural(TaskFamily::BasicArithmetic),
                prompt: "Calculate 2 + 2.".into(),
                answer: "4".into(),
                metadata: Metadata::new(),
            },
            completions: vec![
                SharedCompletion {
                    text: "<answer>4</answer>".into(),
                    ended: true,
                    logprobs: Vec::new(),
                };
                completions
            ],
        }
    }

    /// What one rogue sends. Each rogue is graylisted after a handful of invalid messages, after
    /// which nothing it sends is even looked at, so every kind of abuse gets its own rogue.
    #[derive(Clone, Copy)]
    enum Abuse {
        Flood,
        Garbage,
        OutOfBounds,
    }

    fn messages(abuse: Abuse, me: PeerId, round: u64) -> Vec<Vec<u8>> {
        let message = |round, groups| {
            encode(&RolloutMessage {
                round,
                sender: me,
                groups,
            })
        };
        let g = GROUP_SIZE as usize;
        match abuse {
            Abuse::Flood => (0..20).map(|_| message(round, vec![group(g)])).collect(),
            Abuse::Garbage => {
                let mut oversized = group(g);
                oversized.completions[0].text = "9".repeat(270_000);
                // The current version, then a sender length ('a' = 97) over the limit.
                let mut overlong_sender = vec![swarm_p2p::SCHEMA_VERSION];
                overlong_sender.extend_from_slice(b"garbage");
                vec![
                    b"not a rollout message".to_vec(),
                    overlong_sender,
                    message(round, vec![oversized]),
                ]
            }
            Abuse::OutOfBounds => vec![
                message(round + 50, vec![group(g)]),
                message(round, vec![group(g + 1)]),
            ],
        }
    }

    /// Three rogues with fresh keys join the swarm's topic, one flooding, one sending garbage and
    /// oversized messages, one sending wrong rounds and group sizes; returns their PeerIds.
    pub fn attack(bootstrap: &[String], uid: &str, start_time: Timestamp) -> Vec<String> {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let rogues = [Abuse::Flood, Abuse::Garbage, Abuse::OutOfBounds].map(|abuse| {
                tokio::spawn(rogue(abuse, bootstrap.to_vec(), uid.to_owned(), start_time))
            });
            let mut ids = Vec::new();
            for rogue in rogues {
                ids.push(rogue.await.unwrap());
            }
            ids
        })
    }

    async fn rogue(
        abuse: Abuse,
        bootstrap: Vec<String>,
        uid: String,
        start_time: Timestamp,
    ) -> String {
        let key = MemberKey::generate();
        let mut config = NetworkConfig::new(
            key.libp2p_keypair(),
            swarm_p2p::rollouts_topic(&uid),
            GROUP_SIZE as usize,
        );
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        config.bootstrap = bootstrap.iter().map(|a| a.parse().unwrap()).collect();
        let (network, _incoming) = Network::start(config).await.unwrap();
        let me = network.local_peer_id();
        // Publishing fails until the honest nodes' meshes take the rogue in.
        let deadline = Instant::now() + Duration::from_secs(20);
        while network.status().await.mesh_peers.len() < 3 {
            assert!(Instant::now() < deadline, "the rogue never joined the mesh");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let elapsed = Timestamp::now().duration_since(start_time).as_secs();
        let round = u64::try_from(elapsed).unwrap_or(0) / u64::from(ROUND_SECONDS);
        for bytes in messages(abuse, me, round) {
            let _ = network.publish(bytes).await;
        }
        // Connected through at least two of the members' gather points, where they report the
        // scores of the peers connected then.
        tokio::time::sleep(Duration::from_secs(u64::from(ROUND_SECONDS) * 5 / 2)).await;
        network.shutdown().await;
        me.to_string()
    }
}
