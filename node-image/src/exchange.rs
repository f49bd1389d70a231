//! Between this node's scored groups and the rollouts peers share: what goes into a round's
//! message, and how a peer's question group becomes a training group here. A peer's rewards are
//! never trusted: its completions are re-tokenized and re-scored with this node's verifiers.

use swarm_model::ChatTokenizer;
use swarm_p2p::{PeerId, RolloutMessage, SharedCompletion, SharedGroup};
use swarm_rl::{Group, RoundError, Sampled, prompt_ids};

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("prompt of {tokens} tokens is longer than {limit}")]
    PromptTooLong { tokens: usize, limit: usize },
    #[error("completion of {tokens} tokens is longer than {limit}")]
    CompletionTooLong { tokens: usize, limit: usize },
    #[error(transparent)]
    Tokenize(#[from] RoundError),
}

/// Bounds on a peer's group, so its sequences cost no more memory than this node's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdoptLimits {
    pub max_prompt_tokens: usize,
    pub max_completion_tokens: usize,
}

/// This node's groups as shared: each completion's text, whether it ended at one of `eos`, and
/// its sampling log-probabilities when a peer can line them up with its tokens, that is when the
/// sampled tokens are exactly what the text tokenizes to (plus `eos[0]` when it ended): what
/// [`adopt`] trains on. Otherwise (a rare tokenization the sampler took, a text cut at a stop
/// string, another end token) none are sent.
pub fn share(groups: &[Group], tokenizer: &ChatTokenizer, eos: &[i64]) -> Vec<SharedGroup> {
    groups
        .iter()
        .map(|group| SharedGroup {
            question: group.question.clone(),
            completions: group
                .rollouts
                .iter()
                .map(|rollout| {
                    let ended = rollout.tokens.last().is_some_and(|t| eos.contains(t));
                    let canonical = tokenizer.encode(&rollout.text).is_ok_and(|mut tokens| {
                        tokens.extend(eos.first().filter(|_| ended));
                        tokens == rollout.tokens
                    });
                    SharedCompletion {
                        text: rollout.text.clone(),
                        ended,
                        logprobs: if canonical {
                            rollout.sampling_logprobs.clone()
                        } else {
                            Vec::new()
                        },
                    }
                })
                .collect(),
        })
        .collect()
}

/// A peer's group as this node trains on it: the question's prompt under this node's chat
/// template, each completion re-tokenized (with `end_token` appended when it ended there, so the
/// policy also learns when to stop from it) with the sender's log-probabilities, and every reward
/// from this node's verifier.
pub fn adopt(
    shared: &SharedGroup,
    tokenizer: &ChatTokenizer,
    end_token: i64,
    limits: AdoptLimits,
) -> Result<Group, AdoptError> {
    let prompt = prompt_ids(tokenizer, &shared.question)?;
    if prompt.len() > limits.max_prompt_tokens {
        return Err(AdoptError::PromptTooLong {
            tokens: prompt.len(),
            limit: limits.max_prompt_tokens,
        });
    }
    let mut completions = Vec::with_capacity(shared.completions.len());
    for completion in &shared.completions {
        let mut tokens = tokenizer
            .encode(&completion.text)
            .map_err(RoundError::from)?;
        if completion.ended {
            tokens.push(end_token);
        }
        if tokens.len() > limits.max_completion_tokens {
            return Err(AdoptError::CompletionTooLong {
                tokens: tokens.len(),
                limit: limits.max_completion_tokens,
            });
        }
        // The network checked the count already; a mismatch here means none usable.
        let sampling_logprobs = if completion.logprobs.len() == tokens.len() {
            completion.logprobs.clone()
        } else {
            Vec::new()
        };
        completions.push(Sampled {
            tokens,
            text: completion.text.clone(),
            sampling_logprobs,
        });
    }
    Ok(Group::score(shared.question.clone(), prompt, completions))
}

/// Packs groups into as few messages as keep each encoding within `limit` bytes; a single group
/// too large for any message is left out (peers would reject it).
pub fn split_messages(
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

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;
    use swarm_model::{Precision, Qwen2};
    use swarm_p2p::PeerId;
    use swarm_rl::{RoundConfig, Sampler, SamplingConfig, sample_groups};
    use swarm_tasks::{Difficulty, Metadata, Question, Source, TaskFamily, generate};
    use tch::Device;

    use super::*;

    /// A peer's group, once shared and adopted, is the group the peer sampled: same prompt, same
    /// rewards, and (but for rare re-tokenization differences) the same tokens.
    #[test]
    fn shared_groups_come_back_as_sampled() {
        tch::set_num_threads(1);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rl/fixtures/learning-base");
        let policy = Qwen2::load(&dir, Device::Cpu, Precision::F32).unwrap();
        let tokenizer = ChatTokenizer::from_dir(&dir).unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let questions: Vec<Question> = (0..6)
            .map(|_| generate(TaskFamily::BasicArithmetic, Difficulty::EASIEST, &mut rng))
            .collect();
        let config = RoundConfig {
            group_size: 4,
            sampling: SamplingConfig {
                max_new_tokens: 16,
                seed: 5,
                ..SamplingConfig::default()
            },
        };
        let groups = sample_groups(
            &policy,
            &tokenizer,
            &mut Sampler::new(),
            &questions,
            &config,
        )
        .unwrap();
        let eos = &policy.config().eos_token_ids;
        let limits = AdoptLimits {
            max_prompt_tokens: 512,
            max_completion_tokens: 21,
        };
        let (mut same, mut total) = (0, 0);
        for (group, shared) in groups.iter().zip(share(&groups, &tokenizer, eos)) {
            let adopted = adopt(&shared, &tokenizer, eos[0], limits).unwrap();
            assert_eq!(adopted.prompt, group.prompt);
            assert_eq!(adopted.rewards(), group.rewards());
            for ((ours, theirs), sent) in adopted
                .rollouts
                .iter()
                .zip(&group.rollouts)
                .zip(&shared.completions)
            {
                total += 1;
                same += usize::from(ours.tokens == theirs.tokens);
                // Log-probabilities travel exactly when the tokens come back the same.
                if ours.tokens == theirs.tokens {
                    assert_eq!(sent.logprobs, theirs.sampling_logprobs);
                    assert_eq!(ours.sampling_logprobs, theirs.sampling_logprobs);
                } else {
                    assert!(sent.logprobs.is_empty() && ours.sampling_logprobs.is_empty());
                }
            }
        }
        assert!(same * 10 >= total * 9, "{same} of {total} token-identical");

        let tight = AdoptLimits {
            max_prompt_tokens: 8,
            ..limits
        };
        let shared = share(&groups[..1], &tokenizer, eos);
        assert!(matches!(
            adopt(&shared[0], &tokenizer, eos[0], tight),
            Err(AdoptError::PromptTooLong { .. })
        ));
    }

    /// A group of two completions of `text_len` characters each, for tests of message sizes.
    pub(crate) fn shared(text_len: usize) -> SharedGroup {
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
                    logprobs: Vec::new(),
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
}
