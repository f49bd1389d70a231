//! Converting a non-negative integer between bases 2 to 36.
//!
//! Answer: the digits in the target base, lowercase letters for digits above 9, no leading zeros and no
//! prefix (`1f`, not `1F`, `0x1f` or `01f`). That is one string per value, so the check is string equality;
//! metadata `target_base` lets a peer check the ground truth itself.

use rand::Rng;

use super::{question, required, uniform};
use crate::{Difficulty, Metadata, Question, TaskFamily};

const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// Source and target bases are drawn from this range (clamped to 2..=36) and always differ.
    pub min_base: u32,
    pub max_base: u32,
    pub min_value: u64,
    pub max_value: u64,
}

impl Params {
    pub fn at(difficulty: Difficulty) -> Self {
        let (max_base, max_value) = match difficulty.level() {
            1 => (10, 255),
            2 => (16, 1_000),
            3 => (16, 10_000),
            4 => (36, 100_000),
            _ => (36, 1_000_000),
        };
        Self {
            min_base: 2,
            max_base,
            min_value: 0,
            max_value,
        }
    }
}

pub fn generate<R: Rng + ?Sized>(params: &Params, rng: &mut R) -> Question {
    let (a, b) = (params.min_base.clamp(2, 36), params.max_base.clamp(2, 36));
    // Two distinct bases need a range of at least two.
    let low = a.min(b).min(35);
    let high = a.max(b).max(low + 1);
    let value = to_u64(uniform(
        rng,
        to_i64(params.min_value),
        to_i64(params.max_value),
    ));
    let source = uniform(rng, low.into(), high.into());
    // Drawing from one fewer base and skipping the source keeps the draw uniform and loop-free.
    let mut target = uniform(rng, low.into(), i64::from(high) - 1);
    if target >= source {
        target += 1;
    }
    let (source, target) = (to_base_u32(source), to_base_u32(target));
    let answer = to_base(value, target);
    question(
        TaskFamily::BaseConversion,
        format!(
            "Convert the {} number {} to {}. Use lowercase letters a-z for digits above 9, and write no prefix \
             and no leading zeros.",
            base_name(source),
            to_base(value, source),
            base_name(target)
        ),
        answer,
        Metadata::from([
            ("source_base".to_owned(), source.to_string()),
            ("target_base".to_owned(), target.to_string()),
        ]),
    )
}

pub(crate) fn judge(question: &Question, answer: &str) -> Result<bool, String> {
    let base: u32 = required(question, "target_base")?
        .parse()
        .map_err(|_| "target_base is not a number".to_owned())?;
    if !(2..=36).contains(&base) {
        return Err(format!("target_base {base} is outside 2..=36"));
    }
    let truth = &question.answer;
    let canonical = !truth.is_empty()
        && truth.bytes().all(|b| DIGITS[..base as usize].contains(&b))
        && (truth == "0" || !truth.starts_with('0'));
    if !canonical {
        return Err(format!(
            "ground truth {truth:?} is not a canonical base-{base} numeral"
        ));
    }
    Ok(answer == truth)
}

/// `value` written in `base` (2..=36) with lowercase digits.
pub fn to_base(mut value: u64, base: u32) -> String {
    let base = u64::from(base.clamp(2, 36));
    let mut digits = Vec::new();
    loop {
        digits.push(DIGITS[(value % base) as usize]);
        value /= base;
        if value == 0 {
            break;
        }
    }
    digits.iter().rev().map(|&d| char::from(d)).collect()
}

fn base_name(base: u32) -> String {
    match base {
        2 => "binary".to_owned(),
        10 => "decimal".to_owned(),
        16 => "hexadecimal".to_owned(),
        _ => format!("base-{base}"),
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_base_u32(base: i64) -> u32 {
    u32::try_from(base).unwrap_or(2)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    use super::*;
    use crate::verify;

    #[test]
    fn writes_digits_like_python_format() {
        assert_eq!(to_base(0, 7), "0");
        assert_eq!(to_base(255, 16), "ff");
        assert_eq!(to_base(5, 2), "101");
        assert_eq!(to_base(35, 36), "z");
    }

    #[test]
    fn generated_questions_verify_by_their_own_answer() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        for level in 1..=5 {
            for _ in 0..200 {
                let q = generate(&Params::at(Difficulty::new(level)), &mut rng);
                assert!(q.check().is_ok(), "{q:?}");
                let base: u32 = q.metadata["target_base"].parse().unwrap();
                assert_ne!(q.metadata["source_base"], q.metadata["target_base"]);
                let value = u64::from_str_radix(&q.answer, base).unwrap();
                assert_eq!(verify(&q, &format!("<answer>{}</answer>", q.answer)), 1.0);
                let mut wrong = vec![
                    to_base(value + 1, base),
                    format!("0{}", q.answer),
                    format!("0x{}", q.answer),
                    format!("{}1", q.answer),
                    String::new(),
                ];
                if q.answer.bytes().any(|b| b.is_ascii_alphabetic()) {
                    wrong.push(q.answer.to_uppercase());
                }
                crate::families::assert_rejected(&q, wrong);
            }
        }
    }

    #[test]
    fn knobs_change_the_range() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        let params = Params {
            min_base: 2,
            max_base: 3,
            min_value: 10,
            max_value: 20,
        };
        for _ in 0..100 {
            let q = generate(&params, &mut rng);
            let base: u32 = q.metadata["target_base"].parse().unwrap();
            assert!(base == 2 || base == 3);
            assert!((10..=20).contains(&u64::from_str_radix(&q.answer, base).unwrap()));
        }
        let hard = Params::at(Difficulty::HARDEST);
        let big = (0..100)
            .map(|_| generate(&hard, &mut rng))
            .filter(|q| q.metadata["target_base"].parse::<u32>().unwrap() > 16)
            .count();
        assert!(big > 20, "{big}");
    }

    #[test]
    fn reproducible_for_a_seed() {
        let run = |seed| {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            (0..20)
                .map(|_| generate(&Params::at(Difficulty::new(3)), &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }
}
