//! One member's rounds: generate, publish, gather, adopt, train, report, checkpoint.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use libp2p::{Multiaddr, PeerId};
use swarm_node_config::NodeConfig;
use swarm_p2p::{Limits, Network, NetworkError, NetworkStatus};
use swarm_rl::{Group, RewardStats};
use tracing::field::Empty;

use super::inbox::Inbox;
use super::shutdown::Shutdown;
use super::{GATHER_SHARE, NodeError, bootstrap_addrs};
use crate::clock::RoundClock;
use crate::exchange::split_messages;
use crate::learner::{Learner, source_name};
use crate::ledger::{LedgerReporter, RoundSubmission};
use crate::metrics::NodeMetrics;
use crate::report::{NodeEvent, RoundReport};

/// How often gathering reads the connected peers again while it waits for their messages: a
/// message wakes it at once, a peer that connects or leaves is noticed within this.
const PEERS_RECHECK: Duration = Duration::from_millis(250);

pub(super) struct Member {
    pub(super) name: String,
    pub(super) peer_id: PeerId,
    pub(super) clock: RoundClock,
    pub(super) learner: Learner,
    pub(super) network: Network,
    pub(super) inbox: Arc<Inbox>,
    pub(super) ledger: Option<LedgerReporter>,
    pub(super) runtime: tokio::runtime::Runtime,
    pub(super) metrics: NodeMetrics,
    pub(super) config: NodeConfig,
    /// Bootstrap addresses handed to the network so far.
    pub(super) known_peers: Vec<Multiaddr>,
    pub(super) config_path: PathBuf,
    pub(super) key: swarm_identity::MemberKey,
    pub(super) shutdown: Shutdown,
}

impl Member {
    /// Trains round after round until `maxRounds`, or until a stop is asked for (between rounds);
    /// returns the number of rounds trained.
    pub(super) fn train(
        &mut self,
        resumed_from: Option<u64>,
        out: &mut impl Write,
    ) -> Result<u64, NodeError> {
        let mut last = resumed_from;
        let mut trained = 0;
        loop {
            let round = self.clock.next_round(last, Timestamp::now());
            if self
                .config
                .rounds
                .max_rounds
                .is_some_and(|max| round >= max)
            {
                return Ok(trained);
            }
            let until_start = RoundClock::until(Timestamp::now(), self.clock.start_of(round));
            if !self.shutdown.sleep(until_start) {
                return Ok(trained);
            }
            self.refresh_config();
            let skipped = last.map_or(0, |last| round - last - 1);
            let report = self.round(round, skipped)?;
            self.metrics.record_round(&report);
            NodeEvent::Round(report)
                .emit(out)
                .map_err(NodeError::Report)?;
            last = Some(round);
            trained += 1;
        }
    }

    /// Reads the mounted config again, which the kubelet updates in place when the operator
    /// changes the ConfigMap: members whose identity was not known yet, or added by a scale-up,
    /// are dialled, and a ledger whose contract became known is used from now on. The rest of a
    /// running member's config does not change (the operator keeps it immutable or the pod is
    /// replaced).
    fn refresh_config(&mut self) {
        let latest = match NodeConfig::load(&self.config_path) {
            Ok(latest) if latest.swarm.uid == self.config.swarm.uid => latest,
            Ok(_) => {
                tracing::warn!("the mounted config now names another swarm; ignoring it");
                return;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot read the mounted config again; keeping the one loaded");
                return;
            }
        };
        let added: Vec<Multiaddr> = bootstrap_addrs(&latest.p2p)
            .into_iter()
            .filter(|addr| !self.known_peers.contains(addr))
            .collect();
        if !added.is_empty() {
            match self
                .runtime
                .block_on(self.network.add_bootstrap_peers(&added))
            {
                Ok(()) => {
                    tracing::info!(peers = added.len(), "dialling peers added to the config");
                    self.known_peers.extend(added);
                }
                Err(err) => tracing::warn!(%err, "cannot add the config's new peers"),
            }
        }
        if self.ledger.is_none()
            && let Some(ledger) = &latest.ledger
        {
            match LedgerReporter::start(
                self.runtime.handle(),
                ledger,
                &self.key,
                self.metrics.clone(),
            ) {
                Ok(reporter) => self.ledger = Some(reporter),
                Err(err) => tracing::warn!(%err, "cannot use the ledger the config now names"),
            }
        }
    }

    fn round(&mut self, round: u64, skipped_rounds: u64) -> Result<RoundReport, NodeError> {
        // One trace per round, its phases as child spans.
        let round_span = tracing::info_span!(
            "round",
            member = %self.name,
            round,
            reward = Empty,
            external_groups = Empty,
            trained = Empty,
        );
        let _round = round_span.enter();
        self.network.set_round(round);
        let started = Instant::now();
        let local = tracing::info_span!("generate").in_scope(|| self.learner.generate(round))?;
        let sample_seconds = started.elapsed().as_secs_f64();
        let published = tracing::info_span!("publish").in_scope(|| self.publish(round, &local));

        let (status, external) = tracing::info_span!("gather").in_scope(|| {
            let status = self.gather(round);
            let received = self.inbox.take(round);
            (status, self.learner.adopt(self.peer_id, &received))
        });
        round_span.record("external_groups", external.received);

        let train_span = tracing::info_span!("train", groups = Empty, loss = Empty).entered();
        let started = Instant::now();
        let trained = self.learner.train(round, &local, &external)?;
        train_span.record("groups", trained.local_groups + trained.external_groups);
        if let Some(loss) = trained.loss {
            train_span.record("loss", loss);
        }
        let checkpointed = self.checkpoint(round)?;
        let train_seconds = started.elapsed().as_secs_f64();
        drop(train_span);
        round_span.record("trained", trained.local_groups + trained.external_groups);

        let stats = RewardStats::of(&local);
        round_span.record("reward", stats.mean_reward);
        if let Some(ledger) = &self.ledger {
            ledger.submit(RoundSubmission {
                round,
                reward: stats.mean_reward,
                winners: vec![winner(self.peer_id, stats.mean_reward, &external.by_author)],
            });
        }
        let ledger_progress = self.ledger.as_ref().map(LedgerReporter::progress);
        Ok(RoundReport {
            member: self.name.clone(),
            round,
            reward: stats.mean_reward,
            completions: stats.completions,
            tokens: stats.tokens,
            reward_by_source: stats
                .by_source
                .iter()
                .map(|s| (source_name(&s.source), s.mean_reward()))
                .collect(),
            local_groups: local.len(),
            local_with_signal: local.iter().filter(|g| g.has_signal()).count(),
            published,
            external_groups: external.received,
            external_peers: external.peers,
            external_with_signal: external.with_signal.len(),
            external_dropped: external.dropped,
            external_reward: external.mean_reward(),
            trained_local: trained.local_groups,
            trained_external: trained.external_groups,
            external_completions_trained: trained.external_completions,
            loss: trained.loss,
            sample_seconds,
            train_seconds,
            peers: status.connected_peers.len(),
            messages_accepted: status.accepted,
            messages_rejected: status
                .rejected
                .iter()
                .map(|(reason, count)| ((*reason).to_owned(), *count))
                .collect(),
            peer_scores: status
                .peer_scores
                .iter()
                .map(|(peer, score)| (peer.to_string(), *score))
                .collect(),
            skipped_rounds,
            checkpointed,
            ledger_pending: ledger_progress.map(|(pending, _, _)| pending),
            ledger_recorded: ledger_progress.map(|(_, recorded, _)| recorded),
            ledger_round: ledger_progress.map(|(_, _, round)| round),
        })
    }

    /// Waits until every connected peer has published for `round`, or until the gather point;
    /// returns the network's status then, when every peer in this round is still connected.
    /// A peer's message ends the wait at once; the connected peers are read again every
    /// [`PEERS_RECHECK`].
    fn gather(&self, round: u64) -> NetworkStatus {
        let deadline = self.clock.point_in(round, GATHER_SHARE);
        loop {
            let status = self.runtime.block_on(self.network.status());
            let left = RoundClock::until(Timestamp::now(), deadline);
            let wait = left.min(PEERS_RECHECK);
            if status.connected_peers.is_empty() {
                if left.is_zero() {
                    return status;
                }
                std::thread::sleep(wait);
                continue;
            }
            if self
                .inbox
                .wait_for_all(round, &status.connected_peers, wait)
                || left.is_zero()
            {
                return status;
            }
        }
    }

    /// Publishes this round's groups, in as many messages as the size limit needs; whether any
    /// reached a peer. Failing to publish is never fatal: the member trains alone meanwhile.
    fn publish(&self, round: u64, groups: &[Group]) -> bool {
        let shared = self.learner.share(groups);
        let mut any = false;
        for message in split_messages(
            round,
            self.peer_id,
            shared,
            &Limits::default(),
            swarm_node_config::limits::MESSAGES_PER_PEER_PER_ROUND as usize,
        ) {
            match self
                .runtime
                .block_on(self.network.publish(swarm_p2p::encode(&message)))
            {
                Ok(()) => any = true,
                Err(NetworkError::NoPeers) => {
                    tracing::info!(round, "no peer subscribed yet; training on own rollouts");
                    return false;
                }
                Err(err) => tracing::warn!(round, %err, "cannot publish rollouts"),
            }
        }
        any
    }

    /// Saves a checkpoint after every `everyRounds`-th round; whether it did.
    fn checkpoint(&self, round: u64) -> Result<bool, NodeError> {
        let Some(checkpoints) = &self.config.checkpoints else {
            return Ok(false);
        };
        if !(round + 1).is_multiple_of(u64::from(checkpoints.every_rounds.max(1))) {
            return Ok(false);
        }
        self.learner
            .checkpoint(Path::new(&checkpoints.dir), round)?;
        Ok(true)
    }
}

/// The round's winner as this member saw it: whoever's completions (its own, or a peer's as
/// re-scored here) earned the highest mean reward; itself on a tie, so a vote is never wasted
/// on a peer that did no better.
fn winner(me: PeerId, own_reward: f64, by_author: &[(PeerId, f64, usize)]) -> String {
    let mut best = (me, own_reward);
    for (peer, total, count) in by_author {
        let mean = total / (*count).max(1) as f64;
        if mean > best.1 {
            best = (*peer, mean);
        }
    }
    best.0.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_winner_is_the_best_mean_reward_and_ties_go_to_the_voter() {
        let (me, a, b) = (PeerId::random(), PeerId::random(), PeerId::random());
        let seen = [(a, 3.0, 8), (b, 6.0, 8)];
        assert_eq!(winner(me, 0.5, &seen), b.to_string());
        assert_eq!(winner(me, 0.75, &seen), me.to_string());
        assert_eq!(winner(me, 0.0, &[]), me.to_string());
    }
}
