//! Whether a well-formed message belongs in this round of this swarm, and how many each peer may send.

use std::collections::{BTreeMap, HashMap};

use libp2p::PeerId;

use crate::{Rejection, RolloutMessage, SharedCompletion};

/// What the receiving node expects of every message at the moment it arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expectations {
    pub current_round: u64,
    /// How many rounds back a message may still arrive: peers finish rounds at slightly different times.
    pub round_window: u64,
    /// Completions per question (G); every group must have exactly this many.
    pub group_size: usize,
}

impl Expectations {
    /// `current - window ..= current + 1`: a peer whose clock is slightly ahead is fine too.
    pub fn accepts_round(&self, round: u64) -> bool {
        let oldest = self.current_round.saturating_sub(self.round_window);
        (oldest..=self.current_round.saturating_add(1)).contains(&round)
    }

    /// The oldest round still accepted.
    pub fn oldest_round(&self) -> u64 {
        self.current_round.saturating_sub(self.round_window)
    }
}

/// Checks a decoded message against the signed `author` of its gossip message and `expect`.
pub fn validate(
    message: &RolloutMessage,
    author: &PeerId,
    expect: &Expectations,
) -> Result<(), Rejection> {
    if message.sender != *author {
        return Err(Rejection::WrongSender);
    }
    if message.groups.is_empty() {
        return Err(Rejection::Empty);
    }
    if !expect.accepts_round(message.round) {
        return Err(Rejection::RoundOutOfWindow {
            round: message.round,
            current: expect.current_round,
        });
    }
    if let Some(group) = message
        .groups
        .iter()
        .find(|group| group.completions.len() != expect.group_size)
    {
        return Err(Rejection::GroupSize {
            found: group.completions.len(),
            expected: expect.group_size,
        });
    }
    for (index, group) in message.groups.iter().enumerate() {
        group
            .question
            .check()
            .map_err(|error| Rejection::InvalidQuestion(format!("group {index}: {error}")))?;
    }
    Ok(())
}

/// Checks that every completion that carries log-probabilities has exactly one per token, with
/// `tokens` counting a completion's tokens as the receiver trains on them.
pub fn check_logprob_counts(
    message: &RolloutMessage,
    tokens: impl Fn(&SharedCompletion) -> usize,
) -> Result<(), Rejection> {
    for (index, group) in message.groups.iter().enumerate() {
        for completion in &group.completions {
            if completion.logprobs.is_empty() {
                continue;
            }
            let expected = tokens(completion);
            if completion.logprobs.len() != expected {
                return Err(Rejection::InvalidLogprobs(format!(
                    "group {index}: {} log-probabilities for a completion of {expected} tokens",
                    completion.logprobs.len()
                )));
            }
        }
    }
    Ok(())
}

/// Counts each author's messages per round and refuses those over the limit.
///
/// Memory stays bounded by the round window: [`RateLimiter::forget_before`] drops whole rounds,
/// and [`validate`] has already refused rounds outside the window before a message is counted.
#[derive(Debug)]
pub struct RateLimiter {
    max_per_peer_per_round: u32,
    counts: BTreeMap<u64, HashMap<PeerId, u32>>,
}

impl RateLimiter {
    pub fn new(max_per_peer_per_round: u32) -> Self {
        RateLimiter {
            max_per_peer_per_round,
            counts: BTreeMap::new(),
        }
    }

    /// Counts one message of `author` for `round`, or refuses it when the author has used up its share.
    pub fn admit(&mut self, author: PeerId, round: u64) -> Result<(), Rejection> {
        let count = self
            .counts
            .entry(round)
            .or_default()
            .entry(author)
            .or_insert(0);
        if *count >= self.max_per_peer_per_round {
            return Err(Rejection::RateLimited {
                round,
                limit: self.max_per_peer_per_round,
            });
        }
        *count += 1;
        Ok(())
    }

    /// Forgets every round before `round`.
    pub fn forget_before(&mut self, round: u64) {
        self.counts = self.counts.split_off(&round);
    }

    /// How many (round, author) counters are held.
    pub fn tracked(&self) -> usize {
        self.counts.values().map(HashMap::len).sum()
    }
}
