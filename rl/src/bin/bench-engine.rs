//! The Rust side of `bench/engine`: times batched sampling or one GRPO step of a model directory
//! and prints one JSON object, which the driver puts next to the Python reference's
//! (`bench/reference.py`) measured on the same model, batch and thread count.
//!
//! ```text
//! bench-engine --model DIR --mode sample|grpo [--batch 8] [--prompt-len 64] [--new-tokens 64]
//!              [--threads 2] [--repeats 5] [--warmup 1] [--device cpu|cuda] [--precision f32|bf16]
//! ```
//!
//! The inputs are not random: prompt tokens and advantages come from [`prompt_token`] and
//! [`advantage`], which `bench/reference.py` implements identically, so both sides work on the
//! very same batch without passing files around.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use serde_json::json;
use swarm_model::{ChatTokenizer, KvCache, Precision, Qwen2};
use swarm_rl::{GrpoBatch, GrpoConfig, GrpoTrainer, Sampler, SamplingConfig};
use tch::{Device, Kind, Tensor};

type Error = Box<dyn std::error::Error>;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Sample,
    Grpo,
}

#[derive(Debug)]
struct Args {
    model: PathBuf,
    mode: Mode,
    batch: usize,
    prompt_len: usize,
    new_tokens: usize,
    threads: i32,
    repeats: usize,
    warmup: usize,
    device: Device,
    precision: Precision,
}

const USAGE: &str = "usage: bench-engine --model DIR --mode sample|grpo [--batch N] \
[--prompt-len N] [--new-tokens N] [--threads N] [--repeats N] [--warmup N] [--device cpu|cuda] \
[--precision f32|bf16]";

impl Args {
    fn parse(mut raw: impl Iterator<Item = String>) -> Result<Self, Error> {
        let mut args = Self {
            model: PathBuf::new(),
            mode: Mode::Sample,
            batch: 8,
            prompt_len: 64,
            new_tokens: 64,
            threads: 2,
            repeats: 5,
            warmup: 1,
            device: Device::Cpu,
            precision: Precision::F32,
        };
        let mut model = None;
        while let Some(flag) = raw.next() {
            let value = raw
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--model" => model = Some(PathBuf::from(value)),
                "--mode" => {
                    args.mode = match value.as_str() {
                        "sample" => Mode::Sample,
                        "grpo" => Mode::Grpo,
                        other => return Err(format!("unknown mode {other}\n{USAGE}").into()),
                    }
                }
                "--batch" => args.batch = value.parse()?,
                "--prompt-len" => args.prompt_len = value.parse()?,
                "--new-tokens" => args.new_tokens = value.parse()?,
                "--threads" => args.threads = value.parse()?,
                "--repeats" => args.repeats = value.parse()?,
                "--warmup" => args.warmup = value.parse()?,
                "--device" => {
                    args.device = match value.as_str() {
                        "cpu" => Device::Cpu,
                        "cuda" => Device::Cuda(0),
                        other => return Err(format!("unknown device {other}\n{USAGE}").into()),
                    }
                }
                "--precision" => {
                    args.precision = match value.as_str() {
                        "f32" => Precision::F32,
                        "bf16" => Precision::Bf16,
                        other => return Err(format!("unknown precision {other}\n{USAGE}").into()),
                    }
                }
                other => return Err(format!("unknown flag {other}\n{USAGE}").into()),
            }
        }
        args.model = model.ok_or_else(|| format!("--model is required\n{USAGE}"))?;
        if args.batch == 0 || args.prompt_len == 0 || args.new_tokens == 0 || args.repeats == 0 {
            return Err("batch, prompt length, new tokens and repeats must be positive".into());
        }
        Ok(args)
    }
}

/// Prompt token `pos` of row `row`, shared with `bench/reference.py`: spread over ids 3..360,
/// which every bench model's vocabulary holds and which avoids the tiny tokenizer's special
/// tokens (360..363), so no prompt contains an end-of-sequence token.
fn prompt_token(row: usize, pos: usize) -> i64 {
    3 + ((row * 1009 + pos * 7919 + row * pos * 31) % 357) as i64
}

/// Advantage of row `row`, shared with `bench/reference.py`: groups of four with distinct values,
/// so the surrogate has a gradient on every row.
fn advantage(row: usize) -> f32 {
    (row % 4) as f32 - 1.5
}

fn main() -> ExitCode {
    match Args::parse(std::env::args().skip(1)).and_then(|args| run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-engine: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Error> {
    // Both the intra-op pool (matmuls, reductions) and the inter-op pool, so libtorch uses no
    // more cores than the Python reference it is compared with.
    tch::set_num_threads(args.threads);
    tch::set_num_interop_threads(args.threads);
    let model = Qwen2::load(&args.model, args.device, args.precision)?;
    let result = match args.mode {
        Mode::Sample => bench_sample(args, &model)?,
        Mode::Grpo => bench_grpo(args, &model)?,
    };
    println!("{result}");
    Ok(())
}

/// Seconds `f` takes, after waiting for the GPU (if any) so queued kernels are counted.
fn timed<T>(device: Device, f: impl FnOnce() -> Result<T, Error>) -> Result<(f64, T), Error> {
    let start = Instant::now();
    let out = f()?;
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i64::try_from(i)?);
    }
    Ok((start.elapsed().as_secs_f64(), out))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Greedy decoding of `batch` prompts for exactly `new_tokens` tokens each (the bench models make
/// end-of-sequence tokens unreachable, and the tokens are counted rather than assumed anyway).
fn bench_sample(args: &Args, model: &Qwen2) -> Result<serde_json::Value, Error> {
    let tokenizer = ChatTokenizer::from_dir(&args.model)?;
    let prompts = (0..args.batch)
        .map(|row| {
            (0..args.prompt_len)
                .map(|pos| prompt_token(row, pos))
                .collect()
        })
        .collect::<Vec<Vec<i64>>>();
    let config = SamplingConfig {
        max_new_tokens: args.new_tokens,
        temperature: 0.0,
        ..SamplingConfig::default()
    };
    let mut sampler = Sampler::new();
    for _ in 0..args.warmup {
        sampler.sample(model, &tokenizer, &prompts, &config)?;
    }
    let mut seconds = Vec::new();
    let mut rates = Vec::new();
    let mut generated = 0;
    let mut tokens = Vec::new();
    for _ in 0..args.repeats {
        let (s, completions) = timed(args.device, || {
            Ok(sampler.sample(model, &tokenizer, &prompts, &config)?)
        })?;
        generated = completions.iter().map(|c| c.tokens.len()).sum::<usize>();
        seconds.push(s);
        rates.push(generated as f64 / s);
        tokens = completions.into_iter().map(|c| c.tokens).collect();
    }
    // Diagnostic: the prefill alone (one forward pass over the prompts into a fresh cache, the LM
    // head on the last position only, as the sampler does), to
    // tell prompt processing from the per-token decoding steps.
    let prefill = tch::no_grad(|| -> Result<f64, Error> {
        let flat = prompts.iter().flatten().copied().collect::<Vec<_>>();
        let shape = [i64::try_from(args.batch)?, i64::try_from(args.prompt_len)?];
        let ids = Tensor::from_slice(&flat)
            .f_view(shape)?
            .f_to_device(model.device())?;
        let mut cache = KvCache::new(model, shape[0], shape[1])?;
        let (s, _) = timed(args.device, || {
            Ok(model.forward_keep(&ids, None, Some(&mut cache), 1)?)
        })?;
        Ok(s)
    })?;
    Ok(json!({
        "side": "rust",
        "mode": "sample",
        "threads": tch::get_num_threads(),
        "generated_tokens": generated,
        "seconds": seconds,
        "median_seconds": median(seconds.clone()),
        "tokens_per_second": median(rates),
        "prefill_seconds": prefill,
        // For the driver's check that both sides decoded the same greedy tokens.
        "tokens": tokens,
    }))
}

/// One full GRPO step (forward log-probabilities, loss, backward, clipping, AdamW) on `batch`
/// rows of `prompt_len` prompt tokens followed by `new_tokens` completion tokens.
fn bench_grpo(args: &Args, model: &Qwen2) -> Result<serde_json::Value, Error> {
    let (rows, width) = (args.batch, args.prompt_len + args.new_tokens);
    // The completion continues the prompt's formula, so sequences look like sampled ones.
    let ids = (0..rows)
        .flat_map(|row| (0..width).map(move |pos| prompt_token(row, pos)))
        .collect::<Vec<_>>();
    let completion = (0..rows)
        .flat_map(|_| (0..width).map(|pos| i64::from(pos >= args.prompt_len)))
        .collect::<Vec<_>>();
    let advantages = (0..rows).map(advantage).collect::<Vec<_>>();
    let shape = [i64::try_from(rows)?, i64::try_from(width)?];
    let device = model.device();
    let batch = GrpoBatch {
        input_ids: Tensor::from_slice(&ids)
            .f_view(shape)?
            .f_to_device(device)?,
        attention_mask: Tensor::f_ones(shape, (Kind::Int64, device))?,
        completion_mask: Tensor::from_slice(&completion)
            .f_view(shape)?
            .f_to_device(device)?,
        advantages: Tensor::from_slice(&advantages).f_to_device(device)?,
        old_logprobs: None,
        ref_logprobs: None,
        off_policy: None,
    };
    // The defaults (β = 0, clipping at 1, one micro-batch of 8) are what a swarm round uses; the
    // Python reference is configured the same.
    let config = GrpoConfig {
        micro_batch_size: rows,
        ..GrpoConfig::default()
    };
    let mut trainer = GrpoTrainer::new(model, config)?;
    for _ in 0..args.warmup {
        trainer.step(model, None, &batch)?;
    }
    let (mut seconds, mut backward, mut update) = (Vec::new(), Vec::new(), Vec::new());
    let mut loss = 0.0;
    for _ in 0..args.repeats {
        // `GrpoTrainer::step` is exactly these two calls; timing them apart tells the
        // forward/backward pass from gradient clipping and the AdamW update.
        let (b, stats) = timed(device, || {
            Ok(trainer.compute_gradients(model, None, &batch)?)
        })?;
        let (u, _) = timed(device, || Ok(trainer.apply_gradients()?))?;
        seconds.push(b + u);
        backward.push(b);
        update.push(u);
        loss = stats.loss;
    }
    Ok(json!({
        "side": "rust",
        "mode": "grpo",
        "threads": tch::get_num_threads(),
        "trained_tokens": rows * args.new_tokens,
        "seconds": seconds,
        "median_seconds": median(seconds.clone()),
        "median_forward_backward_seconds": median(backward),
        "median_clip_update_seconds": median(update),
        "last_loss": loss,
    }))
}
