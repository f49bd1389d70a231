//! The swarm's ledger: the SwarmCoordinator contract's compiled artifacts and a client for it.
//!
//! The operator deploys the contract (through the CREATE2 factory, at an address fixed by its owner
//! and a salt, so a deployment is idempotent), registers each member's account with its PeerId and
//! advances rounds; each member submits its reward and winners once per round from its own
//! account. [`LedgerClient`] does all of that over JSON-RPC: every change is checked on chain
//! before it is sent, so retrying after a lost receipt never submits twice; one account's
//! concurrent transactions take consecutive nonces; transient RPC failures are retried with
//! backoff; the contract's rejections come back decoded.
//!
//! The bindings are generated from the committed ABI (`artifacts/SwarmCoordinator.abi.json`), the
//! same file `ledger/compile --check` compares with the contract source, so they cannot drift.

pub mod anvil;
mod client;
mod error;
mod redact;
#[cfg(feature = "testing")]
pub mod testing;

pub use alloy::primitives::{Address, B256, I256, TxHash};
pub use alloy::rpc::types::TransactionReceipt;
pub use alloy::signers::local::PrivateKeySigner;
pub use client::{
    CREATE2_FACTORY, Deployment, LedgerClient, LedgerOptions, Member, Outcome, RecordedReward,
    RetryPolicy, Submission, deterministic_address,
};
pub use error::{LedgerError, Problem, TransientError};
pub use redact::{display_url, redact};

use swarm_identity::MemberKey;
use zeroize::Zeroizing;

/// Rewards go on chain as integers: a round's mean reward in millionths.
const REWARD_SCALE: f64 = 1_000_000.0;

/// The reward as the contract records it.
pub fn scaled_reward(reward: f64) -> I256 {
    // A reward is in [0, 1], so the product fits an i64 comfortably.
    I256::try_from((reward.clamp(0.0, 1.0) * REWARD_SCALE).round() as i64).unwrap_or(I256::ZERO)
}

/// A recorded reward (or total of rewards) back in reward units.
pub fn unscaled_reward(recorded: I256) -> f64 {
    i128::try_from(recorded).map_or(0.0, |millionths| millionths as f64 / REWARD_SCALE)
}

/// Typed bindings of the contract: calls, events (for decoding receipts' logs) and errors.
pub mod bindings {
    alloy::sol!(
        #[sol(rpc, all_derives)]
        SwarmCoordinator,
        "artifacts/SwarmCoordinator.abi.json"
    );
}

/// The contract's creation bytecode, as compiled by `ledger/compile`.
fn creation_bytecode() -> Vec<u8> {
    alloy::hex::decode(include_str!("../artifacts/SwarmCoordinator.bin").trim())
        .expect("ledger/artifacts/SwarmCoordinator.bin is hex (a unit test checks it)")
}

/// The init code of a coordinator owned by `owner`: the creation bytecode followed by the
/// ABI-encoded constructor argument.
fn creation_code(owner: Address) -> Vec<u8> {
    use alloy::sol_types::SolValue;
    let mut code = creation_bytecode();
    code.extend_from_slice(&owner.abi_encode());
    code
}

/// The signer of a member's ledger account: the same key as its PeerId, so its address is the
/// member's [`MemberKey::address`].
pub fn member_signer(key: &MemberKey) -> Result<PrivateKeySigner, LedgerError> {
    let invalid = || LedgerError::new("use the member key", Problem::InvalidKey);
    let secret = Zeroizing::new(key.secret_data());
    let bytes = Zeroizing::new(alloy::hex::decode(secret.as_str()).map_err(|_| invalid())?);
    PrivateKeySigner::from_slice(&bytes).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rewards_are_recorded_in_millionths() {
        use super::{I256, scaled_reward, unscaled_reward};
        assert_eq!(scaled_reward(0.25), I256::try_from(250_000).unwrap());
        assert_eq!(scaled_reward(1.0), I256::try_from(1_000_000).unwrap());
        assert_eq!(scaled_reward(-3.0), I256::ZERO);
        assert_eq!(scaled_reward(f64::NAN), I256::ZERO);
        assert_eq!(unscaled_reward(scaled_reward(0.25)), 0.25);
    }

    use super::*;

    #[test]
    fn committed_bytecode_is_hex() {
        assert!(!creation_bytecode().is_empty());
    }

    #[test]
    fn member_signer_has_the_member_address() {
        let key = MemberKey::generate();
        let signer = member_signer(&key).expect("a member key is a valid signer");
        assert_eq!(signer.address().to_checksum(None), key.address());
    }
}
