//! A supervised warm-up that makes a base model for RL from nothing but a seed: a small random
//! Qwen2 trained with cross-entropy on bare answers `<answer>X</answer><|im_end|>` to generated
//! questions, stopped as soon as it solves a target share of a probe set.
//!
//! RL post-trains a model that can already sometimes succeed: a random model never earns a reward,
//! so every GRPO group would be dropped. Stopping early (rather than after a fixed step count)
//! leaves the base model with room to improve by a known amount.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use swarm_model::{ChatTokenizer, ModelError, Qwen2, Qwen2Config};
use swarm_tasks::Question;
use tch::{Kind, Tensor};

use crate::grpo::{AdamW, AdamWConfig, GrpoError};
use crate::round::{RewardStats, RoundConfig, RoundError, evaluate, prompt_ids};
use crate::sampling::{Sampler, SamplingConfig};

/// The token that ends an assistant turn in ChatML; the warm-up teaches the model to stop.
const END_OF_TURN: &str = "<|im_end|>";

#[derive(Debug, thiserror::Error)]
pub enum WarmupError {
    #[error("the tokenizer has no `{0}` token")]
    MissingToken(&'static str),
    #[error("warm-up config `{field}`: {problem}")]
    Config {
        field: &'static str,
        problem: &'static str,
    },
    #[error("model: {0}")]
    Model(#[from] ModelError),
    #[error(transparent)]
    Round(#[from] RoundError),
    #[error(transparent)]
    Grpo(#[from] GrpoError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// A Qwen2 small enough to learn a family's easiest questions in minutes on one CPU core: 2
/// layers of width 64 with grouped-query attention like the real models, and room for the ~250
/// tokens of a chat-templated question plus its answer.
pub fn tiny_config(vocab_size: i64, eos_token_id: i64) -> Qwen2Config {
    Qwen2Config {
        vocab_size,
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        max_position_embeddings: 512,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        tie_word_embeddings: false,
        eos_token_ids: vec![eos_token_id],
    }
}

/// `config` as a transformers `config.json`, so the saved directory loads there too.
pub fn config_json(config: &Qwen2Config) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_act": "silu",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "tie_word_embeddings": config.tie_word_embeddings,
        "eos_token_id": config.eos_token_ids,
        "use_sliding_window": false,
        "torch_dtype": "float32",
    })
}

/// Fills the model with random weights drawn from `seed` by a portable Rust generator rather than
/// torch's, so the same seed gives the same start on every platform and libtorch version: matrices
/// uniform with the standard deviation 0.02 of transformers' Qwen2 initialiser, biases 0, norm
/// scales 1.
pub fn init_weights(model: &Qwen2, seed: u64) -> Result<(), WarmupError> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    // Uniform on [-a, a] has standard deviation a / sqrt(3).
    let bound = 0.02 * 3f32.sqrt();
    let mut variables: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    // The draw order must not depend on the hash map's.
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (name, mut var) in variables {
            if name.ends_with("norm.weight") {
                let _ = var.f_fill_(1.0)?;
            } else if name.ends_with(".bias") {
                let _ = var.f_fill_(0.0)?;
            } else {
                let values: Vec<f32> = (0..var.numel())
                    .map(|_| rng.random_range(-bound..bound))
                    .collect();
                let drawn = Tensor::f_from_slice(&values)?.f_view(var.size().as_slice())?;
                var.f_copy_(&drawn)?;
            }
        }
        Ok(())
    })
}

/// What the model is taught to say to `question`: the answer tag alone, no reasoning.
pub fn target_text(question: &Question) -> String {
    format!("<answer>{}</answer>", question.answer)
}

/// Prompts followed by their target answers, right-padded.
#[derive(Debug)]
pub struct SupervisedBatch {
    /// `[B, T]` int64.
    pub input_ids: Tensor,
    /// `[B, T]`, 1 for real tokens.
    pub attention_mask: Tensor,
    /// `[B, T]`: 1 for the answer's tokens (its end-of-turn token included), so the prompt
    /// itself is never trained.
    pub answer_mask: Tensor,
}

impl SupervisedBatch {
    pub fn new(tokenizer: &ChatTokenizer, questions: &[Question]) -> Result<Self, WarmupError> {
        let end = tokenizer
            .token_id(END_OF_TURN)
            .ok_or(WarmupError::MissingToken(END_OF_TURN))?;
        let mut rows = Vec::with_capacity(questions.len());
        for question in questions {
            let prompt = prompt_ids(tokenizer, question)?;
            let mut target = tokenizer.encode(&target_text(question))?;
            target.push(end);
            rows.push((prompt, target));
        }
        let width = rows
            .iter()
            .map(|(p, t)| p.len() + t.len())
            .max()
            .unwrap_or(0)
            .max(2);
        let (mut ids, mut attention, mut answers) = (Vec::new(), Vec::new(), Vec::new());
        for (prompt, target) in &rows {
            let len = prompt.len() + target.len();
            ids.extend(prompt.iter().chain(target).copied());
            ids.extend(std::iter::repeat_n(0, width - len));
            attention.extend(std::iter::repeat_n(1i64, len));
            attention.extend(std::iter::repeat_n(0, width - len));
            answers.extend(std::iter::repeat_n(0i64, prompt.len()));
            answers.extend(std::iter::repeat_n(1, target.len()));
            answers.extend(std::iter::repeat_n(0, width - len));
        }
        // Lengths of vectors in memory always fit an i64.
        let shape = [rows.len() as i64, width as i64];
        Ok(Self {
            input_ids: Tensor::f_from_slice(&ids)?.f_view(shape)?,
            attention_mask: Tensor::f_from_slice(&attention)?.f_view(shape)?,
            answer_mask: Tensor::f_from_slice(&answers)?.f_view(shape)?,
        })
    }
}

/// How the warm-up trains and when it stops.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmupConfig {
    pub optimizer: AdamWConfig,
    /// Global gradient norm clip; 0 turns it off.
    pub max_grad_norm: f64,
    pub batch_size: usize,
    /// Training stops at the first check where the greedy accuracy on the probe questions reaches
    /// this ...
    pub target_accuracy: f64,
    /// ... checked every this many steps ...
    pub check_every: usize,
    /// ... or after this many steps at the latest.
    pub max_steps: usize,
}

/// How a warm-up ended.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmupReport {
    pub steps: usize,
    /// Cross-entropy per answer token of the last step.
    pub loss: f64,
    /// Greedy result on the probe questions at the last check.
    pub probe: RewardStats,
}

/// Trains `model` on batches of `questions` until it answers `config.target_accuracy` of
/// `probe` correctly (greedy), checking every `config.check_every` steps; `on_check` sees the
/// progress at every check (a warm-up takes minutes).
pub fn warm_up(
    model: &Qwen2,
    tokenizer: &ChatTokenizer,
    config: &WarmupConfig,
    mut questions: impl FnMut() -> Question,
    probe: &[Question],
    mut on_check: impl FnMut(&WarmupReport),
) -> Result<WarmupReport, WarmupError> {
    if config.batch_size == 0 {
        return Err(WarmupError::Config {
            field: "batch_size",
            problem: "must be at least 1",
        });
    }
    if config.check_every == 0 {
        return Err(WarmupError::Config {
            field: "check_every",
            problem: "must be at least 1",
        });
    }
    let mut optimizer = AdamW::new(model.var_store(), config.optimizer)?;
    let mut sampler = Sampler::new();
    let greedy = RoundConfig {
        group_size: 1,
        sampling: SamplingConfig {
            max_new_tokens: 16,
            temperature: 0.0,
            ..SamplingConfig::default()
        },
    };
    let mut report = WarmupReport {
        steps: 0,
        loss: f64::NAN,
        probe: evaluate(model, tokenizer, &mut sampler, probe, &greedy)?,
    };
    while report.steps < config.max_steps && report.probe.mean_reward < config.target_accuracy {
        let batch: Vec<Question> = (0..config.batch_size).map(|_| questions()).collect();
        let batch = SupervisedBatch::new(tokenizer, &batch)?;
        report.loss = supervised_step(model, &mut optimizer, &batch, config.max_grad_norm)?;
        report.steps += 1;
        if report.steps.is_multiple_of(config.check_every) {
            report.probe = evaluate(model, tokenizer, &mut sampler, probe, &greedy)?;
            on_check(&report);
        }
    }
    Ok(report)
}

/// One AdamW step on the mean cross-entropy of the batch's answer tokens; returns that loss.
pub fn supervised_step(
    model: &Qwen2,
    optimizer: &mut AdamW,
    batch: &SupervisedBatch,
    max_grad_norm: f64,
) -> Result<f64, WarmupError> {
    let device = model.device();
    let answers = batch.answer_mask.f_to_device(device)?;
    // The questions' shared system prompt and each question run once, not once per row.
    let logprobs = model.completion_logprobs(
        &batch.input_ids.f_to_device(device)?,
        &batch.attention_mask.f_to_device(device)?,
        &answers,
    )?;
    let width = answers.size().last().copied().unwrap_or(0);
    // Entry t of the log-probabilities predicts token t + 1.
    let mask = answers.f_narrow(1, 1, width - 1)?.f_to_kind(Kind::Float)?;
    let tokens = mask.f_sum(Kind::Float)?.f_clamp_min(1.0)?;
    let loss = logprobs
        .f_mul(&mask)?
        .f_sum(Kind::Float)?
        .f_neg()?
        .f_div(&tokens)?;
    optimizer.zero_grad();
    loss.f_backward()?;
    optimizer.clip_grad_norm(max_grad_norm)?;
    optimizer.step()?;
    Ok(loss.f_double_value(&[])?)
}
