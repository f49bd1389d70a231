//! Loading Hugging Face safetensors checkpoints into the var store by tensor name.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::{Tensor, nn};

use crate::ModelError;

const SINGLE_FILE: &str = "model.safetensors";
const SHARD_INDEX: &str = "model.safetensors.index.json";

/// `model.safetensors.index.json`: which shard holds each tensor.
#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// The checkpoint files of a model directory: the shards named by the index when there is one,
/// else the single `model.safetensors`.
pub(crate) fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let index_path = dir.join(SHARD_INDEX);
    if index_path.exists() {
        let text = std::fs::read_to_string(&index_path).map_err(|source| ModelError::Io {
            path: index_path.clone(),
            source,
        })?;
        let index: ShardIndex = serde_json::from_str(&text).map_err(|source| ModelError::Json {
            path: index_path.clone(),
            what: "a safetensors shard index",
            source,
        })?;
        let mut seen = HashSet::new();
        let mut files = Vec::new();
        for file in index.weight_map.values() {
            if seen.insert(file) {
                files.push(dir.join(file));
            }
        }
        files.sort();
        return Ok(files);
    }
    let single = dir.join(SINGLE_FILE);
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(ModelError::NoWeights(dir.to_path_buf()))
}

/// Copies every tensor of `files` into the variable of the same name, converting to the
/// variable's kind and device. Fails on a tensor the model has no variable for (unless listed in
/// `ignored`), on a shape mismatch, and on a variable no file provides: a partial load would
/// train or sample from zeros without any visible sign.
pub(crate) fn load(
    vs: &nn::VarStore,
    files: &[PathBuf],
    ignored: &[&str],
) -> Result<(), ModelError> {
    let mut variables = vs.variables();
    let mut loaded = HashSet::new();
    for path in files {
        let tensors = Tensor::read_safetensors(path).map_err(|source| ModelError::Safetensors {
            path: path.clone(),
            source,
        })?;
        for (name, tensor) in tensors {
            if ignored.contains(&name.as_str()) {
                continue;
            }
            let Some(variable) = variables.get_mut(&name) else {
                return Err(ModelError::UnexpectedTensor {
                    name,
                    path: path.clone(),
                });
            };
            let (expected, found) = (variable.size(), tensor.size());
            if expected != found {
                return Err(ModelError::ShapeMismatch {
                    name,
                    expected,
                    found,
                });
            }
            // Variables are autograd leaves; filling them is not an operation to differentiate.
            tch::no_grad(|| variable.f_copy_(&tensor))?;
            loaded.insert(name);
        }
    }
    let mut missing: Vec<&String> = variables.keys().filter(|n| !loaded.contains(*n)).collect();
    missing.sort();
    match missing.first() {
        Some(name) => Err(ModelError::MissingTensor((*name).clone())),
        None => Ok(()),
    }
}
