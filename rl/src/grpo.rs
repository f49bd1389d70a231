//! GRPO as TRL's `GRPOTrainer` (TRL 1.16, `loss_type="dapo"`, `scale_rewards="group"`) computes
//! it; `tests/fixtures/make_grpo_reference.py` runs TRL's own loss for the committed fixture.
//!
//! - [`advantages`]: per question group `(r - mean) / (std + 1e-4)`, `std` Bessel-corrected like
//!   TRL's `nanstd` (= `torch.std`); [`group_has_signal`] tells which groups a caller may drop.
//! - [`GrpoLoss`]: the clipped surrogate with asymmetric bounds and the optional k3 KL penalty,
//!   summed over completion tokens.
//! - [`GrpoTrainer`]: one optimiser step on a batch, accumulated over micro-batches, each
//!   micro-batch's sum divided by the completion tokens of the *whole* batch: the result is the
//!   token-level mean over the batch (what TRL's "dapo" computes with `num_items_in_batch`),
//!   whatever the micro-batch size. Then global-norm clipping and [`AdamW`].

mod adamw;

pub use adamw::{AdamW, AdamWConfig};

use swarm_model::{ModelError, Qwen2};
use tch::{Kind, Tensor};

/// TRL's epsilon in the advantage's denominator.
pub const ADVANTAGE_EPS: f64 = 1e-4;

#[derive(Debug, thiserror::Error)]
pub enum GrpoError {
    #[error("model: {0}")]
    Model(#[from] ModelError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error("batch: {0}")]
    Batch(String),
    #[error("kl_beta is {0}, which needs reference log-probabilities or a reference model")]
    NoReference(f64),
    #[error("optimizer state {0}")]
    OptimizerState(String),
}

/// GRPO advantages of the completions of each group, in order: `(r - mean) / (std + 1e-4)` with
/// the unbiased standard deviation (divisor n - 1), as TRL. A group of one has no spread to
/// compare against: its advantage is 0 (TRL's std is NaN there and it zeroes the NaN).
pub fn advantages<G: AsRef<[f32]>>(groups: &[G]) -> Vec<f32> {
    let mut out = Vec::with_capacity(groups.iter().map(|g| g.as_ref().len()).sum());
    for group in groups {
        let rewards = group.as_ref();
        if rewards.len() < 2 {
            out.extend(std::iter::repeat_n(0.0, rewards.len()));
            continue;
        }
        let n = rewards.len() as f64;
        let mean = rewards.iter().map(|&r| f64::from(r)).sum::<f64>() / n;
        let variance = rewards
            .iter()
            .map(|&r| (f64::from(r) - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        let denom = variance.sqrt() + ADVANTAGE_EPS;
        out.extend(
            rewards
                .iter()
                .map(|&r| ((f64::from(r) - mean) / denom) as f32),
        );
    }
    out
}

/// Whether a group's completions differ in reward. When they all score the same every advantage
/// is 0 and the group adds nothing but its KL term and compute; SAPO drops such groups before
/// training and before sharing.
pub fn group_has_signal(rewards: &[f32]) -> bool {
    rewards.windows(2).any(|w| w[0] != w[1])
}

/// The per-token GRPO objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrpoLoss {
    /// The ratio is clipped to `[1 - clip_epsilon_low, 1 + clip_epsilon_high]`.
    pub clip_epsilon_low: f64,
    pub clip_epsilon_high: f64,
    /// Weight β of the KL penalty; 0 needs no reference.
    pub kl_beta: f64,
    /// How tokens another policy sampled (rows marked by [`OffPolicyRows`]) enter the loss.
    pub off_policy: OffPolicyCorrection,
}

impl Default for GrpoLoss {
    fn default() -> Self {
        Self {
            clip_epsilon_low: 0.2,
            clip_epsilon_high: 0.28,
            kl_beta: 0.0,
            off_policy: OffPolicyCorrection::None,
        }
    }
}

/// The objective of a token that another policy (a peer) sampled. On-policy tokens always take
/// the clipped surrogate.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum OffPolicyCorrection {
    /// The clipped surrogate, as if this policy had sampled the token (SAPO as published).
    #[default]
    None,
    /// The clipped surrogate for tokens of completions with a positive advantage; the others
    /// are not trained (nor counted in the token mean): learn from a peer's successes, never
    /// push down text this policy may rarely produce.
    PositiveOnly,
    /// The clipped surrogate weighted by the truncated importance ratio
    /// `min(π(token) / π_sampler(token), cap)`, with `π` this policy's probability (no gradient
    /// through the weight) and `π_sampler` the sampler's, from [`OffPolicyRows::sampler_logprobs`]
    /// (required). Tokens this policy would rarely produce weigh little; none weighs more than
    /// `cap`.
    TruncatedImportance { cap: f64 },
    /// LUFFY's policy shaping (arXiv 2504.14945): `-A · f(π)` with `f(p) = p / (p + γ)` and no
    /// ratio clipping. The gradient, `A · γ / (p + γ) · ∇log π`, stays large for tokens this
    /// policy finds unlikely instead of vanishing with `p`.
    PolicyShaping { gamma: f64 },
}

/// Sums over the masked tokens of one (micro-)batch, to be divided by the whole batch's tokens.
#[derive(Debug)]
pub struct LossSums {
    /// Sum of the per-token losses: a differentiable scalar.
    pub loss: Tensor,
    /// Sum of the per-token KL estimates, when a reference was given.
    pub kl: Option<f64>,
    /// Tokens whose ratio left the clip range on the side that stops the gradient (TRL's
    /// `clip_ratio/region_mean` counts the same).
    pub clipped: f64,
    pub tokens: f64,
}

impl GrpoLoss {
    /// Per-token terms summed over `mask` (`[B, L]`, nonzero where the token is trained).
    ///
    /// `logprobs` (`[B, L]`) are the policy's, with gradient; `advantages` is `[B]`. `old` are the
    /// sampling policy's log-probabilities; `None` stands for `logprobs` detached (one optimiser
    /// step per round: the ratio is 1 but its gradient is not 0, as in TRL). `reference` are the
    /// frozen reference model's, used when `kl_beta` is nonzero (then required) and for the KL
    /// statistic. `off_policy` marks the rows another policy sampled (`[B]` bool) and carries
    /// that sampler's log-probabilities where the correction needs them. Values of `old`,
    /// `reference` and the sampler's log-probabilities outside the mask are ignored, even
    /// non-finite.
    pub fn sums(
        &self,
        logprobs: &Tensor,
        mask: &Tensor,
        advantages: &Tensor,
        old: Option<&Tensor>,
        reference: Option<&Tensor>,
        off_policy: Option<(&Tensor, Option<&Tensor>)>,
    ) -> Result<LossSums, GrpoError> {
        let shape = logprobs.size();
        let sampler = off_policy.and_then(|(_, sampler)| sampler);
        for (what, t) in [
            ("mask", Some(mask)),
            ("old", old),
            ("reference", reference),
            ("sampler", sampler),
        ] {
            if let Some(t) = t
                && t.size() != shape
            {
                return Err(GrpoError::Batch(format!(
                    "{what} log-probabilities/mask have shape {:?}, the policy's {shape:?}",
                    t.size()
                )));
            }
        }
        if advantages.size() != [shape[0]] {
            return Err(GrpoError::Batch(format!(
                "advantages have shape {:?}, expected [{}]",
                advantages.size(),
                shape[0]
            )));
        }
        let keep = mask.f_ne(0)?;
        let weight = keep.f_to_kind(Kind::Float)?;
        let detached = logprobs.f_detach()?;
        // Masked-out entries take the policy's own value so that exp() below cannot overflow into
        // a NaN that the mask's multiplication would not remove.
        let masked = |t: &Tensor| -> Result<Tensor, GrpoError> {
            Ok(t.f_to_kind(Kind::Float)?.f_where_self(&keep, &detached)?)
        };
        let old = match old {
            Some(old) => masked(old)?,
            None => detached.shallow_clone(),
        };
        let advantages = advantages.f_to_kind(Kind::Float)?.f_unsqueeze(1)?;

        let ratio = logprobs.f_sub(&old)?.f_exp()?;
        let clipped_ratio =
            ratio.f_clamp(1.0 - self.clip_epsilon_low, 1.0 + self.clip_epsilon_high)?;
        let mut per_token = ratio
            .f_mul(&advantages)?
            .f_minimum(&clipped_ratio.f_mul(&advantages)?)?
            .f_neg()?;
        if let Some((rows, _)) = off_policy {
            if rows.size() != [shape[0]] {
                return Err(GrpoError::Batch(format!(
                    "off-policy rows have shape {:?}, expected [{}]",
                    rows.size(),
                    shape[0]
                )));
            }
            let rows = rows
                .f_to_device(logprobs.device())?
                .f_to_kind(Kind::Bool)?
                .f_unsqueeze(1)?;
            let corrected = match self.off_policy {
                // Left out by the trainer's mask.
                OffPolicyCorrection::None | OffPolicyCorrection::PositiveOnly => None,
                OffPolicyCorrection::TruncatedImportance { cap } => {
                    let sampler = sampler.ok_or_else(|| {
                        GrpoError::Batch(
                            "truncated importance weighting needs the sampler's log-probabilities"
                                .into(),
                        )
                    })?;
                    let weight = detached
                        .f_sub(&masked(sampler)?)?
                        .f_exp()?
                        .f_clamp_max(cap)?;
                    Some(per_token.f_mul(&weight)?)
                }
                OffPolicyCorrection::PolicyShaping { gamma } => {
                    let probability = logprobs.f_exp()?;
                    let shaped = probability.f_div(&probability.f_add_scalar(gamma)?)?;
                    Some(shaped.f_mul(&advantages)?.f_neg()?)
                }
            };
            if let Some(corrected) = corrected {
                per_token = corrected.f_where_self(&rows, &per_token)?;
            }
        }
        let kl = match reference {
            Some(reference) => {
                // k3 estimator of KL(policy || reference): exp(d) - d - 1 with d = ref - logp.
                let d = masked(reference)?.f_sub(logprobs)?;
                let kl = d.f_exp()?.f_sub(&d)?.f_sub_scalar(1.0)?;
                if self.kl_beta != 0.0 {
                    per_token = per_token.f_add(&kl.f_mul_scalar(self.kl_beta)?)?;
                }
                Some(
                    kl.f_detach()?
                        .f_mul(&weight)?
                        .f_sum(Kind::Double)?
                        .f_double_value(&[])?,
                )
            }
            None if self.kl_beta != 0.0 => return Err(GrpoError::NoReference(self.kl_beta)),
            None => None,
        };

        let ratio = ratio.f_detach()?;
        let zero = advantages.f_zeros_like()?;
        let low = ratio
            .f_lt(1.0 - self.clip_epsilon_low)?
            .f_logical_and(&advantages.f_lt_tensor(&zero)?)?;
        let high = ratio
            .f_gt(1.0 + self.clip_epsilon_high)?
            .f_logical_and(&advantages.f_gt_tensor(&zero)?)?;
        let clipped = low
            .f_logical_or(&high)?
            .f_logical_and(&keep)?
            .f_sum(Kind::Double)?
            .f_double_value(&[])?;
        Ok(LossSums {
            loss: per_token.f_mul(&weight)?.f_sum(Kind::Float)?,
            kl,
            clipped,
            tokens: weight.f_sum(Kind::Double)?.f_double_value(&[])?,
        })
    }
}

/// One round's training data, laid out as sampled: each row a prompt followed by its completion.
///
/// Log-probability tensors are `[B, T - 1]` and aligned with [`Qwen2::token_logprobs`]: entry `t`
/// is the log-probability of token `t + 1`. Only the entries under the completion mask are read:
/// the trainer computes the policy's and reference's log-probabilities of the completion tokens
/// alone, each distinct prompt once ([`Qwen2::completion_logprobs`]).
#[derive(Debug)]
pub struct GrpoBatch {
    /// `[B, T]` int64.
    pub input_ids: Tensor,
    /// `[B, T]`, nonzero for real tokens (padding may be on either side).
    pub attention_mask: Tensor,
    /// `[B, T]`, nonzero for the completion tokens that are trained (not prompt, not padding).
    pub completion_mask: Tensor,
    /// `[B]` f32, from [`advantages`].
    pub advantages: Tensor,
    /// The sampling policy's log-probabilities; `None` when this round's step is the first since
    /// sampling, so the sampling policy is the current one.
    pub old_logprobs: Option<Tensor>,
    /// The reference model's log-probabilities, when computed beforehand; otherwise, with a
    /// nonzero β, the trainer computes them from the reference model it is given.
    pub ref_logprobs: Option<Tensor>,
    /// Rows another policy sampled, trained under [`GrpoLoss::off_policy`].
    pub off_policy: Option<OffPolicyRows>,
}

/// Which rows of a [`GrpoBatch`] another policy sampled, and with what probabilities.
#[derive(Debug)]
pub struct OffPolicyRows {
    /// `[B]` bool.
    pub rows: Tensor,
    /// `[B, T - 1]`, aligned like [`GrpoBatch::old_logprobs`]: the sampler's log-probability of
    /// each completion token of an off-policy row (under the distribution it drew from). Needed by
    /// [`OffPolicyCorrection::TruncatedImportance`]; other entries are ignored.
    pub sampler_logprobs: Option<Tensor>,
}

impl GrpoBatch {
    fn rows(&self) -> i64 {
        self.input_ids.size().first().copied().unwrap_or(0)
    }

    /// The `[B, T - 1]` log-probabilities a step under `correction` trains: the completion
    /// tokens, less those of off-policy rows that [`OffPolicyCorrection::PositiveOnly`] leaves
    /// out (advantage ≤ 0).
    pub fn trained_mask(&self, correction: OffPolicyCorrection) -> Result<Tensor, GrpoError> {
        let mask = self.logprob_mask()?;
        match (&self.off_policy, correction) {
            (Some(off), OffPolicyCorrection::PositiveOnly) => {
                let device = mask.device();
                let left_out = off
                    .rows
                    .f_to_device(device)?
                    .f_to_kind(Kind::Bool)?
                    .f_logical_and(&self.advantages.f_to_device(device)?.f_le(0.0)?)?
                    .f_unsqueeze(1)?;
                Ok(mask.f_logical_and(&left_out.f_logical_not()?)?)
            }
            _ => Ok(mask),
        }
    }

    /// The `[B, T - 1]` mask of the log-probabilities of completion tokens.
    fn logprob_mask(&self) -> Result<Tensor, GrpoError> {
        let t = self.completion_mask.size().last().copied().unwrap_or(0);
        Ok(self
            .completion_mask
            .f_narrow(1, 1, t - 1)?
            .f_ne(0)?
            .f_to_device(self.input_ids.device())?)
    }

    fn check(&self) -> Result<(), GrpoError> {
        let size = self.input_ids.size();
        if size.len() != 2 || size[1] < 2 || self.input_ids.kind() != Kind::Int64 {
            return Err(GrpoError::Batch(format!(
                "input_ids must be int64 [batch, seq >= 2], got {size:?} of {:?}",
                self.input_ids.kind()
            )));
        }
        for (what, t) in [
            ("attention_mask", &self.attention_mask),
            ("completion_mask", &self.completion_mask),
        ] {
            if t.size() != size {
                return Err(GrpoError::Batch(format!(
                    "{what} has shape {:?}, input_ids {size:?}",
                    t.size()
                )));
            }
        }
        Ok(())
    }
}

/// Everything a GRPO step is configured by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrpoConfig {
    pub loss: GrpoLoss,
    pub optimizer: AdamWConfig,
    /// Gradients are scaled down to this global L2 norm; 0 turns clipping off (the HF default
    /// is 1).
    pub max_grad_norm: f64,
    /// Rows per forward/backward pass; the step is the same for any value, only memory changes.
    pub micro_batch_size: usize,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        Self {
            loss: GrpoLoss::default(),
            optimizer: AdamWConfig::default(),
            max_grad_norm: 1.0,
            micro_batch_size: 8,
        }
    }
}

/// What a step did, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// The token-level mean loss over the batch.
    pub loss: f64,
    /// Mean per-token KL estimate against the reference, when there is one.
    pub kl: Option<f64>,
    /// Share of completion tokens whose ratio was clipped.
    pub clip_fraction: f64,
    /// Global gradient norm before clipping (0 until [`GrpoTrainer::apply_gradients`]).
    pub grad_norm: f64,
    /// Completion tokens trained on.
    pub tokens: f64,
}

/// GRPO training of one policy: owns the optimiser, borrows the model for each step.
#[derive(Debug)]
pub struct GrpoTrainer {
    config: GrpoConfig,
    optimizer: AdamW,
}

impl GrpoTrainer {
    /// A trainer for `policy`'s parameters, with fresh optimiser state.
    pub fn new(policy: &Qwen2, config: GrpoConfig) -> Result<Self, GrpoError> {
        if config.micro_batch_size == 0 {
            return Err(GrpoError::Batch("micro_batch_size must be positive".into()));
        }
        Ok(Self {
            optimizer: AdamW::new(policy.var_store(), config.optimizer)?,
            config,
        })
    }

    pub fn config(&self) -> &GrpoConfig {
        &self.config
    }

    /// The optimiser, for checkpoints.
    pub fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }

    pub fn optimizer_mut(&mut self) -> &mut AdamW {
        &mut self.optimizer
    }

    /// One GRPO step: [`Self::compute_gradients`] then [`Self::apply_gradients`].
    pub fn step(
        &mut self,
        policy: &Qwen2,
        reference: Option<&Qwen2>,
        batch: &GrpoBatch,
    ) -> Result<StepStats, GrpoError> {
        let mut stats = self.compute_gradients(policy, reference, batch)?;
        stats.grad_norm = self.apply_gradients()?;
        Ok(stats)
    }

    /// Leaves in the policy's parameters the gradient of the token-level mean loss over `batch`,
    /// computed micro-batch by micro-batch. `reference` is used only when β is nonzero and the
    /// batch carries no reference log-probabilities.
    pub fn compute_gradients(
        &mut self,
        policy: &Qwen2,
        reference: Option<&Qwen2>,
        batch: &GrpoBatch,
    ) -> Result<StepStats, GrpoError> {
        batch.check()?;
        let loss_fn = self.config.loss;
        if loss_fn.kl_beta != 0.0 && batch.ref_logprobs.is_none() && reference.is_none() {
            return Err(GrpoError::NoReference(loss_fn.kl_beta));
        }
        let mask = batch.trained_mask(loss_fn.off_policy)?;
        // Every micro-batch divides by the whole batch's count, so the accumulated gradient is
        // the full batch's token-level mean (clamped like TRL's normaliser for an empty batch).
        let tokens = mask.f_sum(Kind::Double)?.f_double_value(&[])?;
        let total_tokens = tokens.max(1.0);
        self.optimizer.zero_grad();
        let rows = batch.rows();
        let micro = i64::try_from(self.config.micro_batch_size).unwrap_or(i64::MAX);
        let (mut loss, mut kl, mut clipped) = (0.0, None::<f64>, 0.0);
        let mut start = 0;
        while start < rows {
            let len = micro.min(rows - start);
            let part = |t: &Tensor| t.f_narrow(0, start, len);
            let part_mask = part(&mask)?;
            // A micro-batch without trained tokens adds nothing to the loss or its gradient.
            if part_mask.f_sum(Kind::Double)?.f_double_value(&[])? == 0.0 {
                start += len;
                continue;
            }
            let ids = part(&batch.input_ids)?;
            let attention = part(&batch.attention_mask)?;
            let completion = part(&batch.completion_mask)?;
            let reference_logprobs = match (&batch.ref_logprobs, reference) {
                (Some(r), _) => Some(part(r)?),
                (None, Some(model)) if loss_fn.kl_beta != 0.0 => Some(tch::no_grad(|| {
                    model.completion_logprobs(&ids, &attention, &completion)
                })?),
                _ => None,
            };
            let logprobs = policy.completion_logprobs(&ids, &attention, &completion)?;
            let old = batch.old_logprobs.as_ref().map(part).transpose()?;
            let off_policy = match &batch.off_policy {
                Some(off) => Some((
                    part(&off.rows)?,
                    off.sampler_logprobs.as_ref().map(part).transpose()?,
                )),
                None => None,
            };
            let sums = loss_fn.sums(
                &logprobs,
                &part_mask,
                &part(&batch.advantages)?.f_to_device(logprobs.device())?,
                old.as_ref(),
                reference_logprobs.as_ref(),
                off_policy
                    .as_ref()
                    .map(|(rows, sampler)| (rows, sampler.as_ref())),
            )?;
            let scaled = sums.loss.f_div_scalar(total_tokens)?;
            scaled.f_backward()?;
            loss += scaled.f_double_value(&[])?;
            if let Some(k) = sums.kl {
                kl = Some(kl.unwrap_or(0.0) + k);
            }
            clipped += sums.clipped;
            start += len;
        }
        Ok(StepStats {
            loss,
            kl: kl.map(|k| k / total_tokens),
            clip_fraction: clipped / total_tokens,
            grad_norm: 0.0,
            tokens,
        })
    }

    /// Clips the accumulated gradients and takes the optimiser step; returns the norm before
    /// clipping.
    pub fn apply_gradients(&mut self) -> Result<f64, GrpoError> {
        let norm = self.optimizer.clip_grad_norm(self.config.max_grad_norm)?;
        self.optimizer.step()?;
        Ok(norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row, three trained tokens with the given policy log-probabilities; the gradient of
    /// the summed loss with respect to them under `correction`, for a row that another policy
    /// sampled with `sampler` log-probabilities.
    fn gradient(
        correction: OffPolicyCorrection,
        logprobs: [f32; 3],
        sampler: [f32; 3],
        advantage: f32,
    ) -> Vec<f32> {
        let loss = GrpoLoss {
            off_policy: correction,
            ..GrpoLoss::default()
        };
        let logprobs = Tensor::from_slice(&logprobs)
            .view([1, 3])
            .set_requires_grad(true);
        let sampler = Tensor::from_slice(&sampler).view([1, 3]);
        let rows = Tensor::from_slice(&[true]);
        let sums = loss
            .sums(
                &logprobs,
                &Tensor::ones([1, 3], (Kind::Int64, tch::Device::Cpu)),
                &Tensor::from_slice(&[advantage]),
                None,
                None,
                Some((&rows, Some(&sampler))),
            )
            .unwrap();
        sums.loss.backward();
        Vec::<f32>::try_from(logprobs.grad().view([3])).unwrap()
    }

    fn assert_close(actual: &[f32], expected: &[f32]) {
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() < 1e-5, "{actual:?} != {expected:?}");
        }
    }

    #[test]
    fn plain_off_policy_tokens_train_as_own_samples() {
        let g = gradient(
            OffPolicyCorrection::None,
            [-0.1, -2.0, -5.0],
            [-1.0, -1.0, -1.0],
            1.5,
        );
        assert_close(&g, &[-1.5, -1.5, -1.5]);
    }

    /// The weight is min(π / π_sampler, cap): e^(-0.1 - -1) = 2.46 capped to 2, e^-1 = 0.368,
    /// e^-4 = 0.018.
    #[test]
    fn importance_weights_are_the_truncated_ratio() {
        let g = gradient(
            OffPolicyCorrection::TruncatedImportance { cap: 2.0 },
            [-0.1, -2.0, -5.0],
            [-1.0, -1.0, -1.0],
            1.5,
        );
        let w = [2.0, (-1.0f32).exp(), (-4.0f32).exp()];
        assert_close(&g, &[-1.5 * w[0], -1.5 * w[1], -1.5 * w[2]]);
    }

    /// d/dlogp of -A p/(p + γ) is -A γ p / (p + γ)².
    #[test]
    fn shaping_gradients_follow_p_over_p_plus_gamma() {
        let gamma = 0.1f32;
        let logprobs = [-0.1f32, -2.0, -5.0];
        let g = gradient(
            OffPolicyCorrection::PolicyShaping { gamma: 0.1 },
            logprobs,
            [0.0; 3],
            -2.0,
        );
        let expected: Vec<f32> = logprobs
            .iter()
            .map(|l| {
                let p = l.exp();
                2.0 * gamma * p / (p + gamma).powi(2)
            })
            .collect();
        assert_close(&g, &expected);
    }

    #[test]
    fn on_policy_rows_ignore_the_correction() {
        let loss = GrpoLoss {
            off_policy: OffPolicyCorrection::TruncatedImportance { cap: 1.0 },
            ..GrpoLoss::default()
        };
        let logprobs = Tensor::from_slice(&[-3.0f32, -3.0])
            .view([2, 1])
            .set_requires_grad(true);
        let sums = loss
            .sums(
                &logprobs,
                &Tensor::ones([2, 1], (Kind::Int64, tch::Device::Cpu)),
                &Tensor::from_slice(&[1.0f32, 1.0]),
                None,
                None,
                Some((
                    &Tensor::from_slice(&[false, true]),
                    Some(&Tensor::from_slice(&[0.0f32, 0.0]).view([2, 1])),
                )),
            )
            .unwrap();
        sums.loss.backward();
        let g = Vec::<f32>::try_from(logprobs.grad().view([2])).unwrap();
        assert_close(&g, &[-1.0, -(-3.0f32).exp()]);
        assert!(
            loss.sums(
                &logprobs,
                &Tensor::ones([2, 1], (Kind::Int64, tch::Device::Cpu)),
                &Tensor::from_slice(&[1.0f32, 1.0]),
                None,
                None,
                Some((&Tensor::from_slice(&[false, true]), None)),
            )
            .is_err(),
            "importance weighting without the sampler's log-probabilities"
        );
    }
}
