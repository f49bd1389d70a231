//! Questions from a JSONL file, such as GSM8K placed on a volume.
//!
//! One JSON object per line: `question` (string), `answer` (string or number) and optional `metadata`
//! (object; string values kept as they are, other values as JSON text). Other fields are ignored, so files
//! with ids or splits load as they are; blank lines are skipped. An answer containing `####` (GSM8K's
//! worked solutions) keeps only the text after the last `####`.
//!
//! A dataset answer is judged right when, after trimming, either
//! - both it and the ground truth read as numbers and are equal in value — a number may carry a leading `$`,
//!   a trailing `.`, and thousands separators in groups of three (`1,234`), so `$1,234.50` equals `1234.5`; or
//! - they are equal as text with runs of whitespace collapsed and ASCII letters compared case-insensitively.

use std::path::Path;

use serde::Deserialize;

use crate::numbers::Decimal;
use crate::{Metadata, Question, Source, TaskError};

#[derive(Deserialize)]
struct Line {
    question: Option<String>,
    answer: Option<serde_json::Value>,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
}

/// Loads every question of a JSONL dataset; the dataset is named after the file's stem.
pub fn load_jsonl(path: &Path) -> Result<Vec<Question>, TaskError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TaskError::Read {
        path: origin.clone(),
        source,
    })?;
    let name = path.file_stem().map_or_else(
        || origin.clone(),
        |stem| stem.to_string_lossy().into_owned(),
    );
    parse_jsonl(&text, &name, &origin)
}

/// Parses JSONL text as [`load_jsonl`] does; `origin` names the text in errors.
pub fn parse_jsonl(text: &str, name: &str, origin: &str) -> Result<Vec<Question>, TaskError> {
    let mut questions = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let line = index + 1;
        let invalid = |reason: &str| TaskError::InvalidLine {
            path: origin.to_owned(),
            line,
            reason: reason.to_owned(),
        };
        let parsed: Line =
            serde_json::from_str(raw).map_err(|source| TaskError::MalformedLine {
                path: origin.to_owned(),
                line,
                source,
            })?;
        let prompt = parsed
            .question
            .filter(|q| !q.trim().is_empty())
            .ok_or_else(|| invalid("no \"question\" string"))?;
        let answer = match parsed.answer {
            Some(serde_json::Value::String(answer)) => answer,
            Some(serde_json::Value::Number(answer)) => answer.to_string(),
            _ => return Err(invalid("no \"answer\" string or number")),
        };
        let answer = final_answer(&answer);
        if answer.is_empty() {
            return Err(invalid("the answer is empty"));
        }
        let metadata: Metadata = parsed
            .metadata
            .into_iter()
            .map(|(key, value)| match value {
                serde_json::Value::String(text) => (key, text),
                other => (key, other.to_string()),
            })
            .collect();
        questions.push(Question {
            source: Source::Dataset(name.to_owned()),
            prompt,
            answer: answer.to_owned(),
            metadata,
        });
    }
    if questions.is_empty() {
        return Err(TaskError::Empty {
            path: origin.to_owned(),
        });
    }
    Ok(questions)
}

/// The final answer of a GSM8K-style worked solution: the text after the last `####`.
fn final_answer(answer: &str) -> &str {
    answer
        .rsplit_once("####")
        .map_or(answer, |(_, last)| last)
        .trim()
}

pub(crate) fn judge(truth: &str, answer: &str) -> bool {
    match (number(truth), number(answer)) {
        (Some(truth), Some(answer)) => truth == answer,
        _ => text(truth).eq_ignore_ascii_case(&text(answer)),
    }
}

fn number(text: &str) -> Option<Decimal> {
    let text = text.trim();
    let text = text.strip_prefix('$').unwrap_or(text);
    let text = text.strip_suffix('.').unwrap_or(text);
    let (sign, unsigned) = text
        .strip_prefix('-')
        .map_or(("", text), |rest| ("-", rest));
    let (whole, fraction) = unsigned
        .split_once('.')
        .map_or((unsigned, None), |(w, f)| (w, Some(f)));
    let mut groups = whole.split(',');
    let first = groups.next()?;
    let grouped: Vec<&str> = groups.collect();
    // Separators only count in groups of three after a group of one to three digits.
    if !grouped.is_empty()
        && (first.is_empty() || first.len() > 3 || grouped.iter().any(|g| g.len() != 3))
    {
        return None;
    }
    let digits = format!("{sign}{first}{}", grouped.concat());
    Decimal::parse(&match fraction {
        Some(fraction) => format!("{digits}.{fraction}"),
        None => digits,
    })
}

fn text(answer: &str) -> String {
    answer.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify;

    #[test]
    fn loads_gsm8k_style_lines() {
        let text = concat!(
            r#"{"question": "Janet has 3 apples and buys 4. How many?", "answer": "3 + 4 = 7\n#### 7"}"#,
            "\n\n",
            r#"{"question": "Capital of France?", "answer": "Paris", "metadata": {"id": 12, "split": "test"}, "extra": 1}"#,
            "\n",
            r#"{"question": "Half of 3?", "answer": 1.5}"#,
            "\n"
        );
        let questions = parse_jsonl(text, "gsm8k", "gsm8k.jsonl").unwrap();
        assert_eq!(questions.len(), 3);
        assert_eq!(questions[0].answer, "7");
        assert_eq!(questions[0].source, Source::Dataset("gsm8k".into()));
        assert_eq!(questions[1].metadata["id"], "12");
        assert_eq!(questions[1].metadata["split"], "test");
        assert_eq!(questions[2].answer, "1.5");
        assert!(questions.iter().all(|q| q.check().is_ok()));
    }

    #[test]
    fn malformed_lines_are_named() {
        let cases = [
            (
                "{\"question\": \"q\", \"answer\": \"1\"}\nnot json",
                2,
                "not a JSON question",
            ),
            ("{\"question\": \"q\"}", 1, "no \"answer\""),
            ("\n\n{\"answer\": \"1\"}", 3, "no \"question\""),
            ("{\"question\": \"q\", \"answer\": \"#### \"}", 1, "empty"),
            ("{\"question\": \"q\", \"answer\": [1]}", 1, "no \"answer\""),
        ];
        for (text, line, words) in cases {
            let err = parse_jsonl(text, "d", "d.jsonl").unwrap_err().to_string();
            assert!(
                err.contains(&format!("line {line}")) && err.contains(words),
                "{err}"
            );
        }
        let err = parse_jsonl("\n \n", "d", "d.jsonl").unwrap_err();
        assert!(matches!(err, TaskError::Empty { .. }), "{err}");
    }

    #[test]
    fn reads_a_file_and_names_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gsm8k.jsonl");
        std::fs::write(&path, "{\"question\": \"q\", \"answer\": \"#### 1,234\"}\n").unwrap();
        let questions = load_jsonl(&path).unwrap();
        assert_eq!(questions[0].source, Source::Dataset("gsm8k".into()));
        let err = load_jsonl(&dir.path().join("missing.jsonl")).unwrap_err();
        assert!(err.to_string().contains("missing.jsonl"), "{err}");
    }

    #[test]
    fn numbers_compare_by_value_and_text_by_words() {
        for (truth, answer) in [
            ("18", "18"),
            ("18", "18.00"),
            ("1234", "1,234"),
            ("1234.5", "$1,234.50"),
            ("-3", "-3."),
            ("Paris", " paris "),
            ("New  York", "new york"),
        ] {
            assert!(judge(truth, answer), "{truth} vs {answer}");
        }
        for (truth, answer) in [
            ("18", "180"),
            ("18", "1.8"),
            ("18", "18 apples"),
            ("1234", "1,2345"),
            ("1234", "12,34"),
            ("15", "1,5"),
            ("Paris", "Paris, France"),
            ("18", ""),
        ] {
            assert!(!judge(truth, answer), "{truth} vs {answer}");
        }
        let q = &parse_jsonl(r#"{"question": "q", "answer": "x\n#### 72"}"#, "d", "d").unwrap()[0];
        assert_eq!(verify(q, "… so <answer>72</answer>"), 1.0);
        assert_eq!(verify(q, "… so <answer>#### 72</answer>"), 0.0);
    }
}
