//! Grouped-query self-attention as in Qwen2: biased q/k/v projections, unbiased output
//! projection, rotary embeddings on queries and keys, `num_key_value_heads` shared by groups of
//! query heads.

use tch::{Tensor, nn};

use crate::config::Qwen2Config;
use crate::layers::Linear;
use crate::rope::RopeTables;
use crate::{KvCache, ModelError};

/// Where a layer's keys and values for earlier positions come from, and where its new ones go.
pub(crate) enum Past<'a> {
    /// An incremental-decoding cache: the new keys and values are stored as slot `layer`, and the
    /// tokens attend to everything cached.
    Cache(&'a mut KvCache, usize),
    /// The new tokens continue `prefix`'s keys and values (`[batch, kv_heads, prefix, head_dim]`),
    /// when there is one; with `collect`, the keys and values of prefix and new tokens together
    /// are handed back (with their gradient), to serve as the prefix of later tokens.
    Prefix {
        prefix: Option<(&'a Tensor, &'a Tensor)>,
        collect: Option<&'a mut Vec<(Tensor, Tensor)>>,
    },
}

impl Past<'_> {
    /// No earlier positions, nothing handed back.
    pub(crate) fn none() -> Self {
        Past::Prefix {
            prefix: None,
            collect: None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    num_heads: i64,
    num_kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    pub(crate) fn new(path: nn::Path, config: &Qwen2Config) -> Result<Self, ModelError> {
        let hidden = config.hidden_size;
        let q_dim = config.num_attention_heads * config.head_dim;
        let kv_dim = config.num_key_value_heads * config.head_dim;
        Ok(Self {
            q_proj: Linear::new(&path / "q_proj", hidden, q_dim, true)?,
            k_proj: Linear::new(&path / "k_proj", hidden, kv_dim, true)?,
            v_proj: Linear::new(&path / "v_proj", hidden, kv_dim, true)?,
            o_proj: Linear::new(&path / "o_proj", q_dim, hidden, false)?,
            num_heads: config.num_attention_heads,
            num_kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim,
        })
    }

    /// `x`: `[batch, seq, hidden]`; `mask`: boolean `[batch, 1, seq, keys]`, true where a query may
    /// attend a key, with `keys` = earlier (`past`) + new positions.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        mask: &Tensor,
        past: Past<'_>,
    ) -> Result<Tensor, ModelError> {
        let (batch, seq, _) = x.size3()?;
        let heads = |t: Tensor, n: i64| -> Result<Tensor, ModelError> {
            Ok(t.f_reshape([batch, seq, n, self.head_dim])?
                .f_transpose(1, 2)?)
        };
        let q = rope.apply(&heads(self.q_proj.forward(x)?, self.num_heads)?)?;
        let k = rope.apply(&heads(self.k_proj.forward(x)?, self.num_kv_heads)?)?;
        let v = heads(self.v_proj.forward(x)?, self.num_kv_heads)?;
        let (k, v) = match past {
            Past::Cache(cache, layer) => cache.store(layer, &k, &v)?,
            Past::Prefix { prefix, collect } => {
                let (k, v) = match prefix {
                    Some((keys, values)) => (
                        Tensor::f_cat(&[keys, &k], 2)?,
                        Tensor::f_cat(&[values, &v], 2)?,
                    ),
                    None => (k, v),
                };
                if let Some(collected) = collect {
                    collected.push((k.shallow_clone(), v.shallow_clone()));
                }
                (k, v)
            }
        };
        // Each key/value head serves `group` consecutive query heads (transformers' repeat_kv).
        let group = self.num_heads / self.num_kv_heads;
        let (k, v) = if group > 1 {
            (
                k.f_repeat_interleave_self_int(group, 1, None)?,
                v.f_repeat_interleave_self_int(group, 1, None)?,
            )
        } else {
            (k, v)
        };
        let out = Tensor::f_scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(mask),
            0.0,
            false,
            None,
            false,
        )?;
        let out = out
            .f_transpose(1, 2)?
            .f_reshape([batch, seq, self.num_heads * self.head_dim])?;
        self.o_proj.forward(&out)
    }
}
