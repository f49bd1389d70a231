//! The sampler on the tiny Qwen2 fixture (model/fixtures/tiny-qwen2): the cached, left-padded
//! batch against uncached decoding and transformers' generate(), reproducibility, the filters,
//! stop conditions and bounded memory.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use swarm_model::{ChatMessage, ChatTokenizer, Precision, Qwen2, Role};
use swarm_rl::{Completion, FinishReason, Sampler, SamplingConfig, SamplingError};
use tch::{Device, Tensor};

/// The memory test reads the process's RSS, which other tests running in parallel threads would
/// move; every test holds this lock.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/fixtures/tiny-qwen2")
}

fn load() -> (Qwen2, ChatTokenizer) {
    // The tiny model gains nothing from intra-op threads, and on a busy machine libtorch's
    // spinning worker threads made these tests 50 times slower.
    tch::set_num_threads(1);
    let dir = fixture();
    (
        Qwen2::load(&dir, Device::Cpu, Precision::F32).unwrap(),
        ChatTokenizer::from_dir(&dir).unwrap(),
    )
}

/// Chat-templated questions of different lengths, so a batch of them is left-padded.
fn prompts(tokenizer: &ChatTokenizer) -> Vec<Vec<i64>> {
    [
        "What is 12 + 35?",
        "Convert 255 to base 16: the result is?",
        "7 * 6?",
    ]
    .iter()
    .map(|q| {
        tokenizer
            .encode_chat(&[ChatMessage::new(Role::User, *q)], true)
            .unwrap()
    })
    .collect()
}

fn greedy(max_new_tokens: usize) -> SamplingConfig {
    SamplingConfig {
        max_new_tokens,
        temperature: 0.0,
        ..SamplingConfig::default()
    }
}

fn sampled(max_new_tokens: usize, seed: u64) -> SamplingConfig {
    SamplingConfig {
        max_new_tokens,
        temperature: 1.0,
        seed,
        ..SamplingConfig::default()
    }
}

fn tokens(completions: &[Completion]) -> Vec<Vec<i64>> {
    completions.iter().map(|c| c.tokens.clone()).collect()
}

/// Greedy decoding without a cache or padding: the whole sequence through the model each step.
fn uncached_greedy(model: &Qwen2, prompt: &[i64], steps: usize) -> Vec<i64> {
    let mut ids = prompt.to_vec();
    tch::no_grad(|| {
        for _ in 0..steps {
            let input = Tensor::from_slice(&ids).unsqueeze(0);
            let logits = model.forward(&input, None, None).unwrap();
            ids.push(logits.select(1, -1).argmax(-1, false).int64_value(&[0]));
        }
    });
    ids.split_off(prompt.len())
}

#[test]
fn greedy_batch_matches_each_prompt_alone_and_uncached_decoding() {
    let _serial = serial();
    let (model, tokenizer) = load();
    let prompts = prompts(&tokenizer);
    let lengths: Vec<_> = prompts.iter().map(Vec::len).collect();
    assert!(lengths.iter().min() < lengths.iter().max(), "{lengths:?}");
    let steps = 20;
    let mut sampler = Sampler::new();
    let batch = sampler
        .sample(&model, &tokenizer, &prompts, &greedy(steps))
        .unwrap();
    for (i, prompt) in prompts.iter().enumerate() {
        let alone = sampler
            .sample(
                &model,
                &tokenizer,
                std::slice::from_ref(prompt),
                &greedy(steps),
            )
            .unwrap();
        assert_eq!(batch[i].tokens, alone[0].tokens, "prompt {i}");
        assert_eq!(batch[i].prompt_len, prompt.len());
        let expected = uncached_greedy(&model, prompt, steps);
        // The random fixture never picks an end-of-sequence token this early.
        assert_eq!(batch[i].finish, FinishReason::Length);
        assert_eq!(batch[i].tokens, expected, "prompt {i}");
        assert_eq!(
            batch[i].text,
            tokenizer.decode(&batch[i].tokens, true).unwrap()
        );
    }
}

/// The independent oracle: transformers' greedy generate() on the same fixture
/// (fixtures/make_greedy_reference.py).
#[test]
fn greedy_matches_transformers_generate() {
    #[derive(serde::Deserialize)]
    struct Reference {
        max_new_tokens: usize,
        cases: Vec<Case>,
    }
    #[derive(serde::Deserialize)]
    struct Case {
        question: String,
        prompt_ids: Vec<i64>,
        completion_ids: Vec<i64>,
    }
    let _serial = serial();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/greedy_reference.json");
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (model, tokenizer) = load();
    let prompts: Vec<_> = reference
        .cases
        .iter()
        .map(|case| {
            let ids = tokenizer
                .encode_chat(&[ChatMessage::new(Role::User, &case.question)], true)
                .unwrap();
            assert_eq!(ids, case.prompt_ids, "{}", case.question);
            ids
        })
        .collect();
    let completions = Sampler::new()
        .sample(
            &model,
            &tokenizer,
            &prompts,
            &greedy(reference.max_new_tokens),
        )
        .unwrap();
    let expected: Vec<_> = reference
        .cases
        .iter()
        .map(|c| c.completion_ids.clone())
        .collect();
    assert_eq!(tokens(&completions), expected);
}

#[test]
fn same_seed_gives_same_tokens_and_another_seed_others() {
    let _serial = serial();
    let (model, tokenizer) = load();
    // A group: one question repeated, as GRPO samples it.
    let group = vec![prompts(&tokenizer)[0].clone(); 4];
    let mut sampler = Sampler::new();
    let first = sampler
        .sample(&model, &tokenizer, &group, &sampled(16, 7))
        .unwrap();
    let again = sampler
        .sample(&model, &tokenizer, &group, &sampled(16, 7))
        .unwrap();
    let fresh = Sampler::new()
        .sample(&model, &tokenizer, &group, &sampled(16, 7))
        .unwrap();
    // Torch's global generator does not take part.
    tch::manual_seed(12345);
    let reseeded = sampler
        .sample(&model, &tokenizer, &group, &sampled(16, 7))
        .unwrap();
    let other = sampler
        .sample(&model, &tokenizer, &group, &sampled(16, 8))
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(first, fresh);
    assert_eq!(first, reseeded);
    assert_ne!(tokens(&first), tokens(&other));
    // The members of a group draw different completions.
    assert_ne!(first[0].tokens, first[1].tokens);
}

/// Prompts asked several times (as a GRPO group asks a question G times) are prefilled once and
/// shared: every completion's recorded log-probabilities are the model's own log-probabilities
/// of its tokens after its prompt, and greedy rows of a repeated prompt match it asked alone.
#[test]
fn repeated_prompts_share_their_prefill_and_logprobs_are_the_models() {
    let _serial = serial();
    let (model, tokenizer) = load();
    let distinct = prompts(&tokenizer);
    let repeated: Vec<Vec<i64>> = distinct
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.clone(), 3))
        .collect();
    let mut sampler = Sampler::new();
    let completions = sampler
        .sample(&model, &tokenizer, &repeated, &sampled(12, 9))
        .unwrap();
    for (prompt, completion) in repeated.iter().zip(&completions) {
        assert_eq!(completion.logprobs.len(), completion.tokens.len());
        let row: Vec<i64> = prompt.iter().chain(&completion.tokens).copied().collect();
        let ids = Tensor::from_slice(&row).unsqueeze(0);
        let expected = tch::no_grad(|| model.token_logprobs(&ids, None).unwrap());
        let expected = Vec::<f32>::try_from(expected.squeeze_dim(0).narrow(
            0,
            prompt.len() as i64 - 1,
            completion.tokens.len() as i64,
        ))
        .unwrap();
        for (got, want) in completion.logprobs.iter().zip(&expected) {
            assert!((got - want).abs() < 1e-4, "{got} != {want}");
            assert!(*got <= 0.0);
        }
    }
    let greedy_rows = sampler
        .sample(&model, &tokenizer, &repeated, &greedy(10))
        .unwrap();
    for (index, prompt) in distinct.iter().enumerate() {
        let alone = sampler
            .sample(
                &model,
                &tokenizer,
                std::slice::from_ref(prompt),
                &greedy(10),
            )
            .unwrap();
        for row in &greedy_rows[index * 3..index * 3 + 3] {
            assert_eq!(row.tokens, alone[0].tokens);
            assert!(row.logprobs.iter().all(|l| *l == 0.0));
        }
    }
}

#[test]
fn top_k_one_is_greedy() {
    let _serial = serial();
    let (model, tokenizer) = load();
    let prompts = prompts(&tokenizer);
    let mut sampler = Sampler::new();
    let expected = sampler
        .sample(&model, &tokenizer, &prompts, &greedy(12))
        .unwrap();
    for top_p in [1.0, 0.5] {
        let config = SamplingConfig {
            max_new_tokens: 12,
            temperature: 0.7,
            top_k: 1,
            top_p,
            seed: 3,
            ..SamplingConfig::default()
        };
        let actual = sampler
            .sample(&model, &tokenizer, &prompts, &config)
            .unwrap();
        assert_eq!(tokens(&actual), tokens(&expected));
    }
    // A tiny top-p keeps only the most likely token too.
    let config = SamplingConfig {
        top_p: 1e-6,
        ..sampled(12, 3)
    };
    let actual = sampler
        .sample(&model, &tokenizer, &prompts, &config)
        .unwrap();
    assert_eq!(tokens(&actual), tokens(&expected));
}

#[test]
fn stop_strings_cut_the_text_and_end_the_completion() {
    let _serial = serial();
    let (model, tokenizer) = load();
    let prompt = vec![prompts(&tokenizer)[0].clone()];
    let mut sampler = Sampler::new();
    let full = sampler
        .sample(&model, &tokenizer, &prompt, &greedy(24))
        .unwrap()
        .remove(0);
    // An ASCII piece from the middle of the greedy text, so it is complete once decoded.
    let text = &full.text;
    let start = text
        .char_indices()
        .position(|(i, c)| i >= text.len() / 3 && c.is_ascii_alphanumeric())
        .map(|p| text.char_indices().nth(p).unwrap().0)
        .unwrap();
    let stop: String = text[start..].chars().take(2).collect();
    assert!(stop.is_ascii(), "{text:?}");
    let end = text.find(&stop).unwrap() + stop.len();
    let config = SamplingConfig {
        stop_strings: vec!["never appears".to_owned(), stop.clone()],
        ..greedy(24)
    };
    let cut = sampler
        .sample(&model, &tokenizer, &prompt, &config)
        .unwrap()
        .remove(0);
    eprintln!("stop string {stop:?}: {:?} cut from {text:?}", cut.text);
    assert_eq!(cut.finish, FinishReason::StopString);
    assert_eq!(cut.text, text[..end], "stop {stop:?} in {text:?}");
    assert!(cut.tokens.len() < full.tokens.len());
    assert_eq!(cut.tokens, full.tokens[..cut.tokens.len()]);
    // It stopped at the token that completed the stop string, not later.
    let shorter = tokenizer
        .decode(&cut.tokens[..cut.tokens.len() - 1], true)
        .unwrap();
    assert!(!shorter.contains(&stop), "{shorter:?}");
}

/// The fixture never produces its end-of-sequence tokens early, so this test makes one of the
/// tokens greedy decoding produces the end-of-sequence token in a copy of the fixture.
#[test]
fn eos_token_ends_the_completion_and_is_kept() {
    let _serial = serial();
    let (model, tokenizer) = load();
    let prompt = vec![prompts(&tokenizer)[1].clone()];
    let greedy_tokens = Sampler::new()
        .sample(&model, &tokenizer, &prompt, &greedy(16))
        .unwrap()
        .remove(0)
        .tokens;
    let eos = greedy_tokens[5];
    let dir = tempfile::tempdir().unwrap();
    for file in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture().join(file), dir.path().join(file)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap())
            .unwrap();
    config["eos_token_id"] = eos.into();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let model = Qwen2::load(dir.path(), Device::Cpu, Precision::F32).unwrap();

    let end = greedy_tokens.iter().position(|&t| t == eos).unwrap();
    let completion = Sampler::new()
        .sample(&model, &tokenizer, &prompt, &greedy(16))
        .unwrap()
        .remove(0);
    assert_eq!(completion.finish, FinishReason::Eos);
    assert_eq!(completion.tokens, greedy_tokens[..=end]);
}

#[test]
fn max_new_tokens_bounds_every_completion() {
    let _serial = serial();
    let (model, tokenizer) = load();
    let prompts = prompts(&tokenizer);
    let completions = Sampler::new()
        .sample(&model, &tokenizer, &prompts, &sampled(5, 1))
        .unwrap();
    for completion in completions {
        assert!(completion.tokens.len() <= 5, "{completion:?}");
        if completion.tokens.len() == 5 && completion.finish != FinishReason::Eos {
            assert_eq!(completion.finish, FinishReason::Length);
        }
    }
}

#[test]
fn bad_inputs_are_rejected() {
    let _serial = serial();
    let (model, tokenizer) = load();
    let mut sampler = Sampler::new();
    let mut sample = |prompts: &[Vec<i64>], config: &SamplingConfig| {
        sampler.sample(&model, &tokenizer, prompts, config)
    };
    assert!(matches!(
        sample(&[], &greedy(4)),
        Err(SamplingError::NoPrompts)
    ));
    assert!(matches!(
        sample(&[vec![1], vec![]], &greedy(4)),
        Err(SamplingError::EmptyPrompt { index: 1 })
    ));
    assert!(matches!(
        sample(&[vec![1, 384]], &greedy(4)),
        Err(SamplingError::TokenOutOfRange { id: 384, .. })
    ));
    // The fixture has 128 positions.
    assert!(matches!(
        sample(&[vec![1; 100]], &greedy(29)),
        Err(SamplingError::TooLong { .. })
    ));
    assert!(sample(&[vec![1; 100]], &greedy(28)).is_ok());
    assert!(matches!(
        sample(&[vec![1]], &greedy(0)),
        Err(SamplingError::Config {
            field: "max_new_tokens",
            ..
        })
    ));
}

fn rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Round after round with the same configuration, the sampler allocates its cache once and the
/// process does not grow: the failure the reference implementation's users see as nodes lost to
/// slow memory growth.
#[test]
fn memory_stays_bounded_over_many_rounds() {
    let _serial = serial();
    let (model, tokenizer) = load();
    let questions = prompts(&tokenizer);
    let mut sampler = Sampler::new();
    // Rounds ask different questions, so the longest prompt changes; the batch (G = 4 per
    // question) does not.
    let round = |sampler: &mut Sampler, round: usize| {
        let batch: Vec<_> = (0..8)
            .map(|i| questions[(round + i / 4) % questions.len()].clone())
            .collect();
        let config = SamplingConfig {
            top_p: 0.9,
            top_k: 50,
            stop_strings: vec!["</answer>".to_owned()],
            ..sampled(48, round as u64)
        };
        sampler.sample(&model, &tokenizer, &batch, &config).unwrap()
    };
    for r in 0..5 {
        round(&mut sampler, r);
    }
    let allocations = sampler.cache_allocations();
    assert!(
        allocations <= 2,
        "{allocations} allocations while warming up"
    );
    let before = rss_kib();
    let started = Instant::now();
    let mut generated = 0;
    let rounds = 20;
    for r in 5..5 + rounds {
        generated += round(&mut sampler, r)
            .iter()
            .map(|c| c.tokens.len())
            .sum::<usize>();
    }
    let seconds = started.elapsed().as_secs_f64();
    let growth = rss_kib() - before;
    eprintln!(
        "{rounds} rounds of 8 completions: {generated} tokens in {seconds:.2} s \
         ({:.0} tokens/s), RSS growth {growth} KiB",
        generated as f64 / seconds
    );
    assert_eq!(sampler.cache_allocations(), allocations);
    // Keeping one prefill's worth of logits ([8, 48, 384] f32) per round measured about 10 MiB
    // of growth here; in steady state the growth is 0 to a few KiB.
    assert!(
        growth < 2048,
        "RSS grew by {growth} KiB over {rounds} rounds"
    );

    // A bigger batch needs a new cache, which replaces the old one.
    let bigger = vec![questions[0].clone(); 9];
    sampler
        .sample(&model, &tokenizer, &bigger, &sampled(4, 0))
        .unwrap();
    assert_eq!(sampler.cache_allocations(), allocations + 1);
}
