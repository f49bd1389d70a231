//! The protocols a member speaks, composed into one libp2p behaviour, and the gossip scoring that
//! pushes misbehaving peers out.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, gossipsub, identify, kad, ping};

use crate::Limits;

/// The identify protocol version: peers of other applications show up as such in logs.
pub const IDENTIFY_PROTOCOL: &str = "/rlswarm/1.0.0";

const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/rlswarm/kad/1.0.0");

/// Room for a gossip message's envelope around its payload: author, sequence number, signature,
/// topic and protobuf framing.
const ENVELOPE_BYTES: usize = 1024;

/// Kademlia refreshes its routing table this often, so members that joined since are found.
const KAD_BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(60);

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) kademlia: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
}

#[derive(Debug, thiserror::Error)]
pub enum BehaviourError {
    #[error("invalid gossipsub configuration: {0}")]
    Config(#[from] gossipsub::ConfigBuilderError),
    #[error("invalid gossipsub setup: {0}")]
    Gossipsub(String),
}

impl Behaviour {
    pub(crate) fn new(
        key: &Keypair,
        topic: &gossipsub::IdentTopic,
        limits: &Limits,
    ) -> Result<Behaviour, BehaviourError> {
        let peer_id = key.public().to_peer_id();
        let config = gossipsub::ConfigBuilder::default()
            .validation_mode(gossipsub::ValidationMode::Strict)
            // Every message waits in the cache until the node decoded and judged it.
            .validate_messages()
            .max_transmit_size(max_transmit_size(limits, topic))
            .build()?;
        let mut gossipsub =
            gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)
                .map_err(|error| BehaviourError::Gossipsub(error.into()))?;
        gossipsub
            .with_peer_score(peer_score_params(topic), peer_score_thresholds())
            .map_err(BehaviourError::Gossipsub)?;
        gossipsub
            .subscribe(topic)
            .map_err(|error| BehaviourError::Gossipsub(error.to_string()))?;

        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config.set_periodic_bootstrap_interval(Some(KAD_BOOTSTRAP_INTERVAL));
        let mut kademlia =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        // Members are reachable pods, so each also answers routing queries.
        kademlia.set_mode(Some(kad::Mode::Server));

        Ok(Behaviour {
            gossipsub,
            kademlia,
            identify: identify::Behaviour::new(identify::Config::new(
                IDENTIFY_PROTOCOL.into(),
                key.public(),
            )),
            ping: ping::Behaviour::default(),
        })
    }
}

/// The largest gossip frame read from a peer. Payloads up to twice the message limit are read so
/// an oversized one reaches validation, where it is counted and scored; a larger frame is dropped
/// by the codec unread, so memory stays bounded either way.
fn max_transmit_size(limits: &Limits, topic: &gossipsub::IdentTopic) -> usize {
    limits
        .max_message_bytes
        .saturating_mul(2)
        .saturating_add(ENVELOPE_BYTES + topic.hash().as_str().len())
}

/// Scoring for a topic that carries one message per member per round (minutes apart).
///
/// - Invalid messages (P4) count quadratically at weight -5: one or two honest mistakes (a round
///   boundary crossed) are absorbed by the positive terms, a persistent sender goes negative after
///   a handful and reaches the graylist with the fifth; the count decays over about an hour.
/// - First deliveries (P2) and time in mesh (P1) reward honest members, capped at 20 and 3.
/// - Mesh delivery rates (P3, P3b) are off: traffic is too sparse to expect a rate from anyone.
fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 300.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: gossipsub::score_parameter_decay(Duration::from_secs(
            30 * 60,
        )),
        first_message_deliveries_cap: 20.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -5.0,
        invalid_message_deliveries_decay: gossipsub::score_parameter_decay(Duration::from_secs(
            60 * 60,
        )),
        ..gossipsub::TopicScoreParams::default()
    }
}

fn peer_score_params(topic: &gossipsub::IdentTopic) -> gossipsub::PeerScoreParams {
    gossipsub::PeerScoreParams {
        topics: HashMap::from([(topic.hash(), topic_score_params())]),
        topic_score_cap: 25.0,
        // Many members share one address when a swarm runs on one machine (local mode, tests).
        ip_colocation_factor_whitelist: HashSet::from([
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]),
        ..gossipsub::PeerScoreParams::default()
    }
}

/// Below -10 a peer gets no gossip, below -50 none of our messages, below -80 everything it sends
/// is ignored. An honest member stays at or above 0; see [`topic_score_params`] for how fast a
/// misbehaving one falls.
pub(crate) fn peer_score_thresholds() -> gossipsub::PeerScoreThresholds {
    gossipsub::PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: -80.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    }
}
