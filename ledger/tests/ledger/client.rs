//! The client's behaviour around the contract: idempotent changes, nonces, retries, recovery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::providers::Provider;
use swarm_identity::MemberKey;
use swarm_ledger::bindings::SwarmCoordinator;
use swarm_ledger::{Address, I256, LedgerClient, LedgerOptions, Outcome, Problem, RetryPolicy};

use crate::contract::{join, receipt, rejection};
use swarm_ledger::testing::{CHAIN_ID, Chain, address, closed_port, options, signer};

fn sent(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Sent(_))
}

#[tokio::test]
async fn connect_checks_the_url_chain_and_contract() {
    let chain = Chain::start();
    let (owner_key, owner) = chain.deploy().await;
    let url = chain.url();

    let error = LedgerClient::connect(
        "not a url",
        CHAIN_ID,
        signer(&owner_key),
        owner.contract(),
        options(),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(error.problem(), Problem::InvalidUrl(_)), "{error}");

    let error = LedgerClient::connect(
        &url,
        685685,
        signer(&owner_key),
        owner.contract(),
        options(),
    )
    .await
    .err()
    .unwrap();
    assert!(
        matches!(
            error.problem(),
            Problem::ChainMismatch {
                expected: 685685,
                actual: CHAIN_ID
            }
        ),
        "{error}"
    );

    let nowhere = address(&MemberKey::generate());
    let error = LedgerClient::connect(&url, CHAIN_ID, signer(&owner_key), nowhere, options())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(error.problem(), Problem::NoContract(a) if *a == nowhere),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "cannot connect to the coordinator contract on the ledger: there is no contract at {nowhere}"
        )
    );
}

#[tokio::test]
async fn repeated_changes_are_recorded_once() {
    let chain = Chain::start();
    let (_, owner) = chain.deploy().await;
    let member = join(&chain, &owner).await;
    let account = member.account();
    let peer_id = member.key.peer_id_string();
    let winners = vec![peer_id.clone()];
    let nonce = async |client: &LedgerClient| {
        chain
            .provider()
            .get_transaction_count(client.account())
            .await
            .unwrap()
    };

    let owner_nonce = nonce(&owner).await;
    assert!(matches!(
        owner.register_member(account, &peer_id).await.unwrap(),
        Outcome::AlreadyRecorded
    ));
    assert!(sent(&owner.advance_round(0).await.unwrap()));
    assert!(matches!(
        owner.advance_round(0).await.unwrap(),
        Outcome::AlreadyRecorded
    ));
    assert_eq!(nonce(&owner).await, owner_nonce + 1);
    assert_eq!(owner.current_round().await.unwrap(), 1);

    let member_nonce = nonce(&member.client).await;
    for round in [0, 1] {
        assert!(sent(
            &member.client.submit_reward(round, I256::ONE).await.unwrap()
        ));
        assert!(sent(
            &member.client.submit_winners(round, &winners).await.unwrap()
        ));
    }
    for round in [0, 1] {
        assert!(matches!(
            member.client.submit_reward(round, I256::ONE).await.unwrap(),
            Outcome::AlreadyRecorded
        ));
        assert!(matches!(
            member.client.submit_winners(round, &winners).await.unwrap(),
            Outcome::AlreadyRecorded
        ));
    }
    assert_eq!(nonce(&member.client).await, member_nonce + 4);
    // Each reward is on record once, with the member's total after it; a later read from the
    // block after the last one seen finds nothing new.
    let recorded = owner.rewards_since(0).await.unwrap();
    assert_eq!(
        recorded
            .iter()
            .map(|r| (r.round, r.account, r.reward, r.total_reward))
            .collect::<Vec<_>>(),
        [
            (0, account, I256::ONE, I256::ONE),
            (1, account, I256::ONE, I256::try_from(2).unwrap())
        ]
    );
    assert!(recorded[0].block < recorded[1].block);
    let after = recorded[1].block + 1;
    assert!(owner.rewards_since(after).await.unwrap().is_empty());
    let record = owner.member_by_account(account).await.unwrap().unwrap();
    assert_eq!(
        (record.total_reward, record.reward_submissions, record.wins),
        (I256::try_from(2).unwrap(), 2, 2)
    );

    // A different value for a round already on record is a conflict, not a success.
    let error = member
        .client
        .submit_reward(0, I256::ZERO)
        .await
        .unwrap_err();
    assert!(
        matches!(error.problem(), Problem::RewardConflict { round: 0, recorded, wanted } if *recorded == I256::ONE && *wanted == I256::ZERO),
        "{error}"
    );
    let other = join(&chain, &owner).await;
    let error = member
        .client
        .submit_winners(0, &[other.key.peer_id_string()])
        .await
        .unwrap_err();
    assert!(
        matches!(error.problem(), Problem::WinnersConflict { round: 0 }),
        "{error}"
    );

    let owner_nonce = nonce(&owner).await;
    assert!(sent(&owner.deregister_member(account).await.unwrap()));
    assert!(matches!(
        owner.deregister_member(account).await.unwrap(),
        Outcome::AlreadyRecorded
    ));
    assert!(sent(&owner.set_round_manager(account).await.unwrap()));
    assert!(matches!(
        owner.set_round_manager(account).await.unwrap(),
        Outcome::AlreadyRecorded
    ));
    assert_eq!(nonce(&owner).await, owner_nonce + 2);
}

/// The transaction lands but its receipt never reaches the client (here: nothing is mined until
/// the client has given up); the retry finds it on chain and sends nothing.
#[tokio::test]
async fn retry_after_a_lost_receipt_does_not_submit_twice() {
    let chain = Chain::start();
    let (_, owner) = chain.deploy().await;
    let member = join(&chain, &owner).await;
    let impatient = LedgerOptions {
        receipt_timeout: Duration::from_millis(300),
        retry: RetryPolicy {
            max_attempts: 1,
            ..options().retry
        },
        ..options()
    };
    let client = chain
        .client_with(&member.key, owner.contract(), impatient)
        .await;
    let reward = I256::try_from(5).unwrap();

    chain.set_automine(false).await;
    let error = client.submit_reward(0, reward).await.unwrap_err();
    assert!(
        matches!(error.problem(), Problem::Unavailable { attempts: 1, .. }),
        "{error}"
    );
    chain.mine().await;
    chain.set_automine(true).await;

    assert!(matches!(
        client.submit_reward(0, reward).await.unwrap(),
        Outcome::AlreadyRecorded
    ));
    let record = owner
        .member_by_account(member.account())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (record.total_reward, record.reward_submissions),
        (reward, 1)
    );
    // The client's next transaction takes the nonce after the one that landed.
    owner.advance_round(0).await.unwrap();
    assert!(sent(&client.submit_reward(1, reward).await.unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_from_one_account_all_land() {
    let chain = Chain::start();
    let (_, owner) = chain.deploy().await;
    let owner = Arc::new(owner);
    let keys: Vec<MemberKey> = (0..10).map(|_| MemberKey::generate()).collect();
    let start_nonce = chain
        .provider()
        .get_transaction_count(owner.account())
        .await
        .unwrap();

    let tasks: Vec<_> = keys
        .iter()
        .map(|key| {
            let owner = Arc::clone(&owner);
            let (account, peer_id) = (address(key), key.peer_id_string());
            tokio::spawn(async move { owner.register_member(account, &peer_id).await })
        })
        .collect();
    let mut nonces = Vec::new();
    for task in futures::future::join_all(tasks).await {
        let receipt = receipt(task.unwrap().unwrap());
        let tx = chain
            .provider()
            .get_transaction_by_hash(receipt.transaction_hash)
            .await
            .unwrap()
            .unwrap();
        nonces.push(alloy::consensus::Transaction::nonce(&tx));
    }
    nonces.sort_unstable();
    assert_eq!(nonces, (start_nonce..start_nonce + 10).collect::<Vec<_>>());
    assert_eq!(owner.member_count().await.unwrap(), 10);
    for key in &keys {
        assert!(
            owner
                .member_by_account(address(key))
                .await
                .unwrap()
                .unwrap()
                .registered
        );
    }
}

/// Two identical submissions at once: one sends, the other finds it recorded (its own send is
/// refused by the contract), and both succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_submissions_both_succeed_once() {
    let chain = Chain::start();
    let (_, owner) = chain.deploy().await;
    let member = join(&chain, &owner).await;
    let reward = I256::try_from(3).unwrap();
    let (first, second) = tokio::join!(
        member.client.submit_reward(0, reward),
        member.client.submit_reward(0, reward)
    );
    let outcomes = [first.unwrap(), second.unwrap()];
    assert_eq!(
        outcomes.iter().filter(|o| sent(o)).count(),
        1,
        "{outcomes:?}"
    );
    let record = owner
        .member_by_account(member.account())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (record.total_reward, record.reward_submissions),
        (reward, 1)
    );
}

/// Another process sending from the same account leaves the client's nonce stale; the node's
/// complaint makes it ask the chain again.
#[tokio::test]
async fn a_stale_nonce_is_resynced_from_the_chain() {
    let chain = Chain::start();
    let (owner_key, owner) = chain.deploy().await;
    owner.advance_round(0).await.unwrap();
    let elsewhere = chain.client(&owner_key, owner.contract()).await;
    elsewhere.advance_round(1).await.unwrap();
    elsewhere.advance_round(2).await.unwrap();

    assert!(sent(&owner.advance_round(3).await.unwrap()));
    assert_eq!(owner.current_round().await.unwrap(), 4);
}

#[tokio::test]
async fn an_unreachable_endpoint_is_retried_with_backoff_then_reported() {
    let key = MemberKey::generate();
    let url = format!("http://127.0.0.1:{}", closed_port());
    let options = LedgerOptions {
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        },
        ..options()
    };
    let started = Instant::now();
    let error = LedgerClient::connect(&url, CHAIN_ID, signer(&key), Address::ZERO, options)
        .await
        .err()
        .unwrap();
    let elapsed = started.elapsed();
    // Waits of 100, 200 and 300 ms (capped) between the four attempts.
    assert!(
        elapsed >= Duration::from_millis(600),
        "gave up after {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(
        matches!(error.problem(), Problem::Unavailable { attempts: 4, .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("cannot connect to the coordinator contract on the ledger: the RPC endpoint still failed after 4 attempts: "),
        "{message}"
    );
}

#[tokio::test]
async fn a_rejection_is_not_retried() {
    let chain = Chain::start();
    let (_, owner) = chain.deploy().await;
    let member = join(&chain, &owner).await;
    let patient = LedgerOptions {
        retry: RetryPolicy {
            initial_backoff: Duration::from_secs(10),
            ..options().retry
        },
        ..options()
    };
    let client = chain
        .client_with(&member.key, owner.contract(), patient)
        .await;
    let started = Instant::now();
    assert_eq!(
        rejection(client.submit_reward(9, I256::ONE).await),
        SwarmCoordinator::SwarmCoordinatorErrors::FutureRound(SwarmCoordinator::FutureRound {
            round: 9,
            current: 0
        })
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// The RPC node goes away mid-way and comes back on the same port with its state: a call made
/// while it is down waits through the outage and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_recovers_when_the_node_restarts() {
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("anvil-state.json");
    let mut chain = Chain::start_with(&["--state", state_file.to_str().unwrap()]);
    let (_, owner) = chain.deploy().await;
    let member = join(&chain, &owner).await;
    let outage = LedgerOptions {
        retry: RetryPolicy {
            max_attempts: 20,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
        },
        ..options()
    };
    let client = Arc::new(
        chain
            .client_with(&member.key, owner.contract(), outage)
            .await,
    );
    receipt(client.submit_reward(0, I256::ONE).await.unwrap());

    chain.stop();
    let during = tokio::spawn({
        let client = Arc::clone(&client);
        let winners = vec![member.key.peer_id_string()];
        async move { client.submit_winners(0, &winners).await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!during.is_finished());
    chain.restart();

    assert!(sent(&during.await.unwrap().unwrap()));
    let record = owner
        .member_by_account(member.account())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            record.reward_submissions,
            record.winner_submissions,
            record.wins
        ),
        (1, 1, 1)
    );
}
