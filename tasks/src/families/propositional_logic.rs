//! Drawing a conclusion from propositional premises.
//!
//! Answer: any formula over the question's variables (metadata `variables`, e.g. `PQR`) that the premises
//! (metadata `premises`, one per line) entail and that is not a tautology — judged by truth table, not by
//! comparison with the ground truth, which is just one valid conclusion. Notation as reasoning-gym's: single
//! uppercase letters, `¬ ∧ ∨ → ↔` and parentheses; `¬` binds tightest, then `∧`, `∨`, `→`, `↔`, and binary
//! operators group to the left (`P → Q → R` is `(P → Q) → R`), as reasoning-gym's parser does.

use std::fmt;

use rand::Rng;

use super::{pick, question, required, uniform};
use crate::{Difficulty, Metadata, Question, TaskFamily};

/// Truth tables grow as 2^variables; questions with more variables are refused as malformed.
const MAX_VARIABLES: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Formula {
    /// A variable: 0 for `A` … 25 for `Z`.
    Var(u8),
    Not(Box<Formula>),
    Binary(Box<Formula>, Op, Box<Formula>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    And,
    Or,
    Implies,
    Iff,
}

impl Op {
    const ALL: [Op; 4] = [Op::And, Op::Or, Op::Implies, Op::Iff];

    fn symbol(self) -> char {
        match self {
            Op::And => '∧',
            Op::Or => '∨',
            Op::Implies => '→',
            Op::Iff => '↔',
        }
    }
}

impl Formula {
    /// Parses the notation above; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let tokens: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
        let mut parser = Parser { tokens, at: 0 };
        let formula = parser.binary(0)?;
        (parser.at == parser.tokens.len()).then_some(formula)
    }

    /// The truth value under `assignment`, whose bit `i` is variable `i`.
    pub fn eval(&self, assignment: u32) -> bool {
        match self {
            Formula::Var(v) => assignment >> v & 1 == 1,
            Formula::Not(inner) => !inner.eval(assignment),
            Formula::Binary(left, op, right) => {
                let (a, b) = (left.eval(assignment), right.eval(assignment));
                match op {
                    Op::And => a && b,
                    Op::Or => a || b,
                    Op::Implies => !a || b,
                    Op::Iff => a == b,
                }
            }
        }
    }

    /// Bit `i` set when variable `i` occurs.
    fn variables(&self) -> u32 {
        match self {
            Formula::Var(v) => 1 << v,
            Formula::Not(inner) => inner.variables(),
            Formula::Binary(left, _, right) => left.variables() | right.variables(),
        }
    }
}

impl fmt::Display for Formula {
    /// Fully parenthesised, as reasoning-gym writes premises: `(P ∧ ¬Q)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Formula::Var(v) => write!(f, "{}", char::from(b'A' + v)),
            Formula::Not(inner) => write!(f, "¬{inner}"),
            Formula::Binary(left, op, right) => write!(f, "({left} {} {right})", op.symbol()),
        }
    }
}

struct Parser {
    tokens: Vec<char>,
    at: usize,
}

/// Binary operators from the loosest to the tightest.
const LEVELS: [Op; 4] = [Op::Iff, Op::Implies, Op::Or, Op::And];

impl Parser {
    fn binary(&mut self, level: usize) -> Option<Formula> {
        let Some(&op) = LEVELS.get(level) else {
            return self.unary();
        };
        let mut left = self.binary(level + 1)?;
        while self.tokens.get(self.at) == Some(&op.symbol()) {
            self.at += 1;
            let right = self.binary(level + 1)?;
            left = Formula::Binary(Box::new(left), op, Box::new(right));
        }
        Some(left)
    }

    fn unary(&mut self) -> Option<Formula> {
        let token = *self.tokens.get(self.at)?;
        self.at += 1;
        match token {
            '¬' => Some(Formula::Not(Box::new(self.unary()?))),
            '(' => {
                let inner = self.binary(0)?;
                (self.tokens.get(self.at) == Some(&')')).then_some(())?;
                self.at += 1;
                Some(inner)
            }
            'A'..='Z' => Some(Formula::Var(token as u8 - b'A')),
            _ => None,
        }
    }
}

/// The premises and variables of a question, ready to judge conclusions.
struct Problem {
    premises: Vec<Formula>,
    /// Bit `i` set for each declared variable.
    variables: u32,
}

impl Problem {
    fn from_question(question: &Question) -> Result<Self, String> {
        let letters = required(question, "variables")?;
        let mut variables = 0u32;
        for letter in letters.chars() {
            match Formula::parse(&letter.to_string()) {
                Some(Formula::Var(v)) if variables >> v & 1 == 0 => variables |= 1 << v,
                _ => {
                    return Err(format!(
                        "variables {letters:?} are not distinct letters A-Z"
                    ));
                }
            }
        }
        if variables == 0 || variables.count_ones() as usize > MAX_VARIABLES {
            return Err(format!(
                "a question needs 1 to {MAX_VARIABLES} variables, not {letters:?}"
            ));
        }
        let premises = required(question, "premises")?
            .lines()
            .map(|line| {
                Formula::parse(line)
                    .filter(|premise| premise.variables() & !variables == 0)
                    .ok_or_else(|| format!("premise {line:?} is not a formula over {letters}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if premises.is_empty() {
            return Err("a question needs premises".to_owned());
        }
        Ok(Self {
            premises,
            variables,
        })
    }

    /// Every assignment of the declared variables, as bit masks over all 26 letters.
    fn assignments(&self) -> impl Iterator<Item = u32> + '_ {
        let positions: Vec<u32> = (0..26).filter(|i| self.variables >> i & 1 == 1).collect();
        (0u32..1 << positions.len()).map(move |row| {
            positions
                .iter()
                .enumerate()
                .filter(|(bit, _)| row >> bit & 1 == 1)
                .fold(0, |mask, (_, position)| mask | 1 << position)
        })
    }

    fn satisfiable(&self) -> bool {
        self.assignments()
            .any(|a| self.premises.iter().all(|p| p.eval(a)))
    }

    /// A conclusion counts when it uses declared variables only, follows from the premises in every row where
    /// they all hold, and is not a tautology (true in every row: it says nothing about the premises).
    fn accepts(&self, conclusion: &Formula) -> bool {
        conclusion.variables() & !self.variables == 0
            && self
                .assignments()
                .all(|a| !self.premises.iter().all(|p| p.eval(a)) || conclusion.eval(a))
            && !self.assignments().all(|a| conclusion.eval(a))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// Variables `P`, `Q`, … (clamped to 2..=8).
    pub min_vars: u32,
    pub max_vars: u32,
    pub min_premises: u32,
    pub max_premises: u32,
    /// Operator depth of each premise (clamped to 1..=5).
    pub min_depth: u32,
    pub max_depth: u32,
}

impl Params {
    pub fn at(difficulty: Difficulty) -> Self {
        let (max_vars, max_premises, max_depth) = match difficulty.level() {
            1 => (2, 2, 2),
            2 => (3, 3, 2),
            3 => (4, 4, 3),
            4 => (5, 5, 3),
            _ => (6, 6, 4),
        };
        Self {
            min_vars: 2,
            max_vars,
            min_premises: 2,
            max_premises,
            min_depth: 1,
            max_depth,
        }
    }
}

pub fn generate<R: Rng + ?Sized>(params: &Params, rng: &mut R) -> Question {
    let vars = uniform(
        rng,
        params.min_vars.clamp(2, 8).into(),
        params.max_vars.clamp(2, 8).into(),
    );
    let letters: Vec<u8> = (0..vars).map(|i| b'P' + i as u8).collect();
    let count = uniform(
        rng,
        params.min_premises.clamp(1, 10).into(),
        params.max_premises.clamp(1, 10).into(),
    );
    let depths = (
        params.min_depth.clamp(1, 5).into(),
        params.max_depth.clamp(1, 5).into(),
    );
    let variables = letters.iter().fold(0u32, |mask, l| mask | 1 << (l - b'A'));
    // Random premises are often unsatisfiable (everything would follow) or entail nothing small; retry, and
    // after enough misses fall back to modus ponens so generation always ends.
    let (premises, conclusion) = (0..64)
        .find_map(|_| {
            let premises: Vec<Formula> = (0..count)
                .map(|_| {
                    let depth = uniform(rng, depths.0, depths.1);
                    random_formula(rng, &letters, depth)
                })
                .collect();
            let problem = Problem {
                premises,
                variables,
            };
            if !problem.satisfiable() {
                return None;
            }
            let conclusion = (0..100)
                .map(|_| random_formula(rng, &letters, 2))
                .find(|c| problem.accepts(c))?;
            Some((problem.premises, conclusion))
        })
        .unwrap_or_else(|| {
            let (p, q) = (Formula::Var(b'P' - b'A'), Formula::Var(b'Q' - b'A'));
            let rule = Formula::Binary(Box::new(p.clone()), Op::Implies, Box::new(q.clone()));
            (vec![p, rule], q)
        });
    let listed: Vec<String> = premises
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}. {p}", i + 1))
        .collect();
    let names: Vec<String> = letters.iter().map(|l| char::from(*l).to_string()).collect();
    question(
        TaskFamily::PropositionalLogic,
        format!(
            "Given the premises:\n{}\nState one conclusion that follows from all of them and is not a tautology. \
             Use only the variables {} and the symbols ¬ (not), ∧ (and), ∨ (or), → (implies), ↔ (if and only if) \
             and parentheses.",
            listed.join("\n"),
            names.join(", ")
        ),
        conclusion.to_string(),
        Metadata::from([
            (
                "premises".to_owned(),
                premises
                    .iter()
                    .map(Formula::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            ("variables".to_owned(), names.concat()),
        ]),
    )
}

/// A random formula like reasoning-gym's: a variable at depth 1, otherwise a random connective over formulas
/// one level shallower.
fn random_formula<R: Rng + ?Sized>(rng: &mut R, letters: &[u8], depth: i64) -> Formula {
    if depth <= 1 {
        return Formula::Var(pick(rng, letters) - b'A');
    }
    // Five connectives, negation among them, as in reasoning-gym.
    match Op::ALL.get(uniform(rng, 0, 4) as usize) {
        None => Formula::Not(Box::new(random_formula(rng, letters, depth - 1))),
        Some(op) => Formula::Binary(
            Box::new(random_formula(rng, letters, depth - 1)),
            *op,
            Box::new(random_formula(rng, letters, depth - 1)),
        ),
    }
}

pub(crate) fn judge(question: &Question, answer: &str) -> Result<bool, String> {
    let problem = Problem::from_question(question)?;
    if !Formula::parse(&question.answer).is_some_and(|truth| problem.accepts(&truth)) {
        return Err(format!(
            "ground truth {:?} is not a valid conclusion",
            question.answer
        ));
    }
    Ok(Formula::parse(answer).is_some_and(|conclusion| problem.accepts(&conclusion)))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    use super::*;
    use crate::{Source, verify};

    fn logic(premises: &str, variables: &str, answer: &str) -> Question {
        Question {
            source: Source::Procedural(TaskFamily::PropositionalLogic),
            prompt: String::new(),
            answer: answer.into(),
            metadata: Metadata::from([
                ("premises".into(), premises.into()),
                ("variables".into(), variables.into()),
            ]),
        }
    }

    #[test]
    fn parses_with_reasoning_gym_precedence() {
        let show = |s: &str| Formula::parse(s).unwrap().to_string();
        assert_eq!(show("¬P ∧ Q ∨ R"), "((¬P ∧ Q) ∨ R)");
        assert_eq!(show("P → Q → R"), "((P → Q) → R)");
        assert_eq!(show("P ↔ Q → R"), "(P ↔ (Q → R))");
        assert_eq!(show("¬(P ∧ Q)"), "¬(P ∧ Q)");
        assert_eq!(show("¬¬P"), "¬¬P");
        for bad in [
            "", "P ∧", "(P", "P)", "PQ", "p", "P & Q", "P -> Q", "()", "P1",
        ] {
            assert_eq!(Formula::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn judges_by_entailment() {
        let q = logic("P\n(P → Q)", "PQ", "Q");
        assert!(q.check().is_ok());
        for right in ["Q", "(P ∧ Q)", "P ↔ Q", "¬¬Q", "(Q ∨ ¬P)"] {
            assert_eq!(
                verify(&q, &format!("<answer>{right}</answer>")),
                1.0,
                "{right}"
            );
        }
        for wrong in ["¬Q", "(P ∨ ¬P)", "R", "P ∧ ¬Q", "", "Q Q"] {
            assert_eq!(
                verify(&q, &format!("<answer>{wrong}</answer>")),
                0.0,
                "{wrong}"
            );
        }
        assert!(
            logic("P", "PQ", "Q").check().is_err(),
            "a ground truth that does not follow"
        );
        assert!(logic("P", "PP", "P").check().is_err(), "repeated variables");
        assert!(
            logic("R", "PQ", "P").check().is_err(),
            "undeclared variable in a premise"
        );
    }

    #[test]
    fn generated_questions_verify_by_their_own_answer() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        for level in 1..=5 {
            for _ in 0..100 {
                let q = generate(&Params::at(Difficulty::new(level)), &mut rng);
                assert!(q.check().is_ok(), "{q:?}");
                let problem = Problem::from_question(&q).unwrap();
                assert!(problem.satisfiable());
                assert_eq!(verify(&q, &format!("<answer>{}</answer>", q.answer)), 1.0);
                crate::families::assert_rejected(
                    &q,
                    [
                        format!("¬({})", q.answer),
                        "(P ∨ ¬P)".to_owned(),
                        "Z".to_owned(),
                        String::new(),
                    ],
                );
            }
        }
    }

    #[test]
    fn knobs_change_the_range() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        for _ in 0..50 {
            let q = generate(&Params::at(Difficulty::EASIEST), &mut rng);
            assert_eq!(q.metadata["variables"], "PQ");
            assert!(q.metadata["premises"].lines().count() <= 2);
        }
        let hard = (0..50).map(|_| generate(&Params::at(Difficulty::HARDEST), &mut rng));
        assert!(hard.map(|q| q.metadata["variables"].len()).max().unwrap() > 4);
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
