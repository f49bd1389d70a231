//! A swarm member's training loop, SAPO style. Each round: draw questions, sample G completions of
//! each, publish them, gather the rollouts peers published for the round until the gather point,
//! re-score those with this node's verifiers and keep the groups that carry signal, train one GRPO
//! step on I local and J external groups, report, and checkpoint every k rounds.
//!
//! Training runs on the calling thread ([`round`]); the libp2p node runs on a small tokio runtime
//! beside it and files accepted messages into an [`inbox::Inbox`] by round. A node whose peers are unreachable keeps
//! training on its own rollouts while the network keeps redialling.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use swarm_hub::{DownloadProgress, Fetched, HubError, HubModel, HubOptions};
use swarm_model::ModelError;
use swarm_node_config::P2pConfig;
use swarm_node_config::download::DownloadLine;
use swarm_p2p::{Network, NetworkConfig, NetworkError};
use swarm_rl::{CheckpointError, GrpoError, RoundError};
use swarm_tasks::TaskError;
use swarm_telemetry::admin::{self, AdminState};

mod inbox;
mod round;
mod shutdown;

use inbox::{Inbox, file_messages};
use round::Member;
use shutdown::Shutdown;

use crate::Startup;
use crate::clock::RoundClock;
use crate::learner::Learner;
use crate::ledger::{LedgerReporter, LedgerSetupError};
use crate::metrics::NodeMetrics;
use crate::report::{Finished, NodeEvent, Started};

/// Share of a round after which gathering stops and training starts, whoever has not published
/// yet: stragglers are never waited for beyond it. The rest of the round is left for the training
/// step, so a member normally finishes within its round.
const GATHER_SHARE: f64 = 0.6;
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
    #[error("cannot listen for SIGTERM and SIGINT: {0}")]
    Signals(#[source] std::io::Error),
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
    let shutdown = Shutdown::listen(&runtime)?;
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
            let fetched = fetch_hub_model(&model, &log_download)?;
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
    let inbox = Arc::new(Inbox::default());
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
        shutdown,
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
    if !options.exit_when_done && !member.shutdown.requested() {
        tracing::info!("last round done; staying up for the swarm's peers");
        member.runtime.block_on(member.shutdown.wait());
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

/// A hub model from the Hub's cache (`HF_HOME`), downloading what is missing first (from
/// `HF_ENDPOINT`, with `HF_TOKEN`); `report` hears of every tenth of each file.
pub fn fetch_hub_model(
    model: &HubModel,
    report: &dyn Fn(&DownloadLine),
) -> Result<Fetched, HubError> {
    let cache_dir = swarm_hub::default_cache_dir();
    if let Some(fetched) = swarm_hub::cached(model, &cache_dir) {
        return Ok(fetched);
    }
    let options = HubOptions::from_env(cache_dir);
    tracing::info!(model = %model.id, revision = model.revision(), endpoint = %options.endpoint, "downloading the model");
    let reported_tenths = Mutex::new(BTreeMap::<String, u64>::new());
    let progress = |progress: DownloadProgress| {
        let tenths = (progress.bytes * 10)
            .checked_div(progress.total)
            .unwrap_or(10);
        let mut reported = reported_tenths
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if reported.get(&progress.file) != Some(&tenths) {
            reported.insert(progress.file.clone(), tenths);
            report(&DownloadLine {
                file: progress.file,
                bytes: progress.bytes,
                total: progress.total,
            });
        }
    };
    swarm_hub::fetch(model, &options, &progress)
}

/// Logs a download's progress: how a member or a local swarm that fetches its own model shows it.
pub fn log_download(line: &DownloadLine) {
    tracing::info!(file = %line.file, bytes = line.bytes, total = line.total, "downloading");
}
