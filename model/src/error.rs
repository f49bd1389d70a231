use std::path::PathBuf;

/// Everything that can go wrong loading or running the model; each variant names what it was
/// working on, so a message from a node's log points at the file, field or tensor.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON for {what}: {source}")]
    Json {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("config field `{field}`: {problem}")]
    Config {
        field: &'static str,
        problem: String,
    },
    #[error("no weights in {0}: expected model.safetensors or model.safetensors.index.json")]
    NoWeights(PathBuf),
    #[error("cannot read safetensors {path}: {source}")]
    Safetensors {
        path: PathBuf,
        #[source]
        source: tch::TchError,
    },
    #[error("weights lack tensor `{0}`")]
    MissingTensor(String),
    #[error("weights have tensor `{name}` that the model does not use (from {path})")]
    UnexpectedTensor { name: String, path: PathBuf },
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
    #[error("input: {0}")]
    Input(String),
    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("tokenizer: {0}")]
    Encode(String),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}
