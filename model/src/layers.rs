//! The small building blocks of a Qwen2 layer. Parameters are created as zeros in the var store
//! under their Hugging Face names and filled by the weight loader, so building a large model does
//! not waste time on a random initialisation that is overwritten anyway.

use tch::{Kind, Tensor, nn};

use crate::ModelError;

/// `y = x W^T + b`, as `torch.nn.Linear`.
#[derive(Debug)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub(crate) fn new(
        path: nn::Path,
        in_dim: i64,
        out_dim: i64,
        bias: bool,
    ) -> Result<Self, ModelError> {
        let weight = path.f_zeros("weight", &[out_dim, in_dim])?;
        let bias = if bias {
            Some(path.f_zeros("bias", &[out_dim])?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(x.f_linear(&self.weight, self.bias.as_ref())?)
    }
}

/// Root-mean-square layer norm as Qwen2RMSNorm: normalised in f32 whatever the activation dtype,
/// because the mean of squares loses too much in bf16; scaled after casting back.
#[derive(Debug)]
pub(crate) struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub(crate) fn new(path: nn::Path, dim: i64, eps: f64) -> Result<Self, ModelError> {
        Ok(Self {
            weight: path.f_ones("weight", &[dim])?,
            eps,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let kind = x.kind();
        let x32 = x.f_to_kind(Kind::Float)?;
        let variance = x32.f_square()?.f_mean_dim(-1, true, Kind::Float)?;
        let normed = x32.f_mul(&variance.f_add_scalar(self.eps)?.f_rsqrt()?)?;
        Ok(self.weight.f_mul(&normed.f_to_kind(kind)?)?)
    }
}

/// SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`, no biases.
#[derive(Debug)]
pub(crate) struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    pub(crate) fn new(path: nn::Path, hidden: i64, intermediate: i64) -> Result<Self, ModelError> {
        Ok(Self {
            gate_proj: Linear::new(&path / "gate_proj", hidden, intermediate, false)?,
            up_proj: Linear::new(&path / "up_proj", hidden, intermediate, false)?,
            down_proj: Linear::new(&path / "down_proj", intermediate, hidden, false)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let gate = self.gate_proj.forward(x)?.f_silu()?;
        self.down_proj
            .forward(&gate.f_mul(&self.up_proj.forward(x)?)?)
    }
}
