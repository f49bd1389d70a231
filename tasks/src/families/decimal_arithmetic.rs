//! Expressions over decimal numbers with `+ - *`.
//!
//! Answer: a number equal to the ground truth within the question's `tolerance` (metadata), compared exactly
//! in decimal, never in binary floating point. Any plain or scientific numeral is accepted (`0.5`, `.50`,
//! `5e-1`), because the family asks for a value, not a spelling. Our questions avoid division, so their
//! results terminate and the tolerance is `0`; reasoning-gym's questions divide and round to 12 significant
//! digits, and carry the tolerance they were made with (one unit of their finest decimal place).

use rand::Rng;

use super::{coin, pick, question, required, uniform};
use crate::numbers::Decimal;
use crate::{Difficulty, Metadata, Question, TaskFamily};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// Number of operands (clamped to 2..=6, which keeps every product exact in an `i128`).
    pub min_terms: u32,
    pub max_terms: u32,
    /// Decimal places per operand (clamped to 1..=4).
    pub min_places: u32,
    pub max_places: u32,
    /// Operands are at most this large (clamped to 1..=100).
    pub max_integer_part: u32,
}

impl Params {
    pub fn at(difficulty: Difficulty) -> Self {
        let (max_terms, max_places, max_integer_part) = match difficulty.level() {
            1 => (2, 1, 10),
            2 => (3, 2, 10),
            3 => (4, 2, 20),
            4 => (5, 3, 50),
            _ => (6, 4, 100),
        };
        Self {
            min_terms: 2,
            max_terms,
            min_places: 1,
            max_places,
            max_integer_part,
        }
    }
}

pub fn generate<R: Rng + ?Sized>(params: &Params, rng: &mut R) -> Question {
    let terms = uniform(
        rng,
        params.min_terms.clamp(2, 6).into(),
        params.max_terms.clamp(2, 6).into(),
    );
    let places = (
        params.min_places.clamp(1, 4).into(),
        params.max_places.clamp(1, 4).into(),
    );
    let largest = i64::from(params.max_integer_part.clamp(1, 100));
    let expr = build(rng, terms, places, largest);
    let answer = expr
        .value()
        .map_or_else(|| "0".to_owned(), |value| value.to_string());
    question(
        TaskFamily::DecimalArithmetic,
        format!("Calculate {expr} exactly. Give the exact decimal result."),
        answer,
        Metadata::from([("tolerance".to_owned(), "0".to_owned())]),
    )
}

pub(crate) fn judge(question: &Question, answer: &str) -> Result<bool, String> {
    let truth = Decimal::parse(&question.answer)
        .ok_or_else(|| format!("ground truth {:?} is not a number", question.answer))?;
    let tolerance = required(question, "tolerance")?;
    let tolerance = Decimal::parse(tolerance)
        .filter(|t| !t.is_negative())
        .ok_or_else(|| format!("tolerance {tolerance:?} is not a non-negative number"))?;
    Ok(Decimal::parse(answer).is_some_and(|value| value.within(truth, tolerance)))
}

enum Expr {
    /// The operand and the number of decimal places it is written with.
    Literal(Decimal, usize),
    Binary(Box<Expr>, char, Box<Expr>),
}

fn build<R: Rng + ?Sized>(rng: &mut R, terms: i64, places: (i64, i64), largest: i64) -> Expr {
    if terms <= 1 {
        let places = uniform(rng, places.0, places.1);
        let scale = 10i64.pow(u32::try_from(places).unwrap_or(1));
        let raw = uniform(rng, 1, largest * scale);
        return Expr::Literal(
            Decimal::new(raw.into(), -i32::try_from(places).unwrap_or(1)),
            usize::try_from(places).unwrap_or(1),
        );
    }
    let op = *pick(rng, &['+', '-', '*']);
    let left_terms = uniform(rng, 1, terms - 1);
    let left = build(rng, left_terms, places, largest);
    let right = build(rng, terms - left_terms, places, largest);
    let (left, right) = if coin(rng) {
        (left, right)
    } else {
        (right, left)
    };
    Expr::Binary(Box::new(left), op, Box::new(right))
}

impl Expr {
    fn value(&self) -> Option<Decimal> {
        match self {
            Expr::Literal(value, _) => Some(*value),
            Expr::Binary(left, op, right) => {
                let (a, b) = (left.value()?, right.value()?);
                match op {
                    '+' => a.checked_add(b),
                    '-' => a.checked_sub(b),
                    _ => a.checked_mul(b),
                }
            }
        }
    }

    fn precedence(&self) -> u8 {
        match self {
            Expr::Literal(..) => 3,
            Expr::Binary(_, '*', _) => 2,
            Expr::Binary(..) => 1,
        }
    }
}

impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Operands keep their trailing zeros (`2.50`), as written numbers do.
            Expr::Literal(value, places) => {
                let plain = value.to_string();
                let written = plain
                    .split_once('.')
                    .map_or(0, |(_, fraction)| fraction.len());
                let point = if written == 0 { "." } else { "" };
                write!(
                    f,
                    "{plain}{point}{}",
                    "0".repeat(places.saturating_sub(written))
                )
            }
            Expr::Binary(left, op, right) => {
                let mine = self.precedence();
                let right_needs =
                    right.precedence() < mine || (right.precedence() == mine && *op == '-');
                let wrap = |needs: bool, e: &Expr| {
                    if needs {
                        format!("({e})")
                    } else {
                        e.to_string()
                    }
                };
                write!(
                    f,
                    "{} {op} {}",
                    wrap(left.precedence() < mine, left),
                    wrap(right_needs, right)
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    use super::*;
    use crate::{Source, verify};

    #[test]
    fn generated_questions_verify_by_their_own_answer() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        for level in 1..=5 {
            for _ in 0..200 {
                let q = generate(&Params::at(Difficulty::new(level)), &mut rng);
                assert!(q.check().is_ok(), "{q:?}");
                let truth = Decimal::parse(&q.answer).unwrap();
                let ulp = Decimal::parse("0.0001").unwrap();
                assert_eq!(verify(&q, &format!("<answer>{}</answer>", q.answer)), 1.0);
                let padded = if q.answer.contains('.') {
                    format!("{}0", q.answer)
                } else {
                    format!("{}.0", q.answer)
                };
                assert_eq!(verify(&q, &format!("<answer>{padded}</answer>")), 1.0);
                crate::families::assert_rejected(
                    &q,
                    [
                        truth.checked_add(ulp).unwrap().to_string(),
                        truth.checked_sub(ulp).unwrap().to_string(),
                        format!(
                            "{}1",
                            if q.answer.contains('.') {
                                q.answer.clone()
                            } else {
                                format!("{}.", q.answer)
                            }
                        ),
                        format!("{},5", q.answer),
                        String::new(),
                    ],
                );
            }
        }
    }

    #[test]
    fn operands_are_written_with_their_places() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        let params = Params {
            min_terms: 2,
            max_terms: 2,
            min_places: 3,
            max_places: 3,
            max_integer_part: 1,
        };
        for _ in 0..50 {
            let q = generate(&params, &mut rng);
            let words = q
                .prompt
                .split(' ')
                .map(|w| w.trim_matches(|c: char| !c.is_ascii_digit()));
            for operand in words.filter(|w| !w.is_empty()) {
                assert_eq!(operand.split_once('.').unwrap().1.len(), 3, "{}", q.prompt);
            }
        }
    }

    #[test]
    fn tolerance_comes_from_the_question() {
        let q = Question {
            source: Source::Procedural(TaskFamily::DecimalArithmetic),
            prompt: String::new(),
            answer: "0.948639014906".into(),
            metadata: Metadata::from([("tolerance".into(), "0.001".into())]),
        };
        assert_eq!(verify(&q, "<answer>0.949</answer>"), 1.0);
        assert_eq!(verify(&q, "<answer>0.947639014906</answer>"), 1.0);
        assert_eq!(verify(&q, "<answer>9.49e-1</answer>"), 1.0);
        assert_eq!(verify(&q, "<answer>0.9496390149061</answer>"), 0.0);
        let negative = Question {
            metadata: Metadata::from([("tolerance".into(), "-1".into())]),
            ..q
        };
        assert!(negative.check().is_err());
    }

    #[test]
    fn knobs_change_the_range() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(4);
        let count_operands = |q: &Question| q.prompt.matches(['+', '*', '-']).count() + 1;
        for _ in 0..100 {
            let easy = generate(&Params::at(Difficulty::EASIEST), &mut rng);
            assert!(count_operands(&easy) <= 3, "{}", easy.prompt);
        }
        let hard = (0..100).map(|_| generate(&Params::at(Difficulty::HARDEST), &mut rng));
        assert!(hard.map(|q| count_operands(&q)).max().unwrap() >= 6);
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
