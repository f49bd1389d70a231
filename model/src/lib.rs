//! The language model a swarm member trains: a decoder-only transformer of the Qwen2 family in tch.
//!
//! - [`Qwen2Config`] reads a Hugging Face `config.json`.
//! - [`Qwen2`] holds the weights in a [`tch::nn::VarStore`] under their Hugging Face names, so an
//!   optimiser can train them and checkpoints stay loadable by `transformers`; it loads
//!   `model.safetensors` or a sharded `model.safetensors.index.json`.
//! - [`Qwen2::forward`] returns logits for a padded batch, optionally through a [`KvCache`] for
//!   incremental decoding; [`Qwen2::token_logprobs`] gives the log-probabilities GRPO needs.
//! - [`ChatTokenizer`] wraps `tokenizer.json` and renders the ChatML chat template Qwen2 expects.
//!
//! Numerics follow `transformers`' Qwen2 so that logits agree within 1e-4 in f32 (see the fixture
//! test): RMSNorm and rotary tables in f32, biased q/k/v projections, grouped-query attention.

mod attention;
mod cache;
mod config;
mod error;
mod layers;
mod model;
mod rope;
mod tokenizer;
mod weights;

pub use cache::KvCache;
pub use config::{Precision, Qwen2Config};
pub use error::ModelError;
pub use model::Qwen2;
pub use tokenizer::{ChatMessage, ChatTokenizer, QWEN2_DEFAULT_SYSTEM, Role};
