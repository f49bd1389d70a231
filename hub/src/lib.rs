//! A model from the Hugging Face Hub, or a mirror of it, in a local cache.
//!
//! [`fetch`] resolves the requested revision to its commit, downloads `config.json`,
//! `tokenizer.json` and the safetensors weights (one file, or the shards an index names) of that
//! commit with `hf-hub`, and records the revision as pointing at the commit, so that [`cached`]
//! finds the model again without the network. The cache is the Hub's own layout
//! (`models--<owner>--<name>/{blobs,snapshots,refs}`), so a cache filled by the Python client
//! serves too. A download that stops half-way leaves a `.part` file, which the next attempt (in
//! this process, or the next one) continues with an HTTP range request.
//!
//! `HF_ENDPOINT` names a mirror, `HF_TOKEN` a token (see [`HubOptions::from_env`]); the token only
//! ever travels in the `Authorization` header and is never printed.

use std::path::{Path, PathBuf};

#[cfg(feature = "test-server")]
pub mod test_server;

use hf_hub::api::Progress;
use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

/// The Hub's address when `HF_ENDPOINT` names none.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The revision when none is given.
pub const DEFAULT_REVISION: &str = "main";

const CONFIG: &str = "config.json";
const TOKENIZER: &str = "tokenizer.json";
const WEIGHTS: &str = "model.safetensors";
const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "the hub at {endpoint} refused access to {id} (HTTP {status}): it is private or gated; \
         give a token with access (HF_TOKEN, or hub.tokenSecret in a Swarm)"
    )]
    Unauthorized {
        endpoint: String,
        id: String,
        status: u16,
    },
    #[error(
        "{id} at revision {revision} is not on the hub at {endpoint} (HTTP 404): check the id and the revision"
    )]
    NotFound {
        endpoint: String,
        id: String,
        revision: String,
    },
    #[error("the hub at {endpoint} answered HTTP {status} for {what}")]
    Status {
        endpoint: String,
        what: String,
        status: u16,
    },
    #[error("cannot reach the hub at {endpoint} for {what}: {reason}")]
    Network {
        endpoint: String,
        what: String,
        reason: String,
    },
    #[error("{id} at commit {commit} has no {missing}: not a model this node can load")]
    Incomplete {
        id: String,
        commit: String,
        missing: String,
    },
    #[error("{path} is malformed: {reason}")]
    Malformed { path: String, reason: String },
    #[error("cache {path}: {source}")]
    Cache {
        path: String,
        source: std::io::Error,
    },
}

/// Which model: a repository id and an optional revision (branch, tag or commit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubModel {
    pub id: String,
    pub revision: Option<String>,
}

impl HubModel {
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or(DEFAULT_REVISION)
    }
}

/// Where to download from and into.
#[derive(Clone)]
pub struct HubOptions {
    /// The cache folder (the Hub's `HF_HOME/hub`).
    pub cache_dir: PathBuf,
    pub endpoint: String,
    pub token: Option<String>,
    /// Further attempts at a file whose download broke off, each continuing where it stopped.
    pub retries: usize,
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("cache_dir", &self.cache_dir)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("retries", &self.retries)
            .finish()
    }
}

impl HubOptions {
    /// `HF_ENDPOINT` (a mirror) and `HF_TOKEN` from the environment, the cache at `cache_dir`.
    pub fn from_env(cache_dir: PathBuf) -> Self {
        let non_empty = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        HubOptions {
            cache_dir,
            endpoint: non_empty("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()),
            token: non_empty("HF_TOKEN"),
            retries: 5,
        }
    }
}

/// A model in the cache: the folder holding its files, and the commit they are from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub dir: PathBuf,
    pub commit: String,
}

/// How far a download is, for whoever shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadProgress {
    pub file: String,
    pub bytes: u64,
    pub total: u64,
}

/// The Hub's cache folder: `$HF_HOME/hub`, `~/.cache/huggingface/hub` without it.
pub fn default_cache_dir() -> PathBuf {
    Cache::from_env().path().clone()
}

/// The model as an earlier [`fetch`] left it in the cache, if it is all there.
pub fn cached(model: &HubModel, cache_dir: &Path) -> Option<Fetched> {
    let repo = Cache::new(cache_dir.to_owned()).repo(Repo::with_revision(
        model.id.clone(),
        RepoType::Model,
        model.revision().to_owned(),
    ));
    let config = repo.get(CONFIG)?;
    let dir = config.parent()?.to_owned();
    let commit = dir.file_name()?.to_str()?.to_owned();
    repo.get(TOKENIZER)?;
    let weights = match repo.get(WEIGHTS_INDEX) {
        Some(index) => shards(&index).ok()?,
        None => vec![WEIGHTS.to_owned()],
    };
    weights
        .iter()
        .all(|file| repo.get(file).is_some())
        .then_some(Fetched { dir, commit })
}

/// Downloads what is not in the cache yet and returns where the model is. `progress` hears of
/// each file's bytes as they arrive.
pub fn fetch(
    model: &HubModel,
    options: &HubOptions,
    progress: &dyn Fn(DownloadProgress),
) -> Result<Fetched, HubError> {
    let revision = model.revision();
    let failure = |what: &str| {
        let what = what.to_owned();
        move |error: ApiError| classify(error, model, options, &what)
    };
    let api = ApiBuilder::from_cache(Cache::new(options.cache_dir.clone()))
        .with_endpoint(options.endpoint.clone())
        .with_token(options.token.clone())
        .with_retries(options.retries)
        .with_progress(false)
        .build()
        .map_err(failure("the client"))?;
    let info = api
        .repo(Repo::with_revision(
            model.id.clone(),
            RepoType::Model,
            revision.to_owned(),
        ))
        .info()
        .map_err(failure("the repository's files"))?;
    let commit = info.sha;
    let files: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let incomplete = |missing: &str| HubError::Incomplete {
        id: model.id.clone(),
        commit: commit.clone(),
        missing: missing.to_owned(),
    };
    for required in [CONFIG, TOKENIZER] {
        if !files.contains(&required) {
            return Err(incomplete(required));
        }
    }
    // Every file from the one commit the revision names now, even if the branch moves meanwhile.
    let pinned = api.repo(Repo::with_revision(
        model.id.clone(),
        RepoType::Model,
        commit.clone(),
    ));
    let download = |file: &str| {
        let reporter = Reporter {
            file: file.to_owned(),
            bytes: 0,
            total: 0,
            report: progress,
        };
        let cache_repo = Cache::new(options.cache_dir.clone()).repo(Repo::with_revision(
            model.id.clone(),
            RepoType::Model,
            commit.clone(),
        ));
        match cache_repo.get(file) {
            Some(path) => Ok(path),
            None => pinned
                .download_with_progress(file, reporter)
                .map_err(failure(file)),
        }
    };
    let config = download(CONFIG)?;
    download(TOKENIZER)?;
    if files.contains(&WEIGHTS_INDEX) {
        let index = download(WEIGHTS_INDEX)?;
        for shard in shards(&index)? {
            if !files.contains(&shard.as_str()) {
                return Err(incomplete(&shard));
            }
            download(&shard)?;
        }
    } else if files.contains(&WEIGHTS) {
        download(WEIGHTS)?;
    } else {
        return Err(incomplete(
            "model.safetensors or model.safetensors.index.json",
        ));
    }
    // Later lookups by the revision asked for (`main`, a tag) find this commit offline.
    Cache::new(options.cache_dir.clone())
        .repo(Repo::with_revision(
            model.id.clone(),
            RepoType::Model,
            revision.to_owned(),
        ))
        .create_ref(&commit)
        .map_err(|source| HubError::Cache {
            path: options.cache_dir.display().to_string(),
            source,
        })?;
    let dir = config
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| options.cache_dir.clone());
    Ok(Fetched { dir, commit })
}

/// The shard files a `model.safetensors.index.json` names, each once, in order.
fn shards(index: &Path) -> Result<Vec<String>, HubError> {
    let malformed = |reason: String| HubError::Malformed {
        path: index.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(index).map_err(|e| malformed(e.to_string()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| malformed("no weight_map".into()))?;
    let mut files: Vec<String> = Vec::new();
    for file in map.values() {
        let file = file
            .as_str()
            .ok_or_else(|| malformed("a weight_map entry is not a file name".into()))?;
        // A shard name with a path in it could write outside the snapshot.
        if file.contains('/') || file.contains("..") {
            return Err(malformed(format!(
                "shard {file:?} is not a plain file name"
            )));
        }
        if !files.iter().any(|f| f == file) {
            files.push(file.to_owned());
        }
    }
    Ok(files)
}

fn classify(error: ApiError, model: &HubModel, options: &HubOptions, what: &str) -> HubError {
    let endpoint = options.endpoint.clone();
    let status = |error: &ApiError| match error {
        ApiError::RequestError(inner) => match inner.as_ref() {
            ureq::Error::StatusCode(code) => Some(*code),
            _ => None,
        },
        _ => None,
    };
    let error = match error {
        ApiError::TooManyRetries(inner) => *inner,
        other => other,
    };
    match status(&error) {
        Some(401 | 403) => HubError::Unauthorized {
            endpoint,
            id: model.id.clone(),
            status: status(&error).unwrap_or_default(),
        },
        Some(404) => HubError::NotFound {
            endpoint,
            id: model.id.clone(),
            revision: model.revision().to_owned(),
        },
        Some(code) => HubError::Status {
            endpoint,
            what: what.to_owned(),
            status: code,
        },
        None => HubError::Network {
            endpoint,
            what: what.to_owned(),
            reason: error.to_string(),
        },
    }
}

/// Adapts `hf-hub`'s progress callbacks to [`DownloadProgress`] reports.
#[derive(Clone)]
struct Reporter<'a> {
    file: String,
    bytes: u64,
    total: u64,
    report: &'a dyn Fn(DownloadProgress),
}

impl Progress for Reporter<'_> {
    fn init(&mut self, size: usize, _filename: &str) {
        self.total = size as u64;
        self.bytes = 0;
    }

    fn update(&mut self, size: usize) {
        self.bytes += size as u64;
        (self.report)(DownloadProgress {
            file: self.file.clone(),
            bytes: self.bytes,
            total: self.total,
        });
    }

    fn finish(&mut self) {}
}
