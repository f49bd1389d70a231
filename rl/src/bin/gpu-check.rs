//! The correctness half of `scripts/gpu-check`: runs a model's CUDA path against its CPU f32 path
//! and prints one JSON report (and writes it with `--out`). Timings are `bench-engine`'s job.
//!
//! ```text
//! gpu-check --model DIR [--model DIR ...] [--out FILE] [--threads N]
//! ```
//!
//! Checks, for every model:
//! - `logits`: logits of a fixed batch under each target (CUDA f32, bf16 and f32 with bf16
//!   autocast; CPU bf16 always, the measurement the tolerances rest on) against CPU f32, scaled
//!   by the standard deviation of the CPU logits, with the share of positions whose argmax agrees.
//! - `greedy`: greedy tokens on CUDA (f32 and bf16) equal to the CPU's, on the same prompts.
//! - `checkpoint`: one GRPO step on the training device and precision (bf16 on CUDA), a checkpoint
//!   written from those tensors, read back on the CPU into a fresh model and optimiser: every
//!   weight and every optimiser tensor equal to the bit.
//!
//! Without CUDA, the CUDA targets are reported as skipped with the reason, and the checkpoint
//! check runs CPU to CPU, so the same binary is the CPU smoke test of the test command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Value, json};
use swarm_model::{ChatTokenizer, Precision, Qwen2};
use swarm_rl::{Checkpoint, GrpoBatch, GrpoConfig, GrpoTrainer, Sampler, SamplingConfig};
use tch::{Device, Kind, Tensor};

type Error = Box<dyn std::error::Error>;

const USAGE: &str = "usage: gpu-check --model DIR [--model DIR ...] [--out FILE] [--threads N]";

/// Rows and tokens of the batch whose logits are compared.
const LOGIT_ROWS: usize = 4;
const LOGIT_TOKENS: usize = 48;
/// Greedy decoding: prompts, their length and the tokens generated from each.
const GREEDY_ROWS: usize = 4;
const GREEDY_PROMPT: usize = 16;
const GREEDY_NEW: usize = 32;

/// Largest logit error allowed for f32 on CUDA, as a share of the CPU logits' standard deviation.
/// Both sides compute in f32 (cuBLAS without TF32, which libtorch leaves off for matmuls); only
/// the order of the sums differs, which moves a logit by a few ulp times the depth: ~1e-6 here.
const F32_MAX_ERROR: f64 = 1e-3;
/// For bf16 weights and activations, and for f32 with bf16 autocast, the mean logit error (in
/// standard deviations of the CPU f32 logits) and the share of positions whose argmax agrees.
/// bf16 keeps 8 significant bits, so every rounding moves a value by up to 2^-9 (0.2 %); the
/// roundings in each matmul, RMSNorm input and residual add partly cancel and partly add up over
/// the layers. On the CPU (the `cpu/bf16` target, measured in every run) the committed models
/// err by 0.007-0.011 standard deviations on average and agree on 98-99.5 % of the argmaxes;
/// their largest single error, reported but not judged, reaches 0.5 standard deviations on an
/// outlier logit of the base model. The bounds leave room for CUDA's other kernels and
/// summation orders, while a wrong kernel (errors of a whole standard deviation, argmaxes at
/// random) fails both.
const BF16_MEAN_ERROR: f64 = 0.03;
const BF16_TOP1: f64 = 0.95;

#[derive(Debug)]
struct Args {
    models: Vec<PathBuf>,
    out: Option<PathBuf>,
    threads: i32,
}

impl Args {
    fn parse(mut raw: impl Iterator<Item = String>) -> Result<Self, Error> {
        let mut args = Self {
            models: Vec::new(),
            out: None,
            threads: 2,
        };
        while let Some(flag) = raw.next() {
            let value = raw
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--model" => args.models.push(PathBuf::from(value)),
                "--out" => args.out = Some(PathBuf::from(value)),
                "--threads" => args.threads = value.parse()?,
                other => return Err(format!("unknown flag {other}\n{USAGE}").into()),
            }
        }
        if args.models.is_empty() {
            return Err(format!("at least one --model is required\n{USAGE}").into());
        }
        Ok(args)
    }
}

/// One check's outcome, as it goes into the report.
#[derive(Debug)]
enum Outcome {
    Pass(Value),
    Fail(Value, String),
    Skipped(String),
}

impl Outcome {
    /// `Pass` when `ok`, else `Fail` saying `why`.
    fn judged(metrics: Value, ok: bool, why: impl FnOnce() -> String) -> Self {
        if ok {
            Self::Pass(metrics)
        } else {
            Self::Fail(metrics, why())
        }
    }

    fn to_json(&self, check: &str, model: &str, target: &str) -> Value {
        let (status, metrics, reason) = match self {
            Self::Pass(m) => ("pass", m.clone(), None),
            Self::Fail(m, why) => ("fail", m.clone(), Some(why.clone())),
            Self::Skipped(why) => ("skipped", Value::Null, Some(why.clone())),
        };
        json!({
            "check": check, "model": model, "target": target, "status": status,
            "metrics": metrics, "reason": reason,
        })
    }
}

/// Where and in which precision a model runs.
#[derive(Debug, Clone, Copy)]
struct Target {
    device: Device,
    precision: Precision,
}

impl Target {
    fn name(self) -> String {
        let device = if self.device.is_cuda() { "cuda" } else { "cpu" };
        let precision = match self.precision {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F32Autocast => "f32-autocast",
        };
        format!("{device}/{precision}")
    }
}

fn main() -> ExitCode {
    match Args::parse(std::env::args().skip(1)).and_then(|args| run(&args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("gpu-check: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every check; whether all that ran passed.
fn run(args: &Args) -> Result<bool, Error> {
    tch::set_num_threads(args.threads);
    let cuda = tch::Cuda::is_available();
    let no_cuda = "no CUDA device: libtorch found none (tch::Cuda::is_available() is false)";
    if !cuda {
        println!("gpu-check: {no_cuda}; the CUDA targets are skipped");
    }
    let cuda_targets = [Precision::F32, Precision::Bf16, Precision::F32Autocast].map(|p| Target {
        device: Device::Cuda(0),
        precision: p,
    });
    let cpu_bf16 = Target {
        device: Device::Cpu,
        precision: Precision::Bf16,
    };
    let mut results = Vec::new();
    for dir in &args.models {
        let model = model_name(dir);
        let reference = Qwen2::load(dir, Device::Cpu, Precision::F32)?;

        let ids = fixed_ids(LOGIT_ROWS, LOGIT_TOKENS, reference.config().vocab_size);
        let expected = logits(&reference, &ids)?;
        for target in std::iter::once(cpu_bf16).chain(cuda_targets) {
            let outcome = if target.device.is_cuda() && !cuda {
                Outcome::Skipped(no_cuda.into())
            } else {
                let model = Qwen2::load(dir, target.device, target.precision)?;
                compare_logits(&expected, &logits(&model, &ids)?, target)?
            };
            results.push(outcome.to_json("logits", &model, &target.name()));
        }

        let tokenizer = ChatTokenizer::from_dir(dir)?;
        let prompts = fixed_prompts(GREEDY_ROWS, GREEDY_PROMPT, reference.config().vocab_size);
        let expected = greedy(&reference, &tokenizer, &prompts)?;
        for target in &cuda_targets[..2] {
            let outcome = if cuda {
                let model = Qwen2::load(dir, target.device, target.precision)?;
                let tokens = greedy(&model, &tokenizer, &prompts)?;
                compare_greedy(&expected, &tokens)
            } else {
                Outcome::Skipped(no_cuda.into())
            };
            results.push(outcome.to_json("greedy", &model, &target.name()));
        }

        let trained = if cuda {
            Target {
                device: Device::Cuda(0),
                precision: Precision::default_for(Device::Cuda(0)),
            }
        } else {
            Target {
                device: Device::Cpu,
                precision: Precision::F32,
            }
        };
        let outcome = checkpoint_round_trip(dir, trained)?;
        results.push(outcome.to_json("checkpoint", &model, &format!("{} -> cpu", trained.name())));
    }

    let failed = results.iter().filter(|r| r["status"] == "fail").count();
    let report = json!({
        "cuda": cuda,
        "cuda_devices": tch::Cuda::device_count(),
        "failed": failed,
        "checks": results,
    });
    print_table(&report);
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(failed == 0)
}

fn model_name(dir: &Path) -> String {
    dir.file_name()
        .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into())
}

/// Token `pos` of row `row`: spread over the vocabulary's ordinary ids (the committed models
/// keep their special tokens at 360 and above), the same every run.
fn fixed_token(row: usize, pos: usize, vocab: i64) -> i64 {
    let ordinary = usize::try_from(vocab.min(360) - 3).unwrap_or(1).max(1);
    3 + ((row * 1009 + pos * 7919 + row * pos * 31) % ordinary) as i64
}

fn fixed_prompts(rows: usize, tokens: usize, vocab: i64) -> Vec<Vec<i64>> {
    (0..rows)
        .map(|row| {
            (0..tokens)
                .map(|pos| fixed_token(row, pos, vocab))
                .collect()
        })
        .collect()
}

fn fixed_ids(rows: usize, tokens: usize, vocab: i64) -> Tensor {
    let flat: Vec<i64> = fixed_prompts(rows, tokens, vocab).concat();
    Tensor::from_slice(&flat).view([rows as i64, tokens as i64])
}

/// `model`'s logits for `ids`, as f32 on the CPU.
fn logits(model: &Qwen2, ids: &Tensor) -> Result<Tensor, Error> {
    let ids = ids.f_to_device(model.device())?;
    let logits = tch::no_grad(|| model.forward(&ids, None, None))?;
    Ok(logits.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?)
}

fn compare_logits(expected: &Tensor, actual: &Tensor, target: Target) -> Result<Outcome, Error> {
    let scale = expected.f_std(true)?.f_double_value(&[])?;
    let error = actual.f_sub(expected)?.f_abs()?;
    let max_error = error.f_max()?.f_double_value(&[])? / scale;
    let mean_error = error.f_mean(Kind::Double)?.f_double_value(&[])? / scale;
    let top1 = actual
        .f_argmax(-1, false)?
        .f_eq_tensor(&expected.f_argmax(-1, false)?)?
        .f_mean(Kind::Double)?
        .f_double_value(&[])?;
    let metrics = json!({
        "max_error_per_std": max_error, "mean_error_per_std": mean_error, "top1_agreement": top1,
        "logit_std": scale,
    });
    let ok = match target.precision {
        Precision::F32 => max_error <= F32_MAX_ERROR && top1 == 1.0,
        Precision::Bf16 | Precision::F32Autocast => {
            mean_error <= BF16_MEAN_ERROR && top1 >= BF16_TOP1
        }
    };
    Ok(Outcome::judged(metrics, ok, || {
        format!(
            "max error {max_error:.3e}, mean {mean_error:.3e} standard deviations of the CPU f32 \
             logits, argmax agreement {top1:.3}: over the bounds for {} (f32: max {F32_MAX_ERROR:.0e}, \
             agreement 1; bf16: mean {BF16_MEAN_ERROR}, agreement {BF16_TOP1})",
            target.name()
        )
    }))
}

/// Greedy tokens for each prompt, exactly [`GREEDY_NEW`] unless the model ends a row.
fn greedy(
    model: &Qwen2,
    tokenizer: &ChatTokenizer,
    prompts: &[Vec<i64>],
) -> Result<Vec<Vec<i64>>, Error> {
    let config = SamplingConfig {
        max_new_tokens: GREEDY_NEW,
        temperature: 0.0,
        ..SamplingConfig::default()
    };
    let completions = Sampler::new().sample(model, tokenizer, prompts, &config)?;
    Ok(completions.into_iter().map(|c| c.tokens).collect())
}

fn compare_greedy(expected: &[Vec<i64>], actual: &[Vec<i64>]) -> Outcome {
    let total: usize = expected.iter().map(Vec::len).sum();
    let equal_prefix: usize = expected
        .iter()
        .zip(actual)
        .map(|(e, a)| e.iter().zip(a).take_while(|(x, y)| x == y).count())
        .sum();
    let metrics = json!({ "tokens": total, "equal_before_first_difference": equal_prefix });
    Outcome::judged(metrics, expected == actual, || {
        format!("greedy tokens differ from the CPU's after {equal_prefix} of {total}")
    })
}

/// A fixed GRPO batch of `rows` rows, half prompt and half completion, on `device`.
fn grpo_batch(rows: usize, width: usize, vocab: i64, device: Device) -> Result<GrpoBatch, Error> {
    let shape = [rows as i64, width as i64];
    let completion: Vec<i64> = (0..rows)
        .flat_map(|_| (0..width).map(|pos| i64::from(pos >= width / 2)))
        .collect();
    let advantages: Vec<f32> = (0..rows).map(|row| (row % 4) as f32 - 1.5).collect();
    Ok(GrpoBatch {
        input_ids: fixed_ids(rows, width, vocab).f_to_device(device)?,
        attention_mask: Tensor::f_ones(shape, (Kind::Int64, device))?,
        completion_mask: Tensor::from_slice(&completion)
            .f_view(shape)?
            .f_to_device(device)?,
        advantages: Tensor::from_slice(&advantages).f_to_device(device)?,
        old_logprobs: None,
        ref_logprobs: None,
        off_policy: None,
    })
}

/// One GRPO step on `trained`, a checkpoint of it, and the checkpoint restored on the CPU: the
/// restored weights and optimiser state must equal the trained ones bit for bit.
fn checkpoint_round_trip(dir: &Path, trained: Target) -> Result<Outcome, Error> {
    let model = Qwen2::load(dir, trained.device, trained.precision)?;
    let config = GrpoConfig {
        optimizer: swarm_rl::AdamWConfig {
            learning_rate: 1e-3,
            ..Default::default()
        },
        ..GrpoConfig::default()
    };
    let mut trainer = GrpoTrainer::new(&model, config)?;
    let batch = grpo_batch(8, 32, model.config().vocab_size, trained.device)?;
    let loss = trainer.step(&model, None, &batch)?.loss;

    let scratch = std::env::temp_dir().join(format!("gpu-check-{}", std::process::id()));
    Checkpoint::save(&scratch, 1, model.var_store(), trainer.optimizer(), 1)?;
    let restored = Qwen2::load(dir, Device::Cpu, trained.precision)?;
    // Before the restore `restored` holds the weights as loaded: the step must have moved them,
    // or an ignored checkpoint would pass for a faithful one.
    let moved = differing(
        named(model.var_store().variables()),
        named(restored.var_store().variables()),
    )?
    .1
    .len();
    let mut restored_trainer = GrpoTrainer::new(&restored, config)?;
    let checkpoint = Checkpoint::load_latest(&scratch)?
        .checkpoint
        .ok_or("the checkpoint just written is not found")?;
    checkpoint.restore(restored.var_store(), restored_trainer.optimizer_mut())?;
    std::fs::remove_dir_all(&scratch)?;

    let weights = differing(
        named(model.var_store().variables()),
        named(restored.var_store().variables()),
    )?;
    let state = differing(
        trainer.optimizer().state()?,
        restored_trainer.optimizer().state()?,
    )?;
    let metrics = json!({
        "loss": loss,
        "weights_moved_by_the_step": moved,
        "weights": weights.0, "weights_differing": weights.1,
        "optimizer_tensors": state.0, "optimizer_tensors_differing": state.1,
    });
    Ok(Outcome::judged(
        metrics,
        moved > 0 && weights.1.is_empty() && state.1.is_empty() && state.0 > 0,
        || {
            format!(
                "the step moved {moved} weights; restored on the CPU, {} weights and {} \
                 optimiser tensors differ",
                weights.1.len(),
                state.1.len()
            )
        },
    ))
}

fn named(variables: std::collections::HashMap<String, Tensor>) -> Vec<(String, Tensor)> {
    variables.into_iter().collect()
}

/// How many tensors `a` holds, and the names of those `b` lacks or holds with other bits.
fn differing(
    a: Vec<(String, Tensor)>,
    b: Vec<(String, Tensor)>,
) -> Result<(usize, Vec<String>), Error> {
    let b: BTreeMap<String, Tensor> = b.into_iter().collect();
    let mut differing = Vec::new();
    for (name, tensor) in &a {
        let same = match b.get(name) {
            Some(other) => {
                let here = tensor.f_to_device(Device::Cpu)?;
                here.size() == other.size() && here.kind() == other.kind() && here.f_equal(other)?
            }
            None => false,
        };
        if !same {
            differing.push(name.clone());
        }
    }
    differing.sort();
    Ok((a.len(), differing))
}

fn print_table(report: &Value) {
    println!("| check | model | target | status | details |");
    println!("| --- | --- | --- | --- | --- |");
    for check in report["checks"].as_array().into_iter().flatten() {
        let details = match (&check["metrics"], &check["reason"]) {
            (Value::Null, reason) => reason.as_str().unwrap_or_default().to_owned(),
            (metrics, Value::Null) => metrics.to_string(),
            (metrics, reason) => format!("{} {metrics}", reason.as_str().unwrap_or_default()),
        };
        println!(
            "| {} | {} | {} | {} | {details} |",
            check["check"].as_str().unwrap_or_default(),
            check["model"].as_str().unwrap_or_default(),
            check["target"].as_str().unwrap_or_default(),
            check["status"].as_str().unwrap_or_default(),
        );
    }
}
