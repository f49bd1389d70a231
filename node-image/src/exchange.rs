//! Between this node's scored groups and the rollouts peers share: what goes into a round's
//! message, and how a peer's question group becomes a training group here. A peer's rewards are
//! never trusted: its completions are re-tokenized and re-scored with this node's verifiers.

use swarm_model::ChatTokenizer;
use swarm_p2p::{SharedCompletion, SharedGroup};
use swarm_rl::{Group, RoundError, prompt_ids};

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

/// This node's groups as shared: each completion's text, and whether it ended at one of `eos`.
pub fn share(groups: &[Group], eos: &[i64]) -> Vec<SharedGroup> {
    groups
        .iter()
        .map(|group| SharedGroup {
            question: group.question.clone(),
            completions: group
                .rollouts
                .iter()
                .map(|rollout| SharedCompletion {
                    text: rollout.text.clone(),
                    ended: rollout.tokens.last().is_some_and(|t| eos.contains(t)),
                })
                .collect(),
        })
        .collect()
}

/// A peer's group as this node trains on it: the question's prompt under this node's chat
/// template, each completion re-tokenized (with `end_token` appended when it ended there, so the
/// policy also learns when to stop from it), and every reward from this node's verifier.
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
        completions.push((tokens, completion.text.clone()));
    }
    Ok(Group::score(shared.question.clone(), prompt, completions))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;
    use swarm_model::{Precision, Qwen2};
    use swarm_rl::{RoundConfig, Sampler, SamplingConfig, sample_groups};
    use swarm_tasks::{Difficulty, Question, TaskFamily, generate};
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
        for (group, shared) in groups.iter().zip(share(&groups, eos)) {
            let adopted = adopt(&shared, &tokenizer, eos[0], limits).unwrap();
            assert_eq!(adopted.prompt, group.prompt);
            assert_eq!(adopted.rewards(), group.rewards());
            for (ours, theirs) in adopted.rollouts.iter().zip(&group.rollouts) {
                total += 1;
                same += usize::from(ours.tokens == theirs.tokens);
            }
        }
        assert!(same * 10 >= total * 9, "{same} of {total} token-identical");

        let tight = AdoptLimits {
            max_prompt_tokens: 8,
            ..limits
        };
        let shared = share(&groups[..1], eos);
        assert!(matches!(
            adopt(&shared[0], &tokenizer, eos[0], tight),
            Err(AdoptError::PromptTooLong { .. })
        ));
    }
}
