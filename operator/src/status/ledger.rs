//! The ledger controller's status fields, from what it found on the chain.

use std::collections::HashMap;

use jiff::Timestamp;
use swarm_ledger::{Address, RecordedReward, unscaled_reward};

use super::condition;
use crate::api::{
    MemberLedgerPart, Swarm, SwarmLedgerPart, SwarmLedgerStatus, SwarmMember, conditions,
};
use crate::ledger::{LedgerProblem, LedgerState, display_url, registered_status};

/// The Swarm's ledger fields: the contract and round found, or, when the chain cannot be used, what
/// was known before (above all a deployed contract's address) and why.
pub fn swarm_ledger_part(
    swarm: &Swarm,
    found: Result<&LedgerState, &LedgerProblem>,
    now: Timestamp,
) -> SwarmLedgerPart {
    let shown = swarm
        .status
        .as_ref()
        .map(|s| s.ledger_part())
        .unwrap_or_default();
    let endpoint = swarm
        .spec
        .ledger
        .as_ref()
        .map(|l| display_url(&l.rpc_url))
        .unwrap_or_default();
    let (ledger, ready, reason, message) = match found {
        Ok(state) => {
            let contract = state.contract.to_checksum(None);
            let (reason, what) = if state.deployed {
                ("ContractDeployed", "deployed")
            } else {
                ("Connected", "connected to")
            };
            let ledger = SwarmLedgerStatus {
                contract_address: Some(contract.clone()),
                operator_account: Some(state.operator.to_checksum(None)),
                round: i64::try_from(state.round).ok(),
            };
            let message = format!("{what} contract {contract} through {endpoint}");
            (Some(ledger), true, reason, message)
        }
        Err(problem) => (shown.ledger, false, problem.reason, problem.message.clone()),
    };
    SwarmLedgerPart {
        ledger,
        conditions: vec![condition(
            &shown.conditions,
            conditions::LEDGER_READY,
            ready,
            reason,
            message,
            swarm.metadata.generation,
            now,
        )],
    }
}

/// What became of a member's registration in one pass of the ledger controller.
#[derive(Clone, Debug, PartialEq)]
pub enum Registration {
    /// Its status shows it registered on the Swarm's contract: the chain was not asked.
    AsShown,
    /// The chain binds its account to its PeerId now (both from its identity Secret, which the
    /// status may not show yet), with the transactions this pass sent.
    Done {
        contract: Address,
        account: String,
        peer_id: String,
        funding: Option<String>,
        registration: Option<String>,
    },
    /// Not registered, and why.
    Failed(LedgerProblem),
}

/// The member's ledger fields after `registration`, with the latest round and rewards its account
/// recorded (`rewards`; what the status shows stays when the account has no record there).
pub fn member_ledger_part(
    member: &SwarmMember,
    registration: &Registration,
    rewards: &HashMap<Address, RecordedReward>,
    now: Timestamp,
) -> MemberLedgerPart {
    let status = member.status.clone().unwrap_or_default();
    let mut part = status.ledger_part();
    if let Some(record) = status
        .address
        .as_deref()
        .unwrap_or_default()
        .parse::<Address>()
        .ok()
        .and_then(|a| rewards.get(&a))
    {
        part.round = Some(i64::try_from(record.round).unwrap_or(i64::MAX));
        part.last_reward = Some(unscaled_reward(record.reward));
        part.total_reward = Some(unscaled_reward(record.total_reward));
    }
    let (registered, reason, message) = match registration {
        Registration::AsShown => return part,
        Registration::Done {
            contract,
            account,
            peer_id,
            funding,
            registration,
        } => {
            part.ledger = Some(registered_status(
                status.ledger.as_ref(),
                *contract,
                funding.clone(),
                registration.clone(),
            ));
            let contract = contract.to_checksum(None);
            let message = match registration {
                Some(tx) => format!(
                    "account {account} registered as {peer_id} on contract {contract} in transaction {tx}"
                ),
                None => format!(
                    "account {account} was already registered as {peer_id} on contract {contract}"
                ),
            };
            (true, "Registered", message)
        }
        Registration::Failed(problem) => (false, problem.reason, problem.message.clone()),
    };
    part.conditions = vec![condition(
        &part.conditions,
        conditions::REGISTERED,
        registered,
        reason,
        message,
        member.metadata.generation,
        now,
    )];
    part
}

#[cfg(test)]
mod tests {
    use swarm_ledger::I256;

    use super::*;
    use crate::api::SwarmMemberStatus;
    use crate::build::{build_member, fixtures};

    const CONTRACT: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
    const ACCOUNT: &str = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23";

    fn member_with_account() -> SwarmMember {
        let mut member = build_member(&fixtures::swarm(1), 0);
        member.status = Some(SwarmMemberStatus {
            address: Some(ACCOUNT.to_lowercase()),
            peer_id: Some("12D3KooWExample".into()),
            ..Default::default()
        });
        member
    }

    fn rewards() -> HashMap<Address, RecordedReward> {
        let account: Address = ACCOUNT.parse().unwrap();
        let record = RecordedReward {
            round: 7,
            account,
            reward: I256::try_from(250_000).unwrap(),
            total_reward: I256::try_from(1_500_000).unwrap(),
            block: 42,
        };
        HashMap::from([(account, record)])
    }

    #[test]
    fn the_swarm_keeps_its_contract_through_an_outage() {
        let swarm = fixtures::swarm(0);
        let state = LedgerState {
            contract: CONTRACT.parse().unwrap(),
            operator: Address::ZERO,
            deployed: true,
            round: 3,
            rewards: HashMap::new(),
        };
        let up = swarm_ledger_part(&swarm, Ok(&state), Timestamp::UNIX_EPOCH);
        let ready = &up.conditions[0];
        assert_eq!(
            (
                ready.type_.as_str(),
                ready.status.as_str(),
                ready.reason.as_str()
            ),
            ("LedgerReady", "True", "ContractDeployed")
        );
        let recorded = up.ledger.clone().unwrap();
        assert_eq!(recorded.contract_address.as_deref(), Some(CONTRACT));
        assert_eq!(recorded.round, Some(3));

        let mut seen = swarm.clone();
        let status = seen.status.get_or_insert_with(Default::default);
        (status.ledger, status.conditions) = (up.ledger.clone(), up.conditions.clone());
        let problem = LedgerProblem::new("RpcUnreachable", "connection refused");
        let later = Timestamp::from_second(60).unwrap();
        let down = swarm_ledger_part(&seen, Err(&problem), later);
        assert_eq!(down.ledger, Some(recorded), "the address is never lost");
        let (ready, since) = (
            &down.conditions[0],
            down.conditions[0].last_transition_time.0,
        );
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "RpcUnreachable")
        );
        assert_eq!(since, later, "a new transition");
    }

    #[test]
    fn a_registration_records_the_contract_and_its_transactions() {
        let member = member_with_account();
        let done = Registration::Done {
            contract: CONTRACT.parse().unwrap(),
            account: ACCOUNT.into(),
            peer_id: "12D3KooWExample".into(),
            funding: Some("0xf0".into()),
            registration: Some("0xab".into()),
        };
        let part = member_ledger_part(&member, &done, &HashMap::new(), Timestamp::UNIX_EPOCH);
        let ledger = part.ledger.unwrap();
        assert_eq!(ledger.contract_address.as_deref(), Some(CONTRACT));
        assert_eq!(ledger.funding_transaction.as_deref(), Some("0xf0"));
        assert_eq!(ledger.registration_transaction.as_deref(), Some("0xab"));
        let registered = &part.conditions[0];
        assert_eq!(
            (registered.type_.as_str(), registered.status.as_str()),
            ("Registered", "True")
        );
        assert!(
            registered.message.contains("in transaction 0xab"),
            "{}",
            registered.message
        );
        assert_eq!(part.round, None, "nothing recorded yet");
    }

    #[test]
    fn a_failed_registration_says_why_and_keeps_the_progress() {
        let mut member = member_with_account();
        let status = member.status.as_mut().unwrap();
        (status.round, status.last_reward, status.total_reward) = (Some(3), Some(0.5), Some(1.0));
        let failed = Registration::Failed(LedgerProblem::new("RpcUnreachable", "refused"));
        let part = member_ledger_part(&member, &failed, &HashMap::new(), Timestamp::UNIX_EPOCH);
        let registered = &part.conditions[0];
        assert_eq!(
            (registered.status.as_str(), registered.reason.as_str()),
            ("False", "RpcUnreachable")
        );
        assert_eq!((part.round, part.total_reward), (Some(3), Some(1.0)));
    }

    #[test]
    fn progress_comes_from_the_accounts_latest_record() {
        let member = member_with_account();
        let part = member_ledger_part(
            &member,
            &Registration::AsShown,
            &rewards(),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(
            (part.round, part.last_reward, part.total_reward),
            (Some(7), Some(0.25), Some(1.5))
        );
        assert!(
            part.conditions.is_empty(),
            "nothing said about a registration not attempted"
        );

        let mut shown = member.clone();
        let status = shown.status.as_mut().unwrap();
        (status.round, status.last_reward, status.total_reward) = (Some(7), Some(0.25), Some(1.5));
        let again = member_ledger_part(
            &shown,
            &Registration::AsShown,
            &rewards(),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(
            again,
            shown.status.unwrap().ledger_part(),
            "already shown: nothing to write"
        );

        let without_address = build_member(&fixtures::swarm(1), 0);
        let part = member_ledger_part(
            &without_address,
            &Registration::AsShown,
            &rewards(),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(part, MemberLedgerPart::default());
    }
}
