//! What a member computes each round apart from the network: it draws its questions, samples G
//! completions of each, turns what it shares into wire groups, adopts the groups peers shared
//! (re-tokenized and re-scored here), chooses I own and J peers' groups and takes one GRPO step on
//! them under the swarm's sharing policy. The networked member ([`crate::member`]) and the
//! in-process SAPO experiment ([`crate::experiment`]) run the same [`Learner`].

use std::path::Path;
use std::sync::Arc;

use libp2p::PeerId;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use swarm_model::{ChatTokenizer, Precision, Qwen2};
use swarm_node_config::{Dtype, SharingPolicy, TrainingConfig};
use swarm_p2p::{SharedCompletion, SharedGroup, TokenCounter};
use swarm_rl::{
    AdamWConfig, Checkpoint, Group, GrpoConfig, GrpoLoss, GrpoTrainer, OffPolicyCorrection,
    RewardStats, RoundConfig, Sampler, SamplingConfig, evaluate, sample_groups, train_on_groups,
};
use swarm_tasks::{Difficulty, FamilySampler, Question, Source, load_jsonl};
use tch::Device;

use crate::exchange::{AdoptLimits, adopt, share};
use crate::member::NodeError;

/// Checkpoints kept on disk: the newest, and one to fall back to if it is damaged.
const CHECKPOINTS_KEPT: usize = 2;
/// Tries to draw a question outside the held-out set before giving up on the round's count.
const HELD_OUT_REDRAWS: usize = 64;
/// One question in this many is held out of training when a learner holds questions out.
const HELD_OUT_ONE_IN: u64 = 8;
/// Mixed into a round's seed for the choice of trained groups, so it draws a stream of its own.
const CHOICE_STREAM: u64 = 0x6368_6f69_6365;

/// One member's model, optimiser, question source and sampler.
pub struct Learner {
    policy: Qwen2,
    /// The frozen model of the KL penalty, when β is nonzero.
    reference: Option<Qwen2>,
    tokenizer: ChatTokenizer,
    end_token: i64,
    trainer: GrpoTrainer,
    sampler: Sampler,
    questions: QuestionSource,
    seed: u64,
    adopt_limits: AdoptLimits,
    training: TrainingConfig,
    /// Training draws skip the questions [`is_held_out`] reserves for evaluation.
    holds_out: bool,
}

/// A round's peers' groups after re-scoring.
#[derive(Debug, Default)]
pub struct External {
    pub received: usize,
    pub peers: usize,
    /// The groups whose rewards differ once re-scored here: the pool J is drawn from.
    pub with_signal: Vec<Group>,
    pub dropped: usize,
    /// Per peer: the sum of its completions' rewards as re-scored here, and their number.
    pub by_author: Vec<(PeerId, f64, usize)>,
}

impl External {
    /// Mean reward of every peer completion re-scored here; `None` when none arrived.
    pub fn mean_reward(&self) -> Option<f64> {
        let (sum, count) = self
            .by_author
            .iter()
            .fold((0.0, 0), |(sum, count), (_, total, n)| {
                (sum + total, count + n)
            });
        (count > 0).then(|| sum / count as f64)
    }

    fn credit(&mut self, author: PeerId, group: &Group) {
        let rewards = group.rewards();
        let sum: f64 = rewards.iter().map(|r| f64::from(*r)).sum();
        match self
            .by_author
            .iter_mut()
            .find(|(peer, _, _)| *peer == author)
        {
            Some((_, total, count)) => {
                *total += sum;
                *count += rewards.len();
            }
            None => self.by_author.push((author, sum, rewards.len())),
        }
    }
}

/// What a round's training step did.
#[derive(Debug, Clone, PartialEq)]
pub struct Trained {
    /// Own and peers' groups trained on (those with signal among the chosen I and J).
    pub local_groups: usize,
    pub external_groups: usize,
    /// Peers' completions that entered the loss under the sharing policy.
    pub external_completions: usize,
    /// The step's loss; `None` when nothing carried signal and no step was taken.
    pub loss: Option<f64>,
}

impl Learner {
    /// The model of `model_dir` in the precision `dtype` asks for on this machine, trained as
    /// `training` says by the member `name` (whose ordinal, the number ending it, picks its task
    /// group).
    pub fn load(
        name: &str,
        model_dir: &Path,
        dtype: Dtype,
        training: &TrainingConfig,
    ) -> Result<Self, NodeError> {
        let device = Device::cuda_if_available();
        let precision = precision(dtype, device);
        tracing::debug!(?device, ?precision, model = %model_dir.display(), "loading the model");
        let policy = Qwen2::load(model_dir, device, precision)?;
        // The KL penalty compares against the model as it was loaded, frozen.
        let reference = if training.kl_beta == 0.0 {
            None
        } else {
            Some(Qwen2::load(model_dir, device, precision)?)
        };
        let tokenizer = ChatTokenizer::from_dir(model_dir)?;
        let end_token = *policy
            .config()
            .eos_token_ids
            .first()
            .ok_or(NodeError::NoEndToken)?;
        let trainer = GrpoTrainer::new(&policy, grpo_config(training))?;
        let max_new = max_new_tokens(training);
        Ok(Self {
            adopt_limits: AdoptLimits {
                max_prompt_tokens: usize::try_from(policy.config().max_position_embeddings)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(max_new),
                // Re-tokenizing a decoded text rarely gives back exactly the sampled tokens.
                max_completion_tokens: max_new * 5 / 4 + 1,
            },
            questions: QuestionSource::new(training, ordinal(name))?,
            seed: member_seed(training.seed.unwrap_or(0), name),
            policy,
            reference,
            tokenizer,
            end_token,
            trainer,
            sampler: Sampler::new(),
            training: training.clone(),
            holds_out: false,
        })
    }

    /// From now on, training questions never include those [`is_held_out`] reserves, so an
    /// evaluation on those measures what was learned rather than what was seen.
    pub fn hold_out_evaluation_questions(&mut self) {
        self.holds_out = true;
    }

    pub fn policy(&self) -> &Qwen2 {
        &self.policy
    }

    /// Counts a shared completion's tokens as this learner trains on it, for the network's
    /// check of the log-probabilities peers send.
    pub fn token_counter(&self) -> TokenCounter {
        let tokenizer = self.tokenizer.clone();
        Arc::new(move |completion: &SharedCompletion| {
            match tokenizer.encode(&completion.text) {
                Ok(tokens) => tokens.len() + usize::from(completion.ended),
                // Not the sender's fault: this completion is dropped when adopted anyway.
                Err(_) => completion.logprobs.len(),
            }
        })
    }

    /// Draws the round's questions and samples G completions of each, scored here.
    pub fn generate(&mut self, round: u64) -> Result<Vec<Group>, NodeError> {
        let training = &self.training;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(round_seed(self.seed, round));
        let count = usize::try_from(training.questions_per_round).unwrap_or(usize::MAX);
        let questions = self.questions.draw(count, self.holds_out, &mut rng);
        let config = RoundConfig {
            group_size: usize::try_from(training.completions_per_question).unwrap_or(usize::MAX),
            sampling: SamplingConfig {
                max_new_tokens: max_new_tokens(training),
                temperature: training.temperature,
                seed: rng.random(),
                ..SamplingConfig::default()
            },
        };
        Ok(sample_groups(
            &self.policy,
            &self.tokenizer,
            &mut self.sampler,
            &questions,
            &config,
        )?)
    }

    /// This round's groups as shared with peers.
    pub fn share(&self, groups: &[Group]) -> Vec<SharedGroup> {
        share(groups, &self.tokenizer, &self.policy.config().eos_token_ids)
    }

    /// Peers' groups, re-tokenized and re-scored here; groups of `me` are skipped.
    pub fn adopt(&self, me: PeerId, received: &[(PeerId, Vec<SharedGroup>)]) -> External {
        let mut external = External::default();
        let mut peers: Vec<PeerId> = Vec::new();
        for (author, groups) in received {
            if *author == me {
                continue;
            }
            if !peers.contains(author) {
                peers.push(*author);
            }
            for shared in groups {
                external.received += 1;
                match adopt(shared, &self.tokenizer, self.end_token, self.adopt_limits) {
                    Ok(group) => {
                        external.credit(*author, &group);
                        if group.has_signal() {
                            external.with_signal.push(group);
                        }
                    }
                    Err(err) => {
                        tracing::debug!(peer = %author, %err, "cannot use a peer's group");
                        external.dropped += 1;
                    }
                }
            }
        }
        external.peers = peers.len();
        external
    }

    /// One GRPO step on I of the round's own groups and J of the peers', each drawn at random
    /// among those with signal (a group whose completions all scored the same teaches nothing).
    pub fn train(
        &mut self,
        round: u64,
        local: &[Group],
        external: &External,
    ) -> Result<Trained, NodeError> {
        let mut rng =
            Xoshiro256PlusPlus::seed_from_u64(round_seed(self.seed ^ CHOICE_STREAM, round));
        let own: Vec<Group> = local.iter().filter(|g| g.has_signal()).cloned().collect();
        let own = choose(&own, self.training.local_rollouts, &mut rng);
        let peers = choose(
            &external.with_signal,
            self.training.external_rollouts,
            &mut rng,
        );
        let outcome = train_on_groups(
            &self.policy,
            self.reference.as_ref(),
            &mut self.trainer,
            &own,
            &peers,
        )?;
        Ok(Trained {
            local_groups: outcome.groups_kept - outcome.external_groups_kept,
            external_groups: outcome.external_groups_kept,
            external_completions: outcome.external_completions_trained,
            loss: outcome.step.map(|step| step.loss),
        })
    }

    /// Greedy answers to `questions`, scored: what the policy knows, without sampling noise.
    pub fn evaluate(&mut self, questions: &[Question]) -> Result<RewardStats, NodeError> {
        let config = RoundConfig {
            group_size: 1,
            sampling: SamplingConfig {
                max_new_tokens: max_new_tokens(&self.training),
                temperature: 0.0,
                ..SamplingConfig::default()
            },
        };
        Ok(evaluate(
            &self.policy,
            &self.tokenizer,
            &mut self.sampler,
            questions,
            &config,
        )?)
    }

    /// Restores the newest checkpoint in `dir` that verifies; its round, or `None` for a fresh
    /// start.
    pub fn resume(&mut self, dir: &Path) -> Result<Option<u64>, NodeError> {
        let latest = Checkpoint::load_latest(dir)?;
        for skipped in &latest.skipped {
            tracing::warn!(path = %skipped.path.display(), problem = %skipped.problem, "passing over a damaged checkpoint");
        }
        let Some(checkpoint) = latest.checkpoint else {
            return Ok(None);
        };
        checkpoint.restore(self.policy.var_store(), self.trainer.optimizer_mut())?;
        tracing::info!(round = checkpoint.round, path = %checkpoint.path.display(), "resumed from checkpoint");
        Ok(Some(checkpoint.round))
    }

    /// Saves weights, optimiser state and `round` in `dir`.
    pub fn checkpoint(&self, dir: &Path, round: u64) -> Result<(), NodeError> {
        Checkpoint::save(
            dir,
            round,
            self.policy.var_store(),
            self.trainer.optimizer(),
            CHECKPOINTS_KEPT,
        )?;
        Ok(())
    }
}

/// Whether a question belongs to the evaluation set a learner that holds questions out never
/// trains on: one in [`HELD_OUT_ONE_IN`], by a stable hash of its prompt and answer.
pub fn is_held_out(question: &Question) -> bool {
    let hash = fnv1a(
        question
            .prompt
            .bytes()
            .chain([0])
            .chain(question.answer.bytes()),
    );
    hash.is_multiple_of(HELD_OUT_ONE_IN)
}

/// Weights and activations for the configured dtype: bf16 needs a GPU to be fast, so a CPU runs
/// f32 whatever the config says; f16 trains as bf16, whose range needs no loss scaling.
pub fn precision(dtype: Dtype, device: Device) -> Precision {
    match (dtype, device.is_cuda()) {
        (Dtype::F32, _) | (_, false) => Precision::F32,
        (Dtype::Bf16 | Dtype::F16, true) => Precision::Bf16,
    }
}

pub fn max_new_tokens(training: &TrainingConfig) -> usize {
    usize::try_from(training.max_new_tokens).unwrap_or(usize::MAX)
}

/// The trainer's settings for `training`, the sharing policy's correction included.
pub fn grpo_config(training: &TrainingConfig) -> GrpoConfig {
    let sharing = &training.sharing;
    let off_policy = match sharing.policy {
        SharingPolicy::Plain => OffPolicyCorrection::None,
        SharingPolicy::Positive => OffPolicyCorrection::PositiveOnly,
        SharingPolicy::Importance => OffPolicyCorrection::TruncatedImportance {
            cap: sharing.importance_cap,
        },
        SharingPolicy::Shaping => OffPolicyCorrection::PolicyShaping {
            gamma: sharing.shaping_gamma,
        },
    };
    GrpoConfig {
        loss: GrpoLoss {
            clip_epsilon_low: training.clip_epsilon_low,
            clip_epsilon_high: training.clip_epsilon_high,
            kl_beta: training.kl_beta,
            off_policy,
        },
        optimizer: AdamWConfig {
            learning_rate: training.learning_rate,
            ..AdamWConfig::default()
        },
        micro_batch_size: usize::try_from(training.micro_batch_size).unwrap_or(1),
        ..GrpoConfig::default()
    }
}

/// The ordinal that ends a member's name (`<swarm>-<ordinal>`); 0 for a name without one.
pub fn ordinal(member: &str) -> u64 {
    member
        .rsplit_once('-')
        .and_then(|(_, ordinal)| ordinal.parse().ok())
        .unwrap_or(0)
}

/// Where a round's questions come from.
enum QuestionSource {
    Procedural {
        families: FamilySampler,
        difficulty: Difficulty,
    },
    Dataset(Vec<Question>),
}

impl QuestionSource {
    fn new(training: &TrainingConfig, ordinal: u64) -> Result<Self, NodeError> {
        Ok(match &training.dataset {
            Some(dataset) => Self::Dataset(load_jsonl(Path::new(&dataset.path))?),
            None => Self::Procedural {
                families: FamilySampler::new(training.tasks_of(ordinal))?,
                difficulty: Difficulty::new(training.difficulty),
            },
        })
    }

    fn draw(&self, count: usize, hold_out: bool, rng: &mut Xoshiro256PlusPlus) -> Vec<Question> {
        let one = |rng: &mut Xoshiro256PlusPlus| match self {
            Self::Procedural {
                families,
                difficulty,
            } => Some(families.question(*difficulty, rng)),
            Self::Dataset(questions) => questions.choose(rng).cloned(),
        };
        (0..count)
            .filter_map(|_| {
                let mut question = one(rng)?;
                for _ in 0..HELD_OUT_REDRAWS {
                    if !(hold_out && is_held_out(&question)) {
                        break;
                    }
                    question = one(rng)?;
                }
                Some(question)
            })
            .collect()
    }
}

/// FNV-1a, stable everywhere.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes
        .into_iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// The member's own seed: the swarm's base seed mixed with its name, so members draw different
/// questions, and a restarted member the same ones again.
pub fn member_seed(base: u64, member: &str) -> u64 {
    base ^ fnv1a(member.bytes())
}

/// A round's rng seed from the member's seed (splitmix64 finaliser, so neighbouring rounds draw
/// unrelated streams).
pub fn round_seed(member_seed: u64, round: u64) -> u64 {
    let mut z = member_seed.wrapping_add(round.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Up to `count` of `groups`, drawn without replacement.
fn choose<'a>(groups: &'a [Group], count: u32, rng: &mut Xoshiro256PlusPlus) -> Vec<&'a Group> {
    let count = usize::try_from(count)
        .unwrap_or(usize::MAX)
        .min(groups.len());
    groups.sample(rng, count).collect()
}

/// The name a question source reports under: the family's snake_case name, or the dataset's.
pub fn source_name(source: &Source) -> String {
    match source {
        Source::Procedural(family) => serde_json::to_value(family)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        Source::Dataset(name) => name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use swarm_tasks::{TaskFamily, generate};

    use super::*;

    #[test]
    fn seeds_differ_by_member_and_round_and_are_stable() {
        let a = member_seed(1, "demo-0");
        assert_eq!(a, member_seed(1, "demo-0"));
        assert_ne!(a, member_seed(1, "demo-1"));
        assert_ne!(a, member_seed(2, "demo-0"));
        assert_ne!(round_seed(a, 0), round_seed(a, 1));
    }

    #[test]
    fn cpu_always_trains_in_f32() {
        assert_eq!(precision(Dtype::Bf16, Device::Cpu), Precision::F32);
        assert_eq!(precision(Dtype::Bf16, Device::Cuda(0)), Precision::Bf16);
        assert_eq!(precision(Dtype::F32, Device::Cuda(0)), Precision::F32);
    }

    #[test]
    fn ordinals_come_from_the_end_of_the_name() {
        assert_eq!(ordinal("qwen-sapo-12"), 12);
        assert_eq!(ordinal("local-3"), 3);
        assert_eq!(ordinal("solo"), 0);
    }

    /// About one question in eight is held out, by its text alone, and a learner that holds
    /// questions out never draws one to train on.
    #[test]
    fn held_out_questions_are_a_stable_eighth_never_trained_on() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(4);
        let questions: Vec<Question> = (0..4000)
            .map(|_| {
                generate(
                    TaskFamily::FractionSimplification,
                    Difficulty::new(2),
                    &mut rng,
                )
            })
            .collect();
        let held = questions.iter().filter(|q| is_held_out(q)).count();
        assert!((350..650).contains(&held), "{held} of 4000");
        let training = TrainingConfig {
            tasks: vec![swarm_node_config::TaskWeight {
                family: TaskFamily::FractionSimplification,
                weight: 1,
            }],
            difficulty: 2,
            ..TrainingConfig::default()
        };
        let source = QuestionSource::new(&training, 0).unwrap();
        let drawn = source.draw(2000, true, &mut rng);
        assert_eq!(drawn.len(), 2000);
        assert!(drawn.iter().all(|q| !is_held_out(q)));
        assert!(source.draw(2000, false, &mut rng).iter().any(is_held_out));
    }
}
