//! The Qwen2 decoder: embedding, `num_hidden_layers` pre-norm blocks, final norm, LM head.

use std::path::Path;

use tch::{Device, Kind, Tensor, nn};

use crate::attention::Attention;
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
        let (batch, seq) = input_ids.size2().map_err(|_| {
            ModelError::Input(format!(
                "input_ids must be [batch, seq], got {:?}",
                input_ids.size()
            ))
        })?;
        if input_ids.kind() != Kind::Int64 || seq == 0 {
            return Err(ModelError::Input(format!(
                "input_ids must be non-empty int64, got {:?} of {:?}",
                input_ids.size(),
                input_ids.kind()
            )));
        }
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
        let (mask, positions) = mask_and_positions(&valid, past, seq)?;
        let rope = self.rope.tables(&positions, self.activation_kind())?;

        let mut h = Tensor::f_embedding(&self.embed_tokens, input_ids, -1, false, false)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let normed = layer.input_layernorm.forward(&h)?;
            let attn = layer.self_attn.forward(
                &normed,
                &rope,
                &mask,
                cache.as_deref_mut().map(|c| (c, i)),
            )?;
            h = h.f_add(&attn)?;
            let normed = layer.post_attention_layernorm.forward(&h)?;
            h = h.f_add(&layer.mlp.forward(&normed)?)?;
        }
        if let Some(cache) = cache {
            cache.advance(seq);
        }
        // Only the kept positions go through the final norm and the LM head, the widest matmul.
        let h = if keep_start == 0 && keep_len == seq {
            h
        } else {
            h.f_narrow(1, keep_start, keep_len)?
        };
        let h = self.norm.forward(&h)?;
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
