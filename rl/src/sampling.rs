//! Batched sampling of completions: every completion of a round (each question's prompt repeated
//! once per group member) is generated in one left-padded batch, prefilled once and then decoded
//! one token per step through a [`KvCache`].
//!
//! - Filtering follows transformers: temperature, then top-k, then top-p, always keeping the most
//!   likely token; temperature 0 is greedy (argmax).
//! - Randomness comes from a generator owned by the call and seeded from
//!   [`SamplingConfig::seed`], not from torch's global generator, so nothing else in the process
//!   can shift the draws: the same seed, prompts (in the same order), config, weights, device and
//!   precision give the same tokens, as far as the forward pass is deterministic (always on CPU;
//!   on CUDA only if libtorch's kernels are).
//! - Memory is bounded by the configuration: the [`Sampler`] keeps its cache between calls and
//!   allocates a new one only when a call needs a bigger one, so a node sampling round after round
//!   allocates the same buffers once instead of accumulating new ones.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use swarm_model::{ChatTokenizer, KvCache, ModelError, Precision, Qwen2, Qwen2Config};
use tch::{Device, Kind, Tensor};

/// Any id serves as padding: padded positions are masked out and their logits ignored.
const PAD: i64 = 0;

/// How completions are drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingConfig {
    /// Most tokens generated per completion, the end-of-sequence token included.
    pub max_new_tokens: usize,
    /// Divides the logits; 0 means greedy decoding.
    pub temperature: f64,
    /// Nucleus sampling: keep the most likely tokens whose probabilities add up to `top_p`
    /// (in `(0, 1]`; 1 keeps everything).
    pub top_p: f64,
    /// Keep only the `top_k` most likely tokens (and any tied with the last of them); 0 keeps all.
    pub top_k: usize,
    /// A completion ends once its text contains one of these; the text keeps the stop string, so
    /// a stop at `</answer>` still leaves an answer the verifier can extract.
    pub stop_strings: Vec<String>,
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            stop_strings: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplingConfig {
    pub fn validate(&self) -> Result<(), SamplingError> {
        let bad = |field, problem: String| Err(SamplingError::Config { field, problem });
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens", "must be at least 1".into());
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(
                "temperature",
                format!("must be finite and >= 0, is {}", self.temperature),
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("must be in (0, 1], is {}", self.top_p));
        }
        if self.stop_strings.iter().any(String::is_empty) {
            return bad(
                "stop_strings",
                "an empty stop string would end every completion at once".into(),
            );
        }
        Ok(())
    }

    fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    #[error("sampling config `{field}`: {problem}")]
    Config {
        field: &'static str,
        problem: String,
    },
    #[error("no prompts to sample from")]
    NoPrompts,
    #[error("prompt {index} is empty")]
    EmptyPrompt { index: usize },
    #[error("prompt {index} holds token id {id}, outside the model's vocabulary of {vocab_size}")]
    TokenOutOfRange {
        index: usize,
        id: i64,
        vocab_size: i64,
    },
    #[error(
        "a prompt of {prompt_len} tokens plus {max_new_tokens} new tokens exceeds the model's \
         {max_positions} positions"
    )]
    TooLong {
        prompt_len: usize,
        max_new_tokens: usize,
        max_positions: i64,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Why a completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// The text reached one of [`SamplingConfig::stop_strings`].
    StopString,
    /// [`SamplingConfig::max_new_tokens`] were generated.
    Length,
}

/// One generated completion of one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Tokens of the prompt, without padding: the completion starts after them.
    pub prompt_len: usize,
    /// The generated tokens, what GRPO scores and trains on: the end-of-sequence token is kept (the
    /// policy learns to stop), and so is the whole token that completed a stop string.
    pub tokens: Vec<i64>,
    /// `tokens` decoded without special tokens; after a stop string, cut right after it.
    pub text: String,
    pub finish: FinishReason,
    /// Per token of `tokens`, its log-probability under the distribution it was drawn from
    /// (after temperature, top-k and top-p): what a peer needs to correct for having trained on
    /// another policy's samples. 0 under greedy decoding, which draws nothing.
    pub logprobs: Vec<f32>,
}

/// Generates batches of completions, keeping its KV cache from one call to the next.
#[derive(Debug, Default)]
pub struct Sampler {
    buffers: Option<Buffers>,
    allocations: u64,
}

/// The per-batch state a call reuses: the cache and the attention mask over its positions.
#[derive(Debug)]
struct Buffers {
    shape: BufferShape,
    cache: KvCache,
    /// `[batch, capacity]`, 1 for real tokens; each call overwrites the positions it uses.
    mask: Tensor,
}

/// What a [`KvCache`] is tied to besides its capacity: the model's layout and the batch size.
#[derive(Debug, Clone, PartialEq)]
struct BufferShape {
    layers: i64,
    kv_heads: i64,
    head_dim: i64,
    device: Device,
    precision: Precision,
    batch: i64,
}

impl BufferShape {
    fn of(model: &Qwen2, batch: i64) -> Self {
        let config = model.config();
        Self {
            layers: config.num_hidden_layers,
            kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim,
            device: model.device(),
            precision: model.precision(),
            batch,
        }
    }
}

/// Generation progress of one row of the batch.
struct Row {
    prompt_len: usize,
    tokens: Vec<i64>,
    logprobs: Vec<f32>,
    /// Decoded text, kept up to date only when stop strings are configured.
    text: String,
    finish: Option<FinishReason>,
}

impl Sampler {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times a KV cache was allocated: once, as long as batch size, model and the
    /// longest prompt plus `max_new_tokens` stay within what an earlier call needed.
    pub fn cache_allocations(&self) -> u64 {
        self.allocations
    }

    /// Completions for `prompts` (token ids, such as a chat-templated question repeated once per
    /// group member), in the same order.
    ///
    /// A completion ends at an end-of-sequence token (the model config's `eos_token_id`s and the
    /// tokenizer's `<|im_end|>` and `<|endoftext|>`: an instruct model ends its turn with the
    /// first, a base model its text with the second), at a stop string, or after
    /// `max_new_tokens`. Generation stops when every completion has ended.
    pub fn sample(
        &mut self,
        model: &Qwen2,
        tokenizer: &ChatTokenizer,
        prompts: &[Vec<i64>],
        config: &SamplingConfig,
    ) -> Result<Vec<Completion>, SamplingError> {
        config.validate()?;
        let longest = check_prompts(prompts, model.config())?;
        let max_positions = model.config().max_position_embeddings;
        let capacity = i64::try_from(longest.saturating_add(config.max_new_tokens))
            .ok()
            .filter(|&capacity| capacity <= max_positions)
            .ok_or(SamplingError::TooLong {
                prompt_len: longest,
                max_new_tokens: config.max_new_tokens,
                max_positions,
            })?;
        // The length of a vector in memory always fits an i64.
        let batch = prompts.len() as i64;
        tch::no_grad(|| {
            let buffers = self.buffers(model, batch, capacity)?;
            generate(model, tokenizer, prompts, config, buffers)?
                .into_iter()
                .map(|row| finish_row(row, tokenizer, config))
                .collect()
        })
    }

    /// The buffers for a call, reused when they fit; otherwise the old ones are freed before the
    /// new ones are allocated, so at most one cache exists at a time.
    fn buffers(
        &mut self,
        model: &Qwen2,
        batch: i64,
        capacity: i64,
    ) -> Result<&mut Buffers, SamplingError> {
        let shape = BufferShape::of(model, batch);
        let buffers = match self.buffers.take() {
            Some(old) if old.shape == shape && old.cache.capacity() >= capacity => old,
            old => {
                // Keep the capacity an earlier call needed: prompt lengths vary from round to
                // round, and growing to each new longest prompt would reallocate every round.
                let capacity = match &old {
                    Some(old) if old.shape == shape => capacity.max(old.cache.capacity()),
                    _ => capacity,
                };
                drop(old);
                let cache = KvCache::new(model, batch, capacity)?;
                let mask = Tensor::f_zeros([batch, capacity], (Kind::Int64, model.device()))?;
                self.allocations += 1;
                Buffers { shape, cache, mask }
            }
        };
        Ok(self.buffers.insert(buffers))
    }
}

/// Checks the prompts and returns the length of the longest.
fn check_prompts(prompts: &[Vec<i64>], config: &Qwen2Config) -> Result<usize, SamplingError> {
    for (index, prompt) in prompts.iter().enumerate() {
        if prompt.is_empty() {
            return Err(SamplingError::EmptyPrompt { index });
        }
        if let Some(&id) = prompt.iter().find(|&&id| id < 0 || id >= config.vocab_size) {
            return Err(SamplingError::TokenOutOfRange {
                index,
                id,
                vocab_size: config.vocab_size,
            });
        }
    }
    prompts
        .iter()
        .map(Vec::len)
        .max()
        .ok_or(SamplingError::NoPrompts)
}

fn eos_token_ids(model: &Qwen2, tokenizer: &ChatTokenizer) -> Vec<i64> {
    let mut ids = model.config().eos_token_ids.clone();
    ids.extend(
        ["<|im_end|>", "<|endoftext|>"]
            .map(|token| tokenizer.token_id(token))
            .into_iter()
            .flatten(),
    );
    ids
}

/// Runs the prefill and the decoding steps over checked prompts and buffers that fit them.
fn generate(
    model: &Qwen2,
    tokenizer: &ChatTokenizer,
    prompts: &[Vec<i64>],
    config: &SamplingConfig,
    buffers: &mut Buffers,
) -> Result<Vec<Row>, SamplingError> {
    let device = model.device();
    let batch = buffers.shape.batch;
    let eos = eos_token_ids(model, tokenizer);
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let width = longest as i64;
    let (_, mask) = left_padded(prompts.iter(), longest);
    buffers
        .mask
        .f_narrow(1, 0, width)?
        .f_copy_(&Tensor::from_slice(&mask).f_view([batch, width])?)?;
    buffers.cache.clear();

    let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed);
    let mut logits = prefill(model, prompts, longest, buffers)?;
    let mut position = width;
    let mut rows = prompts
        .iter()
        .map(|prompt| Row {
            prompt_len: prompt.len(),
            tokens: Vec::new(),
            logprobs: Vec::new(),
            text: String::new(),
            finish: None,
        })
        .collect::<Vec<_>>();
    loop {
        let (chosen, chosen_logprobs) = choose(&logits, config, &mut rng)?;
        let mut alive = vec![0i64; rows.len()];
        for (((row, &token), &logprob), alive) in rows
            .iter_mut()
            .zip(&chosen)
            .zip(&chosen_logprobs)
            .zip(&mut alive)
        {
            if row.finish.is_some() {
                continue;
            }
            row.tokens.push(token);
            row.logprobs.push(logprob);
            row.finish = if eos.contains(&token) {
                Some(FinishReason::Eos)
            } else if reached_stop_string(row, tokenizer, config)? {
                Some(FinishReason::StopString)
            } else if row.tokens.len() >= config.max_new_tokens {
                Some(FinishReason::Length)
            } else {
                *alive = 1;
                None
            };
        }
        if alive.iter().all(|&a| a == 0) {
            return Ok(rows);
        }
        // Finished rows are fed padding that is masked out, so they cost compute but cannot
        // disturb the others; the batch keeps its shape, and the cache its layout.
        let input = chosen
            .iter()
            .zip(&alive)
            .map(|(&token, &a)| if a == 1 { token } else { PAD })
            .collect::<Vec<_>>();
        let input = Tensor::from_slice(&input)
            .f_view([batch, 1])?
            .f_to_device(device)?;
        buffers
            .mask
            .f_narrow(1, position, 1)?
            .f_copy_(&Tensor::from_slice(&alive).f_view([batch, 1])?)?;
        position += 1;
        logits = model
            .forward(
                &input,
                Some(&buffers.mask.f_narrow(1, 0, position)?),
                Some(&mut buffers.cache),
            )?
            .f_select(1, 0)?;
    }
}

/// Whether the row's text now contains a stop string; keeps `row.text` current when there are
/// stop strings to look for.
fn reached_stop_string(
    row: &mut Row,
    tokenizer: &ChatTokenizer,
    config: &SamplingConfig,
) -> Result<bool, SamplingError> {
    if config.stop_strings.is_empty() {
        return Ok(false);
    }
    // The whole completion is decoded again: a token's text depends on its neighbours (a
    // character's UTF-8 bytes can span tokens), and the cost is small next to a forward pass.
    row.text = tokenizer.decode(&row.tokens, true)?;
    Ok(stop_end(&row.text, &config.stop_strings).is_some())
}

/// Byte offset right after the earliest-ending stop string in `text`.
fn stop_end(text: &str, stop_strings: &[String]) -> Option<usize> {
    stop_strings
        .iter()
        .filter_map(|stop| text.find(stop.as_str()).map(|start| start + stop.len()))
        .min()
}

fn finish_row(
    row: Row,
    tokenizer: &ChatTokenizer,
    config: &SamplingConfig,
) -> Result<Completion, SamplingError> {
    let finish = row.finish.unwrap_or(FinishReason::Length);
    let text = match finish {
        FinishReason::StopString => {
            let end = stop_end(&row.text, &config.stop_strings).unwrap_or(row.text.len());
            row.text[..end].to_owned()
        }
        FinishReason::Eos | FinishReason::Length => tokenizer.decode(&row.tokens, true)?,
    };
    Ok(Completion {
        prompt_len: row.prompt_len,
        tokens: row.tokens,
        text,
        finish,
        logprobs: row.logprobs,
    })
}

/// The next token of every row from its last logits (`[batch, vocab]`), and its log-probability
/// under the distribution it was drawn from.
fn choose(
    logits: &Tensor,
    config: &SamplingConfig,
    rng: &mut Xoshiro256PlusPlus,
) -> Result<(Vec<i64>, Vec<f32>), SamplingError> {
    let logits = logits.f_to_kind(Kind::Float)?;
    let batch = logits.size().first().copied().unwrap_or(0);
    if config.is_greedy() {
        let chosen = logits.f_argmax(-1, false)?.f_to_device(Device::Cpu)?;
        let certain = vec![0.0; usize::try_from(batch).unwrap_or(0)];
        return Ok((Vec::<i64>::try_from(chosen)?, certain));
    }
    let (chosen, logprobs) = {
        let (sorted, order) = logits.f_div_scalar(config.temperature)?.f_sort(-1, true)?;
        let kept = filter_sorted(&sorted, config)?;
        // Inverse-CDF sampling with one uniform draw per row from our own generator: only
        // `batch` numbers cross to the device per step, and torch's global RNG is left alone.
        let cdf = kept.f_softmax(-1, Kind::Float)?.f_cumsum(-1, Kind::Float)?;
        let draws = (0..batch).map(|_| rng.random::<f32>()).collect::<Vec<_>>();
        let vocab = cdf.size().last().copied().unwrap_or(0);
        // Scaled by the total rather than assuming it is exactly 1 after a float cumsum.
        let target = Tensor::from_slice(&draws)
            .f_to_device(logits.device())?
            .f_unsqueeze(1)?
            .f_mul(&cdf.f_narrow(-1, vocab - 1, 1)?)?;
        let index = cdf
            .f_le_tensor(&target)?
            .f_sum_dim_intlist(-1, true, Kind::Int64)?;
        // Rounding can put the target at the very end of the CDF; stay within the kept tokens.
        let last_kept = kept
            .f_isfinite()?
            .f_sum_dim_intlist(-1, true, Kind::Int64)?
            .f_sub_scalar(1)?;
        let index = index.f_minimum(&last_kept)?;
        let logprobs = kept
            .f_log_softmax(-1, Kind::Float)?
            .f_gather(-1, &index, false)?
            .f_squeeze_dim(-1)?;
        (
            order.f_gather(-1, &index, false)?.f_squeeze_dim(-1)?,
            logprobs,
        )
    };
    Ok((
        Vec::<i64>::try_from(chosen.f_to_device(Device::Cpu)?)?,
        Vec::<f32>::try_from(logprobs.f_to_device(Device::Cpu)?)?,
    ))
}

/// `prompts` left-padded with [`PAD`] to `width`: the flattened ids and the mask of real tokens.
fn left_padded<'a>(
    prompts: impl Iterator<Item = &'a Vec<i64>>,
    width: usize,
) -> (Vec<i64>, Vec<i64>) {
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for prompt in prompts {
        let padding = width - prompt.len();
        ids.extend(std::iter::repeat_n(PAD, padding).chain(prompt.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, padding).chain(std::iter::repeat_n(1, prompt.len())));
    }
    (ids, mask)
}

/// Runs the left-padded prompts through the model into the cache and returns every row's logits
/// for its first new token (`[batch, vocab]`). A prompt that several rows share (a question asked
/// G times) is computed once, in a cache of the distinct prompts, and its keys and values are
/// copied to each of its rows.
fn prefill(
    model: &Qwen2,
    prompts: &[Vec<i64>],
    width: usize,
    buffers: &mut Buffers,
) -> Result<Tensor, SamplingError> {
    let device = model.device();
    let mut distinct: Vec<&Vec<i64>> = Vec::new();
    let mut rows = Vec::with_capacity(prompts.len());
    for prompt in prompts {
        let index = match distinct.iter().position(|d| *d == prompt) {
            Some(index) => index,
            None => {
                distinct.push(prompt);
                distinct.len() - 1
            }
        };
        rows.push(index as i64);
    }
    let (ids, mask) = left_padded(distinct.iter().copied(), width);
    // Lengths of vectors in memory always fit an i64.
    let shape = [distinct.len() as i64, width as i64];
    let ids = Tensor::from_slice(&ids)
        .f_view(shape)?
        .f_to_device(device)?;
    let mask = Tensor::from_slice(&mask)
        .f_view(shape)?
        .f_to_device(device)?;
    // Prompts are left-padded, so the last column is every row's last real token: only its
    // logits are needed, and the LM head runs on that column alone.
    if distinct.len() == prompts.len() {
        let logits = model.forward_keep(&ids, Some(&mask), Some(&mut buffers.cache), 1)?;
        return Ok(logits.f_select(1, 0)?);
    }
    let mut shared = KvCache::new(model, shape[0], shape[1])?;
    let logits = model.forward_keep(&ids, Some(&mask), Some(&mut shared), 1)?;
    let rows = Tensor::from_slice(&rows).f_to_device(device)?;
    buffers.cache.fill_from(&shared, &rows)?;
    Ok(logits.f_select(1, 0)?.f_index_select(0, &rows)?)
}

/// Top-k then top-p on logits sorted in descending order: removed tokens become -inf. The first
/// (most likely) token always stays.
fn filter_sorted(sorted: &Tensor, config: &SamplingConfig) -> Result<Tensor, SamplingError> {
    let vocab = sorted.size().last().copied().unwrap_or(0);
    let mut kept = sorted.shallow_clone();
    if let Ok(k) = i64::try_from(config.top_k)
        && k > 0
        && k < vocab
    {
        // As transformers: everything below the k-th logit goes, ties with it stay.
        let threshold = sorted.f_narrow(-1, k - 1, 1)?;
        kept = kept.f_masked_fill(&sorted.f_lt_tensor(&threshold)?, f64::NEG_INFINITY)?;
    }
    if config.top_p < 1.0 {
        // A token goes when the more likely ones already reach top_p; the first has nothing
        // before it, so it always stays.
        let probs = kept.f_softmax(-1, Kind::Float)?;
        let before = probs.f_cumsum(-1, Kind::Float)?.f_sub(&probs)?;
        kept = kept.f_masked_fill(&before.f_ge(config.top_p)?, f64::NEG_INFINITY)?;
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(top_k: usize, top_p: f64) -> SamplingConfig {
        SamplingConfig {
            top_k,
            top_p,
            ..SamplingConfig::default()
        }
    }

    fn kept(sorted: &[f32], config: &SamplingConfig) -> Vec<bool> {
        let sorted = Tensor::from_slice(sorted).unsqueeze(0);
        let kept = filter_sorted(&sorted, config)
            .unwrap()
            .isfinite()
            .squeeze_dim(0);
        Vec::<bool>::try_from(kept).unwrap()
    }

    #[test]
    fn top_k_keeps_ties_with_the_kth_logit() {
        assert_eq!(
            kept(&[3.0, 2.0, 2.0, 1.0], &config(2, 1.0)),
            [true, true, true, false]
        );
        assert_eq!(kept(&[3.0, 2.0, 1.0], &config(0, 1.0)), [true; 3]);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p_and_at_least_one_token() {
        // Probabilities 0.5, 0.25, 0.125, 0.125.
        let logits = [0.5f32.ln(), 0.25f32.ln(), 0.125f32.ln(), 0.125f32.ln()];
        assert_eq!(kept(&logits, &config(0, 0.6)), [true, true, false, false]);
        assert_eq!(kept(&logits, &config(0, 0.01)), [true, false, false, false]);
        // Top-p applies to what top-k left, renormalised: 2/3 and 1/3.
        assert_eq!(kept(&logits, &config(2, 0.6)), [true, false, false, false]);
    }

    #[test]
    fn nonsense_configs_are_rejected() {
        let cases = [
            (
                "max_new_tokens",
                SamplingConfig {
                    max_new_tokens: 0,
                    ..Default::default()
                },
            ),
            (
                "temperature",
                SamplingConfig {
                    temperature: -1.0,
                    ..Default::default()
                },
            ),
            (
                "temperature",
                SamplingConfig {
                    temperature: f64::NAN,
                    ..Default::default()
                },
            ),
            (
                "top_p",
                SamplingConfig {
                    top_p: 0.0,
                    ..Default::default()
                },
            ),
            (
                "top_p",
                SamplingConfig {
                    top_p: 1.5,
                    ..Default::default()
                },
            ),
            (
                "stop_strings",
                SamplingConfig {
                    stop_strings: vec![String::new()],
                    ..Default::default()
                },
            ),
        ];
        for (field, config) in cases {
            match config.validate() {
                Err(SamplingError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        SamplingConfig::default().validate().unwrap();
    }

    #[test]
    fn stop_end_takes_the_earliest_ending_stop_string() {
        let stops = ["</answer>".to_owned(), "b".to_owned()];
        assert_eq!(stop_end("a</answer>b", &stops), Some(10));
        assert_eq!(stop_end("ab</answer>", &stops), Some(2));
        assert_eq!(stop_end("a", &stops), None);
    }
}
