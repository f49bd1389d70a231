//! A swarm member's training loop, SAPO style. Each round: draw questions, sample G completions of
//! each, publish them, gather the rollouts peers published for the round until the gather point,
//! re-score those with this node's verifiers and keep the groups that carry signal, train one GRPO
//! step on I local and J external groups, report, and checkpoint every k rounds.
//!
//! Training runs on the calling thread; the libp2p node runs on a small tokio runtime beside it and
//! files accepted messages into an [`Inbox`] by round. A node whose peers are unreachable keeps
//! training on its own rollouts while the network keeps redialling.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use swarm_model::{ChatTokenizer, ModelError, Precision, Qwen2};
use swarm_node_config::{Dtype, NodeConfig, P2pConfig, TrainingConfig};
use swarm_p2p::{
    Limits, Network, NetworkConfig, NetworkError, NetworkStatus, Received, RolloutMessage,
    SharedGroup,
};
use swarm_rl::{
    AdamWConfig, Checkpoint, CheckpointError, Group, GrpoConfig, GrpoError, GrpoLoss, GrpoTrainer,
    RewardStats, RoundConfig, RoundError, Sampler, SamplingConfig, sample_groups, train_on_groups,
};
use swarm_tasks::{Difficulty, FamilySampler, Question, Source, TaskError, load_jsonl};
use swarm_telemetry::admin::{self, AdminState};
use tch::Device;
use tracing::field::Empty;

use crate::Startup;
use crate::clock::RoundClock;
use crate::exchange::{AdoptLimits, adopt, share};
use crate::ledger::{LedgerReporter, LedgerSetupError, RoundSubmission};
use crate::metrics::NodeMetrics;
use crate::report::{Finished, NodeEvent, RoundReport, Started};

/// Share of a round after which gathering stops and training starts, whoever has not published
/// yet: stragglers are never waited for beyond it. The rest of the round is left for the training
/// step, so a member normally finishes within its round.
const GATHER_SHARE: f64 = 0.6;
/// How often gathering checks whether every connected peer has published for the round.
const GATHER_POLL: Duration = Duration::from_millis(20);
/// Rounds behind the current one whose messages are still accepted: a peer that finished late
/// still contributes to the next round's pool.
const ROUND_WINDOW: u64 = 1;
/// Messages one peer may send per round: a round's rollouts are split into several messages when
/// they exceed the size limit.
const MESSAGES_PER_PEER_PER_ROUND: u32 = 8;
/// How long a member that is done waits for its last rounds to be recorded on the ledger.
const LEDGER_DRAIN: Duration = Duration::from_secs(30);
/// Checkpoints kept on disk: the newest, and one to fall back to if it is damaged.
const CHECKPOINTS_KEPT: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(
        "the model is to come from the Hugging Face Hub ({0}), which this node cannot download: \
         mount the weights (model.source.pvc or .image) so the config has model.path"
    )]
    HubModel(String),
    #[error("model: {0}")]
    Model(#[from] ModelError),
    #[error("tasks: {0}")]
    Tasks(#[from] TaskError),
    #[error(transparent)]
    Round(#[from] RoundError),
    #[error("trainer: {0}")]
    Grpo(#[from] GrpoError),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("network: {0}")]
    Network(#[from] NetworkError),
    #[error("cannot start the network runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot serve /healthz, /readyz and /metrics on {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write the round report: {0}")]
    Report(#[source] std::io::Error),
    #[error("the model config lists no end-of-sequence token")]
    NoEndToken,
    #[error(transparent)]
    Ledger(#[from] LedgerSetupError),
}

/// How this process runs the member, beyond the mounted config.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// Address the libp2p node listens on: all interfaces in a pod, loopback locally.
    pub listen_host: std::net::IpAddr,
    /// Listen port instead of the config's (members of a local swarm share one host).
    pub listen_port: Option<u16>,
    /// Port of `/healthz`, `/readyz` and `/metrics` on the listen host; 0 picks a free one.
    pub metrics_port: u16,
    /// libtorch's intra-op threads; its default otherwise.
    pub torch_threads: Option<i32>,
    /// Exit once `rounds.maxRounds` are done. In a pod the node stays up instead (serving its
    /// peers), since an exited container is restarted.
    pub exit_when_done: bool,
}

/// Runs the member until its last round (forever without `rounds.maxRounds`). Metrics go to
/// `/metrics`, and through `metrics` to OTLP when exporting.
pub fn run(
    startup: Startup,
    options: &RunOptions,
    mut metrics: swarm_telemetry::Metrics,
    out: &mut impl Write,
) -> Result<(), NodeError> {
    if let Some(threads) = options.torch_threads {
        tch::set_num_threads(threads);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("swarm-node-p2p")
        .enable_all()
        .build()
        .map_err(NodeError::Runtime)?;
    let node_metrics = NodeMetrics::register(&mut metrics);
    // Served before the model loads, so that a liveness probe passes during a long load; ready
    // once the node has joined the network and is about to train.
    let ready = Arc::new(AtomicBool::new(false));
    let metrics_addr = runtime.block_on(serve_admin(
        SocketAddr::new(options.listen_host, options.metrics_port),
        AdminState {
            registry: Arc::new(metrics.into_registry()),
            ready: Arc::clone(&ready),
        },
    ))?;
    let config = &startup.config;
    let model_dir = match (&config.model.path, &config.model.hub_id) {
        (Some(path), _) => PathBuf::from(path),
        (None, hub_id) => return Err(NodeError::HubModel(hub_id.clone().unwrap_or_default())),
    };
    let device = Device::cuda_if_available();
    let precision = precision(config.model.dtype, device);
    tracing::info!(?device, ?precision, model = %model_dir.display(), "loading the model");
    let policy = Qwen2::load(&model_dir, device, precision)?;
    let training = &config.training;
    // The KL penalty compares against the model as it was loaded, frozen.
    let reference = if training.kl_beta == 0.0 {
        None
    } else {
        Some(Qwen2::load(&model_dir, device, precision)?)
    };
    let tokenizer = ChatTokenizer::from_dir(&model_dir)?;
    let end_token = *policy
        .config()
        .eos_token_ids
        .first()
        .ok_or(NodeError::NoEndToken)?;
    let mut trainer = GrpoTrainer::new(&policy, grpo_config(training))?;
    let resumed_from = match &config.checkpoints {
        Some(checkpoints) => resume(Path::new(&checkpoints.dir), &policy, &mut trainer)?,
        None => None,
    };

    let bootstrap = bootstrap_addrs(&config.p2p);
    let network_config = network_config(&startup, options, bootstrap.clone());
    let (network, incoming) = runtime.block_on(Network::start(network_config))?;
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    runtime.spawn(file_messages(incoming, Arc::clone(&inbox)));
    let ledger = config
        .ledger
        .as_ref()
        .map(|ledger| {
            LedgerReporter::start(runtime.handle(), ledger, &startup.key, node_metrics.clone())
        })
        .transpose()?;
    let listen = runtime.block_on(network.listen_addrs());
    NodeEvent::Started(Started {
        member: startup.member.clone(),
        peer_id: startup.key.peer_id_string(),
        address: startup.key.address(),
        listen: listen.iter().map(ToString::to_string).collect(),
        resumed_from,
        metrics: Some(metrics_addr.to_string()),
    })
    .emit(out)
    .map_err(NodeError::Report)?;
    ready.store(true, Ordering::Relaxed);

    let mut member = Member {
        name: startup.member.clone(),
        peer_id: network.local_peer_id(),
        clock: RoundClock::new(
            config.rounds.start_time,
            Duration::from_secs(u64::from(config.rounds.duration_seconds)),
        ),
        questions: QuestionSource::new(training)?,
        seed: member_seed(training.seed.unwrap_or(0), &startup.member),
        adopt_limits: AdoptLimits {
            max_prompt_tokens: usize::try_from(policy.config().max_position_embeddings)
                .unwrap_or(usize::MAX)
                .saturating_sub(max_new_tokens(training)),
            // Re-tokenizing a decoded text rarely gives back exactly the sampled tokens.
            max_completion_tokens: max_new_tokens(training) * 5 / 4 + 1,
        },
        policy,
        reference,
        tokenizer,
        end_token,
        trainer,
        sampler: Sampler::new(),
        network,
        inbox,
        ledger,
        runtime,
        metrics: node_metrics,
        config: config.clone(),
        known_peers: bootstrap,
        config_path: startup.config_path.clone(),
        key: startup.key,
    };
    let rounds_trained = member.train(resumed_from, out)?;
    NodeEvent::Finished(Finished {
        member: startup.member.clone(),
        rounds_trained,
    })
    .emit(out)
    .map_err(NodeError::Report)?;
    if let Some(ledger) = &member.ledger
        && !member.runtime.block_on(ledger.drain(LEDGER_DRAIN))
    {
        tracing::warn!("some rounds are still not recorded on the ledger");
    }
    if !options.exit_when_done {
        tracing::info!("last round done; staying up for the swarm's peers");
        member.runtime.block_on(std::future::pending::<()>());
    }
    member.runtime.block_on(member.network.shutdown());
    Ok(())
}

/// Binds the admin server and serves it on the runtime; the address it listens on.
async fn serve_admin(addr: SocketAddr, state: AdminState) -> Result<SocketAddr, NodeError> {
    let admin_error = |source| NodeError::Admin { addr, source };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(admin_error)?;
    let bound = listener.local_addr().map_err(admin_error)?;
    tokio::spawn(async move {
        if let Err(err) = admin::serve(listener, state).await {
            tracing::error!(%err, addr = %bound, "the admin server stopped");
        }
    });
    Ok(bound)
}

/// Weights and activations for the configured dtype: bf16 needs a GPU to be fast, so a CPU runs
/// f32 whatever the config says; f16 trains as bf16, whose range needs no loss scaling.
fn precision(dtype: Dtype, device: Device) -> Precision {
    match (dtype, device.is_cuda()) {
        (Dtype::F32, _) | (_, false) => Precision::F32,
        (Dtype::Bf16 | Dtype::F16, true) => Precision::Bf16,
    }
}

fn max_new_tokens(training: &TrainingConfig) -> usize {
    usize::try_from(training.max_new_tokens).unwrap_or(usize::MAX)
}

fn grpo_config(training: &TrainingConfig) -> GrpoConfig {
    GrpoConfig {
        loss: GrpoLoss {
            clip_epsilon_low: training.clip_epsilon_low,
            clip_epsilon_high: training.clip_epsilon_high,
            kl_beta: training.kl_beta,
        },
        optimizer: AdamWConfig {
            learning_rate: training.learning_rate,
            ..AdamWConfig::default()
        },
        micro_batch_size: usize::try_from(training.micro_batch_size).unwrap_or(1),
        ..GrpoConfig::default()
    }
}

/// Restores the newest checkpoint that verifies; its round, or `None` for a fresh start.
fn resume(dir: &Path, policy: &Qwen2, trainer: &mut GrpoTrainer) -> Result<Option<u64>, NodeError> {
    let latest = Checkpoint::load_latest(dir)?;
    for skipped in &latest.skipped {
        tracing::warn!(path = %skipped.path.display(), problem = %skipped.problem, "passing over a damaged checkpoint");
    }
    let Some(checkpoint) = latest.checkpoint else {
        return Ok(None);
    };
    checkpoint.restore(policy.var_store(), trainer.optimizer_mut())?;
    tracing::info!(round = checkpoint.round, path = %checkpoint.path.display(), "resumed from checkpoint");
    Ok(Some(checkpoint.round))
}

fn network_config(
    startup: &Startup,
    options: &RunOptions,
    bootstrap: Vec<Multiaddr>,
) -> NetworkConfig {
    let p2p = &startup.config.p2p;
    let port = options.listen_port.unwrap_or(p2p.port);
    let host = match options.listen_host {
        std::net::IpAddr::V4(ip) => format!("/ip4/{ip}"),
        std::net::IpAddr::V6(ip) => format!("/ip6/{ip}"),
    };
    let listen = [
        format!("{host}/tcp/{port}"),
        format!("{host}/udp/{port}/quic-v1"),
    ]
    .iter()
    .filter_map(|addr| addr.parse::<Multiaddr>().ok())
    .collect();
    let group_size =
        usize::try_from(startup.config.training.completions_per_question).unwrap_or(usize::MAX);
    NetworkConfig {
        listen,
        bootstrap,
        round_window: ROUND_WINDOW,
        messages_per_peer_per_round: MESSAGES_PER_PEER_PER_ROUND,
        ..NetworkConfig::new(
            startup.key.libp2p_keypair(),
            swarm_p2p::rollouts_topic(&startup.config.swarm.uid),
            group_size,
        )
    }
}

/// The config's bootstrap and external peers. An entry that does not parse, or names no peer, is
/// skipped rather than fatal: the others may still work.
fn bootstrap_addrs(p2p: &P2pConfig) -> Vec<Multiaddr> {
    p2p.bootstrap_peers
        .iter()
        .chain(&p2p.external_peers)
        .filter_map(|addr| match addr.parse::<Multiaddr>() {
            Ok(parsed) if parsed.iter().any(|p| matches!(p, Protocol::P2p(_))) => Some(parsed),
            Ok(_) => {
                tracing::warn!(%addr, "skipping a bootstrap peer without /p2p/<peer id>");
                None
            }
            Err(err) => {
                tracing::warn!(%addr, %err, "skipping a bootstrap peer that is not a multiaddr");
                None
            }
        })
        .collect()
}

/// Peers' accepted rollouts by round, until the round's training takes them.
#[derive(Debug, Default)]
struct Inbox {
    rounds: BTreeMap<u64, Vec<(PeerId, Vec<SharedGroup>)>>,
    /// Rounds up to here were taken: later arrivals for them are too late to use.
    taken_through: Option<u64>,
}

impl Inbox {
    fn file(&mut self, received: Received) {
        let round = received.message.round;
        if self.taken_through.is_some_and(|taken| round <= taken) {
            return;
        }
        self.rounds
            .entry(round)
            .or_default()
            .push((received.author, received.message.groups));
    }

    /// Whether every one of `peers` has sent something for `round`.
    fn has_all(&self, round: u64, peers: &[PeerId]) -> bool {
        let received = self.rounds.get(&round).map_or(&[][..], Vec::as_slice);
        peers
            .iter()
            .all(|peer| received.iter().any(|(author, _)| author == peer))
    }

    /// Everything received for `round` and earlier.
    fn take(&mut self, round: u64) -> Vec<(PeerId, Vec<SharedGroup>)> {
        let later = self.rounds.split_off(&(round + 1));
        let taken = std::mem::replace(&mut self.rounds, later);
        self.taken_through = Some(round);
        taken.into_values().flatten().collect()
    }
}

async fn file_messages(
    mut incoming: tokio::sync::mpsc::Receiver<Received>,
    inbox: Arc<Mutex<Inbox>>,
) {
    while let Some(received) = incoming.recv().await {
        inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .file(received);
    }
}

/// Where a round's questions come from.
enum QuestionSource {
    Procedural {
        families: FamilySampler,
        difficulty: Difficulty,
    },
    Dataset(Vec<Question>),
}

impl QuestionSource {
    fn new(training: &TrainingConfig) -> Result<Self, NodeError> {
        Ok(match &training.dataset {
            Some(dataset) => Self::Dataset(load_jsonl(Path::new(&dataset.path))?),
            None => Self::Procedural {
                families: FamilySampler::new(&training.tasks)?,
                difficulty: Difficulty::new(training.difficulty),
            },
        })
    }

    fn draw(&self, count: usize, rng: &mut Xoshiro256PlusPlus) -> Vec<Question> {
        match self {
            Self::Procedural {
                families,
                difficulty,
            } => (0..count)
                .map(|_| families.question(*difficulty, rng))
                .collect(),
            // load_jsonl never returns an empty dataset.
            Self::Dataset(questions) => (0..count)
                .filter_map(|_| questions.choose(rng).cloned())
                .collect(),
        }
    }
}

/// The member's own seed: the swarm's base seed mixed with its name (FNV-1a, stable everywhere),
/// so members draw different questions, and a restarted member the same ones again.
fn member_seed(base: u64, member: &str) -> u64 {
    let hash = member
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    base ^ hash
}

struct Member {
    name: String,
    peer_id: PeerId,
    clock: RoundClock,
    questions: QuestionSource,
    seed: u64,
    adopt_limits: AdoptLimits,
    policy: Qwen2,
    reference: Option<Qwen2>,
    tokenizer: ChatTokenizer,
    end_token: i64,
    trainer: GrpoTrainer,
    sampler: Sampler,
    network: Network,
    inbox: Arc<Mutex<Inbox>>,
    ledger: Option<LedgerReporter>,
    runtime: tokio::runtime::Runtime,
    metrics: NodeMetrics,
    config: NodeConfig,
    /// Bootstrap addresses handed to the network so far.
    known_peers: Vec<Multiaddr>,
    config_path: PathBuf,
    key: swarm_identity::MemberKey,
}

impl Member {
    /// Trains round after round until `maxRounds`; returns the number of rounds trained.
    fn train(&mut self, resumed_from: Option<u64>, out: &mut impl Write) -> Result<u64, NodeError> {
        let mut last = resumed_from;
        let mut trained = 0;
        loop {
            let round = self.clock.next_round(last, Timestamp::now());
            if self
                .config
                .rounds
                .max_rounds
                .is_some_and(|max| round >= max)
            {
                return Ok(trained);
            }
            std::thread::sleep(RoundClock::until(
                Timestamp::now(),
                self.clock.start_of(round),
            ));
            self.refresh_config();
            let skipped = last.map_or(0, |last| round - last - 1);
            let report = self.round(round, skipped)?;
            self.metrics.record_round(&report);
            NodeEvent::Round(report)
                .emit(out)
                .map_err(NodeError::Report)?;
            last = Some(round);
            trained += 1;
        }
    }

    /// Reads the mounted config again, which the kubelet updates in place when the operator
    /// changes the ConfigMap: members whose identity was not known yet, or added by a scale-up,
    /// are dialled, and a ledger whose contract became known is used from now on. The rest of a
    /// running member's config does not change (the operator keeps it immutable or the pod is
    /// replaced).
    fn refresh_config(&mut self) {
        let latest = match NodeConfig::load(&self.config_path) {
            Ok(latest) if latest.swarm.uid == self.config.swarm.uid => latest,
            Ok(_) => {
                tracing::warn!("the mounted config now names another swarm; ignoring it");
                return;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot read the mounted config again; keeping the one loaded");
                return;
            }
        };
        let added: Vec<Multiaddr> = bootstrap_addrs(&latest.p2p)
            .into_iter()
            .filter(|addr| !self.known_peers.contains(addr))
            .collect();
        if !added.is_empty() {
            match self
                .runtime
                .block_on(self.network.add_bootstrap_peers(&added))
            {
                Ok(()) => {
                    tracing::info!(peers = added.len(), "dialling peers added to the config");
                    self.known_peers.extend(added);
                }
                Err(err) => tracing::warn!(%err, "cannot add the config's new peers"),
            }
        }
        if self.ledger.is_none()
            && let Some(ledger) = &latest.ledger
        {
            match LedgerReporter::start(
                self.runtime.handle(),
                ledger,
                &self.key,
                self.metrics.clone(),
            ) {
                Ok(reporter) => self.ledger = Some(reporter),
                Err(err) => tracing::warn!(%err, "cannot use the ledger the config now names"),
            }
        }
    }

    fn round(&mut self, round: u64, skipped_rounds: u64) -> Result<RoundReport, NodeError> {
        // One trace per round, its phases as child spans.
        let round_span = tracing::info_span!(
            "round",
            member = %self.name,
            round,
            reward = Empty,
            external_groups = Empty,
            trained = Empty,
        );
        let _round = round_span.enter();
        let training = &self.config.training;
        self.network.set_round(round);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(round_seed(self.seed, round));
        let questions = self.questions.draw(
            usize::try_from(training.questions_per_round).unwrap_or(usize::MAX),
            &mut rng,
        );
        let round_config = RoundConfig {
            group_size: usize::try_from(training.completions_per_question).unwrap_or(usize::MAX),
            sampling: SamplingConfig {
                max_new_tokens: max_new_tokens(training),
                temperature: training.temperature,
                seed: rng.random(),
                ..SamplingConfig::default()
            },
        };
        let started = Instant::now();
        let local =
            tracing::info_span!("generate", questions = questions.len()).in_scope(|| {
                sample_groups(
                    &self.policy,
                    &self.tokenizer,
                    &mut self.sampler,
                    &questions,
                    &round_config,
                )
            })?;
        let sample_seconds = started.elapsed().as_secs_f64();
        let published = tracing::info_span!("publish").in_scope(|| self.publish(round, &local));

        let (status, external) = tracing::info_span!("gather").in_scope(|| {
            let status = self.gather(round);
            let received = self
                .inbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(round);
            (status, self.adopt_all(&received))
        });
        round_span.record("external_groups", external.received);

        let train_span = tracing::info_span!("train", groups = Empty, loss = Empty).entered();
        let started = Instant::now();
        let local_choice = choose(&local, training.local_rollouts, &mut rng);
        let external_choice = choose(&external.with_signal, training.external_rollouts, &mut rng);
        let chosen: Vec<&Group> = local_choice
            .iter()
            .chain(&external_choice)
            .copied()
            .collect();
        let outcome = train_on_groups(
            &self.policy,
            self.reference.as_ref(),
            &mut self.trainer,
            &chosen,
        )?;
        let trained_local = local_choice.iter().filter(|g| g.has_signal()).count();
        train_span.record("groups", outcome.groups_kept);
        if let Some(step) = &outcome.step {
            train_span.record("loss", step.loss);
        }
        let checkpointed = self.checkpoint(round)?;
        let train_seconds = started.elapsed().as_secs_f64();
        drop(train_span);
        round_span.record("trained", outcome.groups_kept);

        let stats = RewardStats::of(&local);
        round_span.record("reward", stats.mean_reward);
        if let Some(ledger) = &self.ledger {
            ledger.submit(RoundSubmission {
                round,
                reward: stats.mean_reward,
                winners: vec![winner(self.peer_id, stats.mean_reward, &external.by_author)],
            });
        }
        let ledger_progress = self.ledger.as_ref().map(LedgerReporter::progress);
        Ok(RoundReport {
            member: self.name.clone(),
            round,
            reward: stats.mean_reward,
            completions: stats.completions,
            tokens: stats.tokens,
            reward_by_source: stats
                .by_source
                .iter()
                .map(|s| (source_name(&s.source), s.mean_reward()))
                .collect(),
            local_groups: local.len(),
            local_with_signal: local.iter().filter(|g| g.has_signal()).count(),
            published,
            external_groups: external.received,
            external_peers: external.peers,
            external_with_signal: external.with_signal.len(),
            external_dropped: external.dropped,
            external_reward: external.mean_reward(),
            trained_local,
            trained_external: outcome.groups_kept - trained_local,
            loss: outcome.step.map(|step| step.loss),
            sample_seconds,
            train_seconds,
            peers: status.connected_peers.len(),
            messages_accepted: status.accepted,
            messages_rejected: status
                .rejected
                .iter()
                .map(|(reason, count)| ((*reason).to_owned(), *count))
                .collect(),
            peer_scores: status
                .peer_scores
                .iter()
                .map(|(peer, score)| (peer.to_string(), *score))
                .collect(),
            skipped_rounds,
            checkpointed,
            ledger_pending: ledger_progress.map(|(pending, _, _)| pending),
            ledger_recorded: ledger_progress.map(|(_, recorded, _)| recorded),
            ledger_round: ledger_progress.map(|(_, _, round)| round),
        })
    }

    /// Waits until every connected peer has published for `round`, or until the gather point;
    /// returns the network's status then, when every peer in this round is still connected.
    fn gather(&self, round: u64) -> NetworkStatus {
        let deadline = self.clock.point_in(round, GATHER_SHARE);
        loop {
            let status = self.runtime.block_on(self.network.status());
            let all_in = self
                .inbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .has_all(round, &status.connected_peers);
            let left = RoundClock::until(Timestamp::now(), deadline);
            if (all_in && !status.connected_peers.is_empty()) || left.is_zero() {
                return status;
            }
            std::thread::sleep(left.min(GATHER_POLL));
        }
    }

    /// Publishes this round's groups, in as many messages as the size limit needs; whether any
    /// reached a peer. Failing to publish is never fatal: the member trains alone meanwhile.
    fn publish(&self, round: u64, groups: &[Group]) -> bool {
        let eos = &self.policy.config().eos_token_ids;
        let shared = share(groups, eos);
        let limit = Limits::default().max_message_bytes;
        let mut any = false;
        for message in split_messages(round, self.peer_id, shared, limit) {
            match self
                .runtime
                .block_on(self.network.publish(swarm_p2p::encode(&message)))
            {
                Ok(()) => any = true,
                Err(NetworkError::NoPeers) => {
                    tracing::info!(round, "no peer subscribed yet; training on own rollouts");
                    return false;
                }
                Err(err) => tracing::warn!(round, %err, "cannot publish rollouts"),
            }
        }
        any
    }

    fn adopt_all(&self, received: &[(PeerId, Vec<SharedGroup>)]) -> External {
        let mut external = External::default();
        let mut peers: Vec<PeerId> = Vec::new();
        for (author, groups) in received {
            if *author == self.peer_id {
                continue;
            }
            if !peers.contains(author) {
                peers.push(*author);
            }
            for shared in groups {
                external.received += 1;
                match adopt(shared, &self.tokenizer, self.end_token, self.adopt_limits) {
                    Ok(group) => {
                        external.credit(*author, &group);
                        if group.has_signal() {
                            external.with_signal.push(group);
                        }
                    }
                    Err(err) => {
                        tracing::debug!(peer = %author, %err, "cannot use a peer's group");
                        external.dropped += 1;
                    }
                }
            }
        }
        external.peers = peers.len();
        external
    }

    /// Saves a checkpoint after every `everyRounds`-th round; whether it did.
    fn checkpoint(&self, round: u64) -> Result<bool, NodeError> {
        let Some(checkpoints) = &self.config.checkpoints else {
            return Ok(false);
        };
        if !(round + 1).is_multiple_of(u64::from(checkpoints.every_rounds.max(1))) {
            return Ok(false);
        }
        Checkpoint::save(
            Path::new(&checkpoints.dir),
            round,
            self.policy.var_store(),
            self.trainer.optimizer(),
            CHECKPOINTS_KEPT,
        )?;
        Ok(true)
    }
}

/// A round's external groups after re-scoring.
#[derive(Debug, Default)]
struct External {
    received: usize,
    peers: usize,
    with_signal: Vec<Group>,
    dropped: usize,
    /// Per peer: the sum of its completions' rewards as re-scored here, and their number.
    by_author: Vec<(PeerId, f64, usize)>,
}

impl External {
    /// Mean reward of every peer completion re-scored here; `None` when none arrived.
    fn mean_reward(&self) -> Option<f64> {
        let (sum, count) = self
            .by_author
            .iter()
            .fold((0.0, 0), |(sum, count), (_, total, n)| {
                (sum + total, count + n)
            });
        (count > 0).then(|| sum / count as f64)
    }

    fn credit(&mut self, author: PeerId, group: &Group) {
        let rewards = group.rewards();
        let sum: f64 = rewards.iter().map(|r| f64::from(*r)).sum();
        match self
            .by_author
            .iter_mut()
            .find(|(peer, _, _)| *peer == author)
        {
            Some((_, total, count)) => {
                *total += sum;
                *count += rewards.len();
            }
            None => self.by_author.push((author, sum, rewards.len())),
        }
    }
}

/// The round's winner as this member saw it: whoever's completions (its own, or a peer's as
/// re-scored here) earned the highest mean reward; itself on a tie, so a vote is never wasted
/// on a peer that did no better.
fn winner(me: PeerId, own_reward: f64, by_author: &[(PeerId, f64, usize)]) -> String {
    let mut best = (me, own_reward);
    for (peer, total, count) in by_author {
        let mean = total / (*count).max(1) as f64;
        if mean > best.1 {
            best = (*peer, mean);
        }
    }
    best.0.to_string()
}

/// Up to `count` of `groups`, drawn without replacement.
fn choose<'a>(groups: &'a [Group], count: u32, rng: &mut Xoshiro256PlusPlus) -> Vec<&'a Group> {
    let count = usize::try_from(count)
        .unwrap_or(usize::MAX)
        .min(groups.len());
    groups.sample(rng, count).collect()
}

/// Packs groups into as few messages as keep each encoding within `limit` bytes; a single group
/// too large for any message is left out (peers would reject it).
fn split_messages(
    round: u64,
    sender: PeerId,
    groups: Vec<SharedGroup>,
    limit: usize,
) -> Vec<RolloutMessage> {
    let mut messages = Vec::new();
    let mut current = RolloutMessage {
        round,
        sender,
        groups: Vec::new(),
    };
    for group in groups {
        current.groups.push(group);
        if swarm_p2p::encode(&current).len() <= limit {
            continue;
        }
        let group = current.groups.pop();
        if !current.groups.is_empty() {
            messages.push(std::mem::replace(
                &mut current,
                RolloutMessage {
                    round,
                    sender,
                    groups: Vec::new(),
                },
            ));
        }
        if let Some(group) = group {
            current.groups.push(group);
            if swarm_p2p::encode(&current).len() > limit {
                tracing::warn!(round, "leaving out a question group too large to share");
                current.groups.clear();
            }
        }
    }
    if !current.groups.is_empty() {
        messages.push(current);
    }
    messages
}

/// A round's rng seed from the member's seed (splitmix64 finaliser, so neighbouring rounds draw
/// unrelated streams).
fn round_seed(member_seed: u64, round: u64) -> u64 {
    let mut z = member_seed.wrapping_add(round.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn source_name(source: &Source) -> String {
    match source {
        Source::Procedural(family) => serde_json::to_value(family)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        Source::Dataset(name) => name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use swarm_p2p::SharedCompletion;
    use swarm_tasks::{Metadata, TaskFamily};

    use super::*;

    fn shared(text_len: usize) -> SharedGroup {
        SharedGroup {
            question: Question {
                source: Source::Procedural(TaskFamily::BasicArithmetic),
                prompt: "Calculate 1 + 1.".into(),
                answer: "2".into(),
                metadata: Metadata::new(),
            },
            completions: vec![
                SharedCompletion {
                    text: "x".repeat(text_len),
                    ended: true,
                };
                2
            ],
        }
    }

    #[test]
    fn messages_are_split_to_fit_the_size_limit() {
        let sender = PeerId::random();
        let groups: Vec<SharedGroup> = (0..10).map(|_| shared(1000)).collect();
        let one = swarm_p2p::encode(&RolloutMessage {
            round: 7,
            sender,
            groups: vec![shared(1000)],
        })
        .len();
        let messages = split_messages(7, sender, groups, one * 3);
        assert!(messages.len() >= 4, "{} messages", messages.len());
        assert_eq!(messages.iter().map(|m| m.groups.len()).sum::<usize>(), 10);
        for message in &messages {
            assert!(swarm_p2p::encode(message).len() <= one * 3);
            assert_eq!((message.round, message.sender), (7, sender));
        }
        let too_big = split_messages(7, sender, vec![shared(5000)], one);
        assert!(too_big.is_empty());
    }

    #[test]
    fn inbox_hands_out_a_round_once_and_drops_late_arrivals() {
        let peer = PeerId::random();
        let received = |round| Received {
            message: RolloutMessage {
                round,
                sender: peer,
                groups: vec![shared(1)],
            },
            author: peer,
            received_at: std::time::Instant::now(),
        };
        let mut inbox = Inbox::default();
        inbox.file(received(3));
        inbox.file(received(4));
        inbox.file(received(5));
        assert!(inbox.has_all(5, &[peer]));
        assert!(!inbox.has_all(5, &[peer, PeerId::random()]));
        assert!(!inbox.has_all(6, &[peer]));
        assert!(inbox.has_all(6, &[]));
        assert_eq!(inbox.take(4).len(), 2);
        inbox.file(received(4));
        assert!(inbox.take(4).is_empty());
        assert_eq!(inbox.take(5).len(), 1);
    }

    #[test]
    fn seeds_differ_by_member_and_round_and_are_stable() {
        let a = member_seed(1, "demo-0");
        assert_eq!(a, member_seed(1, "demo-0"));
        assert_ne!(a, member_seed(1, "demo-1"));
        assert_ne!(a, member_seed(2, "demo-0"));
        assert_ne!(round_seed(a, 0), round_seed(a, 1));
    }

    #[test]
    fn the_winner_is_the_best_mean_reward_and_ties_go_to_the_voter() {
        let (me, a, b) = (PeerId::random(), PeerId::random(), PeerId::random());
        let seen = [(a, 3.0, 8), (b, 6.0, 8)];
        assert_eq!(winner(me, 0.5, &seen), b.to_string());
        assert_eq!(winner(me, 0.75, &seen), me.to_string());
        assert_eq!(winner(me, 0.0, &[]), me.to_string());
    }

    #[test]
    fn cpu_always_trains_in_f32() {
        assert_eq!(precision(Dtype::Bf16, Device::Cpu), Precision::F32);
        assert_eq!(precision(Dtype::Bf16, Device::Cuda(0)), Precision::Bf16);
        assert_eq!(precision(Dtype::F32, Device::Cuda(0)), Precision::F32);
    }
}
