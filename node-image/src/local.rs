//! A swarm on one machine: N member processes of this same binary on 127.0.0.1, each with its own
//! generated identity, checkpoint directory and port, bootstrapped from one another over real
//! libp2p, all training the embedded base model. The runner shows live progress from the members'
//! round reports and, at the end, writes per-round metrics (CSV and JSON), a PNG chart of reward
//! per member, and a summary.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use swarm_chart::{LineChart, Series};
use swarm_identity::{MemberKey, PRIVATE_KEY_FILE};
use swarm_node_config::{
    CONFIG_VERSION, CheckpointConfig, ConfigError, Dtype, ModelConfig, NodeConfig, P2pConfig,
    RoundsConfig, SwarmRef, TaskFamily, TaskWeight, TrainingConfig,
};

use crate::clock::RoundClock;
use crate::local_chain::{ChainError, LocalChain, MemberTotals};
use crate::report::{NodeEvent, RoundReport};

/// The base model of local swarms and experiments: the Qwen2 of 0.69 M parameters that
/// `rl/examples/make-base.rs --preset swarm` warms up from a fixed seed on the easiest arithmetic
/// and fraction questions; `base-model/README.md` says how and what it measures. Embedded so the
/// command needs no download.
const BASE_MODEL: [(&str, &[u8]); 3] = [
    ("config.json", include_bytes!("../base-model/config.json")),
    (
        "model.safetensors",
        include_bytes!("../base-model/model.safetensors"),
    ),
    (
        "tokenizer.json",
        include_bytes!("../base-model/tokenizer.json"),
    ),
];

/// Time between writing the configs and round 0, plus [`STARTUP_PER_MEMBER`] for each member:
/// every member loads its model and starts its network in well under this, even when they all
/// start at once on two cores.
const STARTUP_MARGIN: Duration = Duration::from_secs(2);
const STARTUP_PER_MEMBER: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no free port on 127.0.0.1 for a member: {0}")]
    Port(#[source] std::io::Error),
    #[error("cannot start member {member}: {source}")]
    Spawn {
        member: String,
        #[source]
        source: std::io::Error,
    },
    #[error("member {member} failed ({status}); its log is {log}")]
    MemberFailed {
        member: String,
        status: String,
        log: PathBuf,
    },
    #[error("cannot render the chart: {0}")]
    Chart(#[from] swarm_chart::ChartError),
    #[error("{0}")]
    Invalid(String),
    #[error("local ledger: {0}")]
    Chain(#[from] ChainError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LocalError + '_ {
    move |source| LocalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a local swarm trains, and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalSwarm {
    pub members: usize,
    pub rounds: u64,
    pub round_seconds: u32,
    pub training: TrainingConfig,
    /// A model directory instead of the embedded base model.
    pub model: Option<PathBuf>,
    pub checkpoint_every: u32,
    /// Where everything goes: model, members' files and logs, metrics, chart.
    pub out: PathBuf,
    /// Print a progress line per round.
    pub progress: bool,
    /// The anvil binary: with it the swarm gets a local ledger (see [`crate::local_chain`]).
    pub anvil: Option<PathBuf>,
}

impl LocalSwarm {
    /// The settings the README's main command runs with: the easiest arithmetic and fraction
    /// questions, which the embedded model learns visibly in 100 rounds on two CPU cores.
    pub fn training_defaults() -> TrainingConfig {
        TrainingConfig {
            questions_per_round: 8,
            local_rollouts: 4,
            external_rollouts: 4,
            completions_per_question: 8,
            learning_rate: 5e-4,
            max_new_tokens: 16,
            micro_batch_size: 64,
            seed: Some(1),
            difficulty: 1,
            tasks: [
                TaskFamily::BasicArithmetic,
                TaskFamily::FractionSimplification,
            ]
            .into_iter()
            .map(|family| TaskWeight { family, weight: 1 })
            .collect(),
            ..TrainingConfig::default()
        }
    }

    fn check(&self) -> Result<(), LocalError> {
        if self.members == 0 {
            return Err(LocalError::Invalid(
                "a swarm needs at least one member".into(),
            ));
        }
        if self.rounds == 0 || self.round_seconds == 0 {
            return Err(LocalError::Invalid(
                "rounds and round seconds must be at least 1".into(),
            ));
        }
        self.training.check().map_err(LocalError::Invalid)
    }
}

/// Every member's reports, in arrival order, and what the ledger recorded.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub members: Vec<String>,
    pub reports: Vec<RoundReport>,
    /// Per member, in member order, when the swarm had a ledger.
    pub ledger: Option<Vec<MemberTotals>>,
}

impl Outcome {
    /// Sum of every member's per-round mean reward: the SAPO paper's cumulative reward.
    pub fn cumulative_reward(&self) -> f64 {
        self.reports.iter().map(|r| r.reward).sum()
    }

    fn by_member(&self) -> BTreeMap<&str, Vec<&RoundReport>> {
        let mut by_member: BTreeMap<&str, Vec<&RoundReport>> = self
            .members
            .iter()
            .map(|m| (m.as_str(), Vec::new()))
            .collect();
        for report in &self.reports {
            by_member.entry(&report.member).or_default().push(report);
        }
        for reports in by_member.values_mut() {
            reports.sort_by_key(|r| r.round);
        }
        by_member
    }
}

struct Member {
    name: String,
    dir: PathBuf,
    port: u16,
    key: MemberKey,
}

/// Runs the swarm to its last round with `binary` (this program) as every member.
pub fn run(swarm: &LocalSwarm, binary: &Path) -> Result<Outcome, LocalError> {
    swarm.check()?;
    fs::create_dir_all(&swarm.out).map_err(io(&swarm.out))?;
    let model_dir = match &swarm.model {
        Some(dir) => dir.clone(),
        None => write_base_model(&swarm.out.join("model"))?,
    };
    let mut chain = swarm
        .anvil
        .as_deref()
        .map(|binary| LocalChain::start(binary, swarm.members))
        .transpose()?;
    // With a ledger the members are anvil's funded accounts, registered on the contract.
    let mut keys = chain
        .as_mut()
        .map(LocalChain::take_member_keys)
        .unwrap_or_default()
        .into_iter();
    let members = (0..swarm.members)
        .map(|i| {
            let name = format!("local-{i}");
            Ok(Member {
                dir: swarm.out.join("members").join(&name),
                name,
                port: free_port()?,
                key: keys.next().unwrap_or_else(MemberKey::generate),
            })
        })
        .collect::<Result<Vec<_>, LocalError>>()?;
    let bootstrap: Vec<String> = members
        .iter()
        .map(|m| {
            format!(
                "/ip4/127.0.0.1/tcp/{}/p2p/{}",
                m.port,
                m.key.peer_id_string()
            )
        })
        .collect();
    let margin = STARTUP_MARGIN
        + STARTUP_PER_MEMBER.saturating_mul(u32::try_from(swarm.members).unwrap_or(u32::MAX));
    let start_time = Timestamp::now()
        .saturating_add(SignedDuration::try_from(margin).unwrap_or_default())
        .unwrap_or_else(|_| Timestamp::now());
    let swarm_uid = format!("local-{}", hex::encode(rand::random::<[u8; 8]>()));

    let (events, arrivals) = mpsc::channel();
    let mut children = Children::default();
    for (index, member) in members.iter().enumerate() {
        let config = NodeConfig {
            version: CONFIG_VERSION,
            swarm: SwarmRef {
                name: "local".into(),
                namespace: "local".into(),
                uid: swarm_uid.clone(),
            },
            p2p: P2pConfig {
                port: member.port,
                bootstrap_peers: bootstrap.clone(),
                external_peers: Vec::new(),
            },
            model: ModelConfig {
                path: Some(model_dir.display().to_string()),
                hub_id: None,
                revision: None,
                dtype: Dtype::F32,
            },
            training: swarm.training.clone(),
            rounds: RoundsConfig {
                start_time,
                duration_seconds: swarm.round_seconds,
                max_rounds: Some(swarm.rounds),
            },
            checkpoints: Some(CheckpointConfig {
                dir: member.dir.join("checkpoints").display().to_string(),
                every_rounds: swarm.checkpoint_every,
            }),
            ledger: chain.as_ref().map(LocalChain::config),
        };
        let child = spawn(index, member, &config, binary, events.clone())?;
        children.push(member, child);
    }
    drop(events);

    let round_keeper = chain.as_ref().map(|chain| {
        chain.keep_rounds(RoundClock::new(
            start_time,
            Duration::from_secs(u64::from(swarm.round_seconds)),
        ))
    });
    let mut progress = Progress::new(&members, swarm.progress);
    let mut outcome = Outcome {
        members: members.iter().map(|m| m.name.clone()).collect(),
        reports: Vec::new(),
        ledger: None,
    };
    for (index, event) in arrivals {
        match event {
            NodeEvent::Round(report) => {
                progress.record(index, &report);
                outcome.reports.push(report);
            }
            NodeEvent::Started(started) if swarm.progress => {
                let resumed = started
                    .resumed_from
                    .map(|r| format!(", resuming after round {r}"))
                    .unwrap_or_default();
                println!("{} up: peer {}{resumed}", started.member, started.peer_id);
            }
            NodeEvent::Started(_) | NodeEvent::Finished(_) => {}
        }
    }
    progress.flush();
    children.wait()?;
    drop(round_keeper);
    outcome.ledger = chain.as_ref().map(LocalChain::totals).transpose()?;

    write_metrics(&swarm.out, &outcome)?;
    write_chart(&swarm.out.join("reward.png"), &outcome)?;
    Ok(outcome)
}

/// Writes the embedded base model to `dir`; the directory.
pub fn write_base_model(dir: &Path) -> Result<PathBuf, LocalError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    for (name, bytes) in BASE_MODEL {
        let path = dir.join(name);
        fs::write(&path, bytes).map_err(io(&path))?;
    }
    Ok(dir.to_path_buf())
}

/// A port free for both TCP and UDP (the member listens with TCP and QUIC on it). Another
/// process could take it before the member binds; on one developer machine that is unlikely.
pub fn free_port() -> Result<u16, LocalError> {
    for _ in 0..32 {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(LocalError::Port)?;
        let port = tcp.local_addr().map_err(LocalError::Port)?.port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(LocalError::Port(std::io::Error::other(
        "no port was free for both TCP and UDP",
    )))
}

/// Starts `member`, whose events arrive on `events` tagged with `index`.
fn spawn(
    index: usize,
    member: &Member,
    config: &NodeConfig,
    binary: &Path,
    events: mpsc::Sender<(usize, NodeEvent)>,
) -> Result<Child, LocalError> {
    let identity = member.dir.join("identity");
    fs::create_dir_all(&identity).map_err(io(&identity))?;
    let key_path = identity.join(PRIVATE_KEY_FILE);
    write_private(&key_path, member.key.secret_data().as_bytes())?;
    let config_path = member.dir.join("node.yaml");
    fs::write(&config_path, config.to_yaml()?).map_err(io(&config_path))?;
    let log_path = member.dir.join("node.log");
    let log = fs::File::create(&log_path).map_err(io(&log_path))?;
    let spawn_error = |source| LocalError::Spawn {
        member: member.name.clone(),
        source,
    };
    let mut child = Command::new(binary)
        .arg("--member")
        .arg(&member.name)
        .arg("--identity-dir")
        .arg(&identity)
        .arg("--config")
        .arg(&config_path)
        .args([
            "--listen-host",
            "127.0.0.1",
            "--metrics-port",
            "0",
            "--torch-threads",
            "1",
            "--exit-when-done",
        ])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(spawn_error)?;
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(event) = NodeEvent::parse(&line)
                    && events.send((index, event)).is_err()
                {
                    break;
                }
            }
        });
    }
    Ok(child)
}

/// Writes a file only its owner can read: it holds a private key.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), LocalError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))
}

/// The member processes; killed if the runner stops early, so none outlives it.
#[derive(Default)]
struct Children {
    running: Vec<(String, PathBuf, Child)>,
}

impl Children {
    fn push(&mut self, member: &Member, child: Child) {
        self.running
            .push((member.name.clone(), member.dir.join("node.log"), child));
    }

    fn wait(&mut self) -> Result<(), LocalError> {
        while let Some((member, log, mut child)) = self.running.pop() {
            let status = child.wait().map_err(|source| LocalError::Spawn {
                member: member.clone(),
                source,
            })?;
            if !status.success() {
                return Err(LocalError::MemberFailed {
                    member,
                    status: status.to_string(),
                    log,
                });
            }
        }
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, _, child) in &mut self.running {
            // The runner is stopping on an error: the members have nobody to report to.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One line per round once every member reported it (or moved past it).
struct Progress {
    members: Vec<String>,
    enabled: bool,
    pending: BTreeMap<u64, BTreeMap<usize, RoundReport>>,
}

impl Progress {
    fn new(members: &[Member], enabled: bool) -> Self {
        Self {
            members: members.iter().map(|m| m.name.clone()).collect(),
            enabled,
            pending: BTreeMap::new(),
        }
    }

    fn record(&mut self, index: usize, report: &RoundReport) {
        self.pending
            .entry(report.round)
            .or_default()
            .insert(index, report.clone());
        let latest = report.round;
        while let Some((&round, reports)) = self.pending.first_key_value() {
            if reports.len() < self.members.len() && round + 1 >= latest {
                break;
            }
            if let Some((round, reports)) = self.pending.pop_first() {
                self.print(round, &reports);
            }
        }
    }

    fn flush(&mut self) {
        while let Some((round, reports)) = self.pending.pop_first() {
            self.print(round, &reports);
        }
    }

    fn print(&self, round: u64, reports: &BTreeMap<usize, RoundReport>) {
        if !self.enabled {
            return;
        }
        let cell = |f: &dyn Fn(&RoundReport) -> String| -> String {
            (0..self.members.len())
                .map(|i| reports.get(&i).map_or_else(|| "-".into(), f))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "round {round:>4} | reward {} | peers {} | groups local+external {}",
            cell(&|r| format!("{:.2}", r.reward)),
            cell(&|r| r.peers.to_string()),
            cell(&|r| format!("{}+{}", r.trained_local, r.trained_external)),
        );
    }
}

const CSV_HEADER: &str = "member,round,reward,completions,local_groups,local_with_signal,\
published,external_groups,external_peers,external_with_signal,external_dropped,trained_local,\
trained_external,loss,peers,sample_seconds,train_seconds,skipped_rounds";

fn write_metrics(out: &Path, outcome: &Outcome) -> Result<(), LocalError> {
    let mut csv = String::from(CSV_HEADER);
    csv.push('\n');
    for reports in outcome.by_member().values() {
        for r in reports {
            csv.push_str(&format!(
                "{},{},{:.4},{},{},{},{},{},{},{},{},{},{},{},{},{:.3},{:.3},{}\n",
                r.member,
                r.round,
                r.reward,
                r.completions,
                r.local_groups,
                r.local_with_signal,
                r.published,
                r.external_groups,
                r.external_peers,
                r.external_with_signal,
                r.external_dropped,
                r.trained_local,
                r.trained_external,
                r.loss.map(|l| format!("{l:.5}")).unwrap_or_default(),
                r.peers,
                r.sample_seconds,
                r.train_seconds,
                r.skipped_rounds,
            ));
        }
    }
    let csv_path = out.join("metrics.csv");
    fs::write(&csv_path, csv).map_err(io(&csv_path))?;
    let json_path = out.join("metrics.json");
    let json = serde_json::to_string_pretty(&outcome.reports).map_err(std::io::Error::other);
    fs::write(&json_path, json.map_err(io(&json_path))?).map_err(io(&json_path))
}

/// Reward per member over rounds, each point the mean over a trailing window so the trend shows
/// through the per-round sampling noise.
fn write_chart(path: &Path, outcome: &Outcome) -> Result<(), LocalError> {
    let by_member = outcome.by_member();
    let rounds = by_member.values().map(Vec::len).max().unwrap_or(0);
    let window = (rounds / 10).max(1);
    let series = by_member
        .iter()
        .filter(|(_, reports)| !reports.is_empty())
        .map(|(member, reports)| {
            Series::new(
                *member,
                reports
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let from = (i + 1).saturating_sub(window);
                        let mean = reports[from..=i].iter().map(|r| r.reward).sum::<f64>()
                            / (i + 1 - from) as f64;
                        (r.round as f64, mean)
                    })
                    .collect(),
            )
        })
        .collect();
    let chart = LineChart {
        title: format!("Reward per member (mean of the last {window} rounds)"),
        x_label: "round".into(),
        y_label: "reward".into(),
        series,
        y_range: Some((0.0, 1.0)),
    };
    let png = chart.render_png(960, 540)?;
    fs::write(path, png).map_err(io(path))
}

/// Per member: mean reward over the first and last quarter of its rounds, and external groups
/// trained on; then the swarm's cumulative reward.
pub fn summary(outcome: &Outcome) -> String {
    let mut text = String::from(
        "member      rounds  reward first quarter -> last quarter  external groups trained\n",
    );
    for (member, reports) in outcome.by_member() {
        let quarter = (reports.len() / 4).max(1);
        let mean =
            |rs: &[&RoundReport]| rs.iter().map(|r| r.reward).sum::<f64>() / rs.len().max(1) as f64;
        let first = mean(&reports[..quarter.min(reports.len())]);
        let last = mean(&reports[reports.len().saturating_sub(quarter)..]);
        let external: usize = reports.iter().map(|r| r.trained_external).sum();
        text.push_str(&format!(
            "{member:<11} {:>6}  {first:>20.3} -> {last:<12.3}  {external:>23}\n",
            reports.len()
        ));
    }
    text.push_str(&format!(
        "cumulative reward (sum over members and rounds): {:.2}\n",
        outcome.cumulative_reward()
    ));
    if let Some(totals) = &outcome.ledger {
        text.push_str("on the ledger:\n");
        for (member, recorded) in outcome.members.iter().zip(totals) {
            text.push_str(&format!(
                "{member:<11} {:>3} rounds recorded, total reward {:.3}, named winner {} times\n",
                recorded.rewards_recorded, recorded.total_reward, recorded.wins
            ));
        }
    }
    text
}
