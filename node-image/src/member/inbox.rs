//! Peers' accepted rollouts by round: the network's task files them, the round loop waits for
//! them and takes them. A filing wakes the waiting round loop at once; nothing polls.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use libp2p::PeerId;
use swarm_p2p::{Received, SharedGroup};

/// Peers' accepted rollouts by round, until the round's training takes them.
#[derive(Debug, Default)]
struct Rounds {
    rounds: BTreeMap<u64, Vec<(PeerId, Vec<SharedGroup>)>>,
    /// Rounds up to here were taken: later arrivals for them are too late to use.
    taken_through: Option<u64>,
}

impl Rounds {
    fn file(&mut self, received: Received) {
        let round = received.message.round;
        if self.taken_through.is_some_and(|taken| round <= taken) {
            return;
        }
        self.rounds
            .entry(round)
            .or_default()
            .push((received.author, received.message.groups));
    }

    /// Whether every one of `peers` has sent something for `round`.
    fn has_all(&self, round: u64, peers: &[PeerId]) -> bool {
        let received = self.rounds.get(&round).map_or(&[][..], Vec::as_slice);
        peers
            .iter()
            .all(|peer| received.iter().any(|(author, _)| author == peer))
    }

    /// Everything received for `round` and earlier.
    fn take(&mut self, round: u64) -> Vec<(PeerId, Vec<SharedGroup>)> {
        let later = self.rounds.split_off(&(round + 1));
        let taken = std::mem::replace(&mut self.rounds, later);
        self.taken_through = Some(round);
        taken.into_values().flatten().collect()
    }
}

/// The rounds, shared between the network's task, which files, and the round loop, which waits.
#[derive(Debug, Default)]
pub(super) struct Inbox {
    rounds: Mutex<Rounds>,
    filed: Condvar,
}

impl Inbox {
    pub(super) fn file(&self, received: Received) {
        self.rounds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .file(received);
        self.filed.notify_all();
    }

    /// Waits until every one of `peers` has sent something for `round`, or `timeout` has passed;
    /// whether they all have.
    pub(super) fn wait_for_all(&self, round: u64, peers: &[PeerId], timeout: Duration) -> bool {
        let rounds = self.rounds.lock().unwrap_or_else(PoisonError::into_inner);
        let (rounds, _) = self
            .filed
            .wait_timeout_while(rounds, timeout, |rounds| !rounds.has_all(round, peers))
            .unwrap_or_else(PoisonError::into_inner);
        rounds.has_all(round, peers)
    }

    /// Everything received for `round` and earlier; what arrives for them later is dropped.
    pub(super) fn take(&self, round: u64) -> Vec<(PeerId, Vec<SharedGroup>)> {
        self.rounds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(round)
    }
}

/// Files what the network accepted until the network stops.
pub(super) async fn file_messages(
    mut incoming: tokio::sync::mpsc::Receiver<Received>,
    inbox: std::sync::Arc<Inbox>,
) {
    while let Some(received) = incoming.recv().await {
        inbox.file(received);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use swarm_p2p::RolloutMessage;

    use super::*;
    use crate::exchange::tests::shared;

    fn received(peer: PeerId, round: u64) -> Received {
        Received {
            message: RolloutMessage {
                round,
                sender: peer,
                groups: vec![shared(1)],
            },
            author: peer,
            received_at: Instant::now(),
        }
    }

    #[test]
    fn inbox_hands_out_a_round_once_and_drops_late_arrivals() {
        let peer = PeerId::random();
        let inbox = Inbox::default();
        for round in [3, 4, 5] {
            inbox.file(received(peer, round));
        }
        let no_wait = Duration::ZERO;
        assert!(inbox.wait_for_all(5, &[peer], no_wait));
        assert!(!inbox.wait_for_all(5, &[peer, PeerId::random()], no_wait));
        assert!(!inbox.wait_for_all(6, &[peer], no_wait));
        assert!(inbox.wait_for_all(6, &[], no_wait));
        assert_eq!(inbox.take(4).len(), 2);
        inbox.file(received(peer, 4));
        assert!(inbox.take(4).is_empty());
        assert_eq!(inbox.take(5).len(), 1);
    }

    #[test]
    fn a_filing_wakes_the_waiter() {
        let (early, late) = (PeerId::random(), PeerId::random());
        let inbox = Arc::new(Inbox::default());
        inbox.file(received(early, 7));
        let filer = {
            let inbox = Arc::clone(&inbox);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                inbox.file(received(late, 7));
            })
        };
        // Woken by the filing, long before the timeout (which would also end the wait, with
        // the same answer, so the elapsed time is what shows the wake-up).
        let timeout = Duration::from_secs(60);
        let started = Instant::now();
        assert!(inbox.wait_for_all(7, &[early, late], timeout));
        assert!(started.elapsed() < timeout / 2, "{:?}", started.elapsed());
        filer.join().unwrap();
        assert!(!inbox.wait_for_all(8, &[early], Duration::from_millis(10)));
    }
}
