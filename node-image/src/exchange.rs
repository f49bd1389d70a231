//! Between this node's scored groups and the rollouts peers share: what goes into a round's
//! message, and how a peer's question group becomes a training group here. A peer's rewards are
//! never trusted: its completions are re-tokenized and re-scored with this node's verifiers.

use swarm_model::ChatTokenizer;
use swarm_p2p::{Limits, PeerId, RolloutMessage, SharedCompletion, SharedGroup};
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

/// Packs groups into as few messages as keep each within `limits` (bytes and groups per message),
/// at most `max_messages` of them. A group its peers would reject on its own (a completion
/// over the size limits) is left out, as are groups beyond the round's last message: peers would
/// score this member down for either.
pub fn split_messages(
    round: u64,
    sender: PeerId,
    groups: Vec<SharedGroup>,
    limits: &Limits,
    max_messages: usize,
) -> Vec<RolloutMessage> {
    let message = |groups| RolloutMessage {
        round,
        sender,
        groups,
    };
    // Every limit below a message's holds for a group whatever message carries it, so the
    // receiver's own decoding judges each group once; only the message's size and group count
    // depend on the packing.
    let accepted_alone =
        |message: &RolloutMessage| swarm_p2p::decode(&swarm_p2p::encode(message), limits).is_ok();
    let fits = |message: &RolloutMessage| {
        message.groups.len() <= limits.max_groups
            && swarm_p2p::encode(message).len() <= limits.max_message_bytes
    };
    let mut messages = Vec::new();
    let mut current = message(Vec::new());
    let mut left_out = 0usize;
    for group in groups {
        let alone = message(vec![group]);
        if !accepted_alone(&alone) {
            left_out += 1;
            continue;
        }
        let [group] = <[SharedGroup; 1]>::try_from(alone.groups).expect("one group");
        current.groups.push(group);
        if fits(&current) {
            continue;
        }
        let group = current.groups.pop().expect("the group just pushed");
        messages.push(std::mem::replace(&mut current, message(vec![group])));
    }
    if !current.groups.is_empty() {
        messages.push(current);
    }
    if messages.len() > max_messages {
        left_out += messages
            .drain(max_messages..)
            .map(|m| m.groups.len())
            .sum::<usize>();
    }
    if left_out > 0 {
        tracing::warn!(
            round,
            left_out,
            "leaving out question groups that exceed the swarm's message limits"
        );
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
        let limits = Limits {
            max_message_bytes: one * 3,
            ..Limits::default()
        };
        let messages = split_messages(7, sender, groups, &limits, 8);
        assert!(messages.len() >= 4, "{} messages", messages.len());
        assert_eq!(messages.iter().map(|m| m.groups.len()).sum::<usize>(), 10);
        for message in &messages {
            assert!(swarm_p2p::encode(message).len() <= one * 3);
            assert_eq!((message.round, message.sender), (7, sender));
            swarm_p2p::decode(&swarm_p2p::encode(message), &limits).expect("accepted");
        }
        let tight = Limits {
            max_message_bytes: one,
            ..Limits::default()
        };
        let too_big = split_messages(7, sender, vec![shared(5000)], &tight, 8);
        assert!(too_big.is_empty());
    }

    #[test]
    fn splitting_keeps_to_the_group_count_and_leaves_out_what_peers_reject() {
        let sender = PeerId::random();
        let limits = Limits {
            max_groups: 3,
            max_completion_bytes: 100,
            ..Limits::default()
        };
        let mut groups: Vec<SharedGroup> = (0..7).map(|_| shared(10)).collect();
        groups.insert(2, shared(101));
        let messages = split_messages(7, sender, groups, &limits, 8);
        assert_eq!(
            messages.iter().map(|m| m.groups.len()).collect::<Vec<_>>(),
            [3, 3, 1]
        );
        for message in &messages {
            swarm_p2p::decode(&swarm_p2p::encode(message), &limits).expect("accepted");
        }
        let capped = split_messages(7, sender, vec![shared(10); 7], &limits, 2);
        assert_eq!(capped.len(), 2);
        assert_eq!(capped.iter().map(|m| m.groups.len()).sum::<usize>(), 6);
    }

    #[test]
    fn a_round_at_the_admission_bounds_fits_its_messages() {
        use swarm_node_config::limits;
        // The largest round admission lets through: every completion of maxNewTokens tokens
        // at four bytes of text each, with its log-probabilities.
        let group = limits::GROUP_TOKENS / limits::NEW_TOKENS;
        let questions = limits::ROUND_TOKENS / (group * limits::NEW_TOKENS);
        let completion = SharedCompletion {
            text: "abcd".repeat(limits::NEW_TOKENS as usize - 1),
            ended: true,
            logprobs: vec![-0.5; limits::NEW_TOKENS as usize],
        };
        let groups: Vec<SharedGroup> = (0..questions)
            .map(|_| SharedGroup {
                completions: vec![completion.clone(); group as usize],
                ..shared(1)
            })
            .collect();
        let limits_default = Limits::default();
        let messages = split_messages(
            7,
            PeerId::random(),
            groups,
            &limits_default,
            limits::MESSAGES_PER_PEER_PER_ROUND as usize,
        );
        assert_eq!(
            messages.iter().map(|m| m.groups.len()).sum::<usize>(),
            questions as usize,
            "every group was sent"
        );
    }
}
