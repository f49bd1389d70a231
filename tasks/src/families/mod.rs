//! The procedural families, one module each. Every module has a `Params` struct (its difficulty knobs, with
//! `Params::at(Difficulty)`), a `generate(&Params, rng)` and the verifier behind [`crate::verify`].

pub mod base_conversion;
pub mod basic_arithmetic;
pub mod calendar_arithmetic;
pub mod decimal_arithmetic;
pub mod fraction_simplification;
pub mod propositional_logic;

use rand::{Rng, RngExt};

use crate::{Difficulty, Metadata, Question, Source, TaskFamily};

/// Every procedural family, in the order node-config declares them.
pub const ALL: [TaskFamily; 6] = [
    TaskFamily::BasicArithmetic,
    TaskFamily::BaseConversion,
    TaskFamily::DecimalArithmetic,
    TaskFamily::FractionSimplification,
    TaskFamily::CalendarArithmetic,
    TaskFamily::PropositionalLogic,
];

pub(crate) fn generate<R: Rng + ?Sized>(
    family: TaskFamily,
    difficulty: Difficulty,
    rng: &mut R,
) -> Question {
    match family {
        TaskFamily::BasicArithmetic => {
            basic_arithmetic::generate(&basic_arithmetic::Params::at(difficulty), rng)
        }
        TaskFamily::BaseConversion => {
            base_conversion::generate(&base_conversion::Params::at(difficulty), rng)
        }
        TaskFamily::DecimalArithmetic => {
            decimal_arithmetic::generate(&decimal_arithmetic::Params::at(difficulty), rng)
        }
        TaskFamily::FractionSimplification => {
            fraction_simplification::generate(&fraction_simplification::Params::at(difficulty), rng)
        }
        TaskFamily::CalendarArithmetic => {
            calendar_arithmetic::generate(&calendar_arithmetic::Params::at(difficulty), rng)
        }
        TaskFamily::PropositionalLogic => {
            propositional_logic::generate(&propositional_logic::Params::at(difficulty), rng)
        }
    }
}

pub(crate) fn judge(family: TaskFamily, question: &Question, answer: &str) -> Result<bool, String> {
    match family {
        TaskFamily::BasicArithmetic => basic_arithmetic::judge(question, answer),
        TaskFamily::BaseConversion => base_conversion::judge(question, answer),
        TaskFamily::DecimalArithmetic => decimal_arithmetic::judge(question, answer),
        TaskFamily::FractionSimplification => fraction_simplification::judge(question, answer),
        TaskFamily::CalendarArithmetic => calendar_arithmetic::judge(question, answer),
        TaskFamily::PropositionalLogic => propositional_logic::judge(question, answer),
    }
}

fn question(family: TaskFamily, prompt: String, answer: String, metadata: Metadata) -> Question {
    Question {
        source: Source::Procedural(family),
        prompt,
        answer,
        metadata,
    }
}

/// A metadata value the verifier cannot do without.
fn required<'q>(question: &'q Question, key: &str) -> Result<&'q str, String> {
    question
        .metadata
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| format!("metadata has no {key:?}"))
}

/// A uniform draw from `low..=high` (bounds in either order, so no knob setting can panic). Only `i64`
/// ranges are drawn: rand samples fixed-width integers the same way on every platform.
fn uniform<R: Rng + ?Sized>(rng: &mut R, low: i64, high: i64) -> i64 {
    rng.random_range(low.min(high)..=low.max(high))
}

/// A uniform pick from a non-empty slice.
fn pick<'a, T, R: Rng + ?Sized>(rng: &mut R, items: &'a [T]) -> &'a T {
    let last = i64::try_from(items.len()).unwrap_or(i64::MAX) - 1;
    let index = usize::try_from(uniform(rng, 0, last)).unwrap_or(0);
    &items[index]
}

/// A fair coin.
fn coin<R: Rng + ?Sized>(rng: &mut R) -> bool {
    uniform(rng, 0, 1) == 1
}

/// Test helper: each `wrong` answer inside an answer tag, and the bare ground truth without one,
/// score 0 for `question`.
#[cfg(test)]
pub(crate) fn assert_rejected<S: AsRef<str>>(
    question: &crate::Question,
    wrong: impl IntoIterator<Item = S>,
) {
    for wrong in wrong {
        let wrong = wrong.as_ref();
        assert_eq!(
            crate::verify(question, &format!("<answer>{wrong}</answer>")),
            0.0,
            "{wrong} for {question:?}"
        );
    }
    assert_eq!(crate::verify(question, &question.answer), 0.0, "no tag");
}
