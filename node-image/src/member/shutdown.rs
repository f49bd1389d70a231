//! SIGTERM and SIGINT: how the kubelet (and a local swarm) asks a node to stop. In a container the
//! node is PID 1, for which the kernel has no default action on these signals: without a handler a
//! deleted pod would wait out its whole grace period and then be killed. Checkpoints are written
//! atomically (a `.tmp` folder renamed when complete), so stopping between rounds loses nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

use super::NodeError;

/// How often a sleeping training thread looks whether a stop was asked for.
const POLL: Duration = Duration::from_millis(100);

/// Whether a stop was asked for; cheap to clone.
#[derive(Clone, Debug)]
pub(super) struct Shutdown {
    requested: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Shutdown {
    /// Listens for SIGTERM and SIGINT on `runtime`.
    pub(super) fn listen(runtime: &Runtime) -> Result<Self, NodeError> {
        let _context = runtime.enter();
        let mut terminate = signal(SignalKind::terminate()).map_err(NodeError::Signals)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(NodeError::Signals)?;
        let shutdown = Self {
            requested: Arc::new(AtomicBool::new(false)),
            notify: Arc::new(Notify::new()),
        };
        let on_signal = shutdown.clone();
        runtime.spawn(async move {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            tracing::info!("{name}: stopping after the current round");
            on_signal.requested.store(true, Ordering::SeqCst);
            on_signal.notify.notify_waiters();
        });
        Ok(shutdown)
    }

    pub(super) fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Sleeps for `duration` on this (non-async) thread, or less when a stop is asked for; whether
    /// the whole time passed.
    pub(super) fn sleep(&self, duration: Duration) -> bool {
        let end = Instant::now() + duration;
        loop {
            if self.requested() {
                return false;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(POLL));
        }
    }

    /// Resolves once a stop is asked for.
    pub(super) async fn wait(&self) {
        let notified = self.notify.notified();
        if !self.requested() {
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_stop_ends_a_sleep_early_and_a_wait() {
        let runtime = runtime();
        let shutdown = Shutdown {
            requested: Arc::new(AtomicBool::new(false)),
            notify: Arc::new(Notify::new()),
        };
        assert!(shutdown.sleep(Duration::from_millis(1)));
        let stopper = shutdown.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            stopper.requested.store(true, Ordering::SeqCst);
            stopper.notify.notify_waiters();
        });
        assert!(
            !shutdown.sleep(Duration::from_secs(600)),
            "the stop ends the sleep"
        );
        thread.join().unwrap();
        // Asked before the wait began: it returns at once.
        runtime.block_on(shutdown.wait());
    }
}
