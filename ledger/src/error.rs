use std::time::Duration;

use alloy::primitives::{Address, I256, TxHash};
use alloy::transports::{RpcError, TransportError, TransportErrorKind};

use crate::bindings::SwarmCoordinator::SwarmCoordinatorErrors;

/// A ledger operation that failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} on the ledger: {problem}")]
pub struct LedgerError {
    action: String,
    /// Boxed: some problems carry a whole RPC error, and this travels in every `Result`.
    #[source]
    problem: Box<Problem>,
}

impl LedgerError {
    pub(crate) fn new(action: impl Into<String>, problem: Problem) -> LedgerError {
        LedgerError {
            action: action.into(),
            problem: Box::new(problem),
        }
    }

    /// What was attempted, e.g. "submit the reward for round 3".
    pub fn action(&self) -> &str {
        &self.action
    }

    pub fn problem(&self) -> &Problem {
        &self.problem
    }

    /// The contract's own error, when the contract refused the operation.
    pub fn rejection(&self) -> Option<&SwarmCoordinatorErrors> {
        match self.problem() {
            Problem::Rejected(error) => Some(error),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("the RPC URL is not a URL ({0})")]
    InvalidUrl(#[source] url::ParseError),
    #[error("cannot set up the HTTP client: {0}")]
    HttpClient(#[source] alloy::transports::http::reqwest::Error),
    #[error("the member key is not a secp256k1 signing key")]
    InvalidKey,
    #[error("the RPC endpoint serves chain {actual}, not chain {expected}")]
    ChainMismatch { expected: u64, actual: u64 },
    #[error("there is no contract at {0}")]
    NoContract(Address),
    #[error(
        "the chain has no CREATE2 factory at {0} to deploy through: deploy the contract \
         (constructor argument: the owner's account) and give its address instead"
    )]
    NoCreate2Factory(Address),
    #[error("the RPC endpoint still failed after {attempts} attempts: {last}")]
    Unavailable {
        attempts: u32,
        #[source]
        last: TransientError,
    },
    #[error("the contract rejected it: {}", describe(.0))]
    Rejected(SwarmCoordinatorErrors),
    #[error("transaction {0} reverted")]
    Reverted(TxHash),
    #[error("the RPC endpoint refused it: {0}")]
    Rpc(#[source] TransportError),
    #[error("the contract's answer does not decode: {0}")]
    Decode(#[source] alloy::contract::Error),
    #[error("this account already submitted reward {recorded} for round {round}, not {wanted}")]
    RewardConflict {
        round: u64,
        recorded: I256,
        wanted: I256,
    },
    #[error("this account already submitted a different winners list for round {round}")]
    WinnersConflict { round: u64 },
}

/// A failure that may pass if the same request is made again later.
#[derive(Debug, thiserror::Error)]
pub enum TransientError {
    #[error(transparent)]
    Rpc(TransportError),
    #[error("transaction {tx} was not mined within {waited:?}")]
    NotMined { tx: TxHash, waited: Duration },
}

/// The outcome of one attempt, for the retry loop.
pub(crate) enum Failure {
    Transient(TransientError),
    Permanent(Problem),
}

impl From<TransportError> for Failure {
    fn from(error: TransportError) -> Failure {
        match &error {
            RpcError::Transport(kind) if transient_transport(kind) => {
                Failure::Transient(TransientError::Rpc(error))
            }
            // Node implementations differ in codes, so only the revert data is trusted to mean a
            // rejection; rate limits are retried, and so are nonce complaints, as the nonce is
            // taken from the chain again after any failed send.
            RpcError::ErrorResp(payload) => {
                if let Some(rejection) = payload.as_decoded_interface_error() {
                    Failure::Permanent(Problem::Rejected(rejection))
                } else if payload.is_retry_err() || nonce_complaint(&payload.message) {
                    Failure::Transient(TransientError::Rpc(error))
                } else {
                    Failure::Permanent(Problem::Rpc(error))
                }
            }
            RpcError::NullResp => Failure::Transient(TransientError::Rpc(error)),
            _ => Failure::Permanent(Problem::Rpc(error)),
        }
    }
}

impl From<alloy::contract::Error> for Failure {
    fn from(error: alloy::contract::Error) -> Failure {
        match error {
            alloy::contract::Error::TransportError(error) => Failure::from(error),
            other => Failure::Permanent(Problem::Decode(other)),
        }
    }
}

fn transient_transport(kind: &TransportErrorKind) -> bool {
    match kind {
        // The HTTP client's own errors: connection refused or reset, request timed out.
        TransportErrorKind::Custom(_)
        | TransportErrorKind::BackendGone
        | TransportErrorKind::MissingBatchResponse(_) => true,
        TransportErrorKind::HttpError(http) => {
            http.status >= 500 || http.status == 429 || http.status == 408
        }
        _ => false,
    }
}

fn nonce_complaint(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "nonce too low",
        "nonce too high",
        "replacement transaction underpriced",
        "already known",
    ]
    .iter()
    .any(|known| message.contains(known))
}

/// The contract's errors in words; exhaustive, so a new contract error does not compile until it
/// has a description here.
fn describe(error: &SwarmCoordinatorErrors) -> String {
    use SwarmCoordinatorErrors as E;
    match error {
        E::NotOwner(e) => format!("{} is not the owner", e.caller),
        E::NotRoundManager(e) => format!("{} may not advance rounds", e.caller),
        E::ZeroAccount(_) => "the zero address cannot be a member".to_owned(),
        E::EmptyPeerId(_) => "the PeerId is empty".to_owned(),
        E::AlreadyRegistered(e) => format!("{} is already registered", e.account),
        E::PeerIdBoundToOtherAccount(e) => {
            format!("PeerId {} belongs to account {}", e.peerId, e.account)
        }
        E::AccountBoundToOtherPeerId(e) => {
            format!("account {} belongs to PeerId {}", e.account, e.peerId)
        }
        E::NotRegistered(e) => format!("{} is not a registered member", e.account),
        E::RoundMismatch(e) => {
            format!("the round is {}, not {}", e.current, e.expected)
        }
        E::FutureRound(e) => {
            format!(
                "round {} has not started (the round is {})",
                e.round, e.current
            )
        }
        E::RewardAlreadySubmitted(e) => {
            format!(
                "{} already submitted a reward for round {}",
                e.account, e.round
            )
        }
        E::WinnersAlreadySubmitted(e) => {
            format!(
                "{} already submitted winners for round {}",
                e.account, e.round
            )
        }
        E::NoWinners(_) => "the winners list is empty".to_owned(),
        E::TooManyWinners(e) => format!("{} winners, at most {} allowed", e.count, e.max),
        E::DuplicateWinner(e) => format!("{} is named twice among the winners", e.peerId),
        E::UnknownWinner(e) => format!("winner {} was never registered", e.peerId),
    }
}

#[cfg(test)]
mod tests {
    use alloy::rpc::json_rpc::ErrorPayload;

    use super::*;

    fn retried(error: TransportError) -> bool {
        matches!(Failure::from(error), Failure::Transient(_))
    }

    fn error_response(code: i64, message: &'static str) -> TransportError {
        RpcError::ErrorResp(ErrorPayload {
            code,
            message: message.into(),
            data: None,
        })
    }

    #[test]
    fn server_errors_and_rate_limits_are_retried_other_http_errors_are_not() {
        for status in [500, 502, 503, 504, 429, 408] {
            assert!(
                retried(TransportErrorKind::http_error(status, String::new())),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404] {
            assert!(
                !retried(TransportErrorKind::http_error(status, String::new())),
                "{status}"
            );
        }
    }

    #[test]
    fn nonce_complaints_and_rate_limits_are_retried_other_error_responses_are_not() {
        assert!(retried(error_response(-32003, "nonce too low")));
        assert!(retried(error_response(-32000, "Nonce too high")));
        assert!(retried(error_response(
            -32000,
            "replacement transaction underpriced"
        )));
        assert!(retried(error_response(-32005, "limit exceeded")));
        assert!(!retried(error_response(
            -32003,
            "insufficient funds for gas * price + value"
        )));
        assert!(!retried(error_response(-32602, "invalid params")));
    }
}
