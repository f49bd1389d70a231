//! The node's metrics: on `/metrics` always, and over OTLP when an endpoint is configured. Most
//! are recorded from a round's report, so the report and the metrics never disagree.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use swarm_telemetry::{Counter, Gauge, Histogram, Metrics, exponential_buckets};

use crate::report::RoundReport;

#[derive(Clone)]
pub struct NodeMetrics {
    rounds: Counter,
    round: Gauge,
    reward: Gauge,
    accuracy: Gauge,
    loss: Gauge,
    tokens_per_second: Gauge,
    sample_seconds: Histogram,
    train_seconds: Histogram,
    groups_trained: Counter,
    peers: Gauge,
    messages_accepted: Counter,
    messages_rejected: Counter,
    ledger_submissions: Counter,
    ledger_failures: Counter,
    ledger_pending: Gauge,
    /// The network's message counts are totals since start; these are the totals last recorded,
    /// so each round adds only what is new.
    seen: Arc<Mutex<SeenMessages>>,
}

#[derive(Default)]
struct SeenMessages {
    accepted: u64,
    rejected: BTreeMap<String, u64>,
}

/// What became of one round's ledger submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerOutcome {
    Recorded,
    /// The contract refused it for good.
    Refused,
    /// Dropped from a full queue while the ledger was unreachable.
    GivenUp,
}

impl NodeMetrics {
    pub fn register(metrics: &mut Metrics) -> Self {
        let seconds = || exponential_buckets(0.01, 2.0, 14);
        Self {
            rounds: metrics.counter("swarm_node_rounds", "Rounds trained"),
            round: metrics.gauge("swarm_node_round", "The round trained last"),
            reward: metrics.gauge(
                "swarm_node_reward",
                "Mean reward of the last round: source=local for the node's own completions, \
                 source=external for peers' completions as re-scored here",
            ),
            accuracy: metrics.gauge(
                "swarm_node_accuracy",
                "Mean reward of the node's own completions in the last round per task family \
                 (the accuracy, the verifiers being exact)",
            ),
            loss: metrics.gauge("swarm_node_loss", "GRPO loss of the last training step"),
            tokens_per_second: metrics.gauge(
                "swarm_node_sampling_tokens_per_second",
                "Completion tokens generated per second in the last round",
            ),
            sample_seconds: metrics.histogram(
                "swarm_node_sample_seconds",
                "Time to generate a round's completions",
                seconds(),
            ),
            train_seconds: metrics.histogram(
                "swarm_node_train_step_seconds",
                "Time of a round's GRPO step (checkpoint included)",
                seconds(),
            ),
            groups_trained: metrics.counter(
                "swarm_node_groups_trained",
                "Question groups trained on, by source (local or external)",
            ),
            peers: metrics.gauge("swarm_node_peers_connected", "Peers connected"),
            messages_accepted: metrics.counter(
                "swarm_node_messages_accepted",
                "Peers' rollout messages accepted",
            ),
            messages_rejected: metrics.counter(
                "swarm_node_messages_rejected",
                "Peers' rollout messages rejected, by reason",
            ),
            ledger_submissions: metrics.counter(
                "swarm_node_ledger_submissions",
                "Rounds settled with the ledger, by outcome (recorded, refused, given_up)",
            ),
            ledger_failures: metrics.counter(
                "swarm_node_ledger_failures",
                "Ledger submission attempts that failed and were retried later",
            ),
            ledger_pending: metrics.gauge(
                "swarm_node_ledger_pending",
                "Rounds waiting to be recorded on the ledger",
            ),
            seen: Arc::default(),
        }
    }

    pub fn record_round(&self, report: &RoundReport) {
        self.rounds.inc(&[]);
        self.round.set(report.round as f64, &[]);
        self.reward.set(report.reward, &[("source", "local")]);
        if let Some(external) = report.external_reward {
            self.reward.set(external, &[("source", "external")]);
        }
        for (family, reward) in &report.reward_by_source {
            self.accuracy.set(*reward, &[("family", family)]);
        }
        if let Some(loss) = report.loss {
            self.loss.set(loss, &[]);
        }
        if report.sample_seconds > 0.0 {
            self.tokens_per_second
                .set(report.tokens as f64 / report.sample_seconds, &[]);
        }
        self.sample_seconds.observe(report.sample_seconds, &[]);
        self.train_seconds.observe(report.train_seconds, &[]);
        self.groups_trained
            .inc_by(report.trained_local as u64, &[("source", "local")]);
        self.groups_trained
            .inc_by(report.trained_external as u64, &[("source", "external")]);
        self.peers.set(report.peers as f64, &[]);
        if let Some(pending) = report.ledger_pending {
            self.ledger_pending.set(pending as f64, &[]);
        }

        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        self.messages_accepted
            .inc_by(report.messages_accepted.saturating_sub(seen.accepted), &[]);
        seen.accepted = seen.accepted.max(report.messages_accepted);
        for (reason, total) in &report.messages_rejected {
            let before = seen.rejected.entry(reason.clone()).or_default();
            self.messages_rejected
                .inc_by(total.saturating_sub(*before), &[("reason", reason)]);
            *before = (*before).max(*total);
        }
    }

    pub fn ledger_settled(&self, outcome: LedgerOutcome) {
        let outcome = match outcome {
            LedgerOutcome::Recorded => "recorded",
            LedgerOutcome::Refused => "refused",
            LedgerOutcome::GivenUp => "given_up",
        };
        self.ledger_submissions.inc(&[("outcome", outcome)]);
    }

    pub fn ledger_failed(&self) {
        self.ledger_failures.inc(&[]);
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn a_round_report_becomes_metrics_and_message_totals_are_not_counted_twice() {
        let mut registry = Metrics::new(None);
        let metrics = NodeMetrics::register(&mut registry);
        let mut report = RoundReport {
            round: 4,
            reward: 0.5,
            external_reward: Some(0.25),
            reward_by_source: BTreeMap::from([("basic_arithmetic".to_owned(), 0.5)]),
            tokens: 300,
            sample_seconds: 1.5,
            train_seconds: 0.5,
            trained_local: 3,
            trained_external: 2,
            peers: 3,
            messages_accepted: 5,
            messages_rejected: BTreeMap::from([("wrong_round".to_owned(), 2)]),
            loss: Some(0.125),
            ..RoundReport::default()
        };
        metrics.record_round(&report);
        report.round = 5;
        report.messages_accepted = 8;
        report.messages_rejected.insert("wrong_round".to_owned(), 3);
        metrics.record_round(&report);
        metrics.ledger_settled(LedgerOutcome::Recorded);
        metrics.ledger_failed();

        let mut text = String::new();
        encode(&mut text, &registry.into_registry()).unwrap();
        for line in [
            "swarm_node_rounds_total 2",
            "swarm_node_round 5.0",
            "swarm_node_reward{source=\"local\"} 0.5",
            "swarm_node_reward{source=\"external\"} 0.25",
            "swarm_node_accuracy{family=\"basic_arithmetic\"} 0.5",
            "swarm_node_sampling_tokens_per_second 200.0",
            "swarm_node_groups_trained_total{source=\"local\"} 6",
            "swarm_node_groups_trained_total{source=\"external\"} 4",
            "swarm_node_peers_connected 3.0",
            "swarm_node_messages_accepted_total 8",
            "swarm_node_messages_rejected_total{reason=\"wrong_round\"} 3",
            "swarm_node_train_step_seconds_count 2",
            "swarm_node_ledger_submissions_total{outcome=\"recorded\"} 1",
            "swarm_node_ledger_failures_total 1",
            "swarm_node_loss 0.125",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
