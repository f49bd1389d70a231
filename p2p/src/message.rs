//! The rollouts one member shares for one round, and their compact binary wire format.
//!
//! The format is hand-written so every length is checked against [`Limits`] before anything is
//! allocated, and so peers on different builds agree byte for byte (a golden test pins it):
//!
//! ```text
//! message    = version:u8 (= SCHEMA_VERSION)  round:varint  sender:bytes  count:varint group*
//! group      = source  prompt:string  answer:string  count:varint (key:string value:string)*
//!              count:varint completion*
//! source     = tag:u8 (0 = dataset, followed by its name:string; 1..=6 = a procedural family)
//! completion = ended:u8 (0 or 1)  text:string  count:varint logprob*
//! logprob    = f32, little-endian: finite and <= 0 (count 0: the sender gives none)
//! bytes      = length:varint byte*          string = bytes holding UTF-8
//! varint     = unsigned LEB128, minimal, at most 64 bits
//! ```
//!
//! Metadata keys appear in strictly ascending order, so each message has exactly one encoding.

use std::collections::BTreeMap;

use libp2p::PeerId;
use swarm_node_config::limits;
use swarm_tasks::{Question, Source, TaskFamily};

use crate::Rejection;

/// The first byte of every message. A node rejects versions it does not speak. Version 2 added
/// each completion's sampling log-probabilities.
pub const SCHEMA_VERSION: u8 = 2;

/// The longest PeerId in its binary form: a multihash of at most 64 bytes plus its header.
const MAX_SENDER_BYTES: usize = 70;

/// The source tag of a dataset question; procedural families use the tags of [`family_tag`].
const DATASET_TAG: u8 = 0;

/// One round's rollouts as a member shares them with its peers.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutMessage {
    pub round: u64,
    /// The member that generated the rollouts; it must be the gossip message's signed author.
    pub sender: PeerId,
    pub groups: Vec<SharedGroup>,
}

/// The completions generated for one question.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedGroup {
    pub question: Question,
    pub completions: Vec<SharedCompletion>,
}

/// One decoded completion.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SharedCompletion {
    pub text: String,
    /// The completion stopped at the end-of-sequence token (the receiver appends that token when
    /// it re-tokenizes the text).
    pub ended: bool,
    /// The sender's sampling log-probability of each token of the completion as the receiver
    /// tokenizes it (`text`, plus the end-of-sequence token when `ended`), so a receiver can
    /// weigh tokens by how likely its own policy finds them relative to the sender's. Empty when
    /// the sender gives none (its sampled tokens were not the text's canonical tokenization).
    pub logprobs: Vec<f32>,
}

/// Bounds a received message must stay within; [`decode`] checks each before allocating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_groups: usize,
    /// Completions in one group.
    pub max_completions: usize,
    pub max_prompt_bytes: usize,
    pub max_answer_bytes: usize,
    pub max_completion_bytes: usize,
    /// Log-probabilities of one completion.
    pub max_completion_logprobs: usize,
    /// Metadata entries of one question.
    pub max_metadata_entries: usize,
    pub max_metadata_key_bytes: usize,
    pub max_metadata_value_bytes: usize,
    pub max_dataset_name_bytes: usize,
}

/// The swarm-wide bounds of [`swarm_node_config::limits`], which the Swarm API's admission also
/// applies, so a member configured within them never sends what its peers reject.
impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: limits::MESSAGE_BYTES,
            max_groups: limits::GROUPS_PER_MESSAGE as usize,
            max_completions: limits::COMPLETIONS_PER_QUESTION as usize,
            max_prompt_bytes: 4096,
            max_answer_bytes: 1024,
            max_completion_bytes: limits::COMPLETION_BYTES,
            max_completion_logprobs: limits::COMPLETION_LOGPROBS,
            max_metadata_entries: 16,
            max_metadata_key_bytes: 64,
            max_metadata_value_bytes: 1024,
            max_dataset_name_bytes: 128,
        }
    }
}

/// The wire form of `message`. Encoding never fails; whether the result is within a receiver's
/// [`Limits`] is for [`decode`] to say.
pub fn encode(message: &RolloutMessage) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(SCHEMA_VERSION);
    put_varint(&mut out, message.round);
    put_bytes(&mut out, &message.sender.to_bytes());
    put_len(&mut out, message.groups.len());
    for group in &message.groups {
        let question = &group.question;
        match &question.source {
            Source::Dataset(name) => {
                out.push(DATASET_TAG);
                put_bytes(&mut out, name.as_bytes());
            }
            Source::Procedural(family) => out.push(family_tag(*family)),
        }
        put_bytes(&mut out, question.prompt.as_bytes());
        put_bytes(&mut out, question.answer.as_bytes());
        put_len(&mut out, question.metadata.len());
        for (key, value) in &question.metadata {
            put_bytes(&mut out, key.as_bytes());
            put_bytes(&mut out, value.as_bytes());
        }
        put_len(&mut out, group.completions.len());
        for completion in &group.completions {
            out.push(u8::from(completion.ended));
            put_bytes(&mut out, completion.text.as_bytes());
            put_len(&mut out, completion.logprobs.len());
            for logprob in &completion.logprobs {
                out.extend_from_slice(&logprob.to_le_bytes());
            }
        }
    }
    out
}

/// Parses a received message, checking it against `limits`. Only the wire format is checked
/// here; whether the content fits the current round is [`crate::validate`]'s job.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<RolloutMessage, Rejection> {
    if bytes.len() > limits.max_message_bytes {
        return Err(Rejection::TooLarge {
            bytes: bytes.len(),
            limit: limits.max_message_bytes,
        });
    }
    let mut reader = Reader { rest: bytes };
    let version = reader.byte()?;
    if version != SCHEMA_VERSION {
        return Err(Rejection::UnsupportedVersion(version));
    }
    let round = reader.varint()?;
    let sender = reader.bytes("sender", MAX_SENDER_BYTES)?;
    let sender = PeerId::from_bytes(sender)
        .map_err(|error| Rejection::Malformed(format!("sender is not a PeerId: {error}")))?;
    let group_count = reader.count("groups", limits.max_groups)?;
    // Vectors grow by push only, so memory follows the bytes actually parsed, never a claimed count.
    let mut groups = Vec::new();
    for _ in 0..group_count {
        groups.push(reader.group(limits)?);
    }
    if !reader.rest.is_empty() {
        return Err(Rejection::Malformed(format!(
            "{} trailing bytes after the last group",
            reader.rest.len()
        )));
    }
    Ok(RolloutMessage {
        round,
        sender,
        groups,
    })
}

/// The stable one-byte tag of a family on the wire. New families take new tags; a tag is never
/// reused, so an old node reads a new family as [`Rejection::UnknownFamily`].
fn family_tag(family: TaskFamily) -> u8 {
    match family {
        TaskFamily::BasicArithmetic => 1,
        TaskFamily::BaseConversion => 2,
        TaskFamily::DecimalArithmetic => 3,
        TaskFamily::FractionSimplification => 4,
        TaskFamily::CalendarArithmetic => 5,
        TaskFamily::PropositionalLogic => 6,
    }
}

fn family_of_tag(tag: u8) -> Option<TaskFamily> {
    swarm_tasks::families::ALL
        .into_iter()
        .find(|family| family_tag(*family) == tag)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        // Truncation is the point: the low seven bits, with the continuation bit set.
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    put_varint(out, len as u64);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// A cursor over the undecoded rest of a message.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, Rejection> {
        let (&first, rest) = self.rest.split_first().ok_or(Rejection::Truncated)?;
        self.rest = rest;
        Ok(first)
    }

    fn varint(&mut self) -> Result<u64, Rejection> {
        let mut value = 0u64;
        for index in 0..10 {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if index == 9 && bits > 1 {
                return Err(Rejection::Malformed("varint overflows 64 bits".into()));
            }
            value |= bits << (7 * index);
            if byte & 0x80 == 0 {
                // A zero last byte after the first adds nothing: a second encoding of a smaller value.
                if index > 0 && byte == 0 {
                    return Err(Rejection::Malformed(
                        "varint is not minimally encoded".into(),
                    ));
                }
                return Ok(value);
            }
        }
        Err(Rejection::Malformed("varint longer than 10 bytes".into()))
    }

    fn f32(&mut self) -> Result<f32, Rejection> {
        let Some((bytes, rest)) = self.rest.split_first_chunk::<4>() else {
            return Err(Rejection::Truncated);
        };
        self.rest = rest;
        Ok(f32::from_le_bytes(*bytes))
    }

    /// A declared element count, at most `limit`.
    fn count(&mut self, field: &'static str, limit: usize) -> Result<usize, Rejection> {
        let found = saturating_usize(self.varint()?);
        if found > limit {
            return Err(Rejection::TooMany {
                field,
                found,
                limit,
            });
        }
        Ok(found)
    }

    /// Length-prefixed bytes, at most `limit` of them.
    fn bytes(&mut self, field: &'static str, limit: usize) -> Result<&'a [u8], Rejection> {
        let bytes = saturating_usize(self.varint()?);
        if bytes > limit {
            return Err(Rejection::StringTooLong {
                field,
                bytes,
                limit,
            });
        }
        if bytes > self.rest.len() {
            return Err(Rejection::Truncated);
        }
        let (taken, rest) = self.rest.split_at(bytes);
        self.rest = rest;
        Ok(taken)
    }

    fn string(&mut self, field: &'static str, limit: usize) -> Result<String, Rejection> {
        let bytes = self.bytes(field, limit)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_owned()),
            Err(error) => Err(Rejection::Malformed(format!(
                "{field} is not UTF-8: {error}"
            ))),
        }
    }

    fn group(&mut self, limits: &Limits) -> Result<SharedGroup, Rejection> {
        let source = match self.byte()? {
            DATASET_TAG => {
                Source::Dataset(self.string("dataset_name", limits.max_dataset_name_bytes)?)
            }
            tag => Source::Procedural(family_of_tag(tag).ok_or(Rejection::UnknownFamily(tag))?),
        };
        let prompt = self.string("prompt", limits.max_prompt_bytes)?;
        let answer = self.string("answer", limits.max_answer_bytes)?;
        let entries = self.count("metadata", limits.max_metadata_entries)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..entries {
            let key = self.string("metadata_key", limits.max_metadata_key_bytes)?;
            let value = self.string("metadata_value", limits.max_metadata_value_bytes)?;
            if metadata
                .last_key_value()
                .is_some_and(|(last, _)| *last >= key)
            {
                return Err(Rejection::Malformed(
                    "metadata keys are not in strictly ascending order".into(),
                ));
            }
            metadata.insert(key, value);
        }
        let count = self.count("completions", limits.max_completions)?;
        let mut completions = Vec::new();
        for _ in 0..count {
            let ended = match self.byte()? {
                0 => false,
                1 => true,
                flag => {
                    return Err(Rejection::Malformed(format!(
                        "completion end flag is {flag}, not 0 or 1"
                    )));
                }
            };
            let text = self.string("completion", limits.max_completion_bytes)?;
            let count = self.count("logprobs", limits.max_completion_logprobs)?;
            let mut logprobs = Vec::new();
            for index in 0..count {
                let logprob = self.f32()?;
                if !(logprob.is_finite() && logprob <= 0.0) {
                    return Err(Rejection::InvalidLogprobs(format!(
                        "log-probability {index} is {logprob}, not a finite value <= 0"
                    )));
                }
                logprobs.push(logprob);
            }
            completions.push(SharedCompletion {
                text,
                ended,
                logprobs,
            });
        }
        Ok(SharedGroup {
            question: Question {
                source,
                prompt,
                answer,
                metadata,
            },
            completions,
        })
    }
}

/// A declared size as usize; one beyond the address space is over every limit anyway.
fn saturating_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use libp2p::identity::{Keypair, secp256k1};
    use swarm_tasks::Metadata;

    use super::*;

    fn fixed_sender() -> PeerId {
        let secret = secp256k1::SecretKey::try_from_bytes([7u8; 32]).unwrap();
        Keypair::from(secp256k1::Keypair::from(secret))
            .public()
            .to_peer_id()
    }

    fn small_message() -> RolloutMessage {
        RolloutMessage {
            round: 300,
            sender: fixed_sender(),
            groups: vec![
                SharedGroup {
                    question: Question {
                        source: Source::Procedural(TaskFamily::BaseConversion),
                        prompt: "1f?".into(),
                        answer: "31".into(),
                        metadata: Metadata::from([("b".into(), "10".into())]),
                    },
                    completions: vec![
                        SharedCompletion {
                            text: "31".into(),
                            ended: true,
                            logprobs: vec![-0.5, 0.0],
                        },
                        SharedCompletion {
                            text: "é".into(),
                            ended: false,
                            logprobs: Vec::new(),
                        },
                    ],
                },
                SharedGroup {
                    question: Question {
                        source: Source::Dataset("gsm".into()),
                        prompt: String::new(),
                        answer: "4".into(),
                        metadata: Metadata::new(),
                    },
                    completions: Vec::new(),
                },
            ],
        }
    }

    #[test]
    fn a_message_round_trips_exactly() {
        let message = small_message();
        let bytes = encode(&message);
        assert_eq!(decode(&bytes, &Limits::default()), Ok(message));
    }

    /// Pinned bytes: a change here breaks every peer running an older build, so it must come with
    /// a new [`SCHEMA_VERSION`].
    #[test]
    fn the_wire_format_is_pinned() {
        let golden = [
            "02",   // version
            "ac02", // round 300
            // sender: 39 bytes, the identity multihash of the protobuf secp256k1 public key
            "27",
            "00250802122102989c0b76cb563971fdc9bef31ec06c3560f3249d6ee9e5d83c57625596e05f6f",
            "02", // two groups
            // base conversion, prompt "1f?", answer "31", metadata {b: 10}
            "02",
            "0331663f",
            "023331",
            "01",
            "0162",
            "023130",
            // two completions: "31" ended with log-probabilities -0.5 and 0, "é" cut off without
            "02",
            "01",
            "023331",
            "02",
            "000000bf",
            "00000000",
            "00",
            "02c3a9",
            "00",
            // dataset "gsm", empty prompt, answer "4", no metadata, no completions
            "00",
            "0367736d",
            "00",
            "0134",
            "00",
            "00",
        ]
        .concat();
        assert_eq!(hex::encode(encode(&small_message())), golden);
    }

    #[test]
    fn every_family_has_a_distinct_tag_that_round_trips() {
        let mut tags: Vec<u8> = swarm_tasks::families::ALL
            .into_iter()
            .map(family_tag)
            .collect();
        for (tag, family) in tags.iter().zip(swarm_tasks::families::ALL) {
            assert_eq!(family_of_tag(*tag), Some(family));
        }
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), swarm_tasks::families::ALL.len());
        assert!(!tags.contains(&DATASET_TAG));
    }

    #[test]
    fn varints_are_minimal_and_bounded() {
        for value in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let mut reader = Reader { rest: &out };
            assert_eq!(reader.varint(), Ok(value));
            assert!(reader.rest.is_empty());
        }
        let malformed = |bytes: &[u8]| {
            let result = Reader { rest: bytes }.varint();
            assert!(
                matches!(result, Err(Rejection::Malformed(_))),
                "{bytes:?}: {result:?}"
            );
        };
        malformed(&[0x80, 0x00]);
        malformed(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]);
        malformed(&[0xff; 11]);
        assert_eq!(Reader { rest: &[0x80] }.varint(), Err(Rejection::Truncated));
    }
}
