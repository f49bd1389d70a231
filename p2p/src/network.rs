//! The libp2p node of a member, run as a tokio task behind a cheap [`Network`] handle.
//!
//! One event loop owns the swarm: it judges every gossip message (decode, validate, rate limit)
//! before gossipsub forwards it, keeps redialling bootstrap peers, and answers the handle's commands.
//! Nothing in the loop waits on the application: accepted messages go into a bounded channel and
//! are dropped (and counted) when the application falls behind.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::core::transport::TransportError;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId, PublishError};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, SwarmBuilder, identify, kad, noise, tcp, yamux};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::behaviour::{Behaviour, BehaviourError, BehaviourEvent, IDENTIFY_PROTOCOL};
use crate::{
    Expectations, Limits, RateLimiter, Rejection, RolloutMessage, SCHEMA_VERSION, SharedCompletion,
    check_logprob_counts, decode, validate,
};

/// Connections without traffic stay open this long; gossip keeps members' connections busy.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);

/// How often the loop looks for bootstrap peers due for a redial.
const REDIAL_TICK: Duration = Duration::from_millis(200);

/// Peers found through the DHT are dialled while fewer than this many are connected: enough for a
/// full gossip mesh (gossipsub's default upper bound is 12) without connecting to a whole large swarm.
const DISCOVERY_TARGET_PEERS: usize = 12;

/// Commands queued from handles to the loop.
const COMMAND_CAPACITY: usize = 64;

/// The gossip topic of a swarm's rollouts. The schema version is part of it, so members on
/// different versions during a rolling upgrade do not exchange (and penalise) each other's messages.
pub fn rollouts_topic(swarm_uid: &str) -> String {
    format!("/rlswarm/rollouts/v{SCHEMA_VERSION}/{swarm_uid}")
}

/// Not `Debug`: it holds the member's secret key.
pub struct NetworkConfig {
    /// The member's key: its PeerId, and what gossip messages are signed with.
    pub keypair: Keypair,
    /// Where to listen, e.g. `/ip4/0.0.0.0/tcp/4001` and `/ip4/0.0.0.0/udp/4001/quic-v1`.
    pub listen: Vec<Multiaddr>,
    /// Peers to connect to, each ending in `/p2p/<peer id>`; the node's own entries are skipped.
    pub bootstrap: Vec<Multiaddr>,
    /// The swarm's gossip topic, see [`rollouts_topic`].
    pub topic: String,
    /// Completions per question (G) every received group must have.
    pub group_size: usize,
    /// How many rounds back a received message may be, see [`Expectations`].
    pub round_window: u64,
    pub limits: Limits,
    /// Messages one author may send per round; the sender keeps to the same bound.
    pub messages_per_peer_per_round: u32,
    /// Accepted messages waiting for the application; more are dropped and counted.
    pub inbox_capacity: usize,
    pub redial: Backoff,
    /// Counts the tokens of a completion as this node trains on it, so that a completion whose
    /// log-probabilities are not one per token is rejected (see [`check_logprob_counts`]);
    /// without it only their values are checked.
    pub count_tokens: Option<TokenCounter>,
}

/// See [`NetworkConfig::count_tokens`].
pub type TokenCounter = Arc<dyn Fn(&SharedCompletion) -> usize + Send + Sync>;

impl NetworkConfig {
    /// A configuration with the defaults: no listen or bootstrap addresses yet, a round window of
    /// 2, two messages per peer and round, default limits and backoff.
    pub fn new(keypair: Keypair, topic: String, group_size: usize) -> NetworkConfig {
        NetworkConfig {
            keypair,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            topic,
            group_size,
            round_window: 2,
            limits: Limits::default(),
            messages_per_peer_per_round: swarm_node_config::limits::MESSAGES_PER_PEER_PER_ROUND,
            inbox_capacity: 1024,
            redial: Backoff::default(),
            count_tokens: None,
        }
    }
}

/// Delay between redials of an unreachable bootstrap peer: doubling from `initial` up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    fn after(&self, delay: Duration) -> Duration {
        delay.saturating_mul(2).min(self.max)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("cannot set up noise encryption: {0}")]
    Noise(#[from] noise::Error),
    #[error("cannot read the system DNS configuration: {0}")]
    Dns(#[source] std::io::Error),
    #[error(transparent)]
    Behaviour(#[from] BehaviourError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: Multiaddr,
        source: TransportError<std::io::Error>,
    },
    #[error("bootstrap address {0} does not end in /p2p/<peer id>")]
    BootstrapWithoutPeerId(Multiaddr),
    /// Not fatal: the member trains on its own rollouts until peers arrive.
    #[error("no peer is subscribed to the rollouts topic yet")]
    NoPeers,
    /// Not fatal: every peer's send queue is full; publish again later.
    #[error("the send queues of all {0} peers are full")]
    QueuesFull(usize),
    #[error("cannot publish: {0}")]
    Publish(String),
    #[error("the network task has stopped")]
    Stopped,
}

/// A message that passed every check, with its signed author.
#[derive(Clone, Debug)]
pub struct Received {
    pub message: RolloutMessage,
    pub author: PeerId,
    pub received_at: Instant,
}

/// A snapshot of the node's view of the swarm.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetworkStatus {
    pub connected_peers: Vec<PeerId>,
    /// Peers in this node's gossip mesh for the rollouts topic.
    pub mesh_peers: Vec<PeerId>,
    /// Gossip scores of the connected peers.
    pub peer_scores: Vec<(PeerId, f64)>,
    pub accepted: u64,
    /// Rejected messages by [`Rejection::reason`].
    pub rejected: BTreeMap<&'static str, u64>,
    /// Accepted messages dropped because the application did not take them in time.
    pub dropped: u64,
    /// Outgoing connection attempts that failed.
    pub dial_failures: u64,
    /// (round, author) counters the rate limiter holds; bounded by the round window.
    pub rate_limiter_entries: usize,
}

impl NetworkStatus {
    pub fn rejected(&self, reason: &str) -> u64 {
        self.rejected.get(reason).copied().unwrap_or(0)
    }

    pub fn score(&self, peer: &PeerId) -> Option<f64> {
        self.peer_scores
            .iter()
            .find(|(scored, _)| scored == peer)
            .map(|(_, score)| *score)
    }
}

/// A handle to the running node; clones share it.
#[derive(Clone, Debug)]
pub struct Network {
    local_peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    round: Arc<AtomicU64>,
    listen_addrs: watch::Receiver<Vec<Multiaddr>>,
}

#[derive(Debug)]
enum Command {
    Publish {
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<(), NetworkError>>,
    },
    Status(oneshot::Sender<NetworkStatus>),
    /// More bootstrap peers (e.g. members added since the node started), already grouped.
    AddBootstrap(BTreeMap<PeerId, Vec<Multiaddr>>),
    Shutdown(oneshot::Sender<()>),
}

impl Network {
    /// Starts the swarm on the current tokio runtime; returns the handle and the stream of
    /// accepted messages. Unreachable bootstrap peers are not an error: they are redialled forever.
    pub async fn start(
        config: NetworkConfig,
    ) -> Result<(Network, mpsc::Receiver<Received>), NetworkError> {
        let local_peer_id = config.keypair.public().to_peer_id();
        let bootstrap = bootstrap_peers(&config.bootstrap, local_peer_id)?;
        let topic = IdentTopic::new(config.topic);
        let behaviour = Behaviour::new(&config.keypair, &topic, &config.limits)?;
        let Ok(builder) = SwarmBuilder::with_existing_identity(config.keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_quic()
            .with_dns()
            .map_err(NetworkError::Dns)?
            .with_behaviour(|_| behaviour);
        let mut swarm = builder
            .with_swarm_config(|swarm| swarm.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
            .build();
        for addr in config.listen {
            if let Err(source) = swarm.listen_on(addr.clone()) {
                return Err(NetworkError::Listen { addr, source });
            }
        }
        info!(peer_id = %local_peer_id, topic = %topic, bootstrap_peers = bootstrap.len(), "p2p node started");

        let (commands, command_rx) = mpsc::channel(COMMAND_CAPACITY);
        // A channel of capacity 0 panics; one slot is the least that works.
        let (inbox, inbox_rx) = mpsc::channel(config.inbox_capacity.max(1));
        let (listen_tx, listen_addrs) = watch::channel(Vec::new());
        let round = Arc::new(AtomicU64::new(0));
        let mut event_loop = EventLoop {
            swarm,
            topic,
            limits: config.limits,
            round_window: config.round_window,
            group_size: config.group_size,
            count_tokens: config.count_tokens,
            round: Arc::clone(&round),
            limiter: RateLimiter::new(config.messages_per_peer_per_round),
            inbox,
            listen_addrs: listen_tx,
            backoff: config.redial,
            bootstrap: HashMap::new(),
            counters: Counters::default(),
        };
        event_loop.add_bootstrap(bootstrap);
        tokio::spawn(event_loop.run(command_rx));
        let network = Network {
            local_peer_id,
            commands,
            round,
            listen_addrs,
        };
        Ok((network, inbox_rx))
    }

    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// The addresses the node listens on, once it listens on at least one (so never, for a node
    /// configured without listen addresses); empty if it stopped.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let mut addrs = self.listen_addrs.clone();
        match addrs.wait_for(|addrs| !addrs.is_empty()).await {
            Ok(addrs) => addrs.clone(),
            Err(_) => Vec::new(),
        }
    }

    /// The round received messages are judged against (see [`Expectations`]).
    pub fn set_round(&self, round: u64) {
        self.round.store(round, Ordering::Relaxed);
    }

    /// Publishes `bytes` as they are to the rollouts topic; the caller encodes them.
    pub async fn publish(&self, bytes: Vec<u8>) -> Result<(), NetworkError> {
        let (reply, response) = oneshot::channel();
        self.send(Command::Publish { bytes, reply }).await?;
        response.await.map_err(|_| NetworkError::Stopped)?
    }

    /// A snapshot of peers, scores and counters; the default (empty) status once the node stopped.
    pub async fn status(&self) -> NetworkStatus {
        let (reply, response) = oneshot::channel();
        if self.send(Command::Status(reply)).await.is_err() {
            return NetworkStatus::default();
        }
        response.await.unwrap_or_default()
    }

    /// Stops the node and closes its connections; other handles see it stopped.
    pub async fn shutdown(self) {
        let (reply, done) = oneshot::channel();
        if self.send(Command::Shutdown(reply)).await.is_ok() {
            // An error means the loop already ended, which is what was asked for.
            let _ = done.await;
        }
    }

    /// Adds bootstrap peers to redial like those the node started with (known ones and the node
    /// itself are skipped). An entry without `/p2p/<peer id>` is an error; nothing is added then.
    pub async fn add_bootstrap_peers(&self, addrs: &[Multiaddr]) -> Result<(), NetworkError> {
        let peers = bootstrap_peers(addrs, self.local_peer_id)?;
        self.send(Command::AddBootstrap(peers)).await
    }

    async fn send(&self, command: Command) -> Result<(), NetworkError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| NetworkError::Stopped)
    }
}

/// Groups bootstrap addresses by peer, dropping the node's own.
fn bootstrap_peers(
    addrs: &[Multiaddr],
    local: PeerId,
) -> Result<BTreeMap<PeerId, Vec<Multiaddr>>, NetworkError> {
    let mut peers: BTreeMap<PeerId, Vec<Multiaddr>> = BTreeMap::new();
    for addr in addrs {
        let mut transport = addr.clone();
        let Some(Protocol::P2p(peer)) = transport.pop() else {
            return Err(NetworkError::BootstrapWithoutPeerId(addr.clone()));
        };
        if peer != local {
            peers.entry(peer).or_default().push(transport);
        }
    }
    Ok(peers)
}

/// Redial state of one bootstrap peer.
struct Redial {
    addrs: Vec<Multiaddr>,
    /// The wait before the next attempt after a failure.
    delay: Duration,
    next_attempt: Instant,
    dialing: bool,
}

#[derive(Default)]
struct Counters {
    accepted: u64,
    rejected: BTreeMap<&'static str, u64>,
    dropped: u64,
    dial_failures: u64,
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    topic: IdentTopic,
    limits: Limits,
    round_window: u64,
    group_size: usize,
    count_tokens: Option<TokenCounter>,
    round: Arc<AtomicU64>,
    limiter: RateLimiter,
    inbox: mpsc::Sender<Received>,
    listen_addrs: watch::Sender<Vec<Multiaddr>>,
    backoff: Backoff,
    bootstrap: HashMap<PeerId, Redial>,
    counters: Counters,
}

impl EventLoop {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut redial = tokio::time::interval(REDIAL_TICK);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped = loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = commands.recv() => match command {
                    Some(Command::Shutdown(done)) => break Some(done),
                    // A caller that stopped waiting needs no answer.
                    Some(Command::Publish { bytes, reply }) => {
                        let _ = reply.send(self.publish(bytes));
                    }
                    Some(Command::Status(reply)) => {
                        let _ = reply.send(self.status());
                    }
                    Some(Command::AddBootstrap(peers)) => self.add_bootstrap(peers),
                    // Every handle is gone: nobody can use the node any more.
                    None => break None,
                },
                _ = redial.tick() => self.redial_bootstrap_peers(),
            }
        };
        let peer_id = *self.swarm.local_peer_id();
        drop(self);
        info!(%peer_id, "p2p node stopped");
        if let Some(done) = stopped {
            // The caller may have given up waiting; the node stopped all the same.
            let _ = done.send(());
        }
    }

    fn publish(&mut self, bytes: Vec<u8>) -> Result<(), NetworkError> {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topic.clone(), bytes)
            .map(|_| ())
            .map_err(|error| match error {
                PublishError::NoPeersSubscribedToTopic => NetworkError::NoPeers,
                PublishError::AllQueuesFull(peers) => NetworkError::QueuesFull(peers),
                other => NetworkError::Publish(other.to_string()),
            })
    }

    fn status(&self) -> NetworkStatus {
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let connected_peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        let peer_scores = connected_peers
            .iter()
            .filter_map(|peer| gossipsub.peer_score(peer).map(|score| (*peer, score)))
            .collect();
        NetworkStatus {
            mesh_peers: gossipsub.mesh_peers(&self.topic.hash()).copied().collect(),
            connected_peers,
            peer_scores,
            accepted: self.counters.accepted,
            rejected: self.counters.rejected.clone(),
            dropped: self.counters.dropped,
            dial_failures: self.counters.dial_failures,
            rate_limiter_entries: self.limiter.tracked(),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_gossip_message(propagation_source, message_id, message),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if info.protocol_version == IDENTIFY_PROTOCOL => {
                let kademlia = &mut self.swarm.behaviour_mut().kademlia;
                for addr in info.listen_addrs {
                    kademlia.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kademlia(kad::Event::RoutingUpdated {
                peer,
                ..
            })) => self.dial_discovered(peer),
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.listen_addrs.send_modify(|addrs| addrs.push(address));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs
                    .send_modify(|addrs| addrs.retain(|known| *known != address));
            }
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "listener failed"),
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                debug!(peer = %peer_id, "connected");
                if let Some(redial) = self.bootstrap.get_mut(&peer_id) {
                    redial.dialing = false;
                    redial.delay = self.backoff.initial;
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                debug!(peer = %peer_id, "disconnected");
                if let Some(redial) = self.bootstrap.get_mut(&peer_id) {
                    // Backing off here too keeps a peer that accepts and drops connections from
                    // being redialled in a tight loop.
                    redial.next_attempt = Instant::now() + redial.delay;
                    redial.delay = self.backoff.after(redial.delay);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                self.counters.dial_failures += 1;
                debug!(peer = ?peer_id, %error, "dial failed");
                if let Some(redial) = peer_id.and_then(|peer| self.bootstrap.get_mut(&peer)) {
                    redial.dialing = false;
                    redial.next_attempt = Instant::now() + redial.delay;
                    redial.delay = self.backoff.after(redial.delay);
                }
            }
            _ => {}
        }
    }

    fn on_gossip_message(&mut self, source: PeerId, id: MessageId, message: gossipsub::Message) {
        let author = message.source;
        let verdict = self.judge(&message);
        let acceptance = match verdict {
            Ok((rollouts, author)) => {
                self.counters.accepted += 1;
                let received = Received {
                    message: rollouts,
                    author,
                    received_at: Instant::now(),
                };
                if self.inbox.try_send(received).is_err() {
                    self.counters.dropped += 1;
                    debug!(%author, "inbox full or closed: dropped an accepted message");
                }
                MessageAcceptance::Accept
            }
            Err(rejection) => {
                *self
                    .counters
                    .rejected
                    .entry(rejection.reason())
                    .or_insert(0) += 1;
                debug!(peer = %source, author = ?author, %rejection, "rejected a message");
                if rejection.depends_on_receiver() && author != Some(source) {
                    // Another node judged it differently and forwarded it in good faith.
                    MessageAcceptance::Ignore
                } else {
                    MessageAcceptance::Reject
                }
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
    }

    fn judge(
        &mut self,
        message: &gossipsub::Message,
    ) -> Result<(RolloutMessage, PeerId), Rejection> {
        // Strict validation mode guarantees a signed author; a missing one is malformed all the same.
        let author = message
            .source
            .ok_or_else(|| Rejection::Malformed("gossip message has no author".into()))?;
        let rollouts = decode(&message.data, &self.limits)?;
        let expect = Expectations {
            current_round: self.round.load(Ordering::Relaxed),
            round_window: self.round_window,
            group_size: self.group_size,
        };
        validate(&rollouts, &author, &expect)?;
        if let Some(count_tokens) = &self.count_tokens {
            check_logprob_counts(&rollouts, |completion| count_tokens(completion))?;
        }
        self.limiter.forget_before(expect.oldest_round());
        self.limiter.admit(author, rollouts.round)?;
        Ok((rollouts, author))
    }

    /// Remembers new bootstrap peers (for the DHT too) and dials them at the next tick.
    fn add_bootstrap(&mut self, peers: BTreeMap<PeerId, Vec<Multiaddr>>) {
        let now = Instant::now();
        for (peer, addrs) in peers {
            if self.bootstrap.contains_key(&peer) {
                continue;
            }
            for addr in &addrs {
                self.swarm
                    .behaviour_mut()
                    .kademlia
                    .add_address(&peer, addr.clone());
            }
            self.bootstrap.insert(
                peer,
                Redial {
                    addrs,
                    delay: self.backoff.initial,
                    next_attempt: now,
                    dialing: false,
                },
            );
        }
    }

    fn redial_bootstrap_peers(&mut self) {
        let now = Instant::now();
        for (peer, redial) in &mut self.bootstrap {
            if redial.dialing || now < redial.next_attempt || self.swarm.is_connected(peer) {
                continue;
            }
            let opts = DialOpts::peer_id(*peer)
                .addresses(redial.addrs.clone())
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            match self.swarm.dial(opts) {
                Ok(()) => redial.dialing = true,
                // Someone else (the DHT) is dialling it already; look again after the delay.
                Err(DialError::DialPeerConditionFalse(_)) => {
                    redial.next_attempt = now + redial.delay;
                }
                Err(error) => {
                    self.counters.dial_failures += 1;
                    debug!(%peer, %error, "cannot dial bootstrap peer");
                    redial.next_attempt = now + redial.delay;
                    redial.delay = self.backoff.after(redial.delay);
                }
            }
        }
    }

    fn dial_discovered(&mut self, peer: PeerId) {
        if self.swarm.is_connected(&peer)
            || self.swarm.connected_peers().count() >= DISCOVERY_TARGET_PEERS
        {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(error) = self.swarm.dial(opts) {
            debug!(%peer, %error, "cannot dial discovered peer");
        }
    }
}
