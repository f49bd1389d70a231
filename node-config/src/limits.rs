//! The bounds of a round that every part of a swarm must agree on, kept in one place.
//!
//! The Swarm API's admission rules, the node's check of its configuration file and the limits a
//! member applies to its peers' rollout messages are all derived from these constants, so a spec
//! that admission lets through never makes a member's messages rejected by its peers.
//!
//! A member shares its round's question groups in at most [`MESSAGES_PER_PEER_PER_ROUND`]
//! messages of at most [`GROUPS_PER_MESSAGE`] groups and [`MESSAGE_BYTES`] bytes each. A completion
//! of `n` tokens travels as its text and `n + 1` log-probabilities of 4 bytes; the token budgets
//! below assume [`WIRE_BYTES_PER_TOKEN`] bytes per token in all, which leaves 4 bytes of text per
//! token (about what a BPE tokenizer averages on English and arithmetic).

/// Largest encoded rollout message a member sends or accepts.
pub const MESSAGE_BYTES: usize = 256 * 1024;

/// Most question groups in one rollout message.
pub const GROUPS_PER_MESSAGE: u32 = 32;

/// Most rollout messages one member may send per round; a peer scores down any beyond.
pub const MESSAGES_PER_PEER_PER_ROUND: u32 = 8;

/// Most questions a member samples per round: all of its groups must fit the round's messages.
pub const QUESTIONS_PER_ROUND: u32 = GROUPS_PER_MESSAGE * MESSAGES_PER_PEER_PER_ROUND;

/// Most completions per question (G).
pub const COMPLETIONS_PER_QUESTION: u32 = 64;

/// Most tokens a completion may have (`maxNewTokens`).
pub const NEW_TOKENS: u32 = 4096;

/// Bytes a completion's token takes on the wire, text and log-probability together, by the
/// estimate the token budgets rest on.
pub const WIRE_BYTES_PER_TOKEN: u32 = 8;

/// Largest completion text a member accepts: more than 16 bytes per token on average is no
/// completion a tokenizer produced.
pub const COMPLETION_BYTES: usize = 16 * NEW_TOKENS as usize;

/// Most log-probabilities of one completion: one per token, plus the end-of-sequence token.
pub const COMPLETION_LOGPROBS: usize = NEW_TOKENS as usize + 1;

/// Most tokens of one question group (G × `maxNewTokens`): a whole group must fit one message,
/// with an eighth of it left for the question and the framing.
pub const GROUP_TOKENS: u32 = MESSAGE_BYTES as u32 / WIRE_BYTES_PER_TOKEN / 8 * 7;

/// Most tokens of one round's groups (`questionsPerRound` × G × `maxNewTokens`): they must fit the
/// messages a member may send per round.
pub const ROUND_TOKENS: u32 = GROUP_TOKENS * MESSAGES_PER_PEER_PER_ROUND;

/// Most question groups a member adopts from its peers per round (J).
pub const EXTERNAL_ROLLOUTS: u32 = 1024;

/// Most completions in one forward/backward pass.
pub const MICRO_BATCH_SIZE: u32 = 4096;

/// Largest sampling weight of one task family.
pub const TASK_WEIGHT: u32 = 1000;

/// Largest Adam learning rate: a step of this size already overwrites a pretrained model.
pub const LEARNING_RATE: f64 = 1.0;

/// Largest sampling temperature; above it every token is about equally likely.
pub const TEMPERATURE: f64 = 10.0;

/// Largest KL penalty weight β.
pub const KL_BETA: f64 = 100.0;

/// Largest cap of the `importance` sharing policy's ratio.
pub const IMPORTANCE_CAP: f64 = 100.0;

/// Largest γ of the `shaping` sharing policy.
pub const SHAPING_GAMMA: f64 = 10.0;

/// Lowest and highest question difficulty.
pub const DIFFICULTY: (u8, u8) = (1, 5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_round_fits_the_budgets() {
        let training = crate::TrainingConfig::default();
        let group = training.completions_per_question * training.max_new_tokens;
        assert!(group <= GROUP_TOKENS, "{group}");
        assert!(training.questions_per_round * group <= ROUND_TOKENS);
    }
}
