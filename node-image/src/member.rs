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
use swarm_hub::{DownloadProgress, Fetched, HubError, HubModel, HubOptions};
use swarm_model::ModelError;
use swarm_node_config::{NodeConfig, P2pConfig};
use swarm_p2p::{
    Limits, Network, NetworkConfig, NetworkError, NetworkStatus, Received, SharedGroup,
};
use swarm_rl::{CheckpointError, Group, GrpoError, RewardStats, RoundError};
use swarm_tasks::TaskError;
use swarm_telemetry::admin::{self, AdminState};
use tracing::field::Empty;

use crate::Startup;
use crate::clock::RoundClock;
use crate::exchange::split_messages;
use crate::learner::{Learner, source_name};
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
/// How long a member that is done waits for its last rounds to be recorded on the ledger.
const LEDGER_DRAIN: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("hub model: {0}")]
    Hub(#[from] HubError),
    #[error("the config names no model: neither model.path nor model.hubId")]
    NoModel,
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
        (None, Some(id)) => {
            let model = HubModel {
                id: id.clone(),
                revision: config.model.revision.clone(),
            };
            let fetched = fetch_hub_model(&model)?;
            tracing::info!(model = %id, commit = %fetched.commit, "hub model ready");
            fetched.dir
        }
        (None, None) => return Err(NodeError::NoModel),
    };
    tracing::info!(model = %model_dir.display(), "loading the model");
    let mut learner = Learner::load(
        &startup.member,
        &model_dir,
        config.model.dtype,
        &config.training,
    )?;
    let resumed_from = match &config.checkpoints {
        Some(checkpoints) => learner.resume(Path::new(&checkpoints.dir))?,
        None => None,
    };

    let bootstrap = bootstrap_addrs(&config.p2p);
    let mut network_config = network_config(&startup, options, bootstrap.clone());
    network_config.count_tokens = Some(learner.token_counter());
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
        learner,
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

struct Member {
    name: String,
    peer_id: PeerId,
    clock: RoundClock,
    learner: Learner,
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
        self.network.set_round(round);
        let started = Instant::now();
        let local = tracing::info_span!("generate").in_scope(|| self.learner.generate(round))?;
        let sample_seconds = started.elapsed().as_secs_f64();
        let published = tracing::info_span!("publish").in_scope(|| self.publish(round, &local));

        let (status, external) = tracing::info_span!("gather").in_scope(|| {
            let status = self.gather(round);
            let received = self
                .inbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(round);
            (status, self.learner.adopt(self.peer_id, &received))
        });
        round_span.record("external_groups", external.received);

        let train_span = tracing::info_span!("train", groups = Empty, loss = Empty).entered();
        let started = Instant::now();
        let trained = self.learner.train(round, &local, &external)?;
        train_span.record("groups", trained.local_groups + trained.external_groups);
        if let Some(loss) = trained.loss {
            train_span.record("loss", loss);
        }
        let checkpointed = self.checkpoint(round)?;
        let train_seconds = started.elapsed().as_secs_f64();
        drop(train_span);
        round_span.record("trained", trained.local_groups + trained.external_groups);

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
            trained_local: trained.local_groups,
            trained_external: trained.external_groups,
            external_completions_trained: trained.external_completions,
            loss: trained.loss,
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
        let shared = self.learner.share(groups);
        let mut any = false;
        for message in split_messages(
            round,
            self.peer_id,
            shared,
            &Limits::default(),
            swarm_node_config::limits::MESSAGES_PER_PEER_PER_ROUND as usize,
        ) {
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

    /// Saves a checkpoint after every `everyRounds`-th round; whether it did.
    fn checkpoint(&self, round: u64) -> Result<bool, NodeError> {
        let Some(checkpoints) = &self.config.checkpoints else {
            return Ok(false);
        };
        if !(round + 1).is_multiple_of(u64::from(checkpoints.every_rounds.max(1))) {
            return Ok(false);
        }
        self.learner
            .checkpoint(Path::new(&checkpoints.dir), round)?;
        Ok(true)
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

/// A hub model from the Hub's cache (`HF_HOME`), downloading what is missing first (from
/// `HF_ENDPOINT`, with `HF_TOKEN`); progress goes to the log every tenth of a file.
pub fn fetch_hub_model(model: &HubModel) -> Result<Fetched, HubError> {
    let cache_dir = swarm_hub::default_cache_dir();
    if let Some(fetched) = swarm_hub::cached(model, &cache_dir) {
        return Ok(fetched);
    }
    let options = HubOptions::from_env(cache_dir);
    tracing::info!(model = %model.id, revision = model.revision(), endpoint = %options.endpoint, "downloading the model");
    let logged_tenths = Mutex::new(BTreeMap::<String, u64>::new());
    let report = |progress: DownloadProgress| {
        let tenths = (progress.bytes * 10)
            .checked_div(progress.total)
            .unwrap_or(10);
        let mut logged = logged_tenths.lock().unwrap_or_else(PoisonError::into_inner);
        if logged.get(&progress.file) != Some(&tenths) {
            logged.insert(progress.file.clone(), tenths);
            tracing::info!(file = %progress.file, bytes = progress.bytes, total = progress.total, "downloading");
        }
    };
    swarm_hub::fetch(model, &options, &report)
}

#[cfg(test)]
mod tests {
    use swarm_p2p::RolloutMessage;

    use super::*;
    use crate::exchange::tests::shared;

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
    fn the_winner_is_the_best_mean_reward_and_ties_go_to_the_voter() {
        let (me, a, b) = (PeerId::random(), PeerId::random(), PeerId::random());
        let seen = [(a, 3.0, 8), (b, 6.0, 8)];
        assert_eq!(winner(me, 0.5, &seen), b.to_string());
        assert_eq!(winner(me, 0.75, &seen), me.to_string());
        assert_eq!(winner(me, 0.0, &[]), me.to_string());
    }
}
