//! Rotary position embeddings, the "default" variant of transformers' Qwen2RotaryEmbedding:
//! dimension pairs `(i, i + d/2)` (rotate-half layout, not interleaved) turn by
//! `position * theta^(-2i/d)`.

use tch::{Device, Kind, Tensor};

use crate::ModelError;

#[derive(Debug)]
pub(crate) struct Rope {
    /// `theta^(-2i/d)` for `i < d/2`, in f32 as transformers computes it.
    inv_freq: Tensor,
}

/// `cos` and `sin` tables for one forward pass, shaped `[batch, 1, seq, head_dim]` so they
/// broadcast over heads; shared by every layer.
pub(crate) struct RopeTables {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    pub(crate) fn new(head_dim: i64, theta: f64, device: Device) -> Result<Self, ModelError> {
        let exponent = Tensor::f_arange_start_step(0, head_dim, 2, (Kind::Int64, device))?
            .f_to_kind(Kind::Float)?
            .f_div_scalar(head_dim as f64)?;
        let inv_freq = Tensor::f_pow_scalar(theta, &exponent)?.f_reciprocal()?;
        Ok(Self { inv_freq })
    }

    /// Tables for `positions` (`[batch, seq]`, int64), cast to the activation kind. The angles are
    /// computed in f32 even under bf16: a bf16 angle at position 1000 is off by several radians.
    pub(crate) fn tables(&self, positions: &Tensor, kind: Kind) -> Result<RopeTables, ModelError> {
        let freqs = positions
            .f_to_kind(Kind::Float)?
            .f_unsqueeze(-1)?
            .f_mul(&self.inv_freq)?;
        let emb = Tensor::f_cat(&[&freqs, &freqs], -1)?.f_unsqueeze(1)?;
        Ok(RopeTables {
            cos: emb.f_cos()?.f_to_kind(kind)?,
            sin: emb.f_sin()?.f_to_kind(kind)?,
        })
    }
}

impl RopeTables {
    /// Rotates `x` (`[batch, heads, seq, head_dim]`).
    pub(crate) fn apply(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let half = x.size().last().copied().unwrap_or(0) / 2;
        let x1 = x.f_narrow(-1, 0, half)?;
        let x2 = x.f_narrow(-1, half, half)?;
        let rotated = Tensor::f_cat(&[&x2.f_neg()?, &x1], -1)?;
        Ok(x.f_mul(&self.cos)?.f_add(&rotated.f_mul(&self.sin)?)?)
    }
}
