//! The rollout message codec and its validation: every limit, every rejection, and a fuzzed decoder.
#![allow(clippy::unwrap_used)]

mod common;

use common::valid_message;
use proptest::prelude::*;
use swarm_p2p::identity::Keypair;
use swarm_p2p::{
    Expectations, Limits, PeerId, RateLimiter, Rejection, RolloutMessage, SharedCompletion,
    SharedGroup, check_logprob_counts, decode, encode, validate,
};
use swarm_tasks::{Metadata, Question, Source, TaskFamily, families};

fn peer() -> PeerId {
    Keypair::generate_secp256k1().public().to_peer_id()
}

/// One group of one completion with every string field set, for poking at single fields.
fn one_group(question: Question, text: &str) -> RolloutMessage {
    RolloutMessage {
        round: 1,
        sender: peer(),
        groups: vec![SharedGroup {
            question,
            completions: vec![SharedCompletion {
                text: text.into(),
                ended: true,
                logprobs: vec![-0.25; 2],
            }],
        }],
    }
}

fn question(prompt: &str, answer: &str, metadata: &[(&str, &str)]) -> Question {
    Question {
        source: Source::Procedural(TaskFamily::BasicArithmetic),
        prompt: prompt.into(),
        answer: answer.into(),
        metadata: metadata
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
    }
}

/// `bytes` with the first occurrence of `from` replaced by `to` (of the same length).
fn patched(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes
        .windows(from.len())
        .position(|window| window == from)
        .unwrap();
    let mut bytes = bytes.to_vec();
    bytes[at..at + to.len()].copy_from_slice(to);
    bytes
}

fn malformed(result: Result<RolloutMessage, Rejection>) -> String {
    match result {
        Err(Rejection::Malformed(reason)) => reason,
        other => panic!("expected a malformed message, got {other:?}"),
    }
}

#[test]
fn generated_messages_round_trip_and_pass_validation() {
    let sender = peer();
    let message = valid_message(sender, 7, 8, 4);
    assert_eq!(
        decode(&encode(&message), &Limits::default()),
        Ok(message.clone())
    );
    let expect = Expectations {
        current_round: 7,
        round_window: 2,
        group_size: 4,
    };
    assert_eq!(validate(&message, &sender, &expect), Ok(()));
}

#[test]
fn the_whole_message_size_is_checked_first() {
    let bytes = encode(&valid_message(peer(), 1, 2, 2));
    let limits = Limits {
        max_message_bytes: bytes.len() - 1,
        ..Limits::default()
    };
    assert_eq!(
        decode(&bytes, &limits),
        Err(Rejection::TooLarge {
            bytes: bytes.len(),
            limit: bytes.len() - 1
        })
    );
    let limits = Limits {
        max_message_bytes: bytes.len(),
        ..Limits::default()
    };
    assert!(decode(&bytes, &limits).is_ok());
}

#[test]
fn every_proper_prefix_is_truncated() {
    let bytes = encode(&one_group(question("p", "a", &[("k", "v")]), "text"));
    for end in 0..bytes.len() {
        assert_eq!(
            decode(&bytes[..end], &Limits::default()),
            Err(Rejection::Truncated),
            "prefix of {end} bytes"
        );
    }
}

#[test]
fn malformed_bytes_are_named() {
    let limits = Limits::default();
    let message = one_group(question("PROMPT", "a", &[("k1", "v"), ("k2", "w")]), "text");
    let bytes = encode(&message);

    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(malformed(decode(&trailing, &limits)).contains("trailing"));

    let bad_utf8 = patched(&bytes, b"PROMPT", &[b'P', 0xff, 0xfe, b'M', b'P', b'T']);
    assert!(malformed(decode(&bad_utf8, &limits)).contains("prompt is not UTF-8"));

    let unsorted = patched(&bytes, b"k2", b"k0");
    assert!(malformed(decode(&unsorted, &limits)).contains("ascending"));
    let duplicate = patched(&bytes, b"k2", b"k1");
    assert!(malformed(decode(&duplicate, &limits)).contains("ascending"));

    // The end flag sits right before the completion's length and text.
    let flag = patched(&bytes, &[1, 4, b't', b'e'], &[2]);
    assert!(malformed(decode(&flag, &limits)).contains("end flag"));

    let mut overlong_round = vec![swarm_p2p::SCHEMA_VERSION, 0x81, 0x00];
    overlong_round.extend_from_slice(&bytes[2..]);
    assert!(malformed(decode(&overlong_round, &limits)).contains("minimally"));

    let sender = message.sender.to_bytes();
    let mut not_a_peer = sender.clone();
    not_a_peer[0] = 0x7f;
    let bad_sender = patched(&bytes, &sender, &not_a_peer);
    assert!(malformed(decode(&bad_sender, &limits)).contains("sender is not a PeerId"));
}

#[test]
fn versions_and_family_tags_must_be_known() {
    let bytes = encode(&one_group(question("p", "a", &[]), "t"));
    for version in [0, 1, 3, 255] {
        let mut other = bytes.clone();
        other[0] = version;
        assert_eq!(
            decode(&other, &Limits::default()),
            Err(Rejection::UnsupportedVersion(version))
        );
    }
    // The source tag follows the group count, right after the sender.
    let tag_at = 1 + 1 + 1 + peer().to_bytes().len() + 1;
    assert_eq!(bytes[tag_at], 1, "basic arithmetic's tag");
    for tag in [7, 128, 255] {
        let mut other = bytes.clone();
        other[tag_at] = tag;
        assert_eq!(
            decode(&other, &Limits::default()),
            Err(Rejection::UnknownFamily(tag))
        );
    }
}

#[test]
fn counts_are_limited() {
    let message = valid_message(peer(), 1, 3, 4);
    let bytes = encode(&message);
    let too_many = |limits: Limits| match decode(&bytes, &limits) {
        Err(Rejection::TooMany {
            field,
            found,
            limit,
        }) => (field, found, limit),
        other => panic!("expected too many, got {other:?}"),
    };
    let groups = Limits {
        max_groups: 2,
        ..Limits::default()
    };
    assert_eq!(too_many(groups), ("groups", 3, 2));
    let completions = Limits {
        max_completions: 3,
        ..Limits::default()
    };
    assert_eq!(too_many(completions), ("completions", 4, 3));
    let with_metadata = message
        .groups
        .iter()
        .map(|group| group.question.metadata.len())
        .max()
        .unwrap();
    assert!(with_metadata > 0, "a generated question carries metadata");
    let metadata = Limits {
        max_metadata_entries: with_metadata - 1,
        ..Limits::default()
    };
    assert_eq!(too_many(metadata).0, "metadata");
    let exact = Limits {
        max_groups: 3,
        max_completions: 4,
        max_metadata_entries: with_metadata,
        ..Limits::default()
    };
    assert!(decode(&bytes, &exact).is_ok());
}

/// A completion's log-probabilities are finite and ≤ 0, within their count limit, and (where
/// the receiver counts tokens) one per token; anything else is a rejection.
#[test]
fn logprobs_are_checked() {
    let limits = Limits::default();
    let with = |logprobs: Vec<f32>| {
        let mut message = one_group(question("p", "a", &[]), "text");
        message.groups[0].completions[0].logprobs = logprobs;
        message
    };
    let ok = with(vec![-1.5, 0.0, -0.0]);
    assert_eq!(decode(&encode(&ok), &limits), Ok(ok.clone()));
    for bad in [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.5,
        f32::MIN_POSITIVE,
    ] {
        let rejected = decode(&encode(&with(vec![-1.0, bad])), &limits);
        assert!(
            matches!(&rejected, Err(Rejection::InvalidLogprobs(m)) if m.contains("log-probability 1")),
            "{bad}: {rejected:?}"
        );
    }
    let few = Limits {
        max_completion_logprobs: 2,
        ..Limits::default()
    };
    assert_eq!(
        decode(&encode(&ok), &few),
        Err(Rejection::TooMany {
            field: "logprobs",
            found: 3,
            limit: 2
        })
    );
    // A count that runs past the end of the message.
    let mut truncated = encode(&ok);
    truncated.truncate(truncated.len() - 2);
    assert_eq!(decode(&truncated, &limits), Err(Rejection::Truncated));

    let three_tokens = |_: &SharedCompletion| 3;
    assert_eq!(check_logprob_counts(&ok, three_tokens), Ok(()));
    assert!(matches!(
        check_logprob_counts(&with(vec![-1.0; 4]), three_tokens),
        Err(Rejection::InvalidLogprobs(m)) if m.contains("4 log-probabilities for a completion of 3 tokens")
    ));
    // None given is always fine: the receiver then has no sampler probabilities to weigh by.
    assert_eq!(
        check_logprob_counts(&with(Vec::new()), three_tokens),
        Ok(())
    );
}

#[test]
fn a_huge_declared_count_is_refused_without_allocating() {
    let mut bytes = encode(&RolloutMessage {
        round: 1,
        sender: peer(),
        groups: Vec::new(),
    });
    bytes.pop();
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert_eq!(
        decode(&bytes, &Limits::default()),
        Err(Rejection::TooMany {
            field: "groups",
            found: usize::MAX,
            limit: 32
        })
    );
    let unlimited = Limits {
        max_groups: usize::MAX,
        ..Limits::default()
    };
    assert_eq!(decode(&bytes, &unlimited), Err(Rejection::Truncated));
}

#[test]
fn every_string_is_limited() {
    let long = "x".repeat(10);
    let limits = Limits {
        max_prompt_bytes: 9,
        max_answer_bytes: 9,
        max_completion_bytes: 9,
        max_metadata_key_bytes: 9,
        max_metadata_value_bytes: 9,
        max_dataset_name_bytes: 9,
        ..Limits::default()
    };
    let dataset = Question {
        source: Source::Dataset(long.clone()),
        ..question("p", "a", &[])
    };
    let cases = [
        ("prompt", one_group(question(&long, "a", &[]), "t")),
        ("answer", one_group(question("p", &long, &[]), "t")),
        ("completion", one_group(question("p", "a", &[]), &long)),
        (
            "metadata_key",
            one_group(question("p", "a", &[(&long, "v")]), "t"),
        ),
        (
            "metadata_value",
            one_group(question("p", "a", &[("k", &long)]), "t"),
        ),
        ("dataset_name", one_group(dataset, "t")),
    ];
    for (field, message) in cases {
        assert_eq!(
            decode(&encode(&message), &limits),
            Err(Rejection::StringTooLong {
                field,
                bytes: 10,
                limit: 9
            })
        );
    }
    let nine = "é".repeat(4) + "x";
    let at_limit = one_group(question(&nine, &nine, &[(&nine, &nine)]), &nine);
    assert_eq!(decode(&encode(&at_limit), &limits), Ok(at_limit));

    let mut long_sender = encode(&one_group(question("p", "a", &[]), "t"));
    long_sender[2] = 71;
    assert_eq!(
        decode(&long_sender, &Limits::default()),
        Err(Rejection::StringTooLong {
            field: "sender",
            bytes: 71,
            limit: 70
        })
    );
}

fn expect(current_round: u64) -> Expectations {
    Expectations {
        current_round,
        round_window: 2,
        group_size: 4,
    }
}

#[test]
fn validation_checks_author_rounds_groups_and_questions() {
    let sender = peer();
    let message = valid_message(sender, 10, 2, 4);
    let stranger = peer();
    assert_eq!(
        validate(&message, &stranger, &expect(10)),
        Err(Rejection::WrongSender)
    );

    let empty = RolloutMessage {
        groups: Vec::new(),
        ..message.clone()
    };
    assert_eq!(
        validate(&empty, &sender, &expect(10)),
        Err(Rejection::Empty)
    );

    for current in [9, 10, 11, 12] {
        assert_eq!(validate(&message, &sender, &expect(current)), Ok(()));
    }
    for current in [0, 8, 13, 100] {
        assert_eq!(
            validate(&message, &sender, &expect(current)),
            Err(Rejection::RoundOutOfWindow { round: 10, current })
        );
    }
    assert!(expect(0).accepts_round(0) && expect(0).accepts_round(1));
    assert!(expect(u64::MAX).accepts_round(u64::MAX));

    let mut short = message.clone();
    short.groups[1].completions.pop();
    assert_eq!(
        validate(&short, &sender, &expect(10)),
        Err(Rejection::GroupSize {
            found: 3,
            expected: 4
        })
    );

    let mut wrong = message.clone();
    wrong.groups[1].question.answer.push('7');
    let Err(Rejection::InvalidQuestion(reason)) = validate(&wrong, &sender, &expect(10)) else {
        panic!("a question whose verifier rejects its own answer must be refused");
    };
    assert!(reason.starts_with("group 1:"), "{reason}");
}

#[test]
fn the_rate_limiter_counts_per_author_and_round_and_forgets_old_rounds() {
    let (alice, bob) = (peer(), peer());
    let mut limiter = RateLimiter::new(2);
    assert_eq!(limiter.admit(alice, 5), Ok(()));
    assert_eq!(limiter.admit(alice, 5), Ok(()));
    assert_eq!(
        limiter.admit(alice, 5),
        Err(Rejection::RateLimited { round: 5, limit: 2 })
    );
    assert_eq!(limiter.admit(alice, 6), Ok(()));
    assert_eq!(limiter.admit(bob, 5), Ok(()));
    assert_eq!(limiter.tracked(), 3);
    limiter.forget_before(6);
    assert_eq!(limiter.tracked(), 1);
    assert_eq!(limiter.admit(alice, 6), Ok(()));
    assert!(limiter.admit(alice, 6).is_err());
}

#[test]
fn reasons_are_distinct_snake_case_labels() {
    let all = [
        Rejection::TooLarge { bytes: 2, limit: 1 },
        Rejection::Truncated,
        Rejection::Malformed("x".into()),
        Rejection::UnsupportedVersion(2),
        Rejection::UnknownFamily(9),
        Rejection::TooMany {
            field: "groups",
            found: 2,
            limit: 1,
        },
        Rejection::StringTooLong {
            field: "prompt",
            bytes: 2,
            limit: 1,
        },
        Rejection::WrongSender,
        Rejection::RoundOutOfWindow {
            round: 1,
            current: 9,
        },
        Rejection::GroupSize {
            found: 1,
            expected: 2,
        },
        Rejection::InvalidQuestion("x".into()),
        Rejection::RateLimited { round: 1, limit: 1 },
        Rejection::Empty,
        Rejection::InvalidLogprobs("x".into()),
    ];
    let mut reasons: Vec<&str> = all.iter().map(Rejection::reason).collect();
    assert!(
        reasons
            .iter()
            .all(|reason| reason.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    );
    reasons.sort_unstable();
    reasons.dedup();
    assert_eq!(reasons.len(), all.len());
}

fn arb_question() -> impl Strategy<Value = Question> {
    let source = prop_oneof![
        proptest::sample::select(families::ALL.to_vec()).prop_map(Source::Procedural),
        "[a-z0-9_.-]{0,20}".prop_map(Source::Dataset),
    ];
    let metadata = proptest::collection::btree_map("\\PC{1,8}", "\\PC{0,16}", 0..4);
    (source, "\\PC{0,40}", "\\PC{0,12}", metadata).prop_map(
        |(source, prompt, answer, metadata): (_, _, _, Metadata)| Question {
            source,
            prompt,
            answer,
            metadata,
        },
    )
}

fn arb_message() -> impl Strategy<Value = RolloutMessage> {
    let logprobs = proptest::collection::vec(-30.0f32..=0.0, 0..4);
    let completion = ("\\PC{0,60}", any::<bool>(), logprobs).prop_map(|(text, ended, logprobs)| {
        SharedCompletion {
            text,
            ended,
            logprobs,
        }
    });
    let group = (arb_question(), proptest::collection::vec(completion, 0..5)).prop_map(
        |(question, completions)| SharedGroup {
            question,
            completions,
        },
    );
    let senders: Vec<PeerId> = (0..3).map(|_| peer()).collect();
    (
        any::<u64>(),
        proptest::sample::select(senders),
        proptest::collection::vec(group, 0..5),
    )
        .prop_map(|(round, sender, groups)| RolloutMessage {
            round,
            sender,
            groups,
        })
}

/// Small enough limits that fuzzed inputs hit them, as well as the defaults.
fn tight_limits() -> Limits {
    Limits {
        max_message_bytes: 300,
        max_groups: 3,
        max_completions: 3,
        max_prompt_bytes: 20,
        max_answer_bytes: 8,
        max_completion_bytes: 30,
        max_completion_logprobs: 2,
        max_metadata_entries: 2,
        max_metadata_key_bytes: 6,
        max_metadata_value_bytes: 10,
        max_dataset_name_bytes: 10,
    }
}

/// Decodes under both limit sets; the point is that it returns at all.
fn decode_anything(bytes: &[u8]) {
    for limits in [Limits::default(), tight_limits()] {
        if let Ok(message) = decode(bytes, &limits) {
            // Whatever decodes has exactly one encoding: the bytes it came from.
            assert_eq!(encode(&message), bytes);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn valid_messages_round_trip(message in arb_message()) {
        prop_assert_eq!(decode(&encode(&message), &Limits::default()), Ok(message));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        decode_anything(&bytes);
        let mut versioned = vec![swarm_p2p::SCHEMA_VERSION];
        versioned.extend_from_slice(&bytes);
        decode_anything(&versioned);
    }

    #[test]
    fn mutated_encodings_never_panic(
        message in arb_message(),
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<proptest::sample::Index>(),
        insert in any::<Option<(proptest::sample::Index, u8)>>(),
    ) {
        let mut bytes = encode(&message);
        for (at, byte) in edits {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        if let Some((at, byte)) = insert {
            bytes.insert(at.index(bytes.len() + 1), byte);
        }
        decode_anything(&bytes);
        decode_anything(&bytes[..cut.index(bytes.len() + 1)]);
    }
}
