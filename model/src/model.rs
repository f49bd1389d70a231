//! The Qwen2 decoder: embedding, `num_hidden_layers` pre-norm blocks, final norm, LM head.

use std::path::Path;

use tch::{Device, Kind, Tensor, nn};

use crate::attention::{Attention, Past};
use crate::layers::{Linear, Mlp, RmsNorm};
use crate::rope::Rope;
use crate::{KvCache, ModelError, Precision, Qwen2Config, weights};

/// A Qwen2-family causal language model.
///
/// Its parameters live in a [`nn::VarStore`] under the Hugging Face names
/// (`model.layers.0.self_attn.q_proj.weight`, ...), so an optimiser built on
/// [`Qwen2::var_store`] trains them and a saved store is a transformers-compatible checkpoint.
#[derive(Debug)]
pub struct Qwen2 {
    config: Qwen2Config,
    precision: Precision,
    vs: nn::VarStore,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// `None` when the head is tied to the embedding (`tie_word_embeddings`).
    lm_head: Option<Linear>,
    rope: Rope,
}

#[derive(Debug)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn new(path: nn::Path, config: &Qwen2Config) -> Result<Self, ModelError> {
        let (hidden, eps) = (config.hidden_size, config.rms_norm_eps);
        Ok(Self {
            input_layernorm: RmsNorm::new(&path / "input_layernorm", hidden, eps)?,
            self_attn: Attention::new(&path / "self_attn", config)?,
            post_attention_layernorm: RmsNorm::new(
                &path / "post_attention_layernorm",
                hidden,
                eps,
            )?,
            mlp: Mlp::new(&path / "mlp", hidden, config.intermediate_size)?,
        })
    }
}

impl Qwen2 {
    /// A model with the given shape whose weights are still to be loaded (norm scales are one,
    /// everything else zero).
    pub fn new(
        config: Qwen2Config,
        device: Device,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        let mut vs = nn::VarStore::new(device);
        // Set before creating variables, so they are allocated in this kind directly.
        vs.set_kind(precision.weight_kind());
        let root = vs.root();
        let model = &root / "model";
        let embed_tokens = (&model / "embed_tokens")
            .f_zeros("weight", &[config.vocab_size, config.hidden_size])?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::new(&model / "layers" / i, &config))
            .collect::<Result<Vec<_>, _>>()?;
        let norm = RmsNorm::new(&model / "norm", config.hidden_size, config.rms_norm_eps)?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(Linear::new(
                &root / "lm_head",
                config.hidden_size,
                config.vocab_size,
                false,
            )?)
        };
        let rope = Rope::new(config.head_dim, config.rope_theta, device)?;
        Ok(Self {
            config,
            precision,
            vs,
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
        })
    }

    /// Loads a model directory as saved by transformers: `config.json` and `model.safetensors` or
    /// the shards of `model.safetensors.index.json`.
    pub fn load(dir: &Path, device: Device, precision: Precision) -> Result<Self, ModelError> {
        let mut model = Self::new(Qwen2Config::from_dir(dir)?, device, precision)?;
        model.load_weights(dir)?;
        Ok(model)
    }

    /// Replaces every weight with the checkpoint's in `dir`; every parameter must be present.
    pub fn load_weights(&mut self, dir: &Path) -> Result<(), ModelError> {
        let files = weights::checkpoint_files(dir)?;
        // A tied checkpoint may still carry a copy of the head; transformers ignores it too.
        let ignored: &[&str] = if self.config.tie_word_embeddings {
            &["lm_head.weight"]
        } else {
            &[]
        };
        weights::load(&self.vs, &files, ignored)
    }

    pub fn config(&self) -> &Qwen2Config {
        &self.config
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The parameters, for an optimiser or a checkpoint.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// Kind of the activations and KV cache entries.
    pub(crate) fn activation_kind(&self) -> Kind {
        self.precision.weight_kind()
    }

    /// Logits `[batch, seq, vocab]` for `input_ids` (`[batch, seq]`, int64, on the model's device).
    ///
    /// `attention_mask` (`[batch, cached + seq]`, nonzero for real tokens) covers the cached
    /// positions and the new ones; `None` means no padding. Padding may be on either side:
    /// positions count only real tokens (as transformers' `generate` does), so a left-padded
    /// prompt gets the same logits as unpadded. Logits at padded positions are meaningless.
    ///
    /// With a cache, the new tokens' keys and values are appended to it and the tokens attend to
    /// everything cached: feed the prompt once, then one token per step.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor, ModelError> {
        self.forward_keep(input_ids, attention_mask, cache, 0)
    }

    /// [`Self::forward`], with the LM head applied only to the last `logits_to_keep` positions
    /// (transformers' `logits_to_keep`): logits `[batch, logits_to_keep, vocab]`, the same values
    /// as the last columns of [`Self::forward`]'s. 0 keeps every position. The cache is filled
    /// for every position either way.
    ///
    /// For sampling, keep 1 after a left-padded prompt: the last column is every row's last real
    /// token.
    pub fn forward_keep(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        logits_to_keep: i64,
    ) -> Result<Tensor, ModelError> {
        let seq = input_ids.size().last().copied().unwrap_or(0);
        if !(0..=seq).contains(&logits_to_keep) {
            return Err(ModelError::Input(format!(
                "logits_to_keep must be in 0..={seq}, got {logits_to_keep}"
            )));
        }
        let (start, len) = if logits_to_keep == 0 {
            (0, seq)
        } else {
            (seq - logits_to_keep, logits_to_keep)
        };
        tch::autocast(self.precision.autocast(), || {
            self.forward_inner(input_ids, attention_mask, cache, start, len)
        })
    }

    fn forward_inner(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
        keep_start: i64,
        keep_len: i64,
    ) -> Result<Tensor, ModelError> {
        let (batch, seq) = check_ids(input_ids)?;
        let past = match cache.as_deref() {
            Some(cache) => {
                cache.check_room(batch, seq)?;
                cache.len()
            }
            None => 0,
        };
        let total = past + seq;
        let device = self.device();
        let valid = match attention_mask {
            Some(mask) if mask.size() == [batch, total] => mask.f_ne(0)?.f_to_device(device)?,
            Some(mask) => {
                return Err(ModelError::Input(format!(
                    "attention_mask must be [{batch}, {total}] (cached + new positions), got {:?}",
                    mask.size()
                )));
            }
            None => Tensor::f_ones([batch, total], (Kind::Bool, device))?,
        };
        let h = match cache.as_deref_mut() {
            Some(cache) => self.hidden(input_ids, &valid, past, Layers::Cache(cache))?,
            None => self.hidden(input_ids, &valid, 0, Layers::Plain)?,
        };
        if let Some(cache) = cache {
            cache.advance(seq);
        }
        // Only the kept positions go through the final norm and the LM head, the widest matmul.
        let h = if keep_start == 0 && keep_len == seq {
            h
        } else {
            h.f_narrow(1, keep_start, keep_len)?
        };
        self.head(&h)
    }

    /// The last layer's hidden states `[batch, seq, hidden]` of `input_ids`, which follow `past`
    /// earlier positions; `valid` (`[batch, past + seq]`, bool) marks the real tokens of both.
    fn hidden(
        &self,
        input_ids: &Tensor,
        valid: &Tensor,
        past: i64,
        mut layers: Layers<'_>,
    ) -> Result<Tensor, ModelError> {
        let seq = input_ids.size().last().copied().unwrap_or(0);
        let (mask, positions) = mask_and_positions(valid, past, seq)?;
        let rope = self.rope.tables(&positions, self.activation_kind())?;
        let mut h = Tensor::f_embedding(&self.embed_tokens, input_ids, -1, false, false)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let past = match &mut layers {
                Layers::Plain => Past::none(),
                Layers::Cache(cache) => Past::Cache(cache, i),
                Layers::Prefix { prefix, collect } => Past::Prefix {
                    prefix: match prefix {
                        Some(prefix) => {
                            let (keys, values) = prefix.get(i).ok_or_else(|| {
                                ModelError::Input(format!("the prefix has no keys for layer {i}"))
                            })?;
                            Some((keys, values))
                        }
                        None => None,
                    },
                    collect: collect.as_deref_mut(),
                },
            };
            let normed = layer.input_layernorm.forward(&h)?;
            let attn = layer.self_attn.forward(&normed, &rope, &mask, past)?;
            h = h.f_add(&attn)?;
            let normed = layer.post_attention_layernorm.forward(&h)?;
            h = h.f_add(&layer.mlp.forward(&normed)?)?;
        }
        Ok(h)
    }

    /// Final norm and LM head: logits for hidden states.
    fn head(&self, h: &Tensor) -> Result<Tensor, ModelError> {
        let h = self.norm.forward(h)?;
        match &self.lm_head {
            Some(head) => head.forward(&h),
            None => Ok(h.f_linear(&self.embed_tokens, None::<&Tensor>)?),
        }
    }

    /// Log-probabilities `[batch, seq - 1]` (f32) of each token given the ones before it: entry
    /// `t` is `log p(input_ids[t + 1] | input_ids[..=t])`, zero where token `t + 1` or token `t` is
    /// padding (the first real token of a left-padded row has no context to be predicted from).
    /// Differentiable, for the GRPO loss; wrap in `tch::no_grad` for reference/old-policy values.
    pub fn token_logprobs(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor, ModelError> {
        self.token_logprobs_from(input_ids, attention_mask, 0)
    }

    /// [`Self::token_logprobs`] computed only from column `first` on (TRL's `logits_to_keep`,
    /// counted from the left): the result keeps the full `[batch, seq - 1]` shape, columns
    /// `first..` equal [`Self::token_logprobs`]'s and columns before `first` are zero (and carry
    /// no gradient). The LM head and the vocabulary-wide softmax run only on the kept columns,
    /// which is where a GRPO step spends most of its time on a large vocabulary.
    /// `first` must be in `0..seq - 1`.
    pub fn token_logprobs_from(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        first: i64,
    ) -> Result<Tensor, ModelError> {
        let seq = input_ids.size().last().copied().unwrap_or(0);
        if seq < 2 {
            return Err(ModelError::Input(format!(
                "token_logprobs needs at least 2 tokens per sequence, got {seq}"
            )));
        }
        if !(0..seq - 1).contains(&first) {
            return Err(ModelError::Input(format!(
                "the first log-probability column must be in 0..{}, got {first}",
                seq - 1
            )));
        }
        let kept = seq - 1 - first;
        // Logits at positions first..seq-1 predict tokens first+1..seq (the last position's
        // prediction is of no token).
        let logits = tch::autocast(self.precision.autocast(), || {
            self.forward_inner(input_ids, attention_mask, None, first, kept)
        })?
        .f_to_kind(Kind::Float)?;
        let targets = input_ids.f_narrow(1, first + 1, kept)?;
        // gather - logsumexp: the same as log_softmax then gather, without materialising a second
        // [batch, kept, vocab] tensor.
        let picked = logits
            .f_gather(-1, &targets.f_unsqueeze(-1)?, false)?
            .f_squeeze_dim(-1)?;
        let logprobs = picked.f_sub(&logits.f_logsumexp([-1], false)?)?;
        let logprobs = match attention_mask {
            Some(mask) => {
                let real = mask.f_ne(0)?.f_to_device(logprobs.device())?;
                let keep = real
                    .f_narrow(1, first + 1, kept)?
                    .f_logical_and(&real.f_narrow(1, first, kept)?)?;
                logprobs.f_where_self(&keep, &logprobs.f_zeros_like()?)?
            }
            None => logprobs,
        };
        if first == 0 {
            Ok(logprobs)
        } else {
            Ok(logprobs.f_constant_pad_nd([first, 0])?)
        }
    }

    /// [`Self::token_logprobs`] at the completion tokens only (the entries predicting a token
    /// under `completion_mask`, `[batch, seq]`; every other entry is zero), computing each
    /// distinct prompt once however many rows continue it.
    ///
    /// A row's prompt is its real tokens before its first completion token, its continuation the
    /// real tokens from there on. GRPO asks every question G times, so the prompts, usually
    /// most of each row, run through the model once per question rather than once per row: their
    /// keys and values, and the hidden state that predicts the first completion token, are
    /// computed for the distinct prompts and shared by the rows that continue them (with their
    /// gradient). The values equal [`Self::token_logprobs`]' up to float rounding. When no row
    /// has a completion token the result is all zeros and carries no gradient.
    pub fn completion_logprobs(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        completion_mask: &Tensor,
    ) -> Result<Tensor, ModelError> {
        let (batch, seq) = check_ids(input_ids)?;
        for (what, mask) in [
            ("attention_mask", attention_mask),
            ("completion_mask", completion_mask),
        ] {
            if mask.size() != [batch, seq] {
                return Err(ModelError::Input(format!(
                    "{what} must be [{batch}, {seq}] like input_ids, got {:?}",
                    mask.size()
                )));
            }
        }
        if seq < 2 {
            return Err(ModelError::Input(format!(
                "completion_logprobs needs at least 2 tokens per sequence, got {seq}"
            )));
        }
        let device = self.device();
        let layout = SharedPrompts::of(input_ids, attention_mask, completion_mask)?;
        let zeros = Tensor::f_zeros([batch, seq - 1], (Kind::Float, device))?;
        if layout.continuation_len == 0 {
            return Ok(zeros);
        }
        let tensors = layout.tensors(device)?;
        let logprobs = tch::autocast(self.precision.autocast(), || {
            // The part every prompt shares (a system prompt), once.
            let mut common = Vec::with_capacity(self.layers.len());
            if let Some(common_ids) = &tensors.common_ids {
                let valid = common_ids.f_ones_like()?.f_to_kind(Kind::Bool)?;
                // Only its keys and values serve: its last position predicts nothing here.
                let _ = self.hidden(
                    common_ids,
                    &valid,
                    0,
                    Layers::Prefix {
                        prefix: None,
                        collect: Some(&mut common),
                    },
                )?;
            }
            let prompts = tensors.prompt_ids.size()[0];
            let common = common
                .iter()
                .map(|(k, v)| {
                    Ok((
                        k.f_expand([prompts, -1, -1, -1], false)?,
                        v.f_expand([prompts, -1, -1, -1], false)?,
                    ))
                })
                .collect::<Result<Vec<_>, ModelError>>()?;
            // The rest of each distinct prompt, once.
            let mut prefix = Vec::with_capacity(self.layers.len());
            let prompt_hidden = self.hidden(
                &tensors.prompt_ids,
                &tensors.prompt_valid,
                layout.common.len() as i64,
                Layers::Prefix {
                    prefix: (!common.is_empty()).then_some(common.as_slice()),
                    collect: Some(&mut prefix),
                },
            )?;
            let rows = &tensors.prompt_of_row;
            let prefix = prefix
                .iter()
                .map(|(k, v)| Ok((k.f_index_select(0, rows)?, v.f_index_select(0, rows)?)))
                .collect::<Result<Vec<_>, ModelError>>()?;
            let valid = Tensor::f_cat(
                &[
                    &tensors.prompt_valid.f_index_select(0, rows)?,
                    &tensors.continuation_valid,
                ],
                1,
            )?;
            let prompt_width = tensors.prompt_valid.size()[1];
            let continuation_hidden = self.hidden(
                &tensors.continuation_ids,
                &valid,
                prompt_width,
                Layers::Prefix {
                    prefix: Some(&prefix),
                    collect: None,
                },
            )?;
            // The last prompt position predicts the first continuation token; continuation
            // position j predicts token j + 1.
            let last_prompt = prompt_hidden
                .f_select(1, prompt_hidden.size()[1] - 1)?
                .f_index_select(0, rows)?
                .f_unsqueeze(1)?;
            let predictors = Tensor::f_cat(
                &[
                    &last_prompt,
                    &continuation_hidden.f_narrow(1, 0, layout.continuation_len - 1)?,
                ],
                1,
            )?;
            self.head(&predictors)
        })?
        .f_to_kind(Kind::Float)?;
        let targets = &tensors.continuation_ids;
        let picked = logprobs
            .f_gather(-1, &targets.f_unsqueeze(-1)?, false)?
            .f_squeeze_dim(-1)?;
        let logprobs = picked
            .f_sub(&logprobs.f_logsumexp([-1], false)?)?
            .f_where_self(&tensors.continuation_valid, &picked.f_zeros_like()?)?;
        // Back to the row layout: adding the padding entries' zeros anywhere changes nothing.
        Ok(zeros.f_scatter_add(1, &tensors.columns, &logprobs)?)
    }
}

/// How a forward pass relates to earlier positions.
enum Layers<'a> {
    /// There are none.
    Plain,
    /// Earlier positions are in the cache, and the new ones go there too.
    Cache(&'a mut KvCache),
    /// The tokens continue a prefix (each layer's keys and values), when there is one; with
    /// `collect`, each layer's keys and values of prefix and tokens are handed back.
    Prefix {
        prefix: Option<&'a [(Tensor, Tensor)]>,
        collect: Option<&'a mut Vec<(Tensor, Tensor)>>,
    },
}

/// `(batch, seq)` of a non-empty int64 `[batch, seq]` tensor of token ids.
fn check_ids(input_ids: &Tensor) -> Result<(i64, i64), ModelError> {
    match input_ids.size2() {
        Ok((batch, seq)) if input_ids.kind() == Kind::Int64 && seq > 0 => Ok((batch, seq)),
        _ => Err(ModelError::Input(format!(
            "input_ids must be non-empty int64 [batch, seq], got {:?} of {:?}",
            input_ids.size(),
            input_ids.kind()
        ))),
    }
}

/// Rows of a batch split into distinct prompts and the continuations after them, built on the
/// CPU from the masks; the distinct prompts split again into the tokens they all begin with (a
/// system prompt) and their own rest.
struct SharedPrompts {
    /// Tokens every distinct prompt begins with (empty for fewer than two prompts); each prompt
    /// keeps at least one token of its own.
    common: Vec<i64>,
    /// The distinct prompts after `common`.
    prompts: Vec<Vec<i64>>,
    prompt_of_row: Vec<i64>,
    /// Per row: its continuation's tokens and their positions in the row.
    continuations: Vec<Vec<(i64, i64)>>,
    /// The longest prompt rest.
    prompt_len: i64,
    /// The longest continuation.
    continuation_len: i64,
}

/// [`SharedPrompts`] as tensors: the prompt rests left-padded (so their last column is every
/// prompt's last token), continuations right-padded.
struct SharedPromptTensors {
    /// `[1, common]`, when there is a common part.
    common_ids: Option<Tensor>,
    prompt_ids: Tensor,
    /// `[prompts, common + prompt_len]`: the common part (all real) and the rest.
    prompt_valid: Tensor,
    prompt_of_row: Tensor,
    continuation_ids: Tensor,
    continuation_valid: Tensor,
    /// `[batch, continuation_len]`: the row-layout column of each continuation token's
    /// log-probability (its position - 1); 0 for padding.
    columns: Tensor,
}

impl SharedPrompts {
    fn of(
        input_ids: &Tensor,
        attention_mask: &Tensor,
        completion_mask: &Tensor,
    ) -> Result<Self, ModelError> {
        let rows = |t: &Tensor| -> Result<Vec<Vec<i64>>, ModelError> {
            Ok(Vec::<Vec<i64>>::try_from(
                t.f_to_kind(Kind::Int64)?.f_to_device(Device::Cpu)?,
            )?)
        };
        let (ids, attention, completion) = (
            rows(input_ids)?,
            rows(attention_mask)?,
            rows(completion_mask)?,
        );
        let mut layout = Self {
            common: Vec::new(),
            prompts: Vec::new(),
            prompt_of_row: Vec::with_capacity(ids.len()),
            continuations: Vec::with_capacity(ids.len()),
            prompt_len: 0,
            continuation_len: 0,
        };
        let mut index: std::collections::HashMap<Vec<i64>, usize> =
            std::collections::HashMap::new();
        for ((ids, attention), completion) in ids.iter().zip(&attention).zip(&completion) {
            let mut prompt = Vec::new();
            let mut continuation = Vec::new();
            for (position, ((&id, &real), &trained)) in
                ids.iter().zip(attention).zip(completion).enumerate()
            {
                if real == 0 {
                    continue;
                }
                // A token with nothing before it cannot be predicted: it opens the prompt.
                if continuation.is_empty() && (trained == 0 || prompt.is_empty()) {
                    prompt.push(id);
                } else {
                    continuation.push((id, position as i64));
                }
            }
            if prompt.is_empty() {
                // A row of padding only: one padding token stands in, and nothing is predicted.
                prompt.push(0);
            }
            let prompt_index = match index.get(&prompt) {
                Some(&existing) => existing,
                None => {
                    index.insert(prompt.clone(), layout.prompts.len());
                    layout.prompts.push(prompt);
                    layout.prompts.len() - 1
                }
            };
            layout.prompt_of_row.push(prompt_index as i64);
            layout.continuation_len = layout.continuation_len.max(continuation.len() as i64);
            layout.continuations.push(continuation);
        }
        if layout.prompts.len() > 1 {
            let shortest = layout.prompts.iter().map(Vec::len).min().unwrap_or(0);
            let first = &layout.prompts[0];
            let common = (0..shortest.saturating_sub(1))
                .take_while(|&i| layout.prompts.iter().all(|p| p[i] == first[i]))
                .count();
            layout.common = first[..common].to_vec();
            for prompt in &mut layout.prompts {
                prompt.drain(..common);
            }
        }
        layout.prompt_len = layout.prompts.iter().map(Vec::len).max().unwrap_or(1) as i64;
        Ok(layout)
    }

    fn tensors(&self, device: Device) -> Result<SharedPromptTensors, ModelError> {
        let (width, len) = (self.prompt_len as usize, self.continuation_len as usize);
        let (mut prompt_ids, mut prompt_valid) = (Vec::new(), Vec::new());
        for prompt in &self.prompts {
            let padding = width - prompt.len();
            prompt_ids.extend(std::iter::repeat_n(0, padding).chain(prompt.iter().copied()));
            prompt_valid.extend(std::iter::repeat_n(true, self.common.len()));
            prompt_valid.extend(
                std::iter::repeat_n(false, padding).chain(std::iter::repeat_n(true, prompt.len())),
            );
        }
        let (mut ids, mut valid, mut columns) = (Vec::new(), Vec::new(), Vec::new());
        for continuation in &self.continuations {
            let padding = len - continuation.len();
            ids.extend(continuation.iter().map(|(id, _)| *id));
            ids.extend(std::iter::repeat_n(0, padding));
            valid.extend(std::iter::repeat_n(true, continuation.len()));
            valid.extend(std::iter::repeat_n(false, padding));
            columns.extend(continuation.iter().map(|(_, position)| position - 1));
            columns.extend(std::iter::repeat_n(0, padding));
        }
        let (prompts, rows) = (self.prompts.len() as i64, self.continuations.len() as i64);
        let tensor = |values: &[i64], shape: &[i64]| -> Result<Tensor, ModelError> {
            Ok(Tensor::f_from_slice(values)?
                .f_view(shape)?
                .f_to_device(device)?)
        };
        let mask = |values: &[bool], shape: &[i64]| -> Result<Tensor, ModelError> {
            Ok(Tensor::f_from_slice(values)?
                .f_view(shape)?
                .f_to_device(device)?)
        };
        let common = self.common.len() as i64;
        Ok(SharedPromptTensors {
            common_ids: if self.common.is_empty() {
                None
            } else {
                Some(tensor(&self.common, &[1, common])?)
            },
            prompt_ids: tensor(&prompt_ids, &[prompts, self.prompt_len])?,
            prompt_valid: mask(&prompt_valid, &[prompts, common + self.prompt_len])?,
            prompt_of_row: tensor(&self.prompt_of_row, &[rows])?,
            continuation_ids: tensor(&ids, &[rows, self.continuation_len])?,
            continuation_valid: mask(&valid, &[rows, self.continuation_len])?,
            columns: tensor(&columns, &[rows, self.continuation_len])?,
        })
    }
}

/// From `valid` (`[batch, keys]`, bool, true for real tokens) and the number of cached positions:
/// the boolean attention mask `[batch, 1, seq, keys]` and the rotary positions `[batch, seq]`.
///
/// A query attends to real keys at or before it, and always to itself: a padding query would
/// otherwise have no key at all, its softmax would be NaN, and the NaN would reach real tokens
/// through the next layer's values (0 * NaN is NaN). What padding positions compute is ignored.
fn mask_and_positions(valid: &Tensor, past: i64, seq: i64) -> Result<(Tensor, Tensor), ModelError> {
    let device = valid.device();
    let keys = valid.size().last().copied().unwrap_or(0);
    let positions = valid
        .f_to_kind(Kind::Int64)?
        .f_cumsum(-1, Kind::Int64)?
        .f_sub_scalar(1)?
        .f_clamp_min(0)?
        .f_narrow(1, past, seq)?;
    let query_index =
        Tensor::f_arange_start(past, past + seq, (Kind::Int64, device))?.f_unsqueeze(1)?;
    let key_index = Tensor::f_arange(keys, (Kind::Int64, device))?.f_unsqueeze(0)?;
    let causal = key_index.f_le_tensor(&query_index)?;
    let itself = key_index.f_eq_tensor(&query_index)?;
    let mask = causal
        .f_unsqueeze(0)?
        .f_logical_and(&valid.f_unsqueeze(1)?)?
        .f_logical_or(&itself.f_unsqueeze(0)?)?
        .f_unsqueeze(1)?;
    Ok((mask, positions))
}
