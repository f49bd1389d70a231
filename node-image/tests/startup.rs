//! Runs the built `swarm-node` binary against files laid out as the operator mounts them.

// clippy's allow-unwrap-in-tests covers #[test] functions only, not this file's helpers.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use swarm_identity::PRIVATE_KEY_FILE;
use swarm_node_config::download::DownloadLine;
use swarm_node_config::{
    Dtype, ModelConfig, NodeConfig, P2pConfig, RoundsConfig, SwarmRef, TrainingConfig,
};

/// A vector from swarm-identity's tests (computed by identity/tests/vectors.py).
const KEY: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
const PEER_ID: &str = "16Uiu2HAkzh4QdxB7ijzVnwd6JFNNe4bcr1JBwYUypXe3pX5BRpqK";
const ADDRESS: &str = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23";

struct Mounts {
    _root: tempfile::TempDir,
    identity_dir: PathBuf,
    config: PathBuf,
}

impl Mounts {
    /// A valid identity directory and config file.
    fn new() -> Mounts {
        let root = tempfile::tempdir().unwrap();
        let identity_dir = root.path().join("identity");
        std::fs::create_dir(&identity_dir).unwrap();
        std::fs::write(identity_dir.join(PRIVATE_KEY_FILE), format!("{KEY}\n")).unwrap();
        let config = root.path().join("node.yaml");
        std::fs::write(&config, sample_config().to_yaml().unwrap()).unwrap();
        Mounts {
            _root: root,
            identity_dir,
            config,
        }
    }

    fn key_file(&self) -> PathBuf {
        self.identity_dir.join(PRIVATE_KEY_FILE)
    }

    /// `swarm-node check`, which stops after reading the mounts.
    fn check(&self) -> Output {
        self.run_with(&["check"])
    }

    /// `swarm-node` as a pod runs it; tests only use it with broken mounts, so it never trains.
    fn run(&self) -> Output {
        self.run_with(&[])
    }

    fn run_with(&self, subcommand: &[&str]) -> Output {
        self.run_with_env(subcommand, &[])
    }

    fn run_with_env(&self, subcommand: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_swarm-node"))
            .args(subcommand)
            .arg("--identity-dir")
            .arg(&self.identity_dir)
            .arg("--config")
            .arg(&self.config)
            .arg("--member")
            .arg("demo-1")
            .env_remove("SWARM_IDENTITY_DIR")
            .env_remove("SWARM_CONFIG")
            .env_remove("SWARM_MEMBER")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }
}

/// The sample with two bootstrap peers of a real PeerId, a hub model in f16 and an I/J of 3/5.
fn sample_config() -> NodeConfig {
    let sample = NodeConfig::sample();
    NodeConfig {
        swarm: SwarmRef {
            namespace: "research".into(),
            ..sample.swarm
        },
        p2p: P2pConfig {
            bootstrap_peers: vec![
                format!("/dns4/demo-0.demo-peers.research.svc/tcp/4001/p2p/{PEER_ID}"),
                format!("/dns4/demo-1.demo-peers.research.svc/tcp/4001/p2p/{PEER_ID}"),
            ],
            ..sample.p2p
        },
        model: ModelConfig {
            path: None,
            hub_id: Some("Qwen/Qwen2.5-0.5B-Instruct".into()),
            revision: None,
            dtype: Dtype::F16,
        },
        training: TrainingConfig {
            local_rollouts: 3,
            external_rollouts: 5,
            completions_per_question: 6,
            ..TrainingConfig::default()
        },
        rounds: RoundsConfig {
            max_rounds: None,
            ..sample.rounds
        },
        checkpoints: None,
        ..sample
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Expects the one-line failure report naming `path`, and no trace of the key anywhere.
fn assert_fails_naming(output: &Output, path: &Path) {
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(
        output.status.code(),
        Some(2),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stderr.starts_with("swarm-node: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    for fragment in [KEY, &KEY[..16], &KEY[40..]] {
        assert!(
            !stdout.contains(fragment) && !stderr.contains(fragment),
            "{stdout}{stderr}"
        );
    }
}

#[test]
fn prints_identity_and_config_summary() {
    let mounts = Mounts::new();
    let output = mounts.check();
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    for line in [
        "member: demo-1".to_owned(),
        format!("peer id: {PEER_ID}"),
        format!("address: {ADDRESS}"),
        "swarm: research/demo".to_owned(),
        "p2p: port 4001, 2 bootstrap peers".to_owned(),
        "model: hub Qwen/Qwen2.5-0.5B-Instruct, dtype f16".to_owned(),
        "training: I=3 J=5 G=6".to_owned(),
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY));
}

#[test]
fn reads_paths_and_member_from_the_environment() {
    let mounts = Mounts::new();
    let output = Command::new(env!("CARGO_BIN_EXE_swarm-node"))
        .arg("check")
        .env("SWARM_IDENTITY_DIR", &mounts.identity_dir)
        .env("SWARM_CONFIG", &mounts.config)
        .env("SWARM_MEMBER", "demo-7")
        .output()
        .unwrap();
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        text(&output.stderr)
    );
    assert!(stdout.contains("member: demo-7"), "{stdout}");
    assert!(stdout.contains(PEER_ID), "{stdout}");
}

#[test]
fn missing_key_file_exits_2() {
    let mounts = Mounts::new();
    std::fs::remove_file(mounts.key_file()).unwrap();
    assert_fails_naming(&mounts.run(), &mounts.key_file());
}

#[test]
fn malformed_key_exits_2() {
    let mounts = Mounts::new();
    // A valid-looking key cut short, and one that is the key with a character changed.
    for bad in [&KEY[..40], &format!("{}g", &KEY[..63])] {
        std::fs::write(mounts.key_file(), bad).unwrap();
        let output = mounts.run();
        assert_fails_naming(&output, &mounts.key_file());
        assert!(
            !text(&output.stderr).contains(bad),
            "{}",
            text(&output.stderr)
        );
    }
}

#[test]
fn missing_config_exits_2() {
    let mounts = Mounts::new();
    std::fs::remove_file(&mounts.config).unwrap();
    assert_fails_naming(&mounts.run(), &mounts.config);
}

#[test]
fn malformed_config_exits_2() {
    let mounts = Mounts::new();
    std::fs::write(&mounts.config, "version: 1\nswarm: [not, a, map]\n").unwrap();
    let output = mounts.run();
    assert_fails_naming(&output, &mounts.config);
    assert!(
        text(&output.stderr).contains("malformed"),
        "{}",
        text(&output.stderr)
    );
}

/// A member whose hub model cannot be downloaded fails naming the model and the hub, and never
/// shows its key.
#[test]
fn a_hub_model_that_cannot_be_downloaded_fails_naming_the_hub() {
    let mounts = Mounts::new();
    let hf_home = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = mounts.run_with_env(
        &[],
        &[
            ("HF_HOME", hf_home.path().to_str().unwrap()),
            ("HF_ENDPOINT", &format!("http://{closed}")),
        ],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("Qwen/Qwen2.5-0.5B-Instruct") || stderr.contains("cannot reach the hub"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("http://{closed}")), "{stderr}");
    assert!(!stderr.contains(KEY), "{stderr}");
}

/// `swarm-node fetch-model` fills the Hub's cache (HF_HOME) from HF_ENDPOINT and prints the
/// commit; once there, the model needs no hub at all.
#[test]
fn fetch_model_fills_the_cache_and_names_the_commit() {
    use swarm_hub::test_server::{TAGGED_COMMIT, serve};
    let hub = serve();
    let hf_home = tempfile::tempdir().unwrap();
    let fetch = |endpoint: &str| {
        Command::new(env!("CARGO_BIN_EXE_swarm-node"))
            .args([
                "fetch-model",
                "--id",
                "tests/learning-base",
                "--revision",
                "v1",
            ])
            .env("HF_HOME", hf_home.path())
            .env("HF_ENDPOINT", endpoint)
            .env_remove("HF_TOKEN")
            .output()
            .unwrap()
    };
    let output = fetch(&hub.endpoint);
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    let (commit, dir) = stdout.trim().split_once(' ').unwrap();
    assert_eq!(commit, TAGGED_COMMIT);
    // Its log shows the progress the operator reads back: each file done at the end.
    let last = DownloadLine::last_in(&stderr).unwrap_or_else(|| panic!("no progress in {stderr}"));
    assert_eq!(last.bytes, last.total, "{stderr}");
    assert!(
        stderr
            .lines()
            .filter_map(DownloadLine::parse)
            .any(|line| line.file == "model.safetensors" && line.bytes == line.total),
        "{stderr}"
    );
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert!(
            Path::new(dir).join(file).is_file(),
            "{file} missing in {dir}"
        );
    }
    let offline = fetch("http://127.0.0.1:9");
    assert!(offline.status.success(), "{}", text(&offline.stderr));
    assert_eq!(text(&offline.stdout), stdout);

    // As the operator's init container runs it: the outcome goes to the termination message.
    let message = hf_home.path().join("termination-log");
    let with_message = |id: &str| {
        Command::new(env!("CARGO_BIN_EXE_swarm-node"))
            .args(["fetch-model", "--id", id, "--termination-log"])
            .arg(&message)
            .env("HF_HOME", hf_home.path())
            .env("HF_ENDPOINT", &hub.endpoint)
            .output()
            .unwrap()
    };
    assert!(with_message("tests/learning-base").status.success());
    assert!(
        std::fs::read_to_string(&message)
            .unwrap()
            .starts_with("commit ")
    );
    let missing = with_message("tests/missing");
    assert_eq!(missing.status.code(), Some(1));
    let reason = std::fs::read_to_string(&message).unwrap();
    assert!(
        reason.contains("HTTP 404") && reason.contains("tests/missing"),
        "{reason}"
    );
}
