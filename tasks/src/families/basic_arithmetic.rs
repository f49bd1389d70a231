//! Integer expressions with `+ - * /` and parentheses.
//!
//! Answer: the value as a canonical integer (`-12`, not `-12.0`, `012` or `+12`). `/` is Python's floor
//! division `//`, as in reasoning-gym; our generator only divides exactly, so rounding never matters in our
//! own questions, but [`evaluate`] follows Python for anyone else's.

use rand::Rng;

use super::{coin, pick, question, uniform};
use crate::numbers::{floor_div, parse_canonical_int};
use crate::{Difficulty, Metadata, Question, TaskFamily};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// Number of literals in the expression.
    pub min_terms: u32,
    pub max_terms: u32,
    /// Digits per literal.
    pub min_digits: u32,
    pub max_digits: u32,
    /// Whether `/` appears; it always divides exactly.
    pub division: bool,
}

impl Params {
    pub fn at(difficulty: Difficulty) -> Self {
        let (min_terms, max_terms, max_digits) = match difficulty.level() {
            1 => (2, 2, 1),
            2 => (2, 3, 2),
            3 => (3, 4, 2),
            4 => (3, 5, 3),
            _ => (4, 6, 4),
        };
        Self {
            min_terms,
            max_terms,
            min_digits: 1,
            max_digits,
            division: difficulty.level() >= 2,
        }
    }
}

pub fn generate<R: Rng + ?Sized>(params: &Params, rng: &mut R) -> Question {
    let terms = uniform(
        rng,
        params.min_terms.max(1).into(),
        params.max_terms.max(1).into(),
    );
    let digits = uniform(
        rng,
        params.min_digits.clamp(1, 9).into(),
        params.max_digits.clamp(1, 9).into(),
    );
    let expr = build(rng, terms, digits, params.division);
    let expression = expr.to_string();
    // The answer comes from the text the model sees, through the same evaluator every peer uses.
    let answer = evaluate(&expression).unwrap_or_else(|| expr.value());
    question(
        TaskFamily::BasicArithmetic,
        format!(
            "Calculate {expression}. Every division in it is exact. Give the result as an integer."
        ),
        answer.to_string(),
        Metadata::from([("expression".to_owned(), expression)]),
    )
}

pub(crate) fn judge(question: &Question, answer: &str) -> Result<bool, String> {
    let truth = parse_canonical_int(&question.answer)
        .ok_or_else(|| format!("ground truth {:?} is not an integer", question.answer))?;
    Ok(parse_canonical_int(answer) == Some(truth))
}

/// Evaluates an integer expression the way Python evaluates it after replacing `/` by `//`: `*` and `/` bind
/// tighter than `+` and `-`, all are left-associative, unary minus binds tighter still (`-7 / 2` is
/// `(-7) // 2 = -4`), division floors. `None` for anything else, a division by zero or an overflow.
pub fn evaluate(expression: &str) -> Option<i128> {
    let mut parser = Parser {
        tokens: expression.chars().filter(|c| !c.is_whitespace()).collect(),
        at: 0,
    };
    let value = parser.sum()?;
    (parser.at == parser.tokens.len()).then_some(value)
}

struct Parser {
    tokens: Vec<char>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.tokens.get(self.at).copied()
    }

    fn sum(&mut self) -> Option<i128> {
        let mut value = self.product()?;
        while let Some(op @ ('+' | '-')) = self.peek() {
            self.at += 1;
            let rhs = self.product()?;
            value = if op == '+' {
                value.checked_add(rhs)?
            } else {
                value.checked_sub(rhs)?
            };
        }
        Some(value)
    }

    fn product(&mut self) -> Option<i128> {
        let mut value = self.unary()?;
        while let Some(op @ ('*' | '/')) = self.peek() {
            self.at += 1;
            let rhs = self.unary()?;
            value = if op == '*' {
                value.checked_mul(rhs)?
            } else {
                floor_div(value, rhs)?
            };
        }
        Some(value)
    }

    fn unary(&mut self) -> Option<i128> {
        match self.peek()? {
            '-' => {
                self.at += 1;
                self.unary()?.checked_neg()
            }
            '+' => {
                self.at += 1;
                self.unary()
            }
            '(' => {
                self.at += 1;
                let value = self.sum()?;
                (self.peek()? == ')').then_some(())?;
                self.at += 1;
                Some(value)
            }
            _ => {
                let start = self.at;
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.at += 1;
                }
                self.tokens[start..self.at]
                    .iter()
                    .collect::<String>()
                    .parse()
                    .ok()
            }
        }
    }
}

/// An expression tree; rendering adds only the parentheses the shape needs.
enum Expr {
    Literal(i64),
    Binary(Box<Expr>, char, Box<Expr>),
}

fn build<R: Rng + ?Sized>(rng: &mut R, terms: i64, digits: i64, division: bool) -> Expr {
    let largest = 10i64.pow(u32::try_from(digits).unwrap_or(1)) - 1;
    if terms <= 1 {
        return Expr::Literal(uniform(rng, 1, largest));
    }
    let ops: &[char] = if division {
        &['+', '-', '*', '/']
    } else {
        &['+', '-', '*']
    };
    let op = *pick(rng, ops);
    if op == '/' {
        // The divisor is a single literal dividing the left side exactly; a left side without a divisor in
        // range (0, ±1, or a large prime) becomes a product instead.
        let left = build(rng, terms - 1, digits, division);
        let divisors = divisors_up_to(left.value(), largest);
        let (op, right) = if divisors.is_empty() {
            ('*', uniform(rng, 1, largest))
        } else {
            ('/', *pick(rng, &divisors))
        };
        return Expr::Binary(Box::new(left), op, Box::new(Expr::Literal(right)));
    }
    let left_terms = uniform(rng, 1, terms - 1);
    let left = build(rng, left_terms, digits, division);
    let right = build(rng, terms - left_terms, digits, division);
    // Shuffle which side gets the bigger subtree, so parentheses appear on both sides.
    let (left, right) = if coin(rng) {
        (left, right)
    } else {
        (right, left)
    };
    Expr::Binary(Box::new(left), op, Box::new(right))
}

/// Divisors of `value` in `2..=largest`.
fn divisors_up_to(value: i128, largest: i64) -> Vec<i64> {
    let magnitude = value.unsigned_abs();
    (2..=largest)
        .take_while(|d| (*d as u128) <= magnitude)
        .filter(|d| magnitude.is_multiple_of(*d as u128))
        .collect()
}

impl Expr {
    /// The exact value; every division in a generated tree is exact and values stay far below `i128::MAX`
    /// (at most six literals of four digits), so plain arithmetic is enough.
    fn value(&self) -> i128 {
        match self {
            Expr::Literal(n) => i128::from(*n),
            Expr::Binary(left, op, right) => {
                let (a, b) = (left.value(), right.value());
                match op {
                    '+' => a + b,
                    '-' => a - b,
                    '*' => a * b,
                    _ => floor_div(a, b).unwrap_or(0),
                }
            }
        }
    }

    fn precedence(&self) -> u8 {
        match self {
            Expr::Literal(_) => 3,
            Expr::Binary(_, '+' | '-', _) => 1,
            Expr::Binary(..) => 2,
        }
    }
}

impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expr::Literal(n) => write!(f, "{n}"),
            Expr::Binary(left, op, right) => {
                let mine = self.precedence();
                // `a - (b + c)`, `a / (b * c)` and `a * (b / c)` keep their parentheses: subtraction and
                // division don't associate, and a floor division must stay where it was computed.
                let right_needs = right.precedence() < mine
                    || (right.precedence() == mine
                        && (matches!(op, '-' | '/') || matches!(**right, Expr::Binary(_, '/', _))));
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
    use crate::verify;

    #[test]
    fn evaluates_like_python() {
        assert_eq!(evaluate("7 / 2"), Some(3));
        assert_eq!(evaluate("-7 / 2"), Some(-4));
        assert_eq!(evaluate("- (7 / 2)"), Some(-3));
        assert_eq!(evaluate("2 * -3 - -4"), Some(-2));
        assert_eq!(evaluate("8 - 2 - 1"), Some(5));
        assert_eq!(evaluate("12 / 2 / 3"), Some(2));
        assert_eq!(evaluate("2 + 3 * (4 - 1)"), Some(11));
        assert_eq!(evaluate("1 / 0"), None);
        assert_eq!(evaluate("1 +"), None);
        assert_eq!(evaluate("(1"), None);
        assert_eq!(evaluate("2 ** 3"), None);
    }

    #[test]
    fn generated_questions_verify_by_their_own_answer() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        for level in 1..=5 {
            for _ in 0..200 {
                let q = generate(&Params::at(Difficulty::new(level)), &mut rng);
                let truth: i128 = q.answer.parse().unwrap();
                assert_eq!(evaluate(&q.metadata["expression"]), Some(truth), "{q:?}");
                assert!(q.check().is_ok(), "{q:?}");
                assert_eq!(
                    verify(&q, &format!("so <answer> {} </answer>", q.answer)),
                    1.0
                );
                crate::families::assert_rejected(
                    &q,
                    [
                        (truth + 1).to_string(),
                        (truth - 1).to_string(),
                        format!("{}1", q.answer),
                        format!("{}.0", q.answer),
                        format!("0{}", q.answer),
                        String::new(),
                    ],
                );
            }
        }
    }

    #[test]
    fn division_is_always_exact() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        let params = Params::at(Difficulty::HARDEST);
        let with_division = (0..300)
            .map(|_| generate(&params, &mut rng))
            .filter(|q| q.metadata["expression"].contains('/'))
            .count();
        assert!(with_division > 30, "{with_division}");
    }

    #[test]
    fn knobs_change_the_range() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let literals = |q: &Question| {
            q.metadata["expression"]
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<i64>().unwrap())
                .collect::<Vec<_>>()
        };
        for _ in 0..100 {
            let easy = generate(&Params::at(Difficulty::EASIEST), &mut rng);
            assert!(
                literals(&easy).len() == 2 && literals(&easy).iter().all(|n| *n < 10),
                "{easy:?}"
            );
        }
        let hard: Vec<_> = (0..100)
            .map(|_| generate(&Params::at(Difficulty::HARDEST), &mut rng))
            .collect();
        assert!(hard.iter().all(|q| literals(q).len() >= 4));
        assert!(hard.iter().any(|q| literals(q).iter().any(|n| *n >= 1000)));
    }

    #[test]
    fn reproducible_for_a_seed() {
        let run = |seed| {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            (0..20)
                .map(|_| generate(&Params::at(Difficulty::new(4)), &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }
}
