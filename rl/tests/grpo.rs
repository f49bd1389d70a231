//! GRPO against TRL: `fixtures/grpo_reference.*` hold what TRL's `GRPOTrainer._compute_loss`,
//! `clip_grad_norm_` and `torch.optim.AdamW` computed for a fixed batch on the committed tiny
//! Qwen2 (see `fixtures/make_grpo_reference.py`). No Python is needed to run these tests.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use swarm_model::{Precision, Qwen2};
use swarm_rl::{
    AdamW, AdamWConfig, GrpoBatch, GrpoConfig, GrpoError, GrpoLoss, GrpoTrainer, advantages,
    group_has_signal,
};
use tch::{Device, Kind, Tensor, nn};

/// Bound on |rust - torch| for the loss and the statistics.
const SCALAR_TOLERANCE: f64 = 1e-6;
/// Bound on |rust - torch| / max(1, max |torch|) for gradients and updated weights.
const TENSOR_TOLERANCE: f64 = 1e-5;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn tiny_model() -> Qwen2 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/fixtures/tiny-qwen2");
    Qwen2::load(&dir, Device::Cpu, Precision::F32).unwrap()
}

struct Reference {
    tensors: HashMap<String, Tensor>,
    meta: serde_json::Value,
}

impl Reference {
    fn load() -> Self {
        let tensors = Tensor::read_safetensors(fixtures().join("grpo_reference.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
        let text = std::fs::read_to_string(fixtures().join("grpo_reference.json")).unwrap();
        Self {
            tensors,
            meta: serde_json::from_str(&text).unwrap(),
        }
    }

    fn t(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("fixture lacks {name}"))
    }

    fn hyper(&self, name: &str) -> f64 {
        self.meta["hyper"][name].as_f64().unwrap()
    }

    fn scalar(&self, step: &str, name: &str) -> f64 {
        self.meta["scalars"][step][name].as_f64().unwrap()
    }

    fn named(&self) -> Vec<String> {
        self.meta["named"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            learning_rate: self.hyper("learning_rate"),
            beta1: self.hyper("beta1"),
            beta2: self.hyper("beta2"),
            eps: self.hyper("adam_epsilon"),
            weight_decay: self.hyper("weight_decay"),
        }
    }

    fn config(&self, kl_beta: f64, micro_batch_size: usize) -> GrpoConfig {
        GrpoConfig {
            loss: GrpoLoss {
                clip_epsilon_low: self.hyper("clip_epsilon_low"),
                clip_epsilon_high: self.hyper("clip_epsilon_high"),
                kl_beta,
                ..GrpoLoss::default()
            },
            optimizer: self.adamw(),
            max_grad_norm: self.hyper("max_grad_norm"),
            micro_batch_size,
        }
    }

    fn batch(&self) -> GrpoBatch {
        GrpoBatch {
            input_ids: self.t("input_ids").shallow_clone(),
            attention_mask: self.t("attention_mask").shallow_clone(),
            completion_mask: self.t("completion_mask").shallow_clone(),
            advantages: self.t("advantages").shallow_clone(),
            old_logprobs: None,
            ref_logprobs: None,
            off_policy: None,
        }
    }

    /// The completion part `[B, C]` of `[B, T - 1]` log-probabilities, as TRL lays them out.
    fn completion_part(&self, logprobs: &Tensor) -> Tensor {
        let prompt = self.meta["prompt_len"].as_i64().unwrap();
        let completion = self.meta["completion_len"].as_i64().unwrap();
        logprobs.narrow(1, prompt - 1, completion)
    }
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

/// |actual - expected| relative to the larger of 1 and the expected values' magnitude.
fn relative_diff(actual: &Tensor, expected: &Tensor) -> f64 {
    assert_eq!(actual.size(), expected.size());
    max_abs(&(actual - expected)) / max_abs(expected).max(1.0)
}

fn assert_close(what: &str, actual: f64, expected: f64) {
    let d = (actual - expected).abs();
    eprintln!("{what}: rust {actual:.9} torch {expected:.9} |diff| {d:.2e}");
    assert!(d <= SCALAR_TOLERANCE, "{what}: {actual} vs {expected}");
}

fn variable(model: &Qwen2, name: &str) -> Tensor {
    model.var_store().variables()[name].shallow_clone()
}

fn check_named(r: &Reference, model: &Qwen2, prefix: &str, grad: bool) {
    for name in r.named() {
        let var = variable(model, &name);
        let actual = if grad { var.grad() } else { var.detach() };
        let d = relative_diff(&actual, r.t(&format!("{prefix}.{name}")));
        eprintln!("{prefix}.{name}: relative diff {d:.2e}");
        assert!(d <= TENSOR_TOLERANCE, "{prefix}.{name}: {d}");
    }
}

#[test]
fn advantages_match_trl() {
    let r = Reference::load();
    let actual = advantages(&[[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 1.0, 1.0]]);
    let d = relative_diff(&Tensor::from_slice(&actual), r.t("advantages"));
    assert!(d <= 1e-6, "{d}");
    // Bessel's correction: [1, 0] has std 0.707..., so the advantages are ±0.7070...
    let two = advantages(&[[1.0f32, 0.0]]);
    assert!((two[0] - 0.5 / (0.5f32.sqrt() + 1e-4)).abs() < 1e-6);
    assert_eq!(advantages(&[[1.0f32, 1.0, 1.0]]), vec![0.0; 3]);
    assert_eq!(advantages(&[[3.0f32]]), vec![0.0]);
}

#[test]
fn zero_signal_groups_are_recognised() {
    assert!(!group_has_signal(&[1.0, 1.0, 1.0]));
    assert!(!group_has_signal(&[0.5]));
    assert!(group_has_signal(&[1.0, 1.0, 0.0]));
}

#[test]
fn logprobs_match_trl() {
    let r = Reference::load();
    let model = tiny_model();
    let batch = r.batch();
    let logprobs = tch::no_grad(|| {
        model
            .token_logprobs(&batch.input_ids, Some(&batch.attention_mask))
            .unwrap()
    });
    let mask = r.completion_part(&batch.completion_mask.narrow(1, 1, 12));
    let actual = r.completion_part(&logprobs) * &mask;
    let d = max_abs(&(actual - r.t("initial_logps") * &mask));
    eprintln!("completion log-probabilities: max |diff| {d:.2e}");
    assert!(d <= 1e-5, "{d}");
}

/// Step 1 (β = 0, ratio 1) and step 2 (β > 0 against the initial weights, explicit old
/// log-probabilities) against TRL, with `micro` rows per forward/backward pass.
fn two_steps_match_trl(micro: usize) {
    let r = Reference::load();
    let policy = tiny_model();
    let initial = tiny_model();

    let mut trainer = GrpoTrainer::new(&policy, r.config(0.0, micro)).unwrap();
    let batch = r.batch();
    let stats = trainer.compute_gradients(&policy, None, &batch).unwrap();
    assert_close("step1 loss", stats.loss, r.scalar("step1", "loss"));
    assert_close(
        "step1 clip fraction",
        stats.clip_fraction,
        r.scalar("step1", "clip_fraction"),
    );
    assert_eq!(stats.kl, None);
    check_named(&r, &policy, "step1.grad", true);
    let norm = trainer.apply_gradients().unwrap();
    let expected = r.scalar("step1", "grad_norm");
    assert!(
        (norm - expected).abs() <= 1e-5 * expected,
        "{norm} vs {expected}"
    );
    check_named(&r, &policy, "step1.after", false);

    // A second trainer with β > 0 continues from the first one's optimiser state.
    let beta = r.hyper("kl_beta_step2");
    let mut trainer2 = GrpoTrainer::new(&policy, r.config(beta, micro)).unwrap();
    trainer2
        .optimizer_mut()
        .load_state(&trainer.optimizer().state().unwrap())
        .unwrap();
    let mut batch = r.batch();
    batch.old_logprobs = Some(tch::no_grad(|| {
        initial
            .token_logprobs(&batch.input_ids, Some(&batch.attention_mask))
            .unwrap()
    }));
    let stats = trainer2.step(&policy, Some(&initial), &batch).unwrap();
    assert_close("step2 loss", stats.loss, r.scalar("step2", "loss"));
    assert_close("step2 kl", stats.kl.unwrap(), r.scalar("step2", "kl"));
    assert_close(
        "step2 clip fraction",
        stats.clip_fraction,
        r.scalar("step2", "clip_fraction"),
    );
    let expected = r.scalar("step2", "grad_norm");
    assert!(
        (stats.grad_norm - expected).abs() <= 1e-5 * expected,
        "{} vs {expected}",
        stats.grad_norm
    );
    check_named(&r, &policy, "step2.after", false);
}

#[test]
fn full_batch_matches_trl() {
    two_steps_match_trl(8);
}

#[test]
fn micro_batches_match_the_full_batch() {
    two_steps_match_trl(4);
    // Uneven micro-batches (3, 3, 2) too.
    two_steps_match_trl(3);
}

#[test]
fn step2_gradients_match_trl() {
    let r = Reference::load();
    let policy = tiny_model();
    let initial = tiny_model();
    let mut trainer = GrpoTrainer::new(&policy, r.config(0.0, 8)).unwrap();
    trainer.step(&policy, None, &r.batch()).unwrap();

    let mut trainer2 = GrpoTrainer::new(&policy, r.config(r.hyper("kl_beta_step2"), 8)).unwrap();
    let mut batch = r.batch();
    let initial_logprobs = tch::no_grad(|| {
        initial
            .token_logprobs(&batch.input_ids, Some(&batch.attention_mask))
            .unwrap()
    });
    // Reference log-probabilities passed in rather than computed from a reference model.
    batch.old_logprobs = Some(initial_logprobs.shallow_clone());
    batch.ref_logprobs = Some(initial_logprobs);
    let stats = trainer2.compute_gradients(&policy, None, &batch).unwrap();
    assert_close("step2 loss", stats.loss, r.scalar("step2", "loss"));
    check_named(&r, &policy, "step2.grad", true);
    let logprobs = tch::no_grad(|| {
        policy
            .token_logprobs(&batch.input_ids, Some(&batch.attention_mask))
            .unwrap()
    });
    let mask = r.completion_part(&batch.completion_mask.narrow(1, 1, 12));
    let d = max_abs(&((r.completion_part(&logprobs) - r.t("step2.logps")) * mask));
    eprintln!("step2 log-probabilities: max |diff| {d:.2e}");
    assert!(d <= 1e-5, "{d}");
}

#[test]
fn kl_without_reference_is_refused() {
    let r = Reference::load();
    let policy = tiny_model();
    let mut trainer = GrpoTrainer::new(&policy, r.config(0.1, 8)).unwrap();
    let err = trainer.step(&policy, None, &r.batch()).unwrap_err();
    assert!(matches!(err, GrpoError::NoReference(_)), "{err}");
}

#[test]
fn adamw_matches_torch() {
    let r = Reference::load();
    let vs = nn::VarStore::new(Device::Cpu);
    let param = vs.root().zeros("p", &[5, 7]);
    tch::no_grad(|| param.shallow_clone().copy_(r.t("adamw.initial")));
    let mut adamw = AdamW::new(&vs, r.adamw()).unwrap();
    for step in 0..3 {
        adamw.zero_grad();
        // d/dp sum(p * g) = g: the gradient torch was given.
        (&param * r.t(&format!("adamw.grad.{step}")))
            .sum(Kind::Float)
            .backward();
        adamw.step().unwrap();
        let d = relative_diff(&param.detach(), r.t(&format!("adamw.after.{step}")));
        eprintln!("adamw step {step}: relative diff {d:.2e}");
        assert!(d <= 1e-6, "step {step}: {d}");
    }
    assert_eq!(adamw.step_count(), 3);
}
