//! The contract's rules: every success path with its events, every rejection.
//!
//! Changes go through the client where it sends them as asked; the rejections the client never
//! sends (it sees on chain that they would fail) go through the raw bindings.

use std::fmt::Debug;

use alloy::contract::Error as ContractError;
use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use alloy::sol_types::SolEvent;
use swarm_identity::MemberKey;
use swarm_ledger::bindings::SwarmCoordinator::{self, SwarmCoordinatorErrors as E};
use swarm_ledger::{
    CREATE2_FACTORY, Deployment, I256, LedgerClient, LedgerError, Member, Outcome, Problem,
    Submission, TransactionReceipt, deterministic_address,
};

use swarm_ledger::testing::{CHAIN_ID, Chain, address, options, signer};

/// The contract's error from a call the client sent.
pub fn rejection<T: Debug>(result: Result<T, LedgerError>) -> E {
    let error = result.unwrap_err();
    error
        .rejection()
        .unwrap_or_else(|| panic!("not a rejection: {error}"))
        .clone()
}

/// The contract's error from a raw send (rejected by gas estimation, before anything is sent).
async fn raw_rejection<T: Debug>(send: impl Future<Output = Result<T, ContractError>>) -> E {
    let error = send.await.unwrap_err();
    error
        .as_decoded_interface_error::<E>()
        .unwrap_or_else(|| panic!("not a contract error: {error}"))
}

pub fn receipt(outcome: Outcome) -> TransactionReceipt {
    match outcome {
        Outcome::Sent(receipt) => *receipt,
        Outcome::AlreadyRecorded => panic!("expected a transaction, got AlreadyRecorded"),
    }
}

/// The receipt's only log, decoded as `T`, checked to come from `contract`.
pub fn event<T: SolEvent>(receipt: &TransactionReceipt, contract: Address) -> T {
    let logs = receipt.logs();
    assert_eq!(logs.len(), 1, "expected one event, got {logs:?}");
    assert_eq!(logs[0].address(), contract);
    T::decode_log(&logs[0].inner).unwrap().data
}

/// A registered member: its key and a client acting as it.
pub struct Joined {
    pub key: MemberKey,
    pub client: LedgerClient,
}

impl Joined {
    pub fn account(&self) -> Address {
        address(&self.key)
    }
}

pub async fn join(chain: &Chain, owner: &LedgerClient) -> Joined {
    let key = chain.funded_key().await;
    owner
        .register_member(address(&key), &key.peer_id_string())
        .await
        .unwrap();
    let client = chain.client(&key, owner.contract()).await;
    Joined { key, client }
}

fn i256(value: i64) -> I256 {
    I256::try_from(value).unwrap()
}

#[tokio::test]
async fn deployment_starts_at_round_zero_owned_by_the_deployer() {
    let chain = Chain::start();
    let (owner_key, owner) = chain.deploy().await;
    assert_eq!(owner.owner().await.unwrap(), address(&owner_key));
    assert_eq!(owner.account(), address(&owner_key));
    assert_eq!(owner.current_round().await.unwrap(), 0);
    assert_eq!(owner.member_count().await.unwrap(), 0);
    assert_eq!(
        owner.member_by_account(address(&owner_key)).await.unwrap(),
        None
    );
    assert_eq!(
        owner.member_by_peer_id("16Uiu2unknown").await.unwrap(),
        None
    );
}

/// Through the CREATE2 factory the address follows from owner and salt alone: a second deployment
/// (after a lost receipt or a lost record of the address) finds the first and sends nothing.
#[tokio::test]
async fn deterministic_deployment_happens_once_per_owner_and_salt() {
    let chain = Chain::start();
    let owner = chain.funded_key().await;
    let account = address(&owner);
    let salt = B256::repeat_byte(7);
    let expected = deterministic_address(account, salt);
    let url = chain.url();
    let deploy =
        |salt| LedgerClient::deploy_deterministic(&url, CHAIN_ID, signer(&owner), salt, options());

    let first = deploy(salt).await.unwrap();
    assert_eq!(
        first,
        Deployment {
            address: expected,
            sent: true
        }
    );
    let nonce = chain
        .provider()
        .get_transaction_count(account)
        .await
        .unwrap();
    let again = deploy(salt).await.unwrap();
    assert_eq!(
        again,
        Deployment {
            address: expected,
            sent: false
        }
    );
    assert_eq!(
        chain
            .provider()
            .get_transaction_count(account)
            .await
            .unwrap(),
        nonce,
        "nothing sent the second time"
    );

    let client = chain.client(&owner, expected).await;
    assert_eq!(
        client.owner().await.unwrap(),
        account,
        "owned by the signer, not the factory"
    );
    assert_eq!(client.current_round().await.unwrap(), 0);

    let other = deploy(B256::repeat_byte(8)).await.unwrap();
    assert!(other.sent);
    assert_ne!(other.address, expected, "another salt, another contract");
    let stranger = chain.funded_key().await;
    assert_ne!(
        deterministic_address(address(&stranger), salt),
        expected,
        "another owner, another contract"
    );
}

#[tokio::test]
async fn deterministic_deployment_needs_the_factory() {
    let chain = Chain::start_with(&["--disable-default-create2-deployer"]);
    let owner = chain.funded_key().await;
    let error = LedgerClient::deploy_deterministic(
        &chain.url(),
        CHAIN_ID,
        signer(&owner),
        B256::ZERO,
        options(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error.problem(), Problem::NoCreate2Factory(factory) if *factory == CREATE2_FACTORY),
        "{error}"
    );
    assert!(
        error.to_string().contains("give its address instead"),
        "{error}"
    );
}

#[tokio::test]
async fn owner_registers_deregisters_and_reregisters_members() {
    let chain = Chain::start();
    let (_, owner) = chain.deploy().await;
    let contract = owner.contract();
    let key = MemberKey::generate();
    let (account, peer_id) = (address(&key), key.peer_id_string());

    let registered = receipt(owner.register_member(account, &peer_id).await.unwrap());
    assert_eq!(
        event::<SwarmCoordinator::MemberRegistered>(&registered, contract),
        SwarmCoordinator::MemberRegistered {
            account,
            peerId: peer_id.clone()
        }
    );
    let record = Member {
        account,
        peer_id: peer_id.clone(),
        registered: true,
        total_reward: I256::ZERO,
        wins: 0,
        reward_submissions: 0,
        winner_submissions: 0,
    };
    assert_eq!(
        owner.member_by_account(account).await.unwrap(),
        Some(record.clone())
    );
    assert_eq!(
        owner.member_by_peer_id(&peer_id).await.unwrap(),
        Some(record.clone())
    );
    assert_eq!(owner.member_count().await.unwrap(), 1);

    let deregistered = receipt(owner.deregister_member(account).await.unwrap());
    assert_eq!(
        event::<SwarmCoordinator::MemberDeregistered>(&deregistered, contract),
        SwarmCoordinator::MemberDeregistered {
            account,
            peerId: peer_id.clone()
        }
    );
    let removed = Member {
        registered: false,
        ..record.clone()
    };
    assert_eq!(
        owner.member_by_account(account).await.unwrap(),
        Some(removed.clone())
    );
    assert_eq!(
        owner.member_by_peer_id(&peer_id).await.unwrap(),
        Some(removed)
    );
    assert_eq!(owner.member_count().await.unwrap(), 0);

    // A member scaled away and back keeps its identity, so the same pair registers again.
    receipt(owner.register_member(account, &peer_id).await.unwrap());
    assert_eq!(
        owner.member_by_account(account).await.unwrap(),
        Some(record)
    );
    assert_eq!(owner.member_count().await.unwrap(), 1);
}

#[tokio::test]
async fn registration_rejections() {
    let chain = Chain::start();
    let (owner_key, owner) = chain.deploy().await;
    let contract = owner.contract();
    let member = join(&chain, &owner).await;
    let (account, peer_id) = (member.account(), member.key.peer_id_string());
    let other = MemberKey::generate();

    // Only the owner registers and deregisters.
    assert_eq!(
        rejection(
            member
                .client
                .register_member(address(&other), &other.peer_id_string())
                .await
        ),
        E::NotOwner(SwarmCoordinator::NotOwner { caller: account })
    );
    assert_eq!(
        rejection(member.client.deregister_member(account).await),
        E::NotOwner(SwarmCoordinator::NotOwner { caller: account })
    );
    assert_eq!(
        rejection(
            owner
                .register_member(Address::ZERO, &other.peer_id_string())
                .await
        ),
        E::ZeroAccount(SwarmCoordinator::ZeroAccount {})
    );
    assert_eq!(
        rejection(owner.register_member(address(&other), "").await),
        E::EmptyPeerId(SwarmCoordinator::EmptyPeerId {})
    );
    // A PeerId belongs to the account of its key, and the other way round.
    assert_eq!(
        rejection(owner.register_member(address(&other), &peer_id).await),
        E::PeerIdBoundToOtherAccount(SwarmCoordinator::PeerIdBoundToOtherAccount {
            peerId: peer_id.clone(),
            account,
        })
    );
    assert_eq!(
        rejection(
            owner
                .register_member(account, &other.peer_id_string())
                .await
        ),
        E::AlreadyRegistered(SwarmCoordinator::AlreadyRegistered { account })
    );
    owner.deregister_member(account).await.unwrap();
    assert_eq!(
        rejection(
            owner
                .register_member(account, &other.peer_id_string())
                .await
        ),
        E::AccountBoundToOtherPeerId(SwarmCoordinator::AccountBoundToOtherPeerId {
            account,
            peerId: peer_id.clone(),
        })
    );

    // The client sees these already done and sends nothing; the contract refuses them too.
    let raw = chain.raw_contract(&owner_key, contract);
    assert_eq!(
        raw_rejection(raw.deregisterMember(account).send()).await,
        E::NotRegistered(SwarmCoordinator::NotRegistered { account })
    );
    owner.register_member(account, &peer_id).await.unwrap();
    assert_eq!(
        raw_rejection(raw.registerMember(account, peer_id.clone()).send()).await,
        E::AlreadyRegistered(SwarmCoordinator::AlreadyRegistered { account })
    );
}

#[tokio::test]
async fn rounds_advance_only_by_the_owner_or_the_round_manager() {
    let chain = Chain::start();
    let (_, owner) = chain.deploy().await;
    let contract = owner.contract();
    let manager_key = chain.funded_key().await;
    let manager = chain.client(&manager_key, contract).await;
    let manager_account = address(&manager_key);

    let advanced = receipt(owner.advance_round(0).await.unwrap());
    assert_eq!(
        event::<SwarmCoordinator::RoundAdvanced>(&advanced, contract),
        SwarmCoordinator::RoundAdvanced { round: 1 }
    );
    assert_eq!(owner.current_round().await.unwrap(), 1);

    assert_eq!(
        rejection(manager.advance_round(1).await),
        E::NotRoundManager(SwarmCoordinator::NotRoundManager {
            caller: manager_account
        })
    );
    assert_eq!(
        rejection(manager.set_round_manager(manager_account).await),
        E::NotOwner(SwarmCoordinator::NotOwner {
            caller: manager_account
        })
    );

    let appointed = receipt(owner.set_round_manager(manager_account).await.unwrap());
    assert_eq!(
        event::<SwarmCoordinator::RoundManagerChanged>(&appointed, contract),
        SwarmCoordinator::RoundManagerChanged {
            previous: Address::ZERO,
            current: manager_account
        }
    );
    receipt(manager.advance_round(1).await.unwrap());
    assert_eq!(owner.current_round().await.unwrap(), 2);

    // Naming a round that is not the current one is refused, so a round is never skipped.
    assert_eq!(
        rejection(owner.advance_round(5).await),
        E::RoundMismatch(SwarmCoordinator::RoundMismatch {
            expected: 5,
            current: 2
        })
    );
    let raw = chain.raw_contract(&manager_key, contract);
    assert_eq!(
        raw_rejection(raw.advanceRound(1).send()).await,
        E::RoundMismatch(SwarmCoordinator::RoundMismatch {
            expected: 1,
            current: 2
        })
    );

    let removed = receipt(owner.set_round_manager(Address::ZERO).await.unwrap());
    assert_eq!(
        event::<SwarmCoordinator::RoundManagerChanged>(&removed, contract),
        SwarmCoordinator::RoundManagerChanged {
            previous: manager_account,
            current: Address::ZERO
        }
    );
    assert_eq!(
        rejection(manager.advance_round(2).await),
        E::NotRoundManager(SwarmCoordinator::NotRoundManager {
            caller: manager_account
        })
    );
}

#[tokio::test]
async fn rewards_are_recorded_once_per_member_and_round() {
    let chain = Chain::start();
    let (_, owner) = chain.deploy().await;
    let contract = owner.contract();
    let member = join(&chain, &owner).await;
    let account = member.account();

    let first = receipt(member.client.submit_reward(0, i256(7)).await.unwrap());
    assert_eq!(
        event::<SwarmCoordinator::RewardSubmitted>(&first, contract),
        SwarmCoordinator::RewardSubmitted {
            round: 0,
            account,
            reward: i256(7),
            totalReward: i256(7)
        }
    );
    owner.advance_round(0).await.unwrap();
    owner.advance_round(1).await.unwrap();
    // A past round is still open (a member that lagged behind catches up); rewards may be negative.
    let late = receipt(member.client.submit_reward(1, i256(-3)).await.unwrap());
    assert_eq!(
        event::<SwarmCoordinator::RewardSubmitted>(&late, contract),
        SwarmCoordinator::RewardSubmitted {
            round: 1,
            account,
            reward: i256(-3),
            totalReward: i256(4)
        }
    );
    receipt(member.client.submit_reward(2, i256(10)).await.unwrap());

    let record = owner.member_by_account(account).await.unwrap().unwrap();
    assert_eq!(
        (record.total_reward, record.reward_submissions),
        (i256(14), 3)
    );
    assert_eq!(
        owner.submission(1, account).await.unwrap(),
        Submission {
            reward: Some(i256(-3)),
            winners_submitted: false
        }
    );
    assert_eq!(
        owner.submission(3, account).await.unwrap(),
        Submission {
            reward: None,
            winners_submitted: false
        }
    );

    assert_eq!(
        rejection(member.client.submit_reward(3, i256(1)).await),
        E::FutureRound(SwarmCoordinator::FutureRound {
            round: 3,
            current: 2
        })
    );
    let raw = chain.raw_contract(&member.key, contract);
    assert_eq!(
        raw_rejection(raw.submitReward(2, i256(10)).send()).await,
        E::RewardAlreadySubmitted(SwarmCoordinator::RewardAlreadySubmitted { round: 2, account })
    );

    // Only a registered member's own account submits.
    let stranger = chain.funded_key().await;
    let stranger_client = chain.client(&stranger, contract).await;
    assert_eq!(
        rejection(stranger_client.submit_reward(2, i256(1)).await),
        E::NotRegistered(SwarmCoordinator::NotRegistered {
            account: address(&stranger)
        })
    );
    let leaver = join(&chain, &owner).await;
    owner.deregister_member(leaver.account()).await.unwrap();
    assert_eq!(
        rejection(leaver.client.submit_reward(2, i256(1)).await),
        E::NotRegistered(SwarmCoordinator::NotRegistered {
            account: leaver.account()
        })
    );
    assert_eq!(
        owner
            .member_by_account(account)
            .await
            .unwrap()
            .unwrap()
            .total_reward,
        i256(14)
    );
}

#[tokio::test]
async fn winners_are_recorded_once_per_member_and_round() {
    let chain = Chain::start();
    let (_, owner) = chain.deploy().await;
    let contract = owner.contract();
    let voter = join(&chain, &owner).await;
    let a = join(&chain, &owner).await;
    let b = join(&chain, &owner).await;
    let (peer_a, peer_b) = (a.key.peer_id_string(), b.key.peer_id_string());
    let account = voter.account();

    let winners = vec![peer_a.clone(), peer_b.clone()];
    let voted = receipt(voter.client.submit_winners(0, &winners).await.unwrap());
    assert_eq!(
        event::<SwarmCoordinator::WinnersSubmitted>(&voted, contract),
        SwarmCoordinator::WinnersSubmitted {
            round: 0,
            account,
            winners: winners.clone()
        }
    );
    // A member removed since may still be named for an earlier round.
    owner.deregister_member(b.account()).await.unwrap();
    owner.advance_round(0).await.unwrap();
    receipt(
        a.client
            .submit_winners(0, std::slice::from_ref(&peer_b))
            .await
            .unwrap(),
    );
    receipt(
        voter
            .client
            .submit_winners(1, std::slice::from_ref(&peer_a))
            .await
            .unwrap(),
    );

    let totals = |m: Member| (m.wins, m.winner_submissions);
    assert_eq!(
        totals(owner.member_by_peer_id(&peer_a).await.unwrap().unwrap()),
        (2, 1)
    );
    assert_eq!(
        totals(owner.member_by_peer_id(&peer_b).await.unwrap().unwrap()),
        (2, 0)
    );
    assert_eq!(
        totals(owner.member_by_account(account).await.unwrap().unwrap()),
        (0, 2)
    );
    assert!(
        owner
            .submission(0, account)
            .await
            .unwrap()
            .winners_submitted
    );

    let c = join(&chain, &owner).await;
    let unknown = MemberKey::generate().peer_id_string();
    assert_eq!(
        rejection(
            c.client
                .submit_winners(1, &[peer_a.clone(), peer_a.clone()])
                .await
        ),
        E::DuplicateWinner(SwarmCoordinator::DuplicateWinner {
            peerId: peer_a.clone()
        })
    );
    assert_eq!(
        rejection(
            c.client
                .submit_winners(1, &[peer_a.clone(), unknown.clone()])
                .await
        ),
        E::UnknownWinner(SwarmCoordinator::UnknownWinner { peerId: unknown })
    );
    assert_eq!(
        rejection(c.client.submit_winners(1, &[]).await),
        E::NoWinners(SwarmCoordinator::NoWinners {})
    );
    let too_many = vec![peer_a.clone(); 33];
    assert_eq!(
        rejection(c.client.submit_winners(1, &too_many).await),
        E::TooManyWinners(SwarmCoordinator::TooManyWinners {
            count: alloy::primitives::U256::from(33),
            max: alloy::primitives::U256::from(32),
        })
    );
    assert_eq!(
        rejection(
            c.client
                .submit_winners(2, std::slice::from_ref(&peer_a))
                .await
        ),
        E::FutureRound(SwarmCoordinator::FutureRound {
            round: 2,
            current: 1
        })
    );
    assert_eq!(
        rejection(
            b.client
                .submit_winners(1, std::slice::from_ref(&peer_a))
                .await
        ),
        E::NotRegistered(SwarmCoordinator::NotRegistered {
            account: b.account()
        })
    );
    let raw = chain.raw_contract(&voter.key, contract);
    assert_eq!(
        raw_rejection(raw.submitWinners(1, vec![peer_b.clone()]).send()).await,
        E::WinnersAlreadySubmitted(SwarmCoordinator::WinnersAlreadySubmitted { round: 1, account })
    );
    // None of the rejected lists counted.
    assert_eq!(
        totals(owner.member_by_peer_id(&peer_a).await.unwrap().unwrap()),
        (2, 1)
    );
}
