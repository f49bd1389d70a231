//! One local GRPO round, what a swarm member computes each round before any network exchange:
//! ask every question `G` times in one sampled batch, score the completions with the tasks'
//! verifiers, turn each question's rewards into group advantages, and take one trainer step on the
//! groups whose completions disagree.
//!
//! The round is split at the point SAPO needs: [`sample_groups`] produces scored [`Group`]s, and
//! [`train_on_groups`] trains on any list of them. A peer's rollouts enter as more groups
//! ([`Group::score`] re-verifies them with this node's verifiers) appended to the local ones;
//! [`run_round`] takes them as `external`.

use swarm_model::{ChatMessage, ChatTokenizer, ModelError, Qwen2, Role};
use swarm_tasks::{Question, Reward, Source, chat_messages, verify};
use tch::{Kind, Tensor};

use crate::grpo::{
    GrpoBatch, GrpoError, GrpoTrainer, OffPolicyCorrection, OffPolicyRows, StepStats, advantages,
    group_has_signal,
};
use crate::sampling::{Sampler, SamplingConfig, SamplingError};

#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error("no questions to ask")]
    NoQuestions,
    #[error("group size is {size}, less than {least}")]
    GroupSize { size: usize, least: usize },
    #[error("chat message role `{0}` has no counterpart in the chat template")]
    Role(&'static str),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] ModelError),
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error(transparent)]
    Grpo(#[from] GrpoError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// How a round asks its questions.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundConfig {
    /// Completions per question (GRPO's G).
    pub group_size: usize,
    /// Drawing of the completions; callers vary `sampling.seed` from round to round, or every
    /// round draws the same completions for the same questions.
    pub sampling: SamplingConfig,
}

/// One completion of a group and its reward.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// Generated tokens, trained on as they are (an end-of-sequence token included).
    pub tokens: Vec<i64>,
    pub text: String,
    pub reward: Reward,
    /// The sampler's log-probability of each token, one per token; empty when unknown (a peer
    /// that did not send them).
    pub sampling_logprobs: Vec<f32>,
}

/// A completion to score: its tokens, text and the sampler's log-probabilities (see
/// [`Rollout::sampling_logprobs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub tokens: Vec<i64>,
    pub text: String,
    pub sampling_logprobs: Vec<f32>,
}

/// The completions of one question, scored by this node's verifier.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub question: Question,
    /// The chat-templated prompt the completions continue.
    pub prompt: Vec<i64>,
    pub rollouts: Vec<Rollout>,
}

impl Group {
    /// Scores completions of `question`: the reward always comes from this node's verifier,
    /// never from whoever produced the completions.
    pub fn score(
        question: Question,
        prompt: Vec<i64>,
        completions: impl IntoIterator<Item = Sampled>,
    ) -> Self {
        let rollouts = completions
            .into_iter()
            .map(|sampled| Rollout {
                reward: verify(&question, &sampled.text),
                tokens: sampled.tokens,
                text: sampled.text,
                sampling_logprobs: sampled.sampling_logprobs,
            })
            .collect();
        Self {
            question,
            prompt,
            rollouts,
        }
    }

    pub fn rewards(&self) -> Vec<Reward> {
        self.rollouts.iter().map(|r| r.reward).collect()
    }

    /// Whether GRPO can learn from the group: its rewards differ, so some advantage is nonzero.
    pub fn has_signal(&self) -> bool {
        group_has_signal(&self.rewards())
    }
}

/// Rewards of the completions of one question source (a task family or a dataset).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceStats {
    pub source: Source,
    pub completions: usize,
    pub reward_sum: f64,
}

impl SourceStats {
    /// The mean reward; with the tasks' all-or-nothing verifiers, the accuracy.
    pub fn mean_reward(&self) -> f64 {
        self.reward_sum / self.completions.max(1) as f64
    }
}

/// Rewards over a list of groups, overall and per source (in order of first appearance).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RewardStats {
    pub completions: usize,
    pub mean_reward: f64,
    pub by_source: Vec<SourceStats>,
    /// Completion tokens, end-of-sequence tokens included.
    pub tokens: usize,
}

impl RewardStats {
    pub fn of(groups: &[Group]) -> Self {
        let mut by_source: Vec<SourceStats> = Vec::new();
        let (mut completions, mut reward_sum, mut tokens) = (0, 0.0, 0);
        for group in groups {
            let index = match by_source
                .iter()
                .position(|s| s.source == group.question.source)
            {
                Some(index) => index,
                None => {
                    by_source.push(SourceStats {
                        source: group.question.source.clone(),
                        completions: 0,
                        reward_sum: 0.0,
                    });
                    by_source.len() - 1
                }
            };
            for rollout in &group.rollouts {
                by_source[index].completions += 1;
                by_source[index].reward_sum += f64::from(rollout.reward);
                completions += 1;
                reward_sum += f64::from(rollout.reward);
                tokens += rollout.tokens.len();
            }
        }
        Self {
            completions,
            mean_reward: reward_sum / completions.max(1) as f64,
            by_source,
            tokens,
        }
    }
}

/// What the training half of a round did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// Groups trained on, local and external.
    pub groups_kept: usize,
    /// Of those, peers' groups.
    pub external_groups_kept: usize,
    /// Peers' completions that entered the loss: all of the kept external groups' under the
    /// plain and shaping corrections, those with a positive advantage under positive-only, those
    /// whose sampler log-probabilities are known under importance weighting.
    pub external_completions_trained: usize,
    /// Groups whose completions all scored the same: every advantage 0, nothing to learn.
    pub groups_dropped: usize,
    /// `None` when no group was kept: no step is taken, since AdamW would still move the weights
    /// on its momentum alone.
    pub step: Option<StepStats>,
}

/// What a round did, for logs and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundStats {
    /// The local completions only: how well this node's policy did on its own questions.
    pub local: RewardStats,
    /// Groups trained on, local and external together.
    pub train: TrainOutcome,
}

/// The chat-templated prompt of a question, as the policy sees it.
pub fn prompt_ids(tokenizer: &ChatTokenizer, question: &Question) -> Result<Vec<i64>, RoundError> {
    let messages = chat_messages(question)
        .into_iter()
        .map(|m| {
            let role = match m.role {
                "system" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => return Err(RoundError::Role(other)),
            };
            Ok(ChatMessage::new(role, m.content))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(tokenizer.encode_chat(&messages, true)?)
}

/// Samples `config.group_size` completions of every question, all in one batch, and scores them.
pub fn sample_groups(
    policy: &Qwen2,
    tokenizer: &ChatTokenizer,
    sampler: &mut Sampler,
    questions: &[Question],
    config: &RoundConfig,
) -> Result<Vec<Group>, RoundError> {
    if questions.is_empty() {
        return Err(RoundError::NoQuestions);
    }
    let g = config.group_size;
    if g == 0 {
        return Err(RoundError::GroupSize { size: 0, least: 1 });
    }
    let prompts = questions
        .iter()
        .map(|q| prompt_ids(tokenizer, q))
        .collect::<Result<Vec<_>, _>>()?;
    let batch: Vec<Vec<i64>> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.clone(), g))
        .collect();
    let mut completions = sampler
        .sample(policy, tokenizer, &batch, &config.sampling)?
        .into_iter();
    Ok(questions
        .iter()
        .zip(prompts)
        .map(|(question, prompt)| {
            let own = completions.by_ref().take(g).map(|c| Sampled {
                tokens: c.tokens,
                text: c.text,
                sampling_logprobs: c.logprobs,
            });
            Group::score(question.clone(), prompt, own)
        })
        .collect())
}

/// One GRPO step on the groups that carry signal; groups whose rewards are all equal are dropped
/// first, as SAPO does. `local` are groups this policy sampled, `external` groups peers sampled,
/// trained under the trainer's [`OffPolicyCorrection`]. `reference` is the frozen model of the KL
/// penalty, needed only when the trainer's β is nonzero.
pub fn train_on_groups(
    policy: &Qwen2,
    reference: Option<&Qwen2>,
    trainer: &mut GrpoTrainer,
    local: &[&Group],
    external: &[&Group],
) -> Result<TrainOutcome, RoundError> {
    let kept_local: Vec<&Group> = local.iter().copied().filter(|g| g.has_signal()).collect();
    let kept_external: Vec<&Group> = external
        .iter()
        .copied()
        .filter(|g| g.has_signal())
        .collect();
    let groups_dropped = local.len() + external.len() - kept_local.len() - kept_external.len();
    let correction = trainer.config().loss.off_policy;
    let batch = grpo_batch(&kept_local, &kept_external, correction, policy.device())?;
    let external_completions_trained = batch.external_completions_trained;
    let step = match batch.batch {
        Some(batch) => Some(trainer.step(policy, reference, &batch)?),
        None => None,
    };
    Ok(TrainOutcome {
        groups_kept: kept_local.len() + kept_external.len(),
        external_groups_kept: kept_external.len(),
        external_completions_trained,
        groups_dropped,
        step,
    })
}

/// A whole local round: [`sample_groups`] on `questions`, then [`train_on_groups`] on those groups
/// followed by `external` ones (a peer's, already scored by [`Group::score`]).
pub fn run_round(
    policy: &Qwen2,
    tokenizer: &ChatTokenizer,
    sampler: &mut Sampler,
    trainer: &mut GrpoTrainer,
    questions: &[Question],
    config: &RoundConfig,
    external: Vec<Group>,
) -> Result<RoundStats, RoundError> {
    // GRPO learns from differences between completions of the same question.
    if config.group_size < 2 {
        return Err(RoundError::GroupSize {
            size: config.group_size,
            least: 2,
        });
    }
    let groups = sample_groups(policy, tokenizer, sampler, questions, config)?;
    let local = RewardStats::of(&groups);
    let own: Vec<&Group> = groups.iter().collect();
    let peers: Vec<&Group> = external.iter().collect();
    let train = train_on_groups(policy, None, trainer, &own, &peers)?;
    Ok(RoundStats { local, train })
}

/// The policy's mean reward on `questions`, each asked `config.group_size` times (greedy decoding
/// needs only 1), without training.
pub fn evaluate(
    policy: &Qwen2,
    tokenizer: &ChatTokenizer,
    sampler: &mut Sampler,
    questions: &[Question],
    config: &RoundConfig,
) -> Result<RewardStats, RoundError> {
    let groups = sample_groups(policy, tokenizer, sampler, questions, config)?;
    Ok(RewardStats::of(&groups))
}

/// A round's training batch, and how many peers' completions it trains.
struct TrainingBatch {
    /// `None` when nothing is left to train: no step is taken, since AdamW would still move the
    /// weights on its momentum alone.
    batch: Option<GrpoBatch>,
    external_completions_trained: usize,
}

/// Rows `prompt ++ completion`, right-padded, local groups first; the completion mask covers the
/// completion tokens that are trained, and the advantages are computed per group. Peers' rows
/// are marked off-policy, with their sampler's log-probabilities when `correction` weighs by
/// them; a peer's completion without them (or with a count that does not match its tokens) is
/// then left out.
fn grpo_batch(
    local: &[&Group],
    external: &[&Group],
    correction: OffPolicyCorrection,
    device: tch::Device,
) -> Result<TrainingBatch, RoundError> {
    let needs_sampler = matches!(correction, OffPolicyCorrection::TruncatedImportance { .. });
    let groups: Vec<(&Group, bool)> = local
        .iter()
        .map(|g| (*g, false))
        .chain(external.iter().map(|g| (*g, true)))
        .collect();
    let rewards: Vec<Vec<Reward>> = groups.iter().map(|(g, _)| g.rewards()).collect();
    let advantages = advantages(&rewards);
    struct Row<'a> {
        prompt: &'a [i64],
        rollout: &'a Rollout,
        off_policy: bool,
        trained: bool,
    }
    let rows: Vec<Row> = groups
        .iter()
        .flat_map(|(g, off_policy)| {
            g.rollouts.iter().map(move |rollout| Row {
                prompt: g.prompt.as_slice(),
                rollout,
                off_policy: *off_policy,
                trained: !(*off_policy
                    && needs_sampler
                    && rollout.sampling_logprobs.len() != rollout.tokens.len()),
            })
        })
        .collect();
    let external_completions_trained = rows
        .iter()
        .zip(&advantages)
        .filter(|(row, advantage)| {
            row.off_policy
                && row.trained
                && (correction != OffPolicyCorrection::PositiveOnly || **advantage > 0.0)
        })
        .count();
    if !rows.iter().any(|row| row.trained) {
        return Ok(TrainingBatch {
            batch: None,
            external_completions_trained,
        });
    }
    // At least 2 columns: the logprob of a token needs one before it.
    let width = rows
        .iter()
        .map(|row| row.prompt.len() + row.rollout.tokens.len())
        .max()
        .unwrap_or(0)
        .max(2);
    let (mut ids, mut attention, mut completion) = (Vec::new(), Vec::new(), Vec::new());
    let mut sampler = Vec::new();
    for row in &rows {
        let (prompt, tokens) = (row.prompt, &row.rollout.tokens);
        let padding = width - prompt.len() - tokens.len();
        // Any id serves as padding: the attention mask hides it and the completion mask skips it.
        ids.extend(prompt.iter().chain(tokens.iter()).copied());
        ids.extend(std::iter::repeat_n(0, padding));
        attention.extend(std::iter::repeat_n(1i64, prompt.len() + tokens.len()));
        attention.extend(std::iter::repeat_n(0, padding));
        completion.extend(std::iter::repeat_n(0i64, prompt.len()));
        completion.extend(std::iter::repeat_n(i64::from(row.trained), tokens.len()));
        completion.extend(std::iter::repeat_n(0, padding));
        if needs_sampler {
            // Aligned with the log-probabilities: entry t is the one of token t + 1.
            sampler.extend(std::iter::repeat_n(0f32, prompt.len() - 1));
            match row.trained && row.off_policy {
                true => sampler.extend(&row.rollout.sampling_logprobs),
                false => sampler.extend(std::iter::repeat_n(0f32, tokens.len())),
            }
            sampler.extend(std::iter::repeat_n(0f32, padding));
        }
    }
    // Lengths of vectors in memory always fit an i64.
    let shape = [rows.len() as i64, width as i64];
    let tensor = |values: &[i64]| -> Result<Tensor, tch::TchError> {
        Tensor::f_from_slice(values)?
            .f_view(shape)?
            .f_to_device(device)
    };
    let off_policy_rows: Vec<bool> = rows.iter().map(|row| row.off_policy).collect();
    let off_policy = if external.is_empty() {
        None
    } else {
        Some(OffPolicyRows {
            rows: Tensor::f_from_slice(&off_policy_rows)?.f_to_device(device)?,
            sampler_logprobs: if needs_sampler {
                Some(
                    Tensor::f_from_slice(&sampler)?
                        .f_view([shape[0], shape[1] - 1])?
                        .f_to_device(device)?,
                )
            } else {
                None
            },
        })
    };
    Ok(TrainingBatch {
        batch: Some(GrpoBatch {
            input_ids: tensor(&ids)?,
            attention_mask: tensor(&attention)?,
            completion_mask: tensor(&completion)?,
            advantages: Tensor::f_from_slice(&advantages)?
                .f_to_kind(Kind::Float)?
                .f_to_device(device)?,
            old_logprobs: None,
            ref_logprobs: None,
            off_policy,
        }),
        external_completions_trained,
    })
}

#[cfg(test)]
mod tests {
    use swarm_tasks::{Metadata, TaskFamily};

    use super::*;

    fn group(rewards: &[f32], prompt: Vec<i64>, lens: &[usize]) -> Group {
        Group {
            question: Question {
                source: Source::Procedural(TaskFamily::BasicArithmetic),
                prompt: String::new(),
                answer: "1".into(),
                metadata: Metadata::new(),
            },
            prompt,
            rollouts: rewards
                .iter()
                .zip(lens)
                .map(|(&reward, &len)| Rollout {
                    tokens: (100..100 + len as i64).collect(),
                    text: String::new(),
                    reward,
                    sampling_logprobs: vec![-0.5; len],
                })
                .collect(),
        }
    }

    #[test]
    fn batch_masks_cover_completion_tokens_only() {
        let a = group(&[1.0, 0.0], vec![1, 2, 3], &[2, 1]);
        let b = group(&[0.0, 1.0], vec![4], &[3, 1]);
        let batch = grpo_batch(&[&a, &b], &[], OffPolicyCorrection::None, tch::Device::Cpu)
            .unwrap()
            .batch
            .unwrap();
        assert!(batch.off_policy.is_none());
        let rows = |t: &Tensor| Vec::<Vec<i64>>::try_from(t).unwrap();
        assert_eq!(
            rows(&batch.input_ids),
            [
                vec![1, 2, 3, 100, 101],
                vec![1, 2, 3, 100, 0],
                vec![4, 100, 101, 102, 0],
                vec![4, 100, 0, 0, 0],
            ]
        );
        assert_eq!(
            rows(&batch.attention_mask),
            [
                vec![1, 1, 1, 1, 1],
                vec![1, 1, 1, 1, 0],
                vec![1, 1, 1, 1, 0],
                vec![1, 1, 0, 0, 0],
            ]
        );
        assert_eq!(
            rows(&batch.completion_mask),
            [
                vec![0, 0, 0, 1, 1],
                vec![0, 0, 0, 1, 0],
                vec![0, 1, 1, 1, 0],
                vec![0, 1, 0, 0, 0],
            ]
        );
        let adv = Vec::<f32>::try_from(&batch.advantages).unwrap();
        assert!(adv[0] > 0.0 && adv[1] < 0.0 && adv[2] < 0.0 && adv[3] > 0.0);
    }

    /// A peer's group reaches the trainer marked off-policy, after the local ones, with the
    /// tokens each correction trains: all of them, those of positive advantage, or those whose
    /// sampler log-probabilities are known (aligned with the log-probability columns).
    #[test]
    fn peers_groups_reach_the_trainer_as_each_correction_says() {
        let own = group(&[1.0, 0.0], vec![1, 2], &[1, 1]);
        let mut peer = group(&[0.0, 1.0, 0.0], vec![3], &[2, 1, 1]);
        // A peer that sent no log-probabilities for its last completion.
        peer.rollouts[2].sampling_logprobs.clear();
        let flat = |t: &Tensor| Vec::<Vec<bool>>::try_from(t).unwrap();
        let build =
            |correction| grpo_batch(&[&own], &[&peer], correction, tch::Device::Cpu).unwrap();

        let plain = build(OffPolicyCorrection::None);
        assert_eq!(plain.external_completions_trained, 3);
        let batch = plain.batch.unwrap();
        let off = batch.off_policy.as_ref().unwrap();
        assert_eq!(
            Vec::<bool>::try_from(&off.rows).unwrap(),
            [false, false, true, true, true]
        );
        assert!(off.sampler_logprobs.is_none());
        let trained = flat(&batch.trained_mask(OffPolicyCorrection::None).unwrap());
        assert_eq!(
            trained,
            [
                vec![false, true],
                vec![false, true],
                vec![true, true],
                vec![true, false],
                vec![true, false],
            ]
        );

        let positive = build(OffPolicyCorrection::PositiveOnly);
        assert_eq!(positive.external_completions_trained, 1);
        let batch = positive.batch.unwrap();
        let trained = flat(
            &batch
                .trained_mask(OffPolicyCorrection::PositiveOnly)
                .unwrap(),
        );
        // Only the peer's rewarded completion (row 3); the member's own rows all stay.
        assert_eq!(
            trained,
            [
                vec![false, true],
                vec![false, true],
                vec![false, false],
                vec![true, false],
                vec![false, false],
            ]
        );

        let importance = build(OffPolicyCorrection::TruncatedImportance { cap: 2.0 });
        assert_eq!(importance.external_completions_trained, 2);
        let batch = importance.batch.unwrap();
        let trained = flat(&batch.trained_mask(OffPolicyCorrection::None).unwrap());
        assert_eq!(trained[4], vec![false, false]);
        let sampler = Vec::<Vec<f32>>::try_from(
            batch
                .off_policy
                .as_ref()
                .unwrap()
                .sampler_logprobs
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(sampler[0], vec![0.0, 0.0]);
        assert_eq!(sampler[2], vec![-0.5, -0.5]);
        assert_eq!(sampler[3], vec![-0.5, 0.0]);
        assert_eq!(sampler[4], vec![0.0, 0.0]);
    }

    #[test]
    fn stats_split_by_source() {
        let mut b = group(&[1.0, 1.0], vec![1], &[1, 1]);
        b.question.source = Source::Dataset("d".into());
        let stats = RewardStats::of(&[group(&[1.0, 0.0], vec![1], &[2, 3]), b]);
        assert_eq!(stats.completions, 4);
        assert_eq!(stats.tokens, 7);
        assert!((stats.mean_reward - 0.75).abs() < 1e-9);
        assert_eq!(stats.by_source.len(), 2);
        assert!((stats.by_source[0].mean_reward() - 0.5).abs() < 1e-9);
        assert!((stats.by_source[1].mean_reward() - 1.0).abs() < 1e-9);
    }
}
