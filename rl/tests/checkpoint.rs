//! Checkpoints: a resumed step equals an uninterrupted one, and damaged checkpoints are reported
//! and passed over for the previous one.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use swarm_model::{Precision, Qwen2};
use swarm_rl::{
    Checkpoint, CheckpointError, CheckpointProblem, GrpoBatch, GrpoConfig, GrpoTrainer,
};
use tch::{Device, Tensor};

fn model_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../model/fixtures")
        .join(name)
}

fn tiny_model() -> Qwen2 {
    Qwen2::load(&model_dir("tiny-qwen2"), Device::Cpu, Precision::F32).unwrap()
}

/// The GRPO fixture's batch (see `tests/grpo.rs`).
fn batch() -> GrpoBatch {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grpo_reference.safetensors");
    let t: HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect();
    GrpoBatch {
        input_ids: t["input_ids"].shallow_clone(),
        attention_mask: t["attention_mask"].shallow_clone(),
        completion_mask: t["completion_mask"].shallow_clone(),
        advantages: t["advantages"].shallow_clone(),
        old_logprobs: None,
        ref_logprobs: None,
        off_policy: None,
    }
}

fn config() -> GrpoConfig {
    let mut config = GrpoConfig {
        micro_batch_size: 4,
        ..GrpoConfig::default()
    };
    config.optimizer.learning_rate = 1e-3;
    config.optimizer.weight_decay = 0.01;
    config
}

fn weights(model: &Qwen2) -> HashMap<String, Tensor> {
    model
        .var_store()
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect()
}

fn max_weight_diff(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .map(|(n, t)| (t - &b[n]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

fn round_dirs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Saves checkpoints of rounds `rounds` of a model trained one step per round.
fn save_rounds(dir: &Path, rounds: &[u64], keep_last: usize) {
    let policy = tiny_model();
    let mut trainer = GrpoTrainer::new(&policy, config()).unwrap();
    let batch = batch();
    for &round in rounds {
        trainer.step(&policy, None, &batch).unwrap();
        Checkpoint::save(
            dir,
            round,
            policy.var_store(),
            trainer.optimizer(),
            keep_last,
        )
        .unwrap();
    }
}

#[test]
fn resumed_training_equals_uninterrupted_training() {
    let batch = batch();
    let uninterrupted = tiny_model();
    let mut trainer = GrpoTrainer::new(&uninterrupted, config()).unwrap();
    for _ in 0..3 {
        trainer.step(&uninterrupted, None, &batch).unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let first = tiny_model();
    let mut trainer = GrpoTrainer::new(&first, config()).unwrap();
    for _ in 0..2 {
        trainer.step(&first, None, &batch).unwrap();
    }
    let saved = Checkpoint::save(dir.path(), 2, first.var_store(), trainer.optimizer(), 3).unwrap();
    assert_eq!(saved, dir.path().join("round-2"));
    drop((first, trainer));

    // A new process: fresh model and optimiser, then the checkpoint.
    let resumed = tiny_model();
    let mut trainer = GrpoTrainer::new(&resumed, config()).unwrap();
    let latest = Checkpoint::load_latest(dir.path()).unwrap();
    assert!(latest.skipped.is_empty());
    let checkpoint = latest.checkpoint.unwrap();
    assert_eq!(checkpoint.round, 2);
    checkpoint
        .restore(resumed.var_store(), trainer.optimizer_mut())
        .unwrap();
    assert_eq!(trainer.optimizer().step_count(), 2);
    trainer.step(&resumed, None, &batch).unwrap();

    let d = max_weight_diff(&weights(&uninterrupted), &weights(&resumed));
    assert_eq!(d, 0.0, "resumed weights differ by {d}");
}

#[test]
fn weights_are_a_transformers_style_safetensors_file() {
    let dir = tempfile::tempdir().unwrap();
    save_rounds(dir.path(), &[1], 1);
    // With the model's config.json beside it, the directory loads as a model.
    let round = dir.path().join("round-1");
    fs::copy(
        model_dir("tiny-qwen2").join("config.json"),
        round.join("config.json"),
    )
    .unwrap();
    Qwen2::load(&round, Device::Cpu, Precision::F32).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(round.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["round"], 1);
    assert_eq!(manifest["files"].as_array().unwrap().len(), 2);
}

#[test]
fn only_the_newest_checkpoints_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("round-1.tmp")).unwrap();
    save_rounds(dir.path(), &[2, 3, 4, 5], 2);
    assert_eq!(round_dirs(dir.path()), ["round-4", "round-5"]);
}

#[test]
fn damaged_checkpoints_are_reported_and_the_previous_one_used() {
    let dir = tempfile::tempdir().unwrap();
    save_rounds(dir.path(), &[1, 2, 3, 4, 5, 6], 10);
    let path = |round: u64| dir.path().join(format!("round-{round}"));

    // round 7: a save that never finished.
    fs::create_dir(dir.path().join("round-7.tmp")).unwrap();
    // round 6: a flipped byte in the weights.
    let weights = path(6).join("model.safetensors");
    let mut bytes = fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(&weights, bytes).unwrap();
    // round 5: a truncated optimizer file.
    let optimizer = path(5).join("optimizer.safetensors");
    let bytes = fs::read(&optimizer).unwrap();
    fs::write(&optimizer, &bytes[..bytes.len() / 2]).unwrap();
    // round 4: no manifest (as if copied in by hand, half-way).
    fs::remove_file(path(4).join("manifest.json")).unwrap();
    // round 3: a manifest of another round.
    let manifest = path(3).join("manifest.json");
    let text = fs::read_to_string(&manifest).unwrap();
    fs::write(&manifest, text.replace("\"round\": 3", "\"round\": 9")).unwrap();

    let latest = Checkpoint::load_latest(dir.path()).unwrap();
    assert_eq!(latest.checkpoint.unwrap().round, 2);
    let problems: Vec<(PathBuf, CheckpointProblem)> = latest
        .skipped
        .into_iter()
        .map(|s| (s.path, s.problem))
        .collect();
    assert_eq!(problems.len(), 5, "{problems:?}");
    assert_eq!(
        problems[0],
        (
            dir.path().join("round-7.tmp"),
            CheckpointProblem::Unfinished
        )
    );
    assert_eq!(
        problems[1],
        (
            path(6),
            CheckpointProblem::Hash {
                file: "model.safetensors".into()
            }
        )
    );
    assert!(
        matches!(&problems[2].1, CheckpointProblem::Size { file, .. } if file == "optimizer.safetensors"),
        "{problems:?}"
    );
    assert!(
        matches!(problems[3].1, CheckpointProblem::Manifest(_)),
        "{problems:?}"
    );
    assert_eq!(
        problems[4].1,
        CheckpointProblem::RoundMismatch {
            expected: 3,
            found: 9
        }
    );
}

#[test]
fn no_checkpoint_yet() {
    let dir = tempfile::tempdir().unwrap();
    let latest = Checkpoint::load_latest(&dir.path().join("missing")).unwrap();
    assert!(latest.checkpoint.is_none() && latest.skipped.is_empty());
    let latest = Checkpoint::load_latest(dir.path()).unwrap();
    assert!(latest.checkpoint.is_none() && latest.skipped.is_empty());
}

#[test]
fn another_models_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    save_rounds(dir.path(), &[1], 1);
    let other = Qwen2::load(
        &model_dir("tiny-qwen2-tied-sharded"),
        Device::Cpu,
        Precision::F32,
    )
    .unwrap();
    let mut trainer = GrpoTrainer::new(&other, config()).unwrap();
    let checkpoint = Checkpoint::load_latest(dir.path())
        .unwrap()
        .checkpoint
        .unwrap();
    let err = checkpoint
        .restore(other.var_store(), trainer.optimizer_mut())
        .unwrap_err();
    assert!(matches!(err, CheckpointError::Mismatch { .. }), "{err}");
}
