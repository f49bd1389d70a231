//! Pure ledger decisions: what the operator's view of a Swarm's ledger is, what to send to the chain,
//! and how ledger problems read in conditions. No I/O; `controller::chain` does the sending.

use std::collections::HashMap;
use std::time::Duration;

use alloy::primitives::utils::parse_ether;
use alloy::primitives::{B256, U256, keccak256};
use jiff::{SignedDuration, Timestamp};
use swarm_ledger::{Address, LedgerError, Problem, RecordedReward};
pub use swarm_ledger::{display_url, redact};

use crate::api::{
    IdentityRetention, LedgerSpec, MemberLedgerStatus, Swarm, SwarmMember, conditions,
};

/// Finalizer on a Swarm with a ledger: its members are deleted (and deregistered) before it goes.
pub const SWARM_FINALIZER: &str = "rlswarm.dev/ledger-members";
/// Finalizer on a member of a Swarm with a ledger: its account is deregistered before it goes.
pub const MEMBER_FINALIZER: &str = "rlswarm.dev/ledger-registration";

/// Most rounds advanced in one reconciliation, so a long outage is caught up in bounded steps.
pub const MAX_ADVANCES_PER_RECONCILE: u64 = 16;

/// Why the ledger cannot be used, in a condition's terms. The message never holds a key, and the
/// RPC URL only as its scheme, host and port.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct LedgerProblem {
    pub reason: &'static str,
    pub message: String,
}

impl LedgerProblem {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    /// A client error, with the RPC URL redacted from its text.
    pub fn from_ledger(error: &LedgerError, rpc_url: &str) -> Self {
        let reason = match error.problem() {
            Problem::InvalidUrl(_) => "InvalidRpcUrl",
            Problem::HttpClient(_) => "HttpClientFailed",
            Problem::InvalidKey => "OperatorKeyInvalid",
            Problem::ChainMismatch { .. } => "ChainMismatch",
            Problem::NoContract(_) => "ContractNotFound",
            Problem::NoCreate2Factory(_) => "NoCreate2Factory",
            Problem::Unavailable { .. } => "RpcUnreachable",
            Problem::Rejected(_) => "Rejected",
            Problem::Reverted(_) => "Reverted",
            Problem::Rpc(_) => "RpcError",
            Problem::Decode(_) => "NotACoordinator",
            Problem::RewardConflict { .. } | Problem::WinnersConflict { .. } => "Conflict",
        };
        // The source chain holds the transport's own words (e.g. connection refused).
        let mut text = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text = format!("{text}: {cause_text}");
            }
            source = cause.source();
        }
        Self::new(reason, redact(&text, rpc_url))
    }
}

/// What the operator found on the Swarm's ledger.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerState {
    pub contract: Address,
    pub operator: Address,
    /// True when this reconciliation deployed the contract: its address must be recorded at once.
    pub deployed: bool,
    /// The contract's round after any advancing.
    pub round: u64,
    /// Each member account's latest recorded reward, as far as the operator has read them.
    pub rewards: HashMap<Address, RecordedReward>,
}

/// The chain and contract a Swarm's members live on, as the operator must address them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LedgerTarget {
    pub rpc_url: String,
    pub chain_id: u64,
    /// `None` until a contract to deploy has been deployed.
    pub contract: Option<Address>,
    /// The CREATE2 salt of the contract the operator deploys: [`deployment_salt`].
    pub deployment_salt: B256,
}

/// The salt the Swarm's contract is deployed with: from the Swarm's UID, so the contract's
/// address follows from what the operator observes (the Swarm and its operator key) and a
/// deployment repeated after its address was lost (a failed status write, a stale cache) finds
/// the first one instead of making a second.
pub fn deployment_salt(swarm: &Swarm) -> B256 {
    let uid = swarm.metadata.uid.as_deref().unwrap_or_default();
    keccak256(format!("rlswarm.dev/SwarmCoordinator/{uid}"))
}

/// Where the Swarm's contract is: the spec's address, else the one deployed earlier (in status).
pub fn ledger_target(swarm: &Swarm) -> Result<Option<LedgerTarget>, LedgerProblem> {
    let Some(spec) = &swarm.spec.ledger else {
        return Ok(None);
    };
    let chain_id = u64::try_from(spec.chain_id)
        .map_err(|_| LedgerProblem::new("InvalidChainId", "ledger.chainId must be positive"))?;
    let written = match &spec.contract.address {
        Some(address) => Some(address.as_str()),
        None => swarm
            .status
            .as_ref()
            .and_then(|s| s.ledger.as_ref())
            .and_then(|l| l.contract_address.as_deref()),
    };
    let contract = written
        .map(|text| {
            text.parse::<Address>().map_err(|_| {
                LedgerProblem::new(
                    "InvalidContractAddress",
                    format!("{text} is not a contract address"),
                )
            })
        })
        .transpose()?;
    Ok(Some(LedgerTarget {
        rpc_url: spec.rpc_url.clone(),
        chain_id,
        contract,
        deployment_salt: deployment_salt(swarm),
    }))
}

/// Wei each member account is topped up to; zero when the spec funds nothing.
pub fn member_funding(spec: &LedgerSpec) -> Result<U256, LedgerProblem> {
    match &spec.member_funding {
        None => Ok(U256::ZERO),
        Some(amount) => parse_ether(amount).map_err(|_| {
            LedgerProblem::new(
                "InvalidMemberFunding",
                format!("ledger.memberFunding {amount:?} is not an amount of ether"),
            )
        }),
    }
}

/// What to send so that an account holding `balance` holds `target`: nothing when it already does,
/// so a retry after a lost receipt never funds twice.
pub fn top_up(balance: U256, target: U256) -> Option<U256> {
    (balance < target).then(|| target - balance)
}

/// Whether the member is registered on `contract` as far as its status says; then nothing is sent.
pub fn registered_on(member: &SwarmMember, contract: Address) -> bool {
    let Some(status) = &member.status else {
        return false;
    };
    let on_contract = status
        .ledger
        .as_ref()
        .and_then(|l| l.contract_address.as_deref())
        .and_then(|a| a.parse::<Address>().ok())
        == Some(contract);
    let condition_true = status
        .conditions
        .iter()
        .any(|c| c.type_ == conditions::REGISTERED && c.status == "True");
    on_contract && condition_true
}

/// The member's ledger status after a registration: the contract, and the transactions this attempt
/// sent (an earlier attempt's are kept when this one found nothing to send).
pub fn registered_status(
    previous: Option<&MemberLedgerStatus>,
    contract: Address,
    funding: Option<String>,
    registration: Option<String>,
) -> MemberLedgerStatus {
    let same_contract = previous
        .and_then(|p| p.contract_address.as_deref())
        .and_then(|a| a.parse::<Address>().ok())
        == Some(contract);
    let kept = previous.filter(|_| same_contract);
    MemberLedgerStatus {
        contract_address: Some(contract.to_checksum(None)),
        funding_transaction: funding.or_else(|| kept.and_then(|p| p.funding_transaction.clone())),
        registration_transaction: registration
            .or_else(|| kept.and_then(|p| p.registration_transaction.clone())),
    }
}

/// What a member's removal means for its registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Removed for good: deregister its account.
    Deregister,
    /// Coming back or retained: its registration stays; the reason says why.
    KeepRegistered(&'static str),
}

/// Decides whether a member being deleted leaves the ledger. Members scaled away and members of a
/// deleted Swarm leave; a member deleted by hand is recreated with the same identity, and with
/// `identity.retention: Retain` a deleted Swarm's identities stay registered for its successor.
pub fn removal(swarm: Option<&Swarm>, member: &SwarmMember) -> Removal {
    let Some(swarm) = swarm else {
        return Removal::KeepRegistered("its Swarm is gone, and with it the ledger settings");
    };
    if swarm.spec.ledger.is_none() {
        return Removal::KeepRegistered("its Swarm has no ledger");
    }
    if swarm.metadata.deletion_timestamp.is_some() {
        return match swarm.spec.identity.retention {
            IdentityRetention::Retain => Removal::KeepRegistered("its identity is retained"),
            IdentityRetention::Delete => Removal::Deregister,
        };
    }
    let kept = u32::try_from(member.spec.ordinal).is_ok_and(|o| o < swarm.desired_replicas());
    if kept {
        Removal::KeepRegistered("the Swarm recreates it with the same identity")
    } else {
        Removal::Deregister
    }
}

/// The round the ledger should be at: wall-clock periods since the Swarm's start, as every member
/// computes it, capped at `maxRounds`.
pub fn expected_round(swarm: &Swarm, now: Timestamp) -> u64 {
    let Some(start) = swarm.metadata.creation_timestamp.as_ref().map(|t| t.0) else {
        return 0;
    };
    let duration = i64::from(swarm.spec.rounds.duration_seconds.max(1));
    let elapsed = now.duration_since(start).as_secs().max(0);
    let round = u64::try_from(elapsed / duration).unwrap_or(0);
    match swarm
        .spec
        .rounds
        .max_rounds
        .and_then(|m| u64::try_from(m).ok())
    {
        Some(max) => round.min(max),
        None => round,
    }
}

/// Time until the next round begins, so the operator is back to advance it.
pub fn until_next_round(swarm: &Swarm, now: Timestamp) -> Duration {
    let duration = i64::from(swarm.spec.rounds.duration_seconds.max(1));
    let Some(start) = swarm.metadata.creation_timestamp.as_ref().map(|t| t.0) else {
        return Duration::from_secs(duration.unsigned_abs());
    };
    let elapsed = now.duration_since(start).as_secs().max(0);
    let next = SignedDuration::from_secs((elapsed / duration + 1) * duration);
    let wait = next - now.duration_since(start);
    Duration::try_from(wait).unwrap_or(Duration::from_secs(1))
}

/// How long to wait before trying the ledger again after a failure that began at `since`: as long
/// as it has failed so far, between 5 s and 5 min, so an outage is retried quickly at first and
/// rarely later, without state beyond the condition's transition time.
pub fn retry_delay(since: Option<Timestamp>, now: Timestamp) -> Duration {
    const MIN: Duration = Duration::from_secs(5);
    const MAX: Duration = Duration::from_secs(300);
    let failing_for = since
        .and_then(|since| Duration::try_from(now.duration_since(since)).ok())
        .unwrap_or(Duration::ZERO);
    failing_for.clamp(MIN, MAX)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::{DeployContract, LedgerContract, SecretKeyRef, SwarmLedgerStatus};
    use crate::build::fixtures;

    const CONTRACT: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

    fn ledger_spec(address: Option<&str>) -> LedgerSpec {
        LedgerSpec {
            rpc_url: "https://eth.example.com/v3/sekrit-api-key".into(),
            chain_id: 11155111,
            contract: LedgerContract {
                address: address.map(str::to_owned),
                deploy: address.is_none().then_some(DeployContract {}),
            },
            operator_key_secret: SecretKeyRef {
                name: "ledger-operator".into(),
                key: "private-key".into(),
            },
            member_funding: Some("0.05".into()),
        }
    }

    #[test]
    fn target_prefers_the_spec_address_then_the_deployed_one() {
        let mut swarm = fixtures::swarm(1);
        assert_eq!(ledger_target(&swarm), Ok(None));

        swarm.spec.ledger = Some(ledger_spec(Some(CONTRACT)));
        let target = ledger_target(&swarm).unwrap().unwrap();
        assert_eq!(target.chain_id, 11155111);
        assert_eq!(target.contract, Some(CONTRACT.parse().unwrap()));

        swarm.spec.ledger = Some(ledger_spec(None));
        assert_eq!(ledger_target(&swarm).unwrap().unwrap().contract, None);
        swarm.status = Some(crate::api::SwarmStatus {
            ledger: Some(SwarmLedgerStatus {
                contract_address: Some(CONTRACT.into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            ledger_target(&swarm).unwrap().unwrap().contract,
            Some(CONTRACT.parse().unwrap()),
            "a deployed contract is reused, never deployed again"
        );
    }

    #[test]
    fn funding_tops_up_to_the_amount_and_never_beyond() {
        let spec = ledger_spec(None);
        let target = member_funding(&spec).unwrap();
        assert_eq!(target, U256::from(50_000_000_000_000_000u64));
        assert_eq!(top_up(U256::ZERO, target), Some(target));
        assert_eq!(
            top_up(U256::from(1u64), target),
            Some(target - U256::from(1u64))
        );
        assert_eq!(top_up(target, target), None, "a retry sends nothing");
        assert_eq!(top_up(target + U256::from(1u64), target), None);
        let none = LedgerSpec {
            member_funding: None,
            ..spec
        };
        assert_eq!(top_up(U256::ZERO, member_funding(&none).unwrap()), None);
    }

    #[test]
    fn removal_deregisters_only_members_gone_for_good() {
        let mut swarm = fixtures::swarm(2);
        swarm.spec.ledger = Some(ledger_spec(Some(CONTRACT)));
        let kept = fixtures::member(&swarm, 1);
        let scaled_away = fixtures::member(&swarm, 2);
        assert!(matches!(
            removal(Some(&swarm), &kept),
            Removal::KeepRegistered(_)
        ));
        assert_eq!(removal(Some(&swarm), &scaled_away), Removal::Deregister);

        swarm.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert_eq!(removal(Some(&swarm), &kept), Removal::Deregister);
        swarm.spec.identity.retention = IdentityRetention::Retain;
        assert_eq!(
            removal(Some(&swarm), &kept),
            Removal::KeepRegistered("its identity is retained")
        );
        assert!(matches!(removal(None, &kept), Removal::KeepRegistered(_)));
    }

    #[test]
    fn registration_status_keeps_earlier_transactions_on_the_same_contract() {
        let contract: Address = CONTRACT.parse().unwrap();
        let first = registered_status(None, contract, Some("0xf".into()), Some("0xr".into()));
        assert_eq!(first.contract_address.as_deref(), Some(CONTRACT));
        let again = registered_status(Some(&first), contract, None, None);
        assert_eq!(again, first, "an AlreadyRecorded retry keeps the hashes");
        let elsewhere = registered_status(Some(&first), Address::ZERO, None, None);
        assert_eq!(elsewhere.registration_transaction, None);
    }

    #[test]
    fn rounds_follow_the_wall_clock_from_the_swarm_start() {
        let mut swarm = fixtures::swarm(1);
        let start = Timestamp::from_second(1_000_000).unwrap();
        swarm.metadata.creation_timestamp = Some(Time(start));
        swarm.spec.rounds.duration_seconds = 60;
        let at = |secs: i64| start + SignedDuration::from_secs(secs);
        assert_eq!(expected_round(&swarm, at(0)), 0);
        assert_eq!(expected_round(&swarm, at(59)), 0);
        assert_eq!(expected_round(&swarm, at(60)), 1);
        assert_eq!(expected_round(&swarm, at(3_600)), 60);
        assert_eq!(until_next_round(&swarm, at(50)), Duration::from_secs(10));
        assert_eq!(until_next_round(&swarm, at(60)), Duration::from_secs(60));
        swarm.spec.rounds.max_rounds = Some(5);
        assert_eq!(expected_round(&swarm, at(3_600)), 5);
        assert_eq!(
            expected_round(&swarm, start - SignedDuration::from_secs(5)),
            0
        );
    }

    #[test]
    fn retry_delay_grows_with_the_outage() {
        let now = Timestamp::from_second(10_000).unwrap();
        let ago = |secs: i64| Some(now - SignedDuration::from_secs(secs));
        assert_eq!(retry_delay(None, now), Duration::from_secs(5));
        assert_eq!(retry_delay(ago(1), now), Duration::from_secs(5));
        assert_eq!(retry_delay(ago(40), now), Duration::from_secs(40));
        assert_eq!(retry_delay(ago(4_000), now), Duration::from_secs(300));
    }
}
