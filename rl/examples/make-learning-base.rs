//! Makes the base model of the learning check (`rl/tests/learning.rs`) from a seed: a tiny random
//! Qwen2 warmed up on the easiest basic-arithmetic questions until it solves about a quarter of a
//! probe set, saved with its config and tokenizer.
//!
//! ```text
//! source scripts/env.sh
//! cargo run --release -p swarm-rl --example make-learning-base [-- OUT_DIR]
//! ```
//!
//! OUT_DIR defaults to `rl/fixtures/learning-base`. Everything is drawn from [`SEED`] and the run
//! is single-threaded, so it writes the same bytes every time on the same libtorch.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use swarm_model::{ChatTokenizer, Precision, Qwen2, Qwen2Config};
use swarm_rl::AdamWConfig;
use swarm_rl::warmup::{WarmupConfig, config_json, init_weights, tiny_config, warm_up};
use swarm_tasks::{Difficulty, Question, TaskFamily, generate};
use tch::{Device, Tensor};

const SEED: u64 = 20_250_601;
/// The family and level a model of this size learns in minutes: two one-digit operands and one
/// of `+ - *`, 243 questions in all.
const FAMILY: TaskFamily = TaskFamily::BasicArithmetic;

fn question(rng: &mut Xoshiro256PlusPlus) -> Question {
    generate(FAMILY, Difficulty::EASIEST, rng)
}

fn main() -> Result<(), Box<dyn Error>> {
    // One intra-op thread: faster for a model this small, and the same reduction order every run.
    tch::set_num_threads(1);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::args_os()
        .nth(1)
        .map_or_else(|| root.join("fixtures/learning-base"), PathBuf::from);
    // The tokenizer of the model crate's fixture: small (360 tokens), with ChatML's special tokens.
    let source = root.join("../model/fixtures/tiny-qwen2");
    let tokenizer = ChatTokenizer::from_dir(&source)?;
    let eos = tokenizer
        .token_id("<|im_end|>")
        .ok_or("the tokenizer has no <|im_end|>")?;
    let config = tiny_config(Qwen2Config::from_dir(&source)?.vocab_size, eos);
    let model = Qwen2::new(config.clone(), Device::Cpu, Precision::F32)?;
    init_weights(&model, SEED)?;

    let mut rng = Xoshiro256PlusPlus::seed_from_u64(SEED);
    let probe: Vec<Question> = (0..64).map(|_| question(&mut rng)).collect();
    let warmup = WarmupConfig {
        optimizer: AdamWConfig {
            learning_rate: 3e-3,
            ..AdamWConfig::default()
        },
        max_grad_norm: 1.0,
        batch_size: 32,
        target_accuracy: 0.25,
        check_every: 25,
        max_steps: 5_000,
    };
    let started = Instant::now();
    let report = warm_up(
        &model,
        &tokenizer,
        &warmup,
        || question(&mut rng),
        &probe,
        |r| {
            eprintln!(
                "step {:5}  loss {:.4}  probe accuracy {:.3}  ({:.0} s)",
                r.steps,
                r.loss,
                r.probe.mean_reward,
                started.elapsed().as_secs_f64()
            );
        },
    )?;
    if report.probe.mean_reward < warmup.target_accuracy {
        return Err(format!("no target accuracy after {} steps", report.steps).into());
    }

    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("config.json"),
        serde_json::to_string_pretty(&config_json(&config))? + "\n",
    )?;
    std::fs::copy(source.join("tokenizer.json"), out.join("tokenizer.json"))?;
    let mut tensors: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Tensor::write_safetensors(&tensors, out.join("model.safetensors"))?;
    eprintln!(
        "wrote {} after {} steps: probe accuracy {:.3}",
        out.display(),
        report.steps,
        report.probe.mean_reward
    );
    Ok(())
}
