//! The member's submissions to the swarm's ledger: after each round, its reward and its choice of
//! the round's winner, from its own account. A background task sends them in round order and keeps
//! those the chain could not take yet (RPC down, the operator not yet registered this member or not
//! yet advanced the contract to the round) to retry, so training never waits on the chain.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use swarm_identity::MemberKey;
use swarm_ledger::bindings::SwarmCoordinator::SwarmCoordinatorErrors;
use swarm_ledger::{
    Address, LedgerClient, LedgerError, LedgerOptions, display_url, member_signer, redact,
    scaled_reward,
};
use swarm_node_config::LedgerConfig;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::metrics::{LedgerOutcome, NodeMetrics};

/// Rounds whose submissions wait at most; the oldest are given up beyond it, so a ledger that is
/// gone for good costs bounded memory.
const MAX_PENDING: usize = 64;
/// Pause between attempts while something is pending.
const RETRY_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum LedgerSetupError {
    #[error("ledger contract address `{0}` is not an address")]
    Contract(String),
    #[error("the member key cannot sign ledger transactions: {0}")]
    Key(#[source] LedgerError),
}

/// One round's submissions.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundSubmission {
    pub round: u64,
    /// Mean reward of the member's own completions, in [0, 1].
    pub reward: f64,
    /// PeerIds, best first; at least one (the member itself when it saw nobody better).
    pub winners: Vec<String>,
}

/// Handle to the submitting task.
#[derive(Debug, Clone)]
pub struct LedgerReporter {
    queue: mpsc::UnboundedSender<RoundSubmission>,
    progress: Arc<Progress>,
}

#[derive(Debug, Default)]
struct Progress {
    pending: AtomicUsize,
    recorded: AtomicU64,
    /// Rounds handed to the task, and rounds it is done with (recorded, refused or given up).
    queued: AtomicU64,
    settled: AtomicU64,
    /// The contract's round when last read.
    ledger_round: AtomicU64,
}

impl LedgerReporter {
    /// Starts the submitting task on `runtime`; it connects on its own, retrying while the RPC is
    /// unreachable.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        config: &LedgerConfig,
        key: &MemberKey,
        metrics: NodeMetrics,
    ) -> Result<LedgerReporter, LedgerSetupError> {
        let contract: Address = config
            .contract_address
            .parse()
            .map_err(|_| LedgerSetupError::Contract(config.contract_address.clone()))?;
        let signer = member_signer(key).map_err(LedgerSetupError::Key)?;
        let (queue, incoming) = mpsc::unbounded_channel();
        let progress = Arc::new(Progress::default());
        let task = Submitter {
            rpc_url: config.rpc_url.clone(),
            chain_id: config.chain_id,
            contract,
            signer,
            client: None,
            pending: VecDeque::new(),
            progress: Arc::clone(&progress),
            metrics,
        };
        runtime.spawn(task.run(incoming));
        tracing::info!(rpc = %display_url(&config.rpc_url), %contract, "submitting to the ledger");
        Ok(LedgerReporter { queue, progress })
    }

    pub fn submit(&self, submission: RoundSubmission) {
        self.progress.queued.fetch_add(1, Ordering::Relaxed);
        // Fails only once the runtime is shutting down, when nothing can be sent anyway.
        let _ = self.queue.send(submission);
    }

    /// Waits until every round handed over is settled, or `timeout` has passed; whether all were.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let settled = self.progress.settled.load(Ordering::Relaxed);
            if settled >= self.progress.queued.load(Ordering::Relaxed) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Rounds waiting to be recorded, rounds recorded since start, and the contract's round when
    /// last read.
    pub fn progress(&self) -> (usize, u64, u64) {
        (
            self.progress.pending.load(Ordering::Relaxed),
            self.progress.recorded.load(Ordering::Relaxed),
            self.progress.ledger_round.load(Ordering::Relaxed),
        )
    }
}

struct Submitter {
    rpc_url: String,
    chain_id: u64,
    contract: Address,
    signer: swarm_ledger::PrivateKeySigner,
    client: Option<LedgerClient>,
    pending: VecDeque<RoundSubmission>,
    progress: Arc<Progress>,
    metrics: NodeMetrics,
}

/// What became of one attempt at a round's submissions.
enum Attempt {
    Recorded,
    /// Worth trying again later (RPC down, round not reached on chain, not registered yet).
    Later,
    /// The contract refuses it for good (e.g. a winner it does not know); given up.
    Refused,
}

impl Submitter {
    async fn run(mut self, mut incoming: mpsc::UnboundedReceiver<RoundSubmission>) {
        loop {
            let next = if self.pending.is_empty() {
                incoming.recv().await
            } else {
                tokio::select! {
                    next = incoming.recv() => next,
                    () = tokio::time::sleep(RETRY_EVERY) => None,
                }
            };
            if let Some(submission) = next {
                if self.pending.len() == MAX_PENDING
                    && let Some(dropped) = self.pending.pop_front()
                {
                    tracing::warn!(round = dropped.round, "giving up a ledger submission");
                    self.progress.settled.fetch_add(1, Ordering::Relaxed);
                    self.metrics.ledger_settled(LedgerOutcome::GivenUp);
                }
                self.pending.push_back(submission);
            } else if incoming.is_closed() && self.pending.is_empty() {
                return;
            }
            self.send_pending().await;
            self.progress
                .pending
                .store(self.pending.len(), Ordering::Relaxed);
        }
    }

    /// Sends pending rounds in order, stopping at the first that must wait.
    async fn send_pending(&mut self) {
        while let Some(submission) = self.pending.front().cloned() {
            let span = tracing::info_span!("submit", round = submission.round);
            match self.attempt(&submission).instrument(span).await {
                Attempt::Recorded => {
                    self.progress.recorded.fetch_add(1, Ordering::Relaxed);
                    self.progress.settled.fetch_add(1, Ordering::Relaxed);
                    self.metrics.ledger_settled(LedgerOutcome::Recorded);
                    self.pending.pop_front();
                }
                Attempt::Refused => {
                    self.progress.settled.fetch_add(1, Ordering::Relaxed);
                    self.metrics.ledger_settled(LedgerOutcome::Refused);
                    self.pending.pop_front();
                }
                Attempt::Later => return,
            }
        }
    }

    async fn attempt(&mut self, submission: &RoundSubmission) -> Attempt {
        if self.client.is_none() {
            match LedgerClient::connect(
                &self.rpc_url,
                self.chain_id,
                self.signer.clone(),
                self.contract,
                LedgerOptions::default(),
            )
            .await
            {
                Ok(client) => self.client = Some(client),
                Err(error) => return self.judge(submission.round, &error),
            }
        }
        let Some(client) = &self.client else {
            return Attempt::Later;
        };
        // The contract's round says which rounds it accepts: a later one waits for the operator to
        // advance it, without a transaction the contract would refuse.
        match client.current_round().await {
            Ok(current) => {
                self.progress.ledger_round.store(current, Ordering::Relaxed);
                if submission.round > current {
                    return Attempt::Later;
                }
            }
            Err(error) => return self.judge(submission.round, &error),
        }
        // Both calls are idempotent: a round whose reward landed before a failure is not sent again.
        let reward = scaled_reward(submission.reward);
        if let Err(error) = client.submit_reward(submission.round, reward).await {
            return self.judge(submission.round, &error);
        }
        match client
            .submit_winners(submission.round, &submission.winners)
            .await
        {
            Ok(_) => Attempt::Recorded,
            Err(error) => self.judge(submission.round, &error),
        }
    }

    /// Classifies a failed call.
    fn judge(&self, round: u64, error: &LedgerError) -> Attempt {
        self.metrics.ledger_failed();
        let message = redact(&error.to_string(), &self.rpc_url);
        match error.rejection() {
            None
            | Some(
                SwarmCoordinatorErrors::FutureRound(_) | SwarmCoordinatorErrors::NotRegistered(_),
            ) => {
                tracing::debug!(round, error = %message, "ledger submission deferred");
                Attempt::Later
            }
            Some(_) => {
                tracing::warn!(round, error = %message, "the ledger refused a submission");
                Attempt::Refused
            }
        }
    }
}
