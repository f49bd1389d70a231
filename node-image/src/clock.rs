//! Round numbers from wall-clock time: round `r` runs from `start + r·duration` for one duration,
//! so every member with a synchronised clock agrees on the round without a coordinator.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// Share of a round after which a member that is late (just started, or finished the previous
/// round late) waits for the next round instead of joining this one: joining late would publish
/// rollouts after most peers have stopped gathering.
const LATE_JOIN_SHARE: f64 = 0.25;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundClock {
    start: Timestamp,
    duration: Duration,
}

impl RoundClock {
    /// `duration` must be positive; the node config guarantees at least a second.
    pub fn new(start: Timestamp, duration: Duration) -> Self {
        Self {
            start,
            duration: duration.max(Duration::from_millis(1)),
        }
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The round running at `now`; `None` before round 0 begins.
    pub fn round_at(&self, now: Timestamp) -> Option<u64> {
        let elapsed = Duration::try_from(now.duration_since(self.start)).ok()?;
        u64::try_from(elapsed.as_nanos() / self.duration.as_nanos()).ok()
    }

    /// When `round` begins.
    pub fn start_of(&self, round: u64) -> Timestamp {
        let nanos = self.duration.as_nanos().saturating_mul(u128::from(round));
        let offset = i64::try_from(nanos).map_or(SignedDuration::MAX, SignedDuration::from_nanos);
        self.start.saturating_add(offset).unwrap_or(Timestamp::MAX)
    }

    /// The point `share` (0..1) of the way through `round`.
    pub fn point_in(&self, round: u64, share: f64) -> Timestamp {
        let into = self.duration.mul_f64(share.clamp(0.0, 1.0));
        let into = SignedDuration::try_from(into).unwrap_or(SignedDuration::ZERO);
        self.start_of(round)
            .saturating_add(into)
            .unwrap_or(Timestamp::MAX)
    }

    /// The round to work on next, given the last one worked on (`None` at start-up): the one after
    /// it, or the current round if the node has fallen behind, or the following one if the current
    /// round is already too far along to join.
    pub fn next_round(&self, last: Option<u64>, now: Timestamp) -> u64 {
        let after_last = last.map_or(0, |r| r + 1);
        let Some(current) = self.round_at(now) else {
            return after_last;
        };
        if after_last > current {
            return after_last;
        }
        if now < self.point_in(current, LATE_JOIN_SHARE) {
            current
        } else {
            current + 1
        }
    }

    /// How long from `now` until `at`; zero when `at` has passed.
    pub fn until(now: Timestamp, at: Timestamp) -> Duration {
        Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> RoundClock {
        RoundClock::new(
            "2026-11-25T00:00:00Z".parse().unwrap(),
            Duration::from_secs(10),
        )
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn rounds_follow_the_wall_clock() {
        let clock = clock();
        assert_eq!(clock.round_at(at("2026-11-24T23:59:59Z")), None);
        assert_eq!(clock.round_at(at("2026-11-25T00:00:00Z")), Some(0));
        assert_eq!(clock.round_at(at("2026-11-25T00:00:09.999Z")), Some(0));
        assert_eq!(clock.round_at(at("2026-11-25T00:00:10Z")), Some(1));
        assert_eq!(clock.round_at(at("2026-11-25T01:00:05Z")), Some(360));
        assert_eq!(clock.start_of(360), at("2026-11-25T01:00:00Z"));
        assert_eq!(clock.point_in(1, 0.5), at("2026-11-25T00:00:15Z"));
    }

    #[test]
    fn next_round_joins_early_and_skips_ahead_when_behind() {
        let clock = clock();
        // Before the swarm starts: round 0, waited for.
        assert_eq!(clock.next_round(None, at("2026-11-24T23:00:00Z")), 0);
        // Started 2 s into round 3: early enough to join it.
        assert_eq!(clock.next_round(None, at("2026-11-25T00:00:32Z")), 3);
        // Started 7 s into round 3: wait for round 4.
        assert_eq!(clock.next_round(None, at("2026-11-25T00:00:37Z")), 4);
        // Finished round 3 within it: round 4 next.
        assert_eq!(clock.next_round(Some(3), at("2026-11-25T00:00:39Z")), 4);
        // Round 3 overran into round 6: rounds 4 and 5 are skipped.
        assert_eq!(clock.next_round(Some(3), at("2026-11-25T00:01:01Z")), 6);
        assert_eq!(clock.next_round(Some(3), at("2026-11-25T00:01:08Z")), 7);
    }

    #[test]
    fn until_never_goes_negative() {
        let now = at("2026-11-25T00:00:05Z");
        assert_eq!(
            RoundClock::until(now, at("2026-11-25T00:00:07Z")),
            Duration::from_secs(2)
        );
        assert_eq!(
            RoundClock::until(now, at("2026-11-25T00:00:01Z")),
            Duration::ZERO
        );
    }
}
