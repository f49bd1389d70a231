//! The operator's side of a Swarm's chain: its key, the contract (deployed once), funding and
//! registering members, deregistering them, and advancing rounds. Decisions live in `crate::ledger`;
//! the ledger controller (`super::ledger`) is the only caller.
//!
//! Every transaction of one operator account on one chain goes through one writer at a time: the
//! client keeps the account's next nonce, and a funding transfer (sent outside the client) would
//! otherwise collide with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::U256;
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::transports::http::reqwest;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use swarm_identity::MemberKey;
use swarm_ledger::{
    Address, LedgerClient, LedgerOptions, Outcome, PrivateKeySigner, RecordedReward, RetryPolicy,
    member_signer,
};
use tokio::sync::OwnedMutexGuard;
use zeroize::Zeroizing;

use crate::api::{LedgerSpec, Swarm};
use crate::error::{KubeContext, Result};
use crate::ledger::{
    LedgerProblem, LedgerState, LedgerTarget, MAX_ADVANCES_PER_RECONCILE, display_url,
    expected_round, ledger_target, redact, top_up,
};

/// Least time between two reads of one Swarm's recorded rewards.
const REWARDS_POLL: Duration = Duration::from_secs(10);

/// What the operator has read of each Swarm's recorded rewards (one `eth_getLogs` from the block
/// after the last one read, at most every [`REWARDS_POLL`]), so that members' status can show
/// their rounds and rewards. Starts from the first block again after an operator restart.
#[derive(Default)]
pub struct Rewards {
    swarms: Mutex<HashMap<String, RewardsRead>>,
}

#[derive(Clone, Default)]
struct RewardsRead {
    next_block: u64,
    at: Option<Instant>,
    latest: HashMap<Address, RecordedReward>,
}

impl Rewards {
    /// The latest recorded reward of every account of the Swarm with `uid`, reading what was
    /// recorded since the last read unless that was less than [`REWARDS_POLL`] ago.
    pub async fn latest(
        &self,
        uid: &str,
        client: &LedgerClient,
        now: Instant,
    ) -> Result<HashMap<Address, RecordedReward>, swarm_ledger::LedgerError> {
        let mut read = self
            .swarms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .cloned()
            .unwrap_or_default();
        if read
            .at
            .is_some_and(|at| now.duration_since(at) < REWARDS_POLL)
        {
            return Ok(read.latest);
        }
        for record in client.rewards_since(read.next_block).await? {
            read.next_block = read.next_block.max(record.block + 1);
            let newer = read
                .latest
                .get(&record.account)
                .is_none_or(|known| known.round <= record.round);
            if newer {
                read.latest.insert(record.account, record);
            }
        }
        read.at = Some(now);
        let latest = read.latest.clone();
        self.swarms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.to_owned(), read);
        Ok(latest)
    }

    /// Forgets a deleted Swarm.
    pub fn forget(&self, uid: &str) {
        self.swarms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }
}

/// Clients of the operator accounts in use, and the lock that makes each account's writer unique.
pub struct Ledgers {
    accounts: Mutex<HashMap<AccountKey, Arc<tokio::sync::Mutex<Slot>>>>,
    options: LedgerOptions,
}

impl Default for Ledgers {
    /// Few quick retries: a reconciliation that cannot reach the chain gives up soon, says so in a
    /// condition and comes back with its own, longer backoff.
    fn default() -> Self {
        Self::new(LedgerOptions {
            request_timeout: Duration::from_secs(10),
            receipt_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_secs(1),
            retry: RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(2),
            },
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct AccountKey {
    rpc_url: String,
    chain_id: u64,
    account: Address,
}

/// The client last used for an account; `None` when none is connected or its nonce may be stale.
#[derive(Default)]
struct Slot {
    client: Option<Arc<LedgerClient>>,
}

/// One account's exclusive access to its chain.
pub struct Writer<'a> {
    slot: OwnedMutexGuard<Slot>,
    signer: PrivateKeySigner,
    target: LedgerTarget,
    options: &'a LedgerOptions,
}

impl Ledgers {
    pub fn new(options: LedgerOptions) -> Self {
        Self {
            accounts: Mutex::default(),
            options,
        }
    }

    /// Waits for the right to write as `signer` on the target's chain.
    pub async fn writer(&self, target: LedgerTarget, signer: PrivateKeySigner) -> Writer<'_> {
        let key = AccountKey {
            rpc_url: target.rpc_url.clone(),
            chain_id: target.chain_id,
            account: signer.address(),
        };
        let slot = self
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone();
        Writer {
            slot: slot.lock_owned().await,
            signer,
            target,
            options: &self.options,
        }
    }
}

impl Writer<'_> {
    pub fn operator(&self) -> Address {
        self.signer.address()
    }

    fn problem(&self, error: &swarm_ledger::LedgerError) -> LedgerProblem {
        LedgerProblem::from_ledger(error, &self.target.rpc_url)
    }

    /// The target's contract: the known one, else the one at the Swarm's deterministic address,
    /// deployed now if it is not there yet (then reported as deployed).
    async fn contract(&mut self) -> Result<(Address, bool), LedgerProblem> {
        if let Some(contract) = self.target.contract {
            return Ok((contract, false));
        }
        let deployment = LedgerClient::deploy_deterministic(
            &self.target.rpc_url,
            self.target.chain_id,
            self.signer.clone(),
            self.target.deployment_salt,
            self.options.clone(),
        )
        .await
        .map_err(|e| self.problem(&e))?;
        if deployment.sent {
            // The deployment used the account's next nonce outside any cached client.
            self.slot.client = None;
        }
        self.target.contract = Some(deployment.address);
        Ok((deployment.address, deployment.sent))
    }

    /// A client for the contract, connected (chain and contract checked) unless one is cached.
    async fn client(&mut self, contract: Address) -> Result<Arc<LedgerClient>, LedgerProblem> {
        if let Some(client) = &self.slot.client
            && client.contract() == contract
        {
            return Ok(client.clone());
        }
        let client = LedgerClient::connect(
            &self.target.rpc_url,
            self.target.chain_id,
            self.signer.clone(),
            contract,
            self.options.clone(),
        )
        .await
        .map_err(|e| self.problem(&e))?;
        let client = Arc::new(client);
        self.slot.client = Some(client.clone());
        Ok(client)
    }

    /// Connects to the contract and checks that the operator's account owns it.
    async fn owned_client(
        &mut self,
        contract: Address,
    ) -> Result<Arc<LedgerClient>, LedgerProblem> {
        let client = self.client(contract).await?;
        let owner = client.owner().await.map_err(|e| self.problem(&e))?;
        if owner != self.operator() {
            self.slot.client = None;
            return Err(LedgerProblem::new(
                "NotContractOwner",
                format!(
                    "contract {contract} is owned by {owner}, not by the operator's account {}",
                    self.operator()
                ),
            ));
        }
        Ok(client)
    }

    /// Moves the contract's round up to the wall-clock round, a bounded number of steps at a time.
    /// `advanceRound(from)` refuses any other `from`, so a concurrent or repeated call never skips.
    async fn advance_rounds(
        &mut self,
        contract: Address,
        expected: u64,
    ) -> Result<u64, LedgerProblem> {
        let client = self.client(contract).await?;
        let mut round = client.current_round().await.map_err(|e| self.problem(&e))?;
        let mut steps = 0;
        while round < expected && steps < MAX_ADVANCES_PER_RECONCILE {
            client
                .advance_round(round)
                .await
                .map_err(|e| self.problem(&e))?;
            round += 1;
            steps += 1;
        }
        Ok(round)
    }

    /// Tops the account up to `amount`: nothing is sent when its balance already holds it.
    /// Returns the transfer's hash when one was sent.
    async fn fund(
        &mut self,
        account: Address,
        amount: U256,
    ) -> Result<Option<String>, LedgerProblem> {
        if amount.is_zero() {
            return Ok(None);
        }
        let failed = |what: &str, error: &dyn std::fmt::Display| {
            LedgerProblem::new(
                "FundingFailed",
                redact(
                    &format!("cannot fund {account}: {what}: {error}"),
                    &self.target.rpc_url,
                ),
            )
        };
        let url = reqwest::Url::parse(&self.target.rpc_url)
            .map_err(|e| failed("the RPC URL is not a URL", &e))?;
        let http = reqwest::Client::builder()
            .timeout(self.options.request_timeout)
            .build()
            .map_err(|e| failed("cannot set up the HTTP client", &e))?;
        let provider = ProviderBuilder::new()
            .with_chain_id(self.target.chain_id)
            .wallet(EthereumWallet::from(self.signer.clone()))
            .connect_reqwest(http, url);
        let balance = provider
            .get_balance(account)
            .await
            .map_err(|e| failed("cannot read its balance", &e))?;
        let Some(missing) = top_up(balance, amount) else {
            return Ok(None);
        };
        // Whatever happens next, the cached client's nonce no longer matches the chain.
        self.slot.client = None;
        let tx = TransactionRequest::default()
            .with_to(account)
            .with_value(missing);
        let receipt = provider
            .send_transaction(tx)
            .await
            .map_err(|e| failed("cannot send the transfer", &e))?
            .with_timeout(Some(self.options.receipt_timeout))
            .get_receipt()
            .await
            .map_err(|e| failed("the transfer was not mined", &e))?;
        if !receipt.status() {
            return Err(failed("the transfer reverted", &receipt.transaction_hash));
        }
        Ok(Some(receipt.transaction_hash.to_string()))
    }

    /// Binds the member's account to its PeerId. Returns the transaction's hash, or `None` when the
    /// ledger already had the binding.
    async fn register(
        &mut self,
        contract: Address,
        account: Address,
        peer_id: &str,
    ) -> Result<Option<String>, LedgerProblem> {
        let client = self.client(contract).await?;
        match client
            .register_member(account, peer_id)
            .await
            .map_err(|e| self.problem(&e))?
        {
            Outcome::Sent(receipt) => Ok(Some(receipt.transaction_hash.to_string())),
            Outcome::AlreadyRecorded => Ok(None),
        }
    }

    /// The Swarm's contract (deployed if it is not there yet), its ownership, its round advanced
    /// to the wall-clock round, and what its members recorded (read at most every [`REWARDS_POLL`]).
    pub async fn state(
        &mut self,
        swarm: &Swarm,
        rewards: &Rewards,
        now: Timestamp,
    ) -> Result<LedgerState, LedgerProblem> {
        let (contract, deployed) = self.contract().await?;
        let client = self.owned_client(contract).await?;
        let round = self
            .advance_rounds(contract, expected_round(swarm, now))
            .await?;
        let uid = swarm.metadata.uid.as_deref().unwrap_or_default();
        let rewards = rewards
            .latest(uid, &client, Instant::now())
            .await
            .map_err(|e| self.problem(&e))?;
        Ok(LedgerState {
            contract,
            operator: self.operator(),
            deployed,
            round,
            rewards,
        })
    }

    /// The contract the Swarm's members can be registered on without deploying one: the spec's or
    /// the one its status records.
    pub fn known_contract(&self) -> Option<Address> {
        self.target.contract
    }

    /// Funds `account` up to `amount` and binds it to `peer_id` on the contract; returns the funding
    /// and registration transactions sent, if any.
    pub async fn join(
        &mut self,
        contract: Address,
        account: Address,
        peer_id: &str,
        amount: U256,
    ) -> Result<(Option<String>, Option<String>), LedgerProblem> {
        // Connecting first checks the chain and the contract before any value moves.
        self.client(contract).await?;
        let funding = self.fund(account, amount).await?;
        let registration = self.register(contract, account, peer_id).await?;
        Ok((funding, registration))
    }

    /// Stops the member's account from submitting; already deregistered counts as done.
    pub async fn deregister(
        &mut self,
        contract: Address,
        account: Address,
    ) -> Result<Option<String>, LedgerProblem> {
        let client = self.client(contract).await?;
        match client
            .deregister_member(account)
            .await
            .map_err(|e| self.problem(&e))?
        {
            Outcome::Sent(receipt) => Ok(Some(receipt.transaction_hash.to_string())),
            Outcome::AlreadyRecorded => Ok(None),
        }
    }
}

/// Whether the operator may write to a Swarm's chain now, and if not, why (for the status).
pub enum ChainAccess<'a> {
    Granted(Box<Writer<'a>>),
    Refused(LedgerProblem),
}

/// The operator's key from the Secret the spec names, or why it cannot be used.
enum OperatorKey {
    Usable(PrivateKeySigner),
    Unusable(LedgerProblem),
}

/// Reads the operator's key. Kubernetes failures are errors of the reconciliation; a missing or
/// malformed key is a ledger problem the status reports.
async fn operator_key(
    client: &kube::Client,
    namespace: &str,
    spec: &LedgerSpec,
) -> Result<OperatorKey> {
    let secret_ref = &spec.operator_key_secret;
    let name = &secret_ref.name;
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .context(|| format!("get the ledger operator's key Secret {namespace}/{name}"))?;
    let Some(secret) = secret else {
        return Ok(OperatorKey::Unusable(LedgerProblem::new(
            "OperatorKeyMissing",
            format!("Secret {namespace}/{name} (ledger.operatorKeySecret) does not exist"),
        )));
    };
    let Some(bytes) = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&secret_ref.key))
        .map(|b| Zeroizing::new(b.0.clone()))
    else {
        return Ok(OperatorKey::Unusable(LedgerProblem::new(
            "OperatorKeyMissing",
            format!(
                "Secret {namespace}/{name} has no entry {:?}",
                secret_ref.key
            ),
        )));
    };
    // The parse error is not passed on: only that the key is unusable may be told, never its text.
    let invalid = || {
        LedgerProblem::new(
            "OperatorKeyInvalid",
            format!(
                "entry {:?} of Secret {namespace}/{name} is not a secp256k1 key (64 hex characters)",
                secret_ref.key
            ),
        )
    };
    let signer = MemberKey::from_secret_data(&bytes)
        .ok()
        .and_then(|key| member_signer(&key).ok());
    Ok(match signer {
        Some(signer) => OperatorKey::Usable(signer),
        None => OperatorKey::Unusable(invalid()),
    })
}

/// Exclusive access to the Swarm's chain as the operator's account: the target from the spec (and the
/// contract recorded in status), the key from its Secret. Kubernetes failures are errors of the
/// reconciliation; everything else is a ledger problem the status reports.
pub async fn writer<'a>(
    ctx: &'a super::Context,
    swarm: &Swarm,
    namespace: &str,
) -> Result<ChainAccess<'a>> {
    let no_ledger = || LedgerProblem::new("NoLedger", "the Swarm has no ledger");
    let (spec, target) = match (&swarm.spec.ledger, ledger_target(swarm)) {
        (Some(spec), Ok(Some(target))) => (spec, target),
        (_, Err(problem)) => return Ok(ChainAccess::Refused(problem)),
        _ => return Ok(ChainAccess::Refused(no_ledger())),
    };
    Ok(match operator_key(&ctx.client, namespace, spec).await? {
        OperatorKey::Usable(signer) => {
            ChainAccess::Granted(Box::new(ctx.ledgers.writer(target, signer).await))
        }
        OperatorKey::Unusable(problem) => ChainAccess::Refused(problem),
    })
}

/// How the RPC endpoint may be named in a message.
pub fn endpoint(swarm: &Swarm) -> String {
    swarm
        .spec
        .ledger
        .as_ref()
        .map(|l| display_url(&l.rpc_url))
        .unwrap_or_default()
}
