use std::path::Path;

use serde::Deserialize;
use tch::{Device, Kind};

use crate::ModelError;

/// Shape and numerics of a Qwen2-family model, read from a Hugging Face `config.json`.
///
/// Only the fields the forward pass needs are kept; options this implementation does not support
/// (sliding-window attention, rope scaling, activations other than SiLU) are rejected when the
/// config is read rather than silently computing something else.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2Config {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_key_value_heads: i64,
    pub head_dim: i64,
    pub max_position_embeddings: i64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    /// Token ids that end a generation (`eos_token_id`, a number or a list in the file).
    pub eos_token_ids: Vec<i64>,
}

/// The file as written by `transformers`; fields the model does not need are ignored.
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: i64,
    hidden_size: i64,
    intermediate_size: i64,
    num_hidden_layers: i64,
    num_attention_heads: i64,
    num_key_value_heads: Option<i64>,
    head_dim: Option<i64>,
    max_position_embeddings: i64,
    rms_norm_eps: f64,
    /// transformers < 5 writes `rope_theta` at the top level ...
    rope_theta: Option<f64>,
    /// ... transformers >= 5 writes `rope_parameters: {rope_type, rope_theta}` instead.
    rope_parameters: Option<RopeParameters>,
    rope_scaling: Option<RopeParameters>,
    #[serde(default)]
    tie_word_embeddings: bool,
    hidden_act: Option<String>,
    #[serde(default)]
    use_sliding_window: bool,
    eos_token_id: Option<OneOrMany>,
}

#[derive(Deserialize)]
struct RopeParameters {
    rope_type: Option<String>,
    #[serde(rename = "type")]
    legacy_type: Option<String>,
    rope_theta: Option<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(i64),
    Many(Vec<i64>),
}

fn bad(field: &'static str, problem: impl Into<String>) -> ModelError {
    ModelError::Config {
        field,
        problem: problem.into(),
    }
}

impl Qwen2Config {
    /// Reads `config.json` from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        Self::from_json(&text).map_err(|e| match e {
            ModelError::Json { source, what, .. } => ModelError::Json { path, what, source },
            other => other,
        })
    }

    /// Parses the contents of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|source| ModelError::Json {
            path: "config.json".into(),
            what: "a Qwen2 config",
            source,
        })?;
        Self::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Self, ModelError> {
        if let Some(model_type) = raw.model_type.as_deref()
            && model_type != "qwen2"
        {
            return Err(bad("model_type", format!("`{model_type}` is not `qwen2`")));
        }
        for (field, value) in [
            ("vocab_size", raw.vocab_size),
            ("hidden_size", raw.hidden_size),
            ("intermediate_size", raw.intermediate_size),
            ("num_hidden_layers", raw.num_hidden_layers),
            ("num_attention_heads", raw.num_attention_heads),
            ("max_position_embeddings", raw.max_position_embeddings),
        ] {
            if value <= 0 {
                return Err(bad(field, format!("must be positive, is {value}")));
            }
        }
        let num_key_value_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        if num_key_value_heads <= 0 || raw.num_attention_heads % num_key_value_heads != 0 {
            return Err(bad(
                "num_key_value_heads",
                format!(
                    "{num_key_value_heads} does not divide num_attention_heads {}",
                    raw.num_attention_heads
                ),
            ));
        }
        let head_dim = match raw.head_dim {
            Some(d) => d,
            None if raw.hidden_size % raw.num_attention_heads == 0 => {
                raw.hidden_size / raw.num_attention_heads
            }
            None => {
                return Err(bad(
                    "hidden_size",
                    "not a multiple of num_attention_heads and no head_dim given",
                ));
            }
        };
        // Rotary embeddings rotate pairs of dimensions.
        if head_dim <= 0 || head_dim % 2 != 0 {
            return Err(bad(
                "head_dim",
                format!("must be positive and even, is {head_dim}"),
            ));
        }
        if raw.rms_norm_eps <= 0.0 {
            return Err(bad("rms_norm_eps", "must be positive"));
        }
        if let Some(act) = raw.hidden_act.as_deref()
            && act != "silu"
        {
            return Err(bad(
                "hidden_act",
                format!("`{act}` is not supported, only `silu`"),
            ));
        }
        if raw.use_sliding_window {
            return Err(bad(
                "use_sliding_window",
                "sliding-window attention is not supported",
            ));
        }
        let rope_theta = rope_theta(&raw)?;
        let eos_token_ids = match raw.eos_token_id {
            None => Vec::new(),
            Some(OneOrMany::One(id)) => vec![id],
            Some(OneOrMany::Many(ids)) => ids,
        };
        Ok(Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings: raw.max_position_embeddings,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta,
            tie_word_embeddings: raw.tie_word_embeddings,
            eos_token_ids,
        })
    }
}

/// The rotary base, wherever this version of transformers put it; only plain ("default") rotary
/// embeddings are implemented, so any scaling scheme is an error.
fn rope_theta(raw: &RawConfig) -> Result<f64, ModelError> {
    for (field, params) in [
        ("rope_parameters", &raw.rope_parameters),
        ("rope_scaling", &raw.rope_scaling),
    ] {
        if let Some(p) = params {
            let kind = p.rope_type.as_deref().or(p.legacy_type.as_deref());
            if kind.is_some_and(|k| k != "default") {
                return Err(bad(field, format!("rope type {kind:?} is not supported")));
            }
        }
    }
    let theta = raw
        .rope_parameters
        .as_ref()
        .and_then(|p| p.rope_theta)
        .or(raw.rope_theta)
        .ok_or_else(|| {
            bad(
                "rope_theta",
                "missing (neither rope_theta nor rope_parameters)",
            )
        })?;
    if theta <= 0.0 {
        return Err(bad("rope_theta", "must be positive"));
    }
    Ok(theta)
}

/// How weights are stored and activations computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// f32 weights and activations: CPU, tests and the comparison with transformers.
    F32,
    /// bf16 weights and activations on GPU; RMSNorm, rotary tables, softmax and log-probs are
    /// still computed in f32 as transformers does.
    Bf16,
    /// f32 master weights with CUDA autocast to bf16 for the matmuls: training keeps precise
    /// weights and optimiser updates while the forward pass runs at bf16 speed. Autocast is a
    /// no-op without CUDA, so on CPU this is plain f32.
    F32Autocast,
}

impl Precision {
    /// bf16 on a GPU, where it halves memory and runs on tensor cores; f32 on CPU, where bf16
    /// matmuls are slow and tests need full precision.
    pub fn default_for(device: Device) -> Self {
        if device.is_cuda() {
            Self::Bf16
        } else {
            Self::F32
        }
    }

    pub(crate) fn weight_kind(self) -> Kind {
        match self {
            Self::F32 | Self::F32Autocast => Kind::Float,
            Self::Bf16 => Kind::BFloat16,
        }
    }

    pub(crate) fn autocast(self) -> bool {
        self == Self::F32Autocast
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{
        "model_type": "qwen2", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
        "max_position_embeddings": 32, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "eos_token_id": [3, 4]
    }"#;

    fn with(field: &str, value: serde_json::Value) -> String {
        let mut json: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
        json[field] = value;
        json.to_string()
    }

    #[test]
    fn reads_minimal_config_with_defaults() {
        let config = Qwen2Config::from_json(MINIMAL).unwrap();
        assert_eq!(config.head_dim, 4);
        assert_eq!(config.num_key_value_heads, 1);
        assert!(!config.tie_word_embeddings);
        assert_eq!(config.eos_token_ids, vec![3, 4]);
        assert_eq!(config.rope_theta, 10000.0);
    }

    #[test]
    fn reads_transformers_5_rope_parameters() {
        let mut json: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
        json.as_object_mut().unwrap().remove("rope_theta");
        json["rope_parameters"] = serde_json::json!({"rope_type": "default", "rope_theta": 5.0});
        let config = Qwen2Config::from_json(&json.to_string()).unwrap();
        assert_eq!(config.rope_theta, 5.0);
    }

    #[test]
    fn rejects_unsupported_options_naming_the_field() {
        let cases = [
            ("model_type", serde_json::json!("llama"), "model_type"),
            (
                "num_key_value_heads",
                serde_json::json!(3),
                "num_key_value_heads",
            ),
            ("hidden_act", serde_json::json!("gelu"), "hidden_act"),
            (
                "use_sliding_window",
                serde_json::json!(true),
                "use_sliding_window",
            ),
            (
                "rope_scaling",
                serde_json::json!({"type": "yarn"}),
                "rope_scaling",
            ),
            ("vocab_size", serde_json::json!(0), "vocab_size"),
        ];
        for (field, value, expected) in cases {
            match Qwen2Config::from_json(&with(field, value)) {
                Err(ModelError::Config { field, .. }) => assert_eq!(field, expected),
                other => panic!("{expected}: {other:?}"),
            }
        }
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = Qwen2Config::from_dir(Path::new("/nonexistent/model")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/model/config.json"),
            "{err}"
        );
    }
}
