use std::time::Duration;

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, I256, TxHash, address, keccak256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolValue;
use alloy::transports::http::reqwest;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::bindings::SwarmCoordinator::{self, SwarmCoordinatorInstance};
use crate::error::{Failure, LedgerError, Problem, TransientError};
use crate::redact::redact;

/// Timeouts and retries of a [`LedgerClient`].
#[derive(Clone, Debug)]
pub struct LedgerOptions {
    /// How long one JSON-RPC request may take, connecting included.
    pub request_timeout: Duration,
    /// How long a sent transaction may take to be mined before the attempt counts as failed.
    pub receipt_timeout: Duration,
    /// How often to ask for a sent transaction's receipt.
    pub poll_interval: Duration,
    pub retry: RetryPolicy,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            request_timeout: Duration::from_secs(10),
            receipt_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            retry: RetryPolicy::default(),
        }
    }
}

/// Exponential backoff for transient failures: attempt n waits `initial_backoff * 2^(n-1)`,
/// at most `max_backoff`, before attempt n + 1.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; at least 1.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What a state-changing call did.
#[derive(Debug)]
pub enum Outcome {
    /// This call's transaction made the change; its receipt holds the events.
    Sent(Box<TransactionReceipt>),
    /// The chain already had the change (an earlier attempt whose receipt was lost, or another
    /// caller), so nothing was sent.
    AlreadyRecorded,
}

/// A member's record on the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub account: Address,
    pub peer_id: String,
    /// False after deregistration; the totals stay.
    pub registered: bool,
    pub total_reward: I256,
    /// How often other members named this member a winner.
    pub wins: u64,
    pub reward_submissions: u64,
    pub winner_submissions: u64,
}

/// One `RewardSubmitted` event: a member's reward for a round and its total after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedReward {
    pub round: u64,
    pub account: Address,
    pub reward: I256,
    pub total_reward: I256,
    pub block: u64,
}

/// What one account submitted for one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    /// The reward, if one was submitted.
    pub reward: Option<I256>,
    /// Whether a winners list was submitted (the contract keeps only its hash).
    pub winners_submitted: bool,
}

/// The CREATE2 factory known as the deterministic deployment proxy: at this address on Ethereum's
/// testnets and most EVM chains, and predeployed by anvil. A transaction to it whose data is
/// `salt ‖ init code` creates the contract at `create2(factory, salt, keccak256(init code))`,
/// and fails when that address already holds code.
pub const CREATE2_FACTORY: Address = address!("4e59b44847b379578588920ca78fbf26c0b4956c");

/// Where [`LedgerClient::deploy_deterministic`] puts the coordinator owned by `owner` for `salt`:
/// computable by anyone who knows both, before and after the deployment.
pub fn deterministic_address(owner: Address, salt: B256) -> Address {
    CREATE2_FACTORY.create2_from_code(salt, crate::creation_code(owner))
}

/// A coordinator deployed (or found deployed) at its deterministic address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deployment {
    pub address: Address,
    /// Whether this call's transaction created it; false when it was there already.
    pub sent: bool,
}

/// A connection to a deployed coordinator contract, acting as one account.
///
/// Cheap to share: all methods take `&self` and may run concurrently.
pub struct LedgerClient {
    sender: Sender,
    contract: SwarmCoordinatorInstance<DynProvider>,
}

impl LedgerClient {
    /// Deploys a new coordinator owned by `signer`'s account and returns its address.
    ///
    /// Unlike the other changes this one cannot be checked on chain first: if a deployment's
    /// receipt is lost, the retry deploys again and the first contract goes unused. Where that
    /// matters (the operator), [`Self::deploy_deterministic`] can be.
    pub async fn deploy(
        rpc_url: &str,
        chain_id: u64,
        signer: PrivateKeySigner,
        options: LedgerOptions,
    ) -> Result<Address, LedgerError> {
        let action = "deploy the coordinator contract";
        let sender = Sender::new(action, rpc_url, chain_id, signer, options)?;
        sender.check_chain(action, chain_id).await?;
        let tx =
            &TransactionRequest::default().with_deploy_code(crate::creation_code(sender.account));
        let sender = &sender;
        sender
            .retry(action, || async move {
                let receipt = sender.send(tx.clone()).await?;
                match receipt.contract_address {
                    Some(address) if receipt.status() => Ok(address),
                    _ => Err(Failure::Permanent(Problem::Reverted(
                        receipt.transaction_hash,
                    ))),
                }
            })
            .await
    }

    /// The coordinator owned by `signer`'s account for `salt`, deployed through
    /// [`CREATE2_FACTORY`] at [`deterministic_address`] unless it is there already.
    ///
    /// Idempotent by construction: the address depends only on the owner, the salt and the
    /// code, so a retry after a lost receipt, a caller that lost the address it recorded, or two
    /// callers at once all end at the same single contract.
    pub async fn deploy_deterministic(
        rpc_url: &str,
        chain_id: u64,
        signer: PrivateKeySigner,
        salt: B256,
        options: LedgerOptions,
    ) -> Result<Deployment, LedgerError> {
        let action = "deploy the coordinator contract";
        let sender = Sender::new(action, rpc_url, chain_id, signer, options)?;
        sender.check_chain(action, chain_id).await?;
        let address = deterministic_address(sender.account, salt);
        let init_code = crate::creation_code(sender.account);
        let sender = &sender;
        let has_code = |at: Address| async move {
            Ok::<_, Failure>(!sender.provider.get_code_at(at).await?.is_empty())
        };
        if !sender.retry(action, || has_code(CREATE2_FACTORY)).await? {
            return Err(LedgerError::new(
                action,
                Problem::NoCreate2Factory(CREATE2_FACTORY),
            ));
        }
        let tx = &TransactionRequest::default()
            .with_to(CREATE2_FACTORY)
            .with_input([salt.as_slice(), &init_code].concat());
        sender
            .retry(action, || async move {
                // Deployed already: by an earlier call, an attempt whose receipt was lost, or
                // another caller.
                if has_code(address).await? {
                    return Ok(Deployment {
                        address,
                        sent: false,
                    });
                }
                let receipt = sender.send(tx.clone()).await?;
                if receipt.status() && has_code(address).await? {
                    Ok(Deployment {
                        address,
                        sent: true,
                    })
                } else {
                    Err(Failure::Permanent(Problem::Reverted(
                        receipt.transaction_hash,
                    )))
                }
            })
            .await
    }

    /// Connects to the coordinator at `contract` as `signer`'s account, after checking that the
    /// endpoint serves `chain_id` and that the contract is there.
    pub async fn connect(
        rpc_url: &str,
        chain_id: u64,
        signer: PrivateKeySigner,
        contract: Address,
        options: LedgerOptions,
    ) -> Result<LedgerClient, LedgerError> {
        let action = "connect to the coordinator contract";
        let sender = Sender::new(action, rpc_url, chain_id, signer, options)?;
        sender.check_chain(action, chain_id).await?;
        let provider = &sender.provider;
        let code = sender
            .retry(action, || async move {
                Ok(provider.get_code_at(contract).await?)
            })
            .await?;
        if code.is_empty() {
            return Err(LedgerError::new(action, Problem::NoContract(contract)));
        }
        let contract = SwarmCoordinator::new(contract, sender.provider.clone());
        Ok(LedgerClient { sender, contract })
    }

    /// The account this client sends from.
    pub fn account(&self) -> Address {
        self.sender.account
    }

    /// The coordinator contract's address.
    pub fn contract(&self) -> Address {
        *self.contract.address()
    }

    /// Owner only: binds `account` to `peer_id` and lets it submit.
    pub async fn register_member(
        &self,
        account: Address,
        peer_id: &str,
    ) -> Result<Outcome, LedgerError> {
        let action = format!("register member {account} as {peer_id}");
        let tx = self
            .contract
            .registerMember(account, peer_id.to_owned())
            .into_transaction_request();
        self.transact(&action, tx, || async move {
            let member = self.contract.memberByAccount(account).call().await?;
            Ok(member.registered && member.peerId == peer_id)
        })
        .await
    }

    /// Owner only: stops `account` from submitting. An account that is not registered counts as
    /// already deregistered.
    pub async fn deregister_member(&self, account: Address) -> Result<Outcome, LedgerError> {
        let action = format!("deregister member {account}");
        let tx = self
            .contract
            .deregisterMember(account)
            .into_transaction_request();
        self.transact(&action, tx, || async move {
            let member = self.contract.memberByAccount(account).call().await?;
            Ok(!member.registered)
        })
        .await
    }

    /// Owner only: lets `manager` advance rounds too (the zero address removes the role).
    pub async fn set_round_manager(&self, manager: Address) -> Result<Outcome, LedgerError> {
        let action = format!("make {manager} the round manager");
        let tx = self
            .contract
            .setRoundManager(manager)
            .into_transaction_request();
        self.transact(&action, tx, || async move {
            Ok(self.contract.roundManager().call().await? == manager)
        })
        .await
    }

    /// Owner or round manager: moves from round `from` to `from + 1`. A round already past `from`
    /// counts as done, so a retry never skips a round.
    pub async fn advance_round(&self, from: u64) -> Result<Outcome, LedgerError> {
        let action = format!("advance from round {from}");
        let tx = self.contract.advanceRound(from).into_transaction_request();
        self.transact(&action, tx, || async move {
            Ok(self.contract.currentRound().call().await? > from)
        })
        .await
    }

    /// Registered members only: records this account's reward for `round` (current or past).
    /// The same reward already on record counts as success; a different one is a
    /// [`Problem::RewardConflict`].
    pub async fn submit_reward(&self, round: u64, reward: I256) -> Result<Outcome, LedgerError> {
        let action = format!("submit reward {reward} for round {round}");
        let tx = self
            .contract
            .submitReward(round, reward)
            .into_transaction_request();
        self.transact(&action, tx, || async move {
            let submission = self.submission_on_chain(round).await?;
            match submission.rewardSubmitted {
                false => Ok(false),
                true if submission.reward == reward => Ok(true),
                true => Err(Failure::Permanent(Problem::RewardConflict {
                    round,
                    recorded: submission.reward,
                    wanted: reward,
                })),
            }
        })
        .await
    }

    /// Registered members only: records this account's winners for `round` (current or past),
    /// PeerIds of members, each at most once. The same list already on record counts as success;
    /// a different one is a [`Problem::WinnersConflict`].
    pub async fn submit_winners(
        &self,
        round: u64,
        winners: &[String],
    ) -> Result<Outcome, LedgerError> {
        let action = format!("submit {} winners for round {round}", winners.len());
        // The contract keeps keccak256(abi.encode(winners)); SolValue::abi_encode is abi.encode.
        let hash = keccak256(winners.to_vec().abi_encode());
        let tx = self
            .contract
            .submitWinners(round, winners.to_vec())
            .into_transaction_request();
        self.transact(&action, tx, || async move {
            let submission = self.submission_on_chain(round).await?;
            match submission.winnersSubmitted {
                false => Ok(false),
                true if submission.winnersHash == hash => Ok(true),
                true => Err(Failure::Permanent(Problem::WinnersConflict { round })),
            }
        })
        .await
    }

    pub async fn current_round(&self) -> Result<u64, LedgerError> {
        self.sender
            .retry("read the current round", || async move {
                Ok(self.contract.currentRound().call().await?)
            })
            .await
    }

    pub async fn owner(&self) -> Result<Address, LedgerError> {
        self.sender
            .retry("read the owner", || async move {
                Ok(self.contract.owner().call().await?)
            })
            .await
    }

    /// The number of registered members.
    pub async fn member_count(&self) -> Result<u64, LedgerError> {
        self.sender
            .retry("read the member count", || async move {
                Ok(self.contract.memberCount().call().await?)
            })
            .await
    }

    /// Every reward on record, as (round, account), in chain order: the contract takes one per
    /// member and round, and this is how anyone can check that it did.
    pub async fn reward_submissions(&self) -> Result<Vec<(u64, Address)>, LedgerError> {
        self.sender
            .retry("read the reward submissions", || async move {
                let logs = self
                    .contract
                    .RewardSubmitted_filter()
                    .from_block(0)
                    .query()
                    .await?;
                Ok(logs
                    .into_iter()
                    .map(|(event, _)| (event.round, event.account))
                    .collect())
            })
            .await
    }

    /// The rewards recorded from block `from` on, in chain order: one `eth_getLogs` for any number
    /// of members, which is how the operator follows every member's rounds and totals.
    pub async fn rewards_since(&self, from: u64) -> Result<Vec<RecordedReward>, LedgerError> {
        self.sender
            .retry("read the recorded rewards", || async move {
                let logs = self
                    .contract
                    .RewardSubmitted_filter()
                    .from_block(from)
                    .query()
                    .await?;
                Ok(logs
                    .into_iter()
                    .map(|(event, log)| RecordedReward {
                        round: event.round,
                        account: event.account,
                        reward: event.reward,
                        total_reward: event.totalReward,
                        block: log.block_number.unwrap_or(from),
                    })
                    .collect())
            })
            .await
    }

    /// The member record of `account`, if it was ever registered.
    pub async fn member_by_account(&self, account: Address) -> Result<Option<Member>, LedgerError> {
        let action = format!("read member {account}");
        self.sender
            .retry(&action, || async move {
                Ok(member(self.contract.memberByAccount(account).call().await?))
            })
            .await
    }

    /// The member record bound to `peer_id`, if it was ever registered.
    pub async fn member_by_peer_id(&self, peer_id: &str) -> Result<Option<Member>, LedgerError> {
        let action = format!("read member {peer_id}");
        self.sender
            .retry(&action, || async move {
                let record = self
                    .contract
                    .memberByPeerId(peer_id.to_owned())
                    .call()
                    .await?;
                Ok(member(record))
            })
            .await
    }

    /// What `account` submitted for `round`.
    pub async fn submission(
        &self,
        round: u64,
        account: Address,
    ) -> Result<Submission, LedgerError> {
        let action = format!("read the submission of {account} for round {round}");
        self.sender
            .retry(&action, || async move {
                let s = self.contract.submissionOf(round, account).call().await?;
                Ok(Submission {
                    reward: s.rewardSubmitted.then_some(s.reward),
                    winners_submitted: s.winnersSubmitted,
                })
            })
            .await
    }

    async fn submission_on_chain(
        &self,
        round: u64,
    ) -> Result<SwarmCoordinator::Submission, Failure> {
        Ok(self
            .contract
            .submissionOf(round, self.sender.account)
            .call()
            .await?)
    }

    /// Makes one change idempotently: each attempt first asks `recorded` whether the chain
    /// already has it, and sends only if not.
    async fn transact<C, F>(
        &self,
        action: &str,
        tx: TransactionRequest,
        recorded: C,
    ) -> Result<Outcome, LedgerError>
    where
        C: Fn() -> F,
        F: Future<Output = Result<bool, Failure>>,
    {
        let (tx, recorded) = (&tx, &recorded);
        let result = self
            .sender
            .retry(action, || async move {
                if recorded().await? {
                    return Ok(Outcome::AlreadyRecorded);
                }
                let receipt = self.sender.send(tx.clone()).await?;
                if receipt.status() {
                    Ok(Outcome::Sent(Box::new(receipt)))
                } else {
                    Err(Failure::Permanent(Problem::Reverted(
                        receipt.transaction_hash,
                    )))
                }
            })
            .await;
        match result {
            // The same change may have landed between the check and the send (an earlier
            // attempt's transaction mined late, or a concurrent caller), making this one fail.
            Err(error)
                if matches!(error.problem(), Problem::Rejected(_) | Problem::Reverted(_)) =>
            {
                match self.sender.retry(action, recorded).await {
                    Ok(true) => Ok(Outcome::AlreadyRecorded),
                    _ => Err(error),
                }
            }
            other => other,
        }
    }
}

fn member(record: SwarmCoordinator::Member) -> Option<Member> {
    (record.account != Address::ZERO).then_some(Member {
        account: record.account,
        peer_id: record.peerId,
        registered: record.registered,
        total_reward: record.totalReward,
        wins: record.wins,
        reward_submissions: record.rewardSubmissions,
        winner_submissions: record.winnerSubmissions,
    })
}

/// Sends one account's transactions, with nonces, receipts and retries.
struct Sender {
    provider: DynProvider,
    account: Address,
    /// The nonce for the next transaction; `None` means ask the chain. The lock is held from
    /// choosing a nonce until the node has accepted the transaction, so concurrent sends take
    /// consecutive nonces and reach the node in that order.
    next_nonce: Mutex<Option<u64>>,
    options: LedgerOptions,
    /// For logs, which show it through [`redact`] only.
    rpc_url: String,
}

impl Sender {
    fn new(
        action: &str,
        rpc_url: &str,
        chain_id: u64,
        signer: PrivateKeySigner,
        options: LedgerOptions,
    ) -> Result<Sender, LedgerError> {
        let url = reqwest::Url::parse(rpc_url)
            .map_err(|error| LedgerError::new(action, Problem::InvalidUrl(error)))?;
        let http = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .build()
            .map_err(|error| LedgerError::new(action, Problem::HttpClient(error)))?;
        let account = signer.address();
        // Gas and fees are estimated per transaction (the estimate also surfaces the contract's
        // rejection before anything is sent); nonces come from this Sender, not a filler.
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_chain_id(chain_id)
            .wallet(EthereumWallet::from(signer))
            .connect_reqwest(http, url)
            .erased();
        Ok(Sender {
            provider,
            account,
            next_nonce: Mutex::new(None),
            options,
            rpc_url: rpc_url.to_owned(),
        })
    }

    async fn check_chain(&self, action: &str, expected: u64) -> Result<(), LedgerError> {
        let actual = self
            .retry(
                action,
                || async move { Ok(self.provider.get_chain_id().await?) },
            )
            .await?;
        if actual == expected {
            Ok(())
        } else {
            Err(LedgerError::new(
                action,
                Problem::ChainMismatch { expected, actual },
            ))
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retry policy runs out.
    async fn retry<T, C, F>(&self, action: &str, attempt: C) -> Result<T, LedgerError>
    where
        C: Fn() -> F,
        F: Future<Output = Result<T, Failure>>,
    {
        let policy = &self.options.retry;
        let mut backoff = policy.initial_backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Failure::Permanent(problem)) => return Err(LedgerError::new(action, problem)),
                Err(Failure::Transient(last)) if attempts >= policy.max_attempts => {
                    return Err(LedgerError::new(
                        action,
                        Problem::Unavailable { attempts, last },
                    ));
                }
                Err(Failure::Transient(error)) => {
                    let error = redact(&error.to_string(), &self.rpc_url);
                    tracing::warn!(action, attempts, ?backoff, %error, "ledger request failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(policy.max_backoff);
                }
            }
        }
    }

    /// Signs and sends `tx` with the next nonce, then waits for its receipt.
    async fn send(&self, tx: TransactionRequest) -> Result<TransactionReceipt, Failure> {
        let hash = {
            let mut next_nonce = self.next_nonce.lock().await;
            let sent = async {
                let nonce = match *next_nonce {
                    Some(nonce) => nonce,
                    None => {
                        self.provider
                            .get_transaction_count(self.account)
                            .pending()
                            .await?
                    }
                };
                let tx = tx.with_from(self.account).with_nonce(nonce);
                let pending = self.provider.send_transaction(tx).await?;
                Ok::<_, Failure>((nonce, *pending.tx_hash()))
            }
            .await;
            match sent {
                Ok((nonce, hash)) => {
                    *next_nonce = Some(nonce + 1);
                    hash
                }
                Err(failure) => {
                    // Whether the node took the transaction is unknown; the chain will say.
                    *next_nonce = None;
                    return Err(failure);
                }
            }
        };
        self.wait_for_receipt(hash).await
    }

    async fn wait_for_receipt(&self, tx: TxHash) -> Result<TransactionReceipt, Failure> {
        let started = Instant::now();
        loop {
            match self.provider.get_transaction_receipt(tx).await {
                Ok(Some(receipt)) => return Ok(receipt),
                Ok(None) => {}
                Err(error) => match Failure::from(error) {
                    // The node may come back before the deadline; the transaction is in its pool.
                    Failure::Transient(_) => {}
                    permanent @ Failure::Permanent(_) => return Err(permanent),
                },
            }
            let waited = started.elapsed();
            if waited >= self.options.receipt_timeout {
                // The node may have dropped it, leaving a gap at its nonce: ask the chain again.
                *self.next_nonce.lock().await = None;
                return Err(Failure::Transient(TransientError::NotMined { tx, waited }));
            }
            tokio::time::sleep(self.options.poll_interval).await;
        }
    }
}
