//! Back-pressure for a burst bigger than the readers can take: how many members are congested
//! (more than half their queue limit unsent), and a signal for senders waiting for that to end.
//!
//! Only [`Outbox`](super::Outbox) changes the count: a client is counted when its lag passes half
//! the limit and uncounted when its writer brings it back under (or when it closes), each under
//! the outbox's own flag, so increments and decrements pair up by construction and no caller ever
//! sees the states. Senders call [`Congestion::until_relieved`], which waits for the relief signal,
//! not by polling: while the congested readers keep writing it waits on (they are slow, not
//! stalled, and would lose nothing), but a reader that wrote nothing for [`STALL`] cannot hold the
//! room (it will be cut off when its queue overflows), and no pause lasts longer than [`MAX_PAUSE`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A pause ends when no congested reader has written anything for this long...
pub(crate) const STALL: Duration = Duration::from_millis(100);
/// ...and in any case after this long, so a reader that trickles cannot set the room's pace.
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(1);

/// The room's congestion: shared by every outbox in it and the senders that pause for it.
#[derive(Debug, Default)]
pub struct Congestion {
    count: AtomicUsize,
    /// Bumped when a congested reader's writer makes progress (wrapping; compared for change).
    progress: AtomicU32,
    /// Woken when a reader stops being congested.
    relieved: Notify,
}

impl Congestion {
    /// How many clients are congested now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// True while some client is congested. Lock-free: senders ask before each read.
    pub fn any(&self) -> bool {
        self.count() > 0
    }

    pub(super) fn enter(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn leave(&self) {
        // Pairs with the `enter` of the same client (the outbox's flag makes each transition
        // happen once), so this cannot underflow.
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.relieved.notify_waiters();
    }

    pub(super) fn progressed(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits until no client is congested, or the congested ones stall, or [`MAX_PAUSE`] passes.
    pub(crate) async fn until_relieved(self: Arc<Self>) {
        let start = Instant::now();
        let deadline = start + MAX_PAUSE;
        let mut stall_at = start + STALL;
        let mut seen = self.progress.load(Ordering::Relaxed);
        // Bounded: every round either returns or waits for a wake-up or a deadline that moves
        // forward by STALL, and the deadline caps it.
        loop {
            let relieved = self.relieved.notified();
            tokio::pin!(relieved);
            relieved.as_mut().enable();
            if !self.any() {
                return;
            }
            let wake_at = stall_at.min(deadline);
            if tokio::time::timeout_at(wake_at, relieved).await.is_ok() {
                continue;
            }
            let now = Instant::now();
            let progress = self.progress.load(Ordering::Relaxed);
            if now >= deadline || progress == seen {
                return;
            }
            seen = progress;
            stall_at = now + STALL;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pause_ends_on_relief_at_once() {
        let c = Arc::new(Congestion::default());
        c.enter();
        let waiter = tokio::spawn(c.clone().until_relieved());
        tokio::task::yield_now().await;
        let t0 = Instant::now();
        c.leave();
        waiter.await.unwrap();
        assert_eq!(Instant::now(), t0, "no timer was needed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_reader_holds_senders_for_the_stall_time_only() {
        let c = Arc::new(Congestion::default());
        c.enter();
        let t0 = Instant::now();
        c.clone().until_relieved().await;
        assert_eq!(Instant::now() - t0, STALL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_draining_reader_holds_senders_up_to_the_cap() {
        let c = Arc::new(Congestion::default());
        c.enter();
        let t0 = Instant::now();
        let waiter = tokio::spawn(c.clone().until_relieved());
        // Progress every 50 ms, never relieved: the pause lasts MAX_PAUSE, then gives up.
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.progressed();
            if waiter.is_finished() {
                break;
            }
        }
        waiter.await.unwrap();
        let waited = Instant::now() - t0;
        assert!(
            waited >= MAX_PAUSE && waited < MAX_PAUSE + STALL,
            "{waited:?}"
        );
    }
}
