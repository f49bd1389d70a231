//! What a node tells whoever runs it, one JSON object per line on standard output: that it started,
//! each round it trained, and that it finished. Logs go to standard error; these lines are the
//! machine-readable record the local swarm's progress display, metrics files and tests read.

use std::collections::BTreeMap;
use std::io::Write;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum NodeEvent {
    Started(Started),
    Round(RoundReport),
    Finished(Finished),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Started {
    pub member: String,
    pub peer_id: String,
    pub address: String,
    pub listen: Vec<String>,
    /// The round of the checkpoint training resumed from.
    pub resumed_from: Option<u64>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    #[serde(default)]
    pub metrics: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub member: String,
    pub rounds_trained: u64,
}

/// One round of one member.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    pub member: String,
    pub round: u64,
    /// Mean reward of this member's own completions this round: how well its policy did.
    pub reward: f64,
    pub completions: usize,
    /// Completion tokens generated for the own completions, end-of-sequence tokens included.
    #[serde(default)]
    pub tokens: usize,
    /// Mean reward per task family (or dataset) of the own completions.
    pub reward_by_source: BTreeMap<String, f64>,
    /// Own question groups, and how many of them had differing rewards.
    pub local_groups: usize,
    pub local_with_signal: usize,
    /// Whether this round's rollouts reached at least one peer.
    pub published: bool,
    /// Question groups received from peers for this round, the peers they came from, those that
    /// carried signal once re-scored here, and those dropped as too long (or not tokenizable) to train on.
    pub external_groups: usize,
    pub external_peers: usize,
    pub external_with_signal: usize,
    pub external_dropped: usize,
    /// Mean reward of the peers' completions received this round, as re-scored here.
    #[serde(default)]
    pub external_reward: Option<f64>,
    /// Groups trained on; equal rewards are dropped, so these may be fewer than I and J.
    pub trained_local: usize,
    pub trained_external: usize,
    /// Peers' completions that entered the loss under the sharing policy (e.g. only those with a
    /// positive advantage under `positive`).
    #[serde(default)]
    pub external_completions_trained: usize,
    /// The GRPO step's loss; `None` when no group carried signal and no step was taken.
    pub loss: Option<f64>,
    pub sample_seconds: f64,
    pub train_seconds: f64,
    pub peers: usize,
    pub messages_accepted: u64,
    /// Rejected peer messages so far, by reason.
    pub messages_rejected: BTreeMap<String, u64>,
    /// Gossip scores of the peers this node knows, by PeerId; misbehaving peers go negative.
    pub peer_scores: BTreeMap<String, f64>,
    /// Rounds passed over since the previous report because the node fell behind.
    pub skipped_rounds: u64,
    pub checkpointed: bool,
    /// With a ledger: rounds whose reward and winner wait to be recorded, and rounds recorded
    /// since the node started.
    pub ledger_pending: Option<usize>,
    pub ledger_recorded: Option<u64>,
    /// With a ledger: the contract's current round when the node last read it.
    pub ledger_round: Option<u64>,
}

impl NodeEvent {
    /// Writes the event as one line and flushes, so a reader sees each round as it ends.
    pub fn emit(&self, out: &mut impl Write) -> std::io::Result<()> {
        let line = serde_json::to_string(self).map_err(std::io::Error::other)?;
        writeln!(out, "{line}")?;
        out.flush()
    }

    /// Parses one line; `None` for anything that is not an event.
    pub fn parse(line: &str) -> Option<NodeEvent> {
        serde_json::from_str(line).ok()
    }
}
