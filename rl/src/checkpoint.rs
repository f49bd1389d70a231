//! Checkpoints of a training member: model weights, optimiser state and the round, written so that
//! a crash at any moment leaves the previous checkpoint usable.
//!
//! Layout: `<dir>/round-<n>/` holds `model.safetensors` (every variable under its Hugging Face
//! name, so the directory plus a `config.json` loads in transformers), `optimizer.safetensors`
//! ([`AdamW::state`]) and `manifest.json` (the round, and each file's size and SHA-256). A save
//! writes everything into `round-<n>.tmp/`, fsyncs the files and the directory, then renames it
//! to `round-<n>/` and fsyncs `<dir>`: a `round-<n>/` exists only once complete. Loading verifies
//! the manifest and the hashes, and falls back to older checkpoints past a corrupt one.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Tensor, nn};

use crate::grpo::{AdamW, GrpoError};

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest format this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const PREFIX: &str = "round-";
const TMP_SUFFIX: &str = ".tmp";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: tch::TchError,
    },
    #[error("checkpoint {path} does not fit the model: {problem}")]
    Mismatch { path: PathBuf, problem: String },
    #[error("checkpoint {path}: optimizer: {source}")]
    Optimizer {
        path: PathBuf,
        #[source]
        source: GrpoError,
    },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error("keep_last must be at least 1")]
    KeepNone,
}

/// Why a checkpoint directory was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointProblem {
    #[error("unfinished save (never renamed from .tmp)")]
    Unfinished,
    #[error("no readable manifest: {0}")]
    Manifest(String),
    #[error("manifest says round {found}, the directory round {expected}")]
    RoundMismatch { expected: u64, found: u64 },
    #[error("`{file}` missing or unreadable: {message}")]
    File { file: String, message: String },
    #[error("`{file}` has {found} bytes, the manifest says {expected}")]
    Size {
        file: String,
        expected: u64,
        found: u64,
    },
    #[error("`{file}` does not match its SHA-256 in the manifest")]
    Hash { file: String },
}

/// A checkpoint directory that [`Checkpoint::load_latest`] passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedCheckpoint {
    pub path: PathBuf,
    pub problem: CheckpointProblem,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    round: u64,
    files: Vec<FileEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileEntry {
    name: String,
    bytes: u64,
    sha256: String,
}

/// A verified checkpoint, read into memory (on the CPU) and ready to [`Checkpoint::restore`].
#[derive(Debug)]
pub struct Checkpoint {
    pub round: u64,
    pub path: PathBuf,
    weights: Vec<(String, Tensor)>,
    optimizer: Vec<(String, Tensor)>,
}

/// What [`Checkpoint::load_latest`] found.
#[derive(Debug)]
pub struct LatestCheckpoint {
    /// The newest checkpoint that verified, if any.
    pub checkpoint: Option<Checkpoint>,
    /// Newer directories that did not verify, newest first: a node should log them.
    pub skipped: Vec<SkippedCheckpoint>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn fsync(path: &Path) -> Result<(), CheckpointError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Round number of a `round-<n>` (`tmp` false) or `round-<n>.tmp` (`tmp` true) directory name.
fn parse_round(name: &str, tmp: bool) -> Option<u64> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits = if tmp {
        rest.strip_suffix(TMP_SUFFIX)?
    } else {
        rest
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Checkpoint directories under `dir` as (round, path, finished), newest first; a missing `dir`
/// has none.
fn list(dir: &Path) -> Result<Vec<(u64, PathBuf, bool)>, CheckpointError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(round) = parse_round(&name, false) {
            found.push((round, entry.path(), true));
        } else if let Some(round) = parse_round(&name, true) {
            found.push((round, entry.path(), false));
        }
    }
    // Newest first; at equal rounds the finished directory before the leftover .tmp.
    found.sort_by(|a, b| b.0.cmp(&a.0).then(b.2.cmp(&a.2)));
    Ok(found)
}

/// Writes `tensors` (moved to the CPU, contiguous) to `path` and returns the manifest entry.
fn write_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<FileEntry, CheckpointError> {
    let cpu = tensors
        .iter()
        .map(|(n, t)| Ok((n.as_str(), t.f_to_device(Device::Cpu)?.f_contiguous()?)))
        .collect::<Result<Vec<_>, tch::TchError>>()?;
    Tensor::write_safetensors(&cpu, path).map_err(|source| CheckpointError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    fsync(path)?;
    let bytes = fs::read(path).map_err(io(path))?;
    Ok(FileEntry {
        name: file_name(path),
        bytes: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Checkpoint {
    /// Saves `vs`'s variables, `optimizer`'s state and `round` as `<dir>/round-<round>/`, then
    /// deletes all but the `keep_last` newest checkpoints (and leftovers of unfinished saves).
    /// Returns the new checkpoint's directory. An existing checkpoint of the same round is
    /// replaced.
    pub fn save(
        dir: &Path,
        round: u64,
        vs: &nn::VarStore,
        optimizer: &AdamW,
        keep_last: usize,
    ) -> Result<PathBuf, CheckpointError> {
        if keep_last == 0 {
            return Err(CheckpointError::KeepNone);
        }
        fs::create_dir_all(dir).map_err(io(dir))?;
        let final_dir = dir.join(format!("{PREFIX}{round}"));
        let tmp = dir.join(format!("{PREFIX}{round}{TMP_SUFFIX}"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        fs::create_dir(&tmp).map_err(io(&tmp))?;

        let mut weights: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        weights.sort_by(|a, b| a.0.cmp(&b.0));
        let state = optimizer
            .state()
            .map_err(|source| CheckpointError::Optimizer {
                path: tmp.clone(),
                source,
            })?;
        let files = vec![
            write_tensors(&tmp.join(WEIGHTS_FILE), &weights)?,
            write_tensors(&tmp.join(OPTIMIZER_FILE), &state)?,
        ];
        let manifest = Manifest {
            format: FORMAT_VERSION,
            round,
            files,
        };
        let manifest_path = tmp.join(MANIFEST_FILE);
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| CheckpointError::Io {
            path: manifest_path.clone(),
            source: e.into(),
        })?;
        let mut file = File::create(&manifest_path).map_err(io(&manifest_path))?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(io(&manifest_path))?;
        fsync(&tmp)?;

        // rename() does not replace a non-empty directory. Removing the old one first leaves a
        // moment without this round, but never without the older checkpoints.
        if final_dir.exists() {
            fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
        }
        fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
        fsync(dir)?;

        let mut kept = 0;
        for (_, path, finished) in list(dir)? {
            if finished && kept < keep_last {
                kept += 1;
            } else {
                fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        }
        Ok(final_dir)
    }

    /// The newest checkpoint under `dir` whose manifest and files verify; newer ones that do not
    /// are reported in [`LatestCheckpoint::skipped`]. A missing `dir` has no checkpoint.
    pub fn load_latest(dir: &Path) -> Result<LatestCheckpoint, CheckpointError> {
        let mut skipped = Vec::new();
        for (round, path, finished) in list(dir)? {
            let problem = if finished {
                match Self::verify(&path, round) {
                    Ok(checkpoint) => {
                        return Ok(LatestCheckpoint {
                            checkpoint: Some(checkpoint),
                            skipped,
                        });
                    }
                    Err(problem) => problem,
                }
            } else {
                CheckpointProblem::Unfinished
            };
            skipped.push(SkippedCheckpoint { path, problem });
        }
        Ok(LatestCheckpoint {
            checkpoint: None,
            skipped,
        })
    }

    /// Reads one checkpoint directory, checking every file against the manifest.
    fn verify(path: &Path, round: u64) -> Result<Self, CheckpointProblem> {
        let manifest_path = path.join(MANIFEST_FILE);
        let text =
            fs::read(&manifest_path).map_err(|e| CheckpointProblem::Manifest(e.to_string()))?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| CheckpointProblem::Manifest(e.to_string()))?;
        if manifest.format != FORMAT_VERSION {
            return Err(CheckpointProblem::Manifest(format!(
                "format {} is not {FORMAT_VERSION}",
                manifest.format
            )));
        }
        if manifest.round != round {
            return Err(CheckpointProblem::RoundMismatch {
                expected: round,
                found: manifest.round,
            });
        }
        let mut tensors = HashMap::new();
        for name in [WEIGHTS_FILE, OPTIMIZER_FILE] {
            let entry = manifest
                .files
                .iter()
                .find(|f| f.name == name)
                .ok_or_else(|| CheckpointProblem::Manifest(format!("does not list `{name}`")))?;
            let file = path.join(name);
            let unreadable = |message: String| CheckpointProblem::File {
                file: name.to_owned(),
                message,
            };
            let bytes = fs::read(&file).map_err(|e| unreadable(e.to_string()))?;
            if bytes.len() as u64 != entry.bytes {
                return Err(CheckpointProblem::Size {
                    file: name.to_owned(),
                    expected: entry.bytes,
                    found: bytes.len() as u64,
                });
            }
            if sha256_hex(&bytes) != entry.sha256 {
                return Err(CheckpointProblem::Hash {
                    file: name.to_owned(),
                });
            }
            let read = Tensor::read_safetensors(&file).map_err(|e| unreadable(e.to_string()))?;
            tensors.insert(name, read);
        }
        Ok(Self {
            round,
            path: path.to_path_buf(),
            weights: tensors.remove(WEIGHTS_FILE).unwrap_or_default(),
            optimizer: tensors.remove(OPTIMIZER_FILE).unwrap_or_default(),
        })
    }

    /// Copies the weights into `vs` and the state into `optimizer`. Every variable must be in the
    /// checkpoint with its shape, and the checkpoint must hold nothing else: resuming another
    /// model's checkpoint fails instead of training a mix.
    pub fn restore(&self, vs: &nn::VarStore, optimizer: &mut AdamW) -> Result<(), CheckpointError> {
        let mismatch = |problem: String| CheckpointError::Mismatch {
            path: self.path.clone(),
            problem,
        };
        let mut variables = vs.variables();
        if variables.len() != self.weights.len() {
            return Err(mismatch(format!(
                "{} tensors, the model has {} variables",
                self.weights.len(),
                variables.len()
            )));
        }
        for (name, tensor) in &self.weights {
            let variable = variables
                .get(name)
                .ok_or_else(|| mismatch(format!("tensor `{name}` is no model variable")))?;
            if variable.size() != tensor.size() {
                return Err(mismatch(format!(
                    "`{name}` has shape {:?}, the model {:?}",
                    tensor.size(),
                    variable.size()
                )));
            }
        }
        optimizer
            .load_state(&self.optimizer)
            .map_err(|source| CheckpointError::Optimizer {
                path: self.path.clone(),
                source,
            })?;
        tch::no_grad(|| {
            for (name, tensor) in &self.weights {
                if let Some(variable) = variables.get_mut(name) {
                    variable.f_copy_(tensor)?;
                }
            }
            Ok::<(), tch::TchError>(())
        })?;
        Ok(())
    }
}
