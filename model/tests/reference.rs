//! swarm-model against transformers: the fixtures under `fixtures/` hold tiny random Qwen2 models
//! and the logits transformers computed for them (see `fixtures/make_tiny_qwen2.py`).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use swarm_model::{
    ChatMessage, ChatTokenizer, KvCache, ModelError, Precision, Qwen2, Qwen2Config, Role,
};
use tch::{Device, Kind, Tensor};

/// The acceptance bound for f32 logits.
const TOLERANCE: f64 = 1e-4;

const UNTIED: &str = "tiny-qwen2";
const TIED_SHARDED: &str = "tiny-qwen2-tied-sharded";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn reference(name: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture(name).join("reference.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn load(name: &str) -> Qwen2 {
    Qwen2::load(&fixture(name), Device::Cpu, Precision::F32).unwrap()
}

/// Largest absolute difference over the positions where `mask` ([batch, seq]) is set; logits at
/// padding positions are unspecified.
fn max_diff(actual: &Tensor, expected: &Tensor, mask: &Tensor) -> f64 {
    assert_eq!(actual.size(), expected.size());
    let diff = (actual.to_kind(Kind::Float) - expected).abs();
    let keep = mask.ne(0);
    let keep = if diff.dim() == 3 {
        keep.unsqueeze(-1)
    } else {
        keep
    };
    diff.where_self(&keep, &diff.zeros_like())
        .max()
        .double_value(&[])
}

fn check_against_transformers(name: &str) {
    let model = load(name);
    let r = reference(name);
    tch::no_grad(|| {
        let ids = &r["single.input_ids"];
        let logits = model.forward(ids, None, None).unwrap();
        let d = max_diff(&logits, &r["single.logits"], &ids.ones_like());
        eprintln!("{name}: single sequence, max |logits - transformers| = {d:.2e}");
        assert!(d <= TOLERANCE, "{name} single: {d}");

        let (ids, mask) = (&r["padded.input_ids"], &r["padded.attention_mask"]);
        let logits = model.forward(ids, Some(mask), None).unwrap();
        let d = max_diff(&logits, &r["padded.logits"], mask);
        eprintln!("{name}: padded batch, max |logits - transformers| = {d:.2e}");
        assert!(d <= TOLERANCE, "{name} padded: {d}");

        let logprobs = model.token_logprobs(ids, Some(mask)).unwrap();
        let d = max_diff(&logprobs, &r["padded.logprobs"], &logprobs.ones_like());
        eprintln!("{name}: padded batch, max |logprobs - transformers| = {d:.2e}");
        assert!(d <= TOLERANCE, "{name} logprobs: {d}");
    });
}

#[test]
fn untied_single_file_model_matches_transformers() {
    check_against_transformers(UNTIED);
}

#[test]
fn tied_sharded_model_matches_transformers() {
    check_against_transformers(TIED_SHARDED);
}

/// Sampling feeds the prompt once and then one token per step through the cache; that must give
/// the logits of the full forward pass, padded rows included.
#[test]
fn kv_cache_decoding_matches_full_forward() {
    for name in [UNTIED, TIED_SHARDED] {
        let model = load(name);
        let r = reference(name);
        let (ids, mask) = (&r["padded.input_ids"], &r["padded.attention_mask"]);
        let (batch, seq) = ids.size2().unwrap();
        let prompt = 4;
        let mut cache = KvCache::new(&model, batch, seq).unwrap();
        let mut steps = Vec::new();
        tch::no_grad(|| {
            steps.push(
                model
                    .forward(
                        &ids.narrow(1, 0, prompt),
                        Some(&mask.narrow(1, 0, prompt)),
                        Some(&mut cache),
                    )
                    .unwrap(),
            );
            for t in prompt..seq {
                let step_mask = mask.narrow(1, 0, t + 1);
                steps.push(
                    model
                        .forward(&ids.narrow(1, t, 1), Some(&step_mask), Some(&mut cache))
                        .unwrap(),
                );
            }
        });
        assert_eq!(cache.len(), seq);
        let logits = Tensor::cat(&steps, 1);
        let d = max_diff(&logits, &r["padded.logits"], mask);
        eprintln!("{name}: KV-cache decoding, max |logits - transformers| = {d:.2e}");
        assert!(d <= TOLERANCE, "{name} cached: {d}");

        let full = tch::no_grad(|| {
            model.forward(
                &ids.narrow(1, 0, 1),
                Some(&mask.narrow(1, 0, 1)),
                Some(&mut cache),
            )
        });
        assert!(matches!(full, Err(ModelError::Input(_))), "{full:?}");
    }
}

/// bf16 weights and activations (the GPU precision) stay close to the f32 reference; run on CPU
/// here, so only the numerics are checked, not CUDA.
#[test]
fn bf16_logits_stay_close() {
    let model = Qwen2::load(&fixture(UNTIED), Device::Cpu, Precision::Bf16).unwrap();
    let r = reference(UNTIED);
    let (ids, mask) = (&r["padded.input_ids"], &r["padded.attention_mask"]);
    let logits = tch::no_grad(|| model.forward(ids, Some(mask), None)).unwrap();
    assert_eq!(logits.kind(), Kind::BFloat16);
    let expected = &r["padded.logits"];
    let scale = expected.abs().max().double_value(&[]);
    let d = max_diff(&logits, expected, mask);
    eprintln!("bf16: max |logits - transformers f32| = {d:.3} (largest logit {scale:.1})");
    assert!(d <= 0.05 * scale, "bf16: {d} vs scale {scale}");
}

/// Keeping only the last logits, or the log-probabilities from a column on, gives the same values
/// as the full computation there (and zeros before the first kept log-probability column).
#[test]
fn kept_logits_and_logprobs_match_the_full_ones() {
    for name in [UNTIED, TIED_SHARDED] {
        let model = load(name);
        let r = reference(name);
        let (ids, mask) = (&r["padded.input_ids"], &r["padded.attention_mask"]);
        let seq = ids.size()[1];
        tch::no_grad(|| {
            let full = model.forward(ids, Some(mask), None).unwrap();
            for keep in [1, 3] {
                let kept = model.forward_keep(ids, Some(mask), None, keep).unwrap();
                let expected = full.narrow(1, seq - keep, keep);
                assert_eq!(kept.size(), expected.size());
                let d = (kept - expected).abs().max().double_value(&[]);
                assert!(d <= 1e-5, "{name} keep {keep}: {d}");
            }
            assert!(model.forward_keep(ids, Some(mask), None, seq + 1).is_err());

            let all = model.token_logprobs(ids, Some(mask)).unwrap();
            for first in [0, 2, seq - 2] {
                let part = model.token_logprobs_from(ids, Some(mask), first).unwrap();
                assert_eq!(part.size(), all.size());
                let head = part.narrow(1, 0, first).abs().sum(Kind::Float);
                assert_eq!(head.double_value(&[]), 0.0, "{name} first {first}");
                let tail = seq - 1 - first;
                let d = (part.narrow(1, first, tail) - all.narrow(1, first, tail))
                    .abs()
                    .max()
                    .double_value(&[]);
                assert!(d <= 1e-5, "{name} first {first}: {d}");
            }
            assert!(model.token_logprobs_from(ids, Some(mask), seq - 1).is_err());
        });
    }
}

/// Rows that share a prompt, as GRPO's groups do, laid out right-padded: `(input_ids,
/// attention_mask, completion_mask)`. Rows 0-2 continue one prompt, rows 3-4 another (whose
/// second row has a completion of one token), row 5 a third; prompts and completions differ in
/// length. Every prompt begins with `common` (as chat prompts begin with a system prompt).
fn grouped_rows(vocab: i64, common: &[i64]) -> (Tensor, Tensor, Tensor) {
    let own: [&[i64]; 3] = [&[5, 9, 13, 2, 7], &[11, 3], &[4, 4, 8, 1]];
    let prompts: Vec<Vec<i64>> = own.iter().map(|p| [common, p].concat()).collect();
    let rows: [(usize, &[i64]); 6] = [
        (0, &[20, 21, 22]),
        (0, &[23]),
        (0, &[20, 24, 25, 26]),
        (1, &[30, 31]),
        (1, &[32]),
        (2, &[40, 41, 42]),
    ];
    let width = 9 + common.len();
    let (mut ids, mut attention, mut completion) = (Vec::new(), Vec::new(), Vec::new());
    for (prompt, tokens) in rows {
        let prompt = &prompts[prompt];
        let padding = width - prompt.len() - tokens.len();
        ids.extend(prompt.iter().chain(tokens).map(|id| id % vocab));
        ids.extend(std::iter::repeat_n(0, padding));
        attention.extend(std::iter::repeat_n(1i64, prompt.len() + tokens.len()));
        attention.extend(std::iter::repeat_n(0, padding));
        completion.extend(std::iter::repeat_n(0i64, prompt.len()));
        completion.extend(std::iter::repeat_n(1, tokens.len()));
        completion.extend(std::iter::repeat_n(0, padding));
    }
    let shape = [rows.len() as i64, width as i64];
    let tensor = |values: Vec<i64>| Tensor::from_slice(&values).view(shape);
    (tensor(ids), tensor(attention), tensor(completion))
}

/// Each distinct prompt computed once (and the part all prompts begin with once) gives the
/// completion tokens the log-probabilities, and the parameters the gradients, of the full per-row
/// computation.
#[test]
fn completion_logprobs_share_prompts_and_match_the_full_ones() {
    for (name, common) in [
        (UNTIED, &[][..]),
        (UNTIED, &[1, 2, 3][..]),
        (TIED_SHARDED, &[][..]),
        (TIED_SHARDED, &[7][..]),
    ] {
        let model = load(name);
        let (ids, attention, completion) = grouped_rows(model.config().vocab_size, common);
        let trained = completion.narrow(1, 1, ids.size()[1] - 1).ne(0);
        let weights = Tensor::randn(trained.size(), (Kind::Float, Device::Cpu));
        let gradients = |logprobs: &Tensor| -> Vec<(String, Tensor)> {
            let masked = logprobs.where_self(&trained, &logprobs.zeros_like());
            for variable in model.var_store().variables().values() {
                let mut grad = variable.grad();
                if grad.defined() {
                    let _ = grad.zero_();
                }
            }
            (masked * &weights).sum(Kind::Float).backward();
            let mut grads: Vec<(String, Tensor)> = model
                .var_store()
                .variables()
                .into_iter()
                .map(|(name, v)| (name, v.grad().copy()))
                .collect();
            grads.sort_by(|a, b| a.0.cmp(&b.0));
            grads
        };
        let full = model.token_logprobs(&ids, Some(&attention)).unwrap();
        let shared = model
            .completion_logprobs(&ids, &attention, &completion)
            .unwrap();
        assert_eq!(shared.size(), full.size());
        let d = max_diff(&shared, &full, &trained);
        assert!(
            d <= 1e-5,
            "{name}: completion log-probabilities differ by {d}"
        );
        let outside = shared
            .where_self(&trained.logical_not(), &shared.zeros_like())
            .abs()
            .sum(Kind::Float)
            .double_value(&[]);
        assert_eq!(outside, 0.0, "{name}: entries outside the completions");
        for ((param, expected), (_, actual)) in gradients(&full).iter().zip(gradients(&shared)) {
            let scale = expected.abs().max().double_value(&[]).max(1e-6);
            let d = (actual - expected).abs().max().double_value(&[]) / scale;
            assert!(
                d <= 1e-4,
                "{name}: gradient of {param} differs by {d} (relative)"
            );
        }
    }
}

#[test]
fn completion_logprobs_without_completions_are_zero() {
    let model = load(UNTIED);
    let (ids, attention, completion) = grouped_rows(model.config().vocab_size, &[1]);
    let none = completion.zeros_like();
    let logprobs = model.completion_logprobs(&ids, &attention, &none).unwrap();
    assert_eq!(logprobs.abs().sum(Kind::Float).double_value(&[]), 0.0);
    assert!(
        model
            .completion_logprobs(&ids, &attention, &completion.narrow(1, 0, 3))
            .is_err()
    );
}

/// GRPO differentiates the log-probabilities: every parameter must get a gradient.
#[test]
fn token_logprobs_backpropagate_to_every_parameter() {
    let model = load(TIED_SHARDED);
    let r = reference(TIED_SHARDED);
    let logprobs = model
        .token_logprobs(&r["padded.input_ids"], Some(&r["padded.attention_mask"]))
        .unwrap();
    logprobs.sum(Kind::Float).backward();
    let variables = model.var_store().variables();
    assert_eq!(
        variables.len(),
        model.var_store().trainable_variables().len()
    );
    for (name, variable) in variables {
        let grad = variable.grad();
        assert!(grad.defined(), "{name} has no gradient");
        assert!(
            grad.abs().sum(Kind::Float).double_value(&[]) > 0.0,
            "{name} has a zero gradient"
        );
    }
}

#[test]
fn chat_template_and_tokenizer_match_transformers() {
    #[derive(serde::Deserialize)]
    struct Chat {
        messages: Vec<ChatMessage>,
        add_generation_prompt: bool,
        text: String,
        input_ids: Vec<i64>,
        decoded_without_special: String,
    }
    let dir = fixture(UNTIED);
    let chats: Vec<Chat> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("chat.json")).unwrap()).unwrap();
    let tokenizer = ChatTokenizer::from_dir(&dir).unwrap();
    assert_eq!(chats.len(), 3);
    for chat in chats {
        let text = tokenizer.apply_chat_template(&chat.messages, chat.add_generation_prompt);
        assert_eq!(text, chat.text);
        let ids = tokenizer
            .encode_chat(&chat.messages, chat.add_generation_prompt)
            .unwrap();
        assert_eq!(ids, chat.input_ids, "{text:?}");
        assert_eq!(
            tokenizer.decode(&ids, true).unwrap(),
            chat.decoded_without_special
        );
    }
    let question = [ChatMessage::new(Role::User, "2 + 2?")];
    let without_system = tokenizer.with_default_system(None);
    assert_eq!(
        without_system.apply_chat_template(&question, true),
        "<|im_start|>user\n2 + 2?<|im_end|>\n<|im_start|>assistant\n"
    );
    let config = Qwen2Config::from_dir(&dir).unwrap();
    assert_eq!(
        without_system.token_id("<|im_end|>").map(|id| vec![id]),
        Some(config.eos_token_ids)
    );
}

#[test]
fn load_errors_name_the_problem() {
    let untied = fixture(UNTIED);
    let config = Qwen2Config::from_dir(&untied).unwrap();
    let attempt = |config: Qwen2Config, dir: &Path| {
        Qwen2::new(config, Device::Cpu, Precision::F32)
            .unwrap()
            .load_weights(dir)
            .unwrap_err()
    };

    let tied_dir = fixture(TIED_SHARDED);
    let untied_shape = Qwen2Config {
        tie_word_embeddings: false,
        ..Qwen2Config::from_dir(&tied_dir).unwrap()
    };
    match attempt(untied_shape, &tied_dir) {
        ModelError::MissingTensor(name) => assert_eq!(name, "lm_head.weight"),
        other => panic!("{other:?}"),
    }

    let wider_vocab = Qwen2Config {
        vocab_size: config.vocab_size + 1,
        ..config.clone()
    };
    match attempt(wider_vocab, &untied) {
        ModelError::ShapeMismatch {
            found, expected, ..
        } => {
            assert_eq!(found[0] + 1, expected[0]);
        }
        other => panic!("{other:?}"),
    }

    let one_layer = Qwen2Config {
        num_hidden_layers: 1,
        ..config.clone()
    };
    match attempt(one_layer, &untied) {
        ModelError::UnexpectedTensor { name, .. } => {
            assert!(name.starts_with("model.layers.1."), "{name}")
        }
        other => panic!("{other:?}"),
    }

    match attempt(config, &fixture("")) {
        ModelError::NoWeights(dir) => assert_eq!(dir, fixture("")),
        other => panic!("{other:?}"),
    }
}
