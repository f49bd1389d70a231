//! What a swarm member computes each round without the network: sample completions for verifiable
//! questions in one batch, score them, and improve the policy with GRPO; checkpoint the result.

mod checkpoint;
mod grpo;
mod round;
mod sampling;
pub mod warmup;

pub use checkpoint::{
    Checkpoint, CheckpointError, CheckpointProblem, LatestCheckpoint, SkippedCheckpoint,
};
pub use grpo::{
    ADVANTAGE_EPS, AdamW, AdamWConfig, GrpoBatch, GrpoConfig, GrpoError, GrpoLoss, GrpoTrainer,
    LossSums, OffPolicyCorrection, OffPolicyRows, StepStats, advantages, group_has_signal,
};
pub use round::{
    Group, RewardStats, Rollout, RoundConfig, RoundError, RoundStats, Sampled, SourceStats,
    TrainOutcome, evaluate, prompt_ids, run_round, sample_groups, train_on_groups,
};
pub use sampling::{Completion, FinishReason, Sampler, SamplingConfig, SamplingError};
