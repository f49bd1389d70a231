use crate::SCHEMA_VERSION;

/// Why a received message was not accepted; [`Rejection::reason`] labels it for metrics. The peer
/// that sent it loses gossip score, except a forwarder of a message that only this node's view
/// rejects (see [`Rejection::depends_on_receiver`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("message of {bytes} bytes exceeds the limit of {limit}")]
    TooLarge { bytes: usize, limit: usize },
    #[error("message ends in the middle of a field")]
    Truncated,
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unsupported schema version {0} (this node speaks version {SCHEMA_VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown task family tag {0}")]
    UnknownFamily(u8),
    #[error("{found} {field} exceed the limit of {limit}")]
    TooMany {
        field: &'static str,
        found: usize,
        limit: usize,
    },
    #[error("{field} of {bytes} bytes exceeds the limit of {limit}")]
    StringTooLong {
        field: &'static str,
        bytes: usize,
        limit: usize,
    },
    /// The two PeerIds stay with the caller: at 80 bytes each they would bloat every decode result.
    #[error("message names a sender other than the peer that signed it")]
    WrongSender,
    #[error("round {round} is outside the window around the current round {current}")]
    RoundOutOfWindow { round: u64, current: u64 },
    #[error("a group has {found} completions instead of {expected}")]
    GroupSize { found: usize, expected: usize },
    #[error("invalid question: {0}")]
    InvalidQuestion(String),
    #[error("sender already sent {limit} messages for round {round}")]
    RateLimited { round: u64, limit: u32 },
    #[error("message holds no groups")]
    Empty,
    #[error("invalid log-probabilities: {0}")]
    InvalidLogprobs(String),
}

impl Rejection {
    /// A stable snake_case label, for metrics and status.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::TooLarge { .. } => "too_large",
            Rejection::Truncated => "truncated",
            Rejection::Malformed(_) => "malformed",
            Rejection::UnsupportedVersion(_) => "unsupported_version",
            Rejection::UnknownFamily(_) => "unknown_family",
            Rejection::TooMany { .. } => "too_many",
            Rejection::StringTooLong { .. } => "string_too_long",
            Rejection::WrongSender => "wrong_sender",
            Rejection::RoundOutOfWindow { .. } => "round_out_of_window",
            Rejection::GroupSize { .. } => "group_size",
            Rejection::InvalidQuestion(_) => "invalid_question",
            Rejection::RateLimited { .. } => "rate_limited",
            Rejection::Empty => "empty",
            Rejection::InvalidLogprobs(_) => "invalid_logprobs",
        }
    }

    /// Whether another honest node may judge the same message differently, because the verdict
    /// depends on its own clock or on the order in which copies arrived. A forwarder of such a
    /// message is not at fault; only its author is.
    pub fn depends_on_receiver(&self) -> bool {
        matches!(
            self,
            Rejection::RoundOutOfWindow { .. } | Rejection::RateLimited { .. }
        )
    }
}
