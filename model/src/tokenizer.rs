//! Tokenizer (`tokenizer.json`) and the ChatML chat template of Qwen2 instruct models.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// The system prompt Qwen2-Instruct's template inserts when a conversation has none.
pub const QWEN2_DEFAULT_SYSTEM: &str = "You are a helpful assistant.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// A Hugging Face tokenizer with Qwen2's chat format.
///
/// The chat template is implemented directly rather than by evaluating the Jinja template in
/// `tokenizer_config.json`: for plain system/user/assistant messages every Qwen2 and Qwen2.5
/// template renders the same ChatML text, and the fixture test compares it with transformers'
/// `apply_chat_template`.
#[derive(Debug, Clone)]
pub struct ChatTokenizer {
    tokenizer: tokenizers::Tokenizer,
    default_system: Option<String>,
}

impl ChatTokenizer {
    /// Loads `tokenizer.json` from a model directory, with Qwen2's default system prompt.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(ModelError::Io {
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
                path,
            });
        }
        let tokenizer =
            tokenizers::Tokenizer::from_file(&path).map_err(|e| tokenizer_error(path, e))?;
        Ok(Self {
            tokenizer,
            default_system: Some(QWEN2_DEFAULT_SYSTEM.to_owned()),
        })
    }

    /// The system prompt inserted when the conversation does not start with one (Qwen2.5's
    /// template uses another text than Qwen2's); `None` inserts nothing.
    pub fn with_default_system(mut self, prompt: Option<String>) -> Self {
        self.default_system = prompt;
        self
    }

    /// Renders a conversation in ChatML, as Qwen2's template does:
    ///
    /// ```text
    /// <|im_start|>system\n{system}<|im_end|>\n
    /// <|im_start|>user\n{question}<|im_end|>\n
    /// <|im_start|>assistant\n
    /// ```
    ///
    /// The last line is the generation prompt, added when `add_generation_prompt` is set. A
    /// conversation that does not start with a system message gets the default system prompt.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> String {
        let mut text = String::new();
        let starts_with_system = messages.first().is_some_and(|m| m.role == Role::System);
        if let (false, Some(system)) = (starts_with_system, &self.default_system) {
            push_turn(&mut text, Role::System, system);
        }
        for message in messages {
            push_turn(&mut text, message.role, &message.content);
        }
        if add_generation_prompt {
            text.push_str("<|im_start|>assistant\n");
        }
        text
    }

    /// Token ids of `text`; special tokens written in it (`<|im_start|>`, ...) map to their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, ModelError> {
        // Qwen2 tokenizers add no BOS/EOS, so `add_special_tokens` only matters for other models;
        // the chat template already contains every special token the model expects.
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ModelError::Encode(e.to_string()))?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// The rendered and tokenised conversation, ready for the model.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<i64>, ModelError> {
        self.encode(&self.apply_chat_template(messages, add_generation_prompt))
    }

    /// Text of `ids`; with `skip_special_tokens`, without `<|im_end|>` and the like.
    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String, ModelError> {
        let ids = ids
            .iter()
            .map(|&id| {
                u32::try_from(id)
                    .map_err(|_| ModelError::Encode(format!("token id {id} out of range")))
            })
            .collect::<Result<Vec<u32>, _>>()?;
        self.tokenizer
            .decode(&ids, skip_special_tokens)
            .map_err(|e| ModelError::Encode(e.to_string()))
    }

    /// Id of a token such as `<|im_end|>`, which ends an assistant turn.
    pub fn token_id(&self, token: &str) -> Option<i64> {
        self.tokenizer.token_to_id(token).map(i64::from)
    }
}

fn push_turn(text: &mut String, role: Role, content: &str) {
    text.push_str("<|im_start|>");
    text.push_str(role.as_str());
    text.push('\n');
    text.push_str(content);
    text.push_str("<|im_end|>\n");
}

fn tokenizer_error(path: PathBuf, e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer {
        path,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tokenizer_names_the_file() {
        let err = ChatTokenizer::from_dir(Path::new("/nonexistent")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/tokenizer.json"),
            "{err}"
        );
    }

    #[test]
    fn roles_serialise_as_transformers_names() {
        let message: ChatMessage =
            serde_json::from_str(r#"{"role":"user","content":"hi"}"#).unwrap();
        assert_eq!(message, ChatMessage::new(Role::User, "hi"));
    }
}
