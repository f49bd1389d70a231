//! Finding the final answer in a completion, and the optional format reward.

use crate::Reward;

const OPEN: &str = "<answer>";
const CLOSE: &str = "</answer>";

/// The final answer of a completion: the text between the last `</answer>` and the nearest `<answer>` before
/// it, with surrounding whitespace trimmed. `None` when there is no such pair.
///
/// The last span wins because models often quote the tag format while reasoning before they answer; the
/// nearest opening tag wins so that a stray unclosed `<answer>` earlier in the text cannot swallow the real
/// answer. Nothing else is normalised here: what an answer may look like is each family's rule.
pub fn extract_answer(completion: &str) -> Option<&str> {
    let close = completion.rfind(CLOSE)?;
    let before = &completion[..close];
    let open = before.rfind(OPEN)?;
    Some(before[open + OPEN.len()..].trim())
}

/// 1 when the completion ends with exactly one non-empty `<answer>…</answer>` span (only whitespace may follow
/// it), 0 otherwise. It says nothing about correctness; see [`RewardConfig::format_weight`].
pub fn format_reward(completion: &str) -> Reward {
    let well_formed = completion.matches(OPEN).count() == 1
        && completion.matches(CLOSE).count() == 1
        && completion
            .rfind(CLOSE)
            .is_some_and(|close| completion[close + CLOSE.len()..].trim().is_empty())
        && extract_answer(completion).is_some_and(|answer| !answer.is_empty());
    if well_formed { 1.0 } else { 0.0 }
}

/// How a completion's reward is put together.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RewardConfig {
    /// Share of the reward given for a well-formed answer tag, in [0, 1]; 0 (the default) rewards correctness
    /// only, as the public swarm does in its later versions. The reward is
    /// `(1 − w) · correctness + w · format`, so it stays in [0, 1].
    pub format_weight: f32,
}

impl RewardConfig {
    pub fn combine(&self, correctness: Reward, format: Reward) -> Reward {
        let weight = self.format_weight.clamp(0.0, 1.0);
        ((1.0 - weight) * correctness + weight * format).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_last_span_and_trims_it() {
        assert_eq!(
            extract_answer("<answer>1</answer> then <answer> 2\n</answer>"),
            Some("2")
        );
        assert_eq!(
            extract_answer("I use <answer>…</answer> tags.\n<answer>42</answer>"),
            Some("42")
        );
        assert_eq!(
            extract_answer("<answer>draft <answer>7</answer>"),
            Some("7")
        );
        assert_eq!(extract_answer("<answer></answer>"), Some(""));
    }

    #[test]
    fn no_pair_no_answer() {
        assert_eq!(extract_answer("42"), None);
        assert_eq!(extract_answer("<answer>42"), None);
        assert_eq!(extract_answer("42</answer>"), None);
        assert_eq!(extract_answer("</answer>42<answer>"), None);
        assert_eq!(extract_answer("<ANSWER>42</ANSWER>"), None);
    }

    #[test]
    fn format_reward_wants_one_closing_span() {
        assert_eq!(format_reward("because…\n<answer>42</answer>\n"), 1.0);
        assert_eq!(format_reward("<answer>42</answer> trailing"), 0.0);
        assert_eq!(format_reward("<answer>1</answer><answer>2</answer>"), 0.0);
        assert_eq!(format_reward("<answer> </answer>"), 0.0);
        assert_eq!(format_reward("42"), 0.0);
    }

    #[test]
    fn combined_reward_stays_in_the_unit_interval() {
        assert_eq!(RewardConfig::default().combine(1.0, 0.0), 1.0);
        let config = RewardConfig { format_weight: 0.1 };
        assert!((config.combine(1.0, 1.0) - 1.0).abs() < 1e-6);
        assert!((config.combine(0.0, 1.0) - 0.1).abs() < 1e-6);
        assert_eq!(RewardConfig { format_weight: 7.0 }.combine(0.0, 1.0), 1.0);
    }
}
