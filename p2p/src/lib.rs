//! The peer-to-peer layer of a swarm member.
//!
//! Members share each round's rollouts over gossipsub, one topic per swarm ([`rollouts_topic`]).
//! A [`RolloutMessage`] travels in a compact versioned binary form ([`encode`], [`decode`]); every
//! received message is decoded within [`Limits`], checked against the current round and the
//! swarm's group size ([`validate`]) and rate limited per author ([`RateLimiter`]) before gossipsub
//! forwards it. A message that fails any check is a [`Rejection`] and lowers the score of the peer
//! that sent it, until that peer is ignored altogether. [`Network`] runs the libp2p node (TCP and
//! QUIC, noise, yamux, identify, Kademlia, gossipsub) as a tokio task.

mod behaviour;
mod message;
mod network;
mod rejection;
mod validation;

pub use behaviour::{BehaviourError, IDENTIFY_PROTOCOL};
pub use message::{
    Limits, RolloutMessage, SCHEMA_VERSION, SharedCompletion, SharedGroup, decode, encode,
};
pub use network::{
    Backoff, Network, NetworkConfig, NetworkError, NetworkStatus, Received, TokenCounter,
    rollouts_topic,
};
pub use rejection::Rejection;
pub use validation::{Expectations, RateLimiter, check_logprob_counts, validate};

/// The libp2p types in this crate's API, so callers need no libp2p dependency of their own.
pub use libp2p::{Multiaddr, PeerId, identity};
