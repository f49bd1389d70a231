//! Reducing a fraction to lowest terms.
//!
//! Answer: the reduced fraction, as `a/b` (spaces around `/` allowed) or LaTeX `\frac{a}{b}` / `\dfrac{a}{b}`,
//! optionally inside `$…$`, whatever style the question used. Numerator and denominator must be canonical
//! positive integers equal to the ground truth's: an equal but unreduced fraction (`6/8` for `3/4`) is wrong,
//! because reducing is the task.

use rand::Rng;

use super::{question, uniform};
use crate::numbers::gcd;
use crate::{Difficulty, Metadata, Question, TaskFamily};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// Range of the reduced numerator and denominator.
    pub min_value: u32,
    pub max_value: u32,
    /// Range of the common factor the question multiplies both by (at least 2, so there is something to do).
    pub min_factor: u32,
    pub max_factor: u32,
}

impl Params {
    pub fn at(difficulty: Difficulty) -> Self {
        let (max_value, max_factor) = match difficulty.level() {
            1 => (10, 5),
            2 => (30, 10),
            3 => (100, 30),
            4 => (300, 100),
            _ => (1_000, 1_000),
        };
        Self {
            min_value: 1,
            max_value,
            min_factor: 2,
            max_factor,
        }
    }
}

pub fn generate<R: Rng + ?Sized>(params: &Params, rng: &mut R) -> Question {
    let (low, high) = (
        params.min_value.max(1).into(),
        params.max_value.max(1).into(),
    );
    let a = uniform(rng, low, high).unsigned_abs();
    let b = uniform(rng, low, high).unsigned_abs();
    let common = gcd(a, b);
    let (num, den) = (a / common, b / common);
    let factor = uniform(
        rng,
        params.min_factor.max(2).into(),
        params.max_factor.max(2).into(),
    )
    .unsigned_abs();
    question(
        TaskFamily::FractionSimplification,
        format!(
            "Simplify the fraction {}/{} to its lowest terms. Give the simplified fraction as a/b.",
            num * factor,
            den * factor
        ),
        format!("{num}/{den}"),
        Metadata::new(),
    )
}

pub(crate) fn judge(question: &Question, answer: &str) -> Result<bool, String> {
    let (num, den) = parse_fraction(&question.answer)
        .filter(|&(num, den)| gcd(num, den) == 1)
        .ok_or_else(|| {
            format!(
                "ground truth {:?} is not a reduced fraction",
                question.answer
            )
        })?;
    Ok(parse_fraction(answer) == Some((num, den)))
}

/// `(numerator, denominator)` of `a/b`, `\frac{a}{b}` or `\dfrac{a}{b}`, optionally inside `$…$`.
fn parse_fraction(text: &str) -> Option<(u64, u64)> {
    let text = text.trim();
    let text = text
        .strip_prefix('$')
        .and_then(|inner| inner.strip_suffix('$'))
        .unwrap_or(text)
        .trim();
    let (num, den) = match text
        .strip_prefix("\\dfrac")
        .or_else(|| text.strip_prefix("\\frac"))
    {
        Some(latex) => {
            let latex = latex.trim_start().strip_prefix('{')?.strip_suffix('}')?;
            let (num, den) = latex.split_once('}')?;
            (num, den.trim_start().strip_prefix('{')?)
        }
        None => text.split_once('/')?,
    };
    let (num, den) = (positive(num.trim())?, positive(den.trim())?);
    Some((num, den))
}

/// A canonical positive integer: digits only, no leading zero.
fn positive(text: &str) -> Option<u64> {
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0');
    if canonical { text.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    use super::*;
    use crate::verify;

    #[test]
    fn parses_every_style() {
        for text in [
            "3/4",
            " 3 / 4 ",
            "$3/4$",
            "\\frac{3}{4}",
            "$\\frac{3}{4}$",
            "$\\dfrac{ 3 }{ 4 }$",
        ] {
            assert_eq!(parse_fraction(text), Some((3, 4)), "{text}");
        }
        for text in [
            "3/4/5",
            "03/4",
            "-3/4",
            "3/0",
            "0.75",
            "\\frac{3}{4}x",
            "\\frac{3}{4",
            "3/4$",
            "+3/4",
        ] {
            assert_eq!(
                parse_fraction(text).filter(|(_, d)| *d != 0),
                None,
                "{text}"
            );
        }
    }

    #[test]
    fn generated_questions_verify_by_their_own_answer() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        for level in 1..=5 {
            for _ in 0..200 {
                let q = generate(&Params::at(Difficulty::new(level)), &mut rng);
                assert!(q.check().is_ok(), "{q:?}");
                let (num, den) = parse_fraction(&q.answer).unwrap();
                assert_eq!(verify(&q, &format!("<answer>{}</answer>", q.answer)), 1.0);
                assert_eq!(
                    verify(&q, &format!("<answer>$\\frac{{{num}}}{{{den}}}$</answer>")),
                    1.0
                );
                let mut wrong = vec![
                    format!("{}/{}", num * 2, den * 2),
                    format!("{}/{}", num + 1, den),
                    format!("0{num}/{den}"),
                    format!("{num}"),
                    String::new(),
                ];
                if num != den {
                    wrong.push(format!("{den}/{num}"));
                }
                crate::families::assert_rejected(&q, wrong);
            }
        }
    }

    #[test]
    fn knobs_change_the_range() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        let params = Params {
            min_value: 5,
            max_value: 9,
            min_factor: 3,
            max_factor: 3,
        };
        for _ in 0..100 {
            let q = generate(&params, &mut rng);
            let (num, den) = parse_fraction(&q.answer).unwrap();
            assert!(num <= 9 && den <= 9);
            assert!(
                q.prompt.contains(&format!("{}/{}", num * 3, den * 3)),
                "{}",
                q.prompt
            );
        }
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
