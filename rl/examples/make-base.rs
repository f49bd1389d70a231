//! Makes a base model from a seed: a random Qwen2 warmed up with cross-entropy on the bare answers
//! of generated questions until it solves a target share of a probe set, saved with its config and
//! the tokenizer of `model/fixtures/tiny-qwen2`. Two presets:
//!
//! - `learning` (default out `rl/fixtures/learning-base`): the learning check's tiny model (2
//!   layers of width 64, 124 K parameters), on the easiest basic-arithmetic questions, to a
//!   quarter of the probe.
//! - `swarm` (default out `node-image/base-model`): the base model every local swarm and SAPO
//!   experiment starts from; see [`Preset::Swarm`] for its shape and mix.
//!
//! ```text
//! source scripts/env.sh
//! cargo run --release -p swarm-rl --example make-base -- --preset swarm [--out DIR]
//! ```
//!
//! Everything is drawn from the preset's seed and the run is single-threaded, so it writes the
//! same bytes every time on the same libtorch. The shape, tasks and target flags override the
//! preset's, to measure candidates.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, ValueEnum};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use swarm_model::{ChatTokenizer, Precision, Qwen2, Qwen2Config};
use swarm_rl::AdamWConfig;
use swarm_rl::warmup::{WarmupConfig, config_json, init_weights, tiny_config, warm_up};
use swarm_tasks::{Difficulty, FamilySampler, Question, TaskFamily, TaskWeight, generate};
use tch::{Device, Tensor};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Preset {
    /// The learning check's model.
    Learning,
    /// The local swarm's and the experiment's model.
    Swarm,
}

#[derive(Parser)]
struct Args {
    #[arg(long, value_enum, default_value = "learning")]
    preset: Preset,
    /// Output directory (default: the preset's).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    hidden: Option<i64>,
    #[arg(long)]
    layers: Option<i64>,
    /// Task families, comma-separated.
    #[arg(long, value_delimiter = ',')]
    tasks: Vec<String>,
    /// Greedy probe accuracy at which the warm-up stops.
    #[arg(long)]
    target: Option<f64>,
    /// Sampling temperature built into the saved weights (see [`Recipe::temperature`]).
    #[arg(long)]
    temperature: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
}

/// What a preset makes.
struct Recipe {
    seed: u64,
    /// Width; heads of 16 dimensions, half as many key/value heads (grouped-query attention
    /// like the real models), an MLP twice as wide.
    hidden: i64,
    layers: i64,
    tasks: Vec<TaskFamily>,
    target: f64,
    /// After the warm-up, the final norm's weight is divided by this, which divides every logit
    /// by it: the model keeps its greedy answers but samples as if at this temperature. A warmed-up
    /// model that knows answers it rarely samples is what RL improves fastest — it sharpens what
    /// is there, as RL does on pretrained models — whereas answers the model never learned take
    /// more rounds to find by sampling than a local swarm runs.
    temperature: f64,
    learning_rate: f64,
    out: &'static str,
}

impl Preset {
    fn recipe(self) -> Recipe {
        match self {
            Preset::Learning => Recipe {
                seed: 20_250_601,
                hidden: 64,
                layers: 2,
                // Two one-digit operands and one of `+ - *`: 243 questions in all.
                tasks: vec![TaskFamily::BasicArithmetic],
                target: 0.25,
                temperature: 1.0,
                learning_rate: 3e-3,
                out: "fixtures/learning-base",
            },
            Preset::Swarm => Recipe {
                seed: 20_261_206,
                hidden: 128,
                layers: 4,
                tasks: vec![
                    TaskFamily::BasicArithmetic,
                    TaskFamily::FractionSimplification,
                ],
                // Between the two measured bars: see node-image/base-model/README.md.
                target: 0.6,
                temperature: 2.0,
                learning_rate: 2e-3,
                out: "../node-image/base-model",
            },
        }
    }
}

fn family(name: &str) -> Result<TaskFamily, Box<dyn Error>> {
    Ok(serde_json::from_value(serde_json::Value::String(
        name.trim().to_owned(),
    ))?)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let mut recipe = args.preset.recipe();
    recipe.hidden = args.hidden.unwrap_or(recipe.hidden);
    recipe.layers = args.layers.unwrap_or(recipe.layers);
    recipe.target = args.target.unwrap_or(recipe.target);
    recipe.seed = args.seed.unwrap_or(recipe.seed);
    recipe.temperature = args.temperature.unwrap_or(recipe.temperature);
    if !args.tasks.is_empty() {
        recipe.tasks = args
            .tasks
            .iter()
            .map(|t| family(t))
            .collect::<Result<_, _>>()?;
    }
    // One intra-op thread: faster for a model this small, and the same reduction order every run.
    tch::set_num_threads(1);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = args.out.unwrap_or_else(|| root.join(recipe.out));
    // The tokenizer of the model crate's fixture: small (360 tokens), with ChatML's special tokens.
    let source = root.join("../model/fixtures/tiny-qwen2");
    let tokenizer = ChatTokenizer::from_dir(&source)?;
    let eos = tokenizer
        .token_id("<|im_end|>")
        .ok_or("the tokenizer has no <|im_end|>")?;
    let config = Qwen2Config {
        hidden_size: recipe.hidden,
        intermediate_size: recipe.hidden * 2,
        num_hidden_layers: recipe.layers,
        num_attention_heads: recipe.hidden / 16,
        num_key_value_heads: (recipe.hidden / 32).max(1),
        head_dim: 16,
        ..tiny_config(Qwen2Config::from_dir(&source)?.vocab_size, eos)
    };
    let model = Qwen2::new(config.clone(), Device::Cpu, Precision::F32)?;
    init_weights(&model, recipe.seed)?;
    let parameters: i64 = model
        .var_store()
        .variables()
        .values()
        .map(Tensor::numel)
        .map(|n| n as i64)
        .sum();

    let weights: Vec<TaskWeight> = recipe
        .tasks
        .iter()
        .map(|&family| TaskWeight { family, weight: 1 })
        .collect();
    let families = FamilySampler::new(&weights)?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(recipe.seed);
    // A single family is asked directly, with no family draw: that keeps the rng stream, and so
    // the bytes, of the learning base as committed.
    let question = |rng: &mut Xoshiro256PlusPlus| -> Question {
        match recipe.tasks.as_slice() {
            [only] => generate(*only, Difficulty::EASIEST, rng),
            _ => families.question(Difficulty::EASIEST, rng),
        }
    };
    let probe: Vec<Question> = (0..64 * recipe.tasks.len())
        .map(|_| question(&mut rng))
        .collect();
    let warmup = WarmupConfig {
        optimizer: AdamWConfig {
            learning_rate: recipe.learning_rate,
            ..AdamWConfig::default()
        },
        max_grad_norm: 1.0,
        batch_size: 32,
        target_accuracy: recipe.target,
        check_every: 25,
        max_steps: 20_000,
    };
    eprintln!(
        "{parameters} parameters (width {}, {} layers), tasks {:?}, target {}, temperature {}",
        recipe.hidden, recipe.layers, recipe.tasks, recipe.target, recipe.temperature
    );
    let started = Instant::now();
    let report = warm_up(
        &model,
        &tokenizer,
        &warmup,
        || question(&mut rng),
        &probe,
        |r| {
            let by_family: Vec<String> = r
                .probe
                .by_source
                .iter()
                .map(|s| format!("{:?} {:.2}", s.source, s.mean_reward()))
                .collect();
            eprintln!(
                "step {:5}  loss {:.4}  probe accuracy {:.3} ({})  ({:.0} s)",
                r.steps,
                r.loss,
                r.probe.mean_reward,
                by_family.join(", "),
                started.elapsed().as_secs_f64()
            );
        },
    )?;
    if report.probe.mean_reward < warmup.target_accuracy {
        return Err(format!("no target accuracy after {} steps", report.steps).into());
    }

    if recipe.temperature != 1.0 {
        let mut norm = model
            .var_store()
            .variables()
            .remove("model.norm.weight")
            .ok_or("the model has no model.norm.weight")?;
        tch::no_grad(|| {
            let _ = norm.g_div_scalar_(recipe.temperature);
        });
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
