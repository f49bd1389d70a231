//! The instruction text every question is asked with, kept in one place so that the reward's extraction rule
//! and what the model is told can't drift apart.

use crate::Question;

/// System message for every task: reason first, then the final answer alone inside the answer tag.
pub const SYSTEM_PROMPT: &str = "You are a careful problem solver. Think through the problem step by step, \
then give only the final answer inside <answer></answer> tags, for example <answer>42</answer>. \
Do not put any explanation inside the tags.";

/// One chat turn, in the role names chat templates expect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: &'static str,
    pub content: String,
}

/// The conversation a question is asked as: the system instruction and the question's prompt.
pub fn chat_messages(question: &Question) -> [ChatMessage; 2] {
    [
        ChatMessage {
            role: "system",
            content: SYSTEM_PROMPT.to_owned(),
        },
        ChatMessage {
            role: "user",
            content: question.prompt.clone(),
        },
    ]
}
