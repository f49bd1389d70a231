//! The ledger of a swarm on one machine: an anvil chain started and stopped with the swarm, the
//! coordinator contract deployed on it, the members registered with anvil's funded development
//! accounts as their identities, and the rounds advanced with the wall clock, the operator's part.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use swarm_identity::MemberKey;
use swarm_ledger::anvil::{ANVIL_CHAIN_ID, Anvil, AnvilError};
use swarm_ledger::{Address, LedgerClient, LedgerError, LedgerOptions, member_signer};
use swarm_node_config::LedgerConfig;
use tokio::sync::oneshot;

use crate::clock::RoundClock;
use swarm_ledger::unscaled_reward;

/// How often the round keeper compares the contract's round with the clock's.
const ROUND_CHECK: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("anvil: {0}")]
    Anvil(#[from] AnvilError),
    #[error("anvil printed {found} development keys, {needed} are needed")]
    TooFewKeys { found: usize, needed: usize },
    #[error("anvil printed a key that is not one: {0}")]
    Key(#[from] swarm_identity::IdentityError),
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("`{0}` is not an account address")]
    Address(String),
    #[error("cannot start the ledger runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A member's record on the chain at the end.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberTotals {
    pub peer_id: String,
    /// The sum of its recorded rewards, back in reward units.
    pub total_reward: f64,
    pub rewards_recorded: u64,
    pub wins: u64,
}

pub struct LocalChain {
    // Declared before `anvil`, so the client's tasks stop before the chain does.
    runtime: tokio::runtime::Runtime,
    operator: Arc<LedgerClient>,
    anvil: Anvil,
    member_keys: Vec<MemberKey>,
    member_peer_ids: Vec<String>,
}

impl LocalChain {
    /// Starts anvil with one funded account per member plus the owner's, deploys the contract
    /// and registers every member.
    pub fn start(binary: &Path, members: usize) -> Result<LocalChain, ChainError> {
        let accounts = (members + 1).to_string();
        let anvil = Anvil::start(binary, &["--accounts", &accounts])?;
        let keys = anvil.dev_keys();
        if keys.len() < members + 1 {
            return Err(ChainError::TooFewKeys {
                found: keys.len(),
                needed: members + 1,
            });
        }
        let owner = MemberKey::from_hex(&keys[0])?;
        let member_keys = keys[1..=members]
            .iter()
            .map(|key| MemberKey::from_hex(key))
            .collect::<Result<Vec<_>, _>>()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(ChainError::Runtime)?;
        let url = anvil.url();
        let operator = runtime.block_on(async {
            let options = LedgerOptions::default();
            let signer = || member_signer(&owner);
            let contract =
                LedgerClient::deploy(&url, ANVIL_CHAIN_ID, signer()?, options.clone()).await?;
            let operator =
                LedgerClient::connect(&url, ANVIL_CHAIN_ID, signer()?, contract, options).await?;
            for key in &member_keys {
                let account: Address = key
                    .address()
                    .parse()
                    .map_err(|_| ChainError::Address(key.address()))?;
                operator
                    .register_member(account, &key.peer_id_string())
                    .await?;
            }
            Ok::<_, ChainError>(operator)
        })?;
        Ok(LocalChain {
            runtime,
            operator: Arc::new(operator),
            anvil,
            member_peer_ids: member_keys.iter().map(MemberKey::peer_id_string).collect(),
            member_keys,
        })
    }

    /// The members' identities, registered on the contract, in member order; handed out once.
    pub fn take_member_keys(&mut self) -> Vec<MemberKey> {
        std::mem::take(&mut self.member_keys)
    }

    pub fn config(&self) -> LedgerConfig {
        LedgerConfig {
            rpc_url: self.anvil.url(),
            chain_id: ANVIL_CHAIN_ID,
            contract_address: self.operator.contract().to_string(),
        }
    }

    /// Keeps the contract's round on `clock`'s until the returned sender is dropped or used.
    pub fn keep_rounds(&self, clock: RoundClock) -> oneshot::Sender<()> {
        let (stop, mut stopped) = oneshot::channel();
        let operator = Arc::clone(&self.operator);
        self.runtime.spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    () = tokio::time::sleep(ROUND_CHECK) => {}
                }
                let Some(target) = clock.round_at(Timestamp::now()) else {
                    continue;
                };
                let Ok(current) = operator.current_round().await else {
                    continue;
                };
                if current < target
                    && let Err(error) = operator.advance_round(current).await
                {
                    tracing::warn!(%error, "cannot advance the ledger's round");
                }
            }
        });
        stop
    }

    /// Every member's totals as the contract records them.
    pub fn totals(&self) -> Result<Vec<MemberTotals>, ChainError> {
        self.runtime.block_on(async {
            let mut totals = Vec::new();
            for peer_id in &self.member_peer_ids {
                if let Some(member) = self.operator.member_by_peer_id(peer_id).await? {
                    totals.push(MemberTotals {
                        total_reward: unscaled_reward(member.total_reward),
                        rewards_recorded: member.reward_submissions,
                        wins: member.wins,
                        peer_id: peer_id.clone(),
                    });
                }
            }
            Ok(totals)
        })
    }
}
