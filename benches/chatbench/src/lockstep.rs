//! `--lockstep`: a sender's next write waits until everything sent so far reached every receiver.
//!
//! With one line in flight per sender, a server never finds two lines of one sender in one read
//! and never has two lines queued for one receiver, whatever the machine's load: its work per
//! line no longer depends on timing, which is what an instruction count (benches/callgrind.sh)
//! needs. Readers add their data deliveries; senders wait on the total. Throughput and latency
//! figures of a lockstep run measure the round trip, not the server's capacity.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// Lines sent and delivered across the whole run, and a wake-up for senders waiting on them.
pub struct Lockstep {
    receivers: u64,
    sent: AtomicU64,
    delivered: AtomicU64,
    changed: Notify,
}

impl Lockstep {
    /// For a run in which every line is expected by `receivers` connections.
    pub fn new(receivers: u64) -> Lockstep {
        Lockstep {
            receivers,
            sent: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    /// A sender is about to write `lines` data lines.
    pub fn sending(&self, lines: u64) {
        self.sent.fetch_add(lines, Ordering::SeqCst);
    }

    /// A reader received `lines` data lines.
    pub fn delivered(&self, lines: u64) {
        self.delivered.fetch_add(lines, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Returns once every line announced with [`sending`](Self::sending) so far has reached
    /// every receiver. A lost line makes this wait forever: callers race it with the deadline.
    pub async fn settled(&self) {
        loop {
            // Registered before the check, so a delivery between the check and the wait wakes us.
            let mut changed = pin!(self.changed.notified());
            changed.as_mut().enable();
            let target = self.sent.load(Ordering::SeqCst) * self.receivers;
            if self.delivered.load(Ordering::SeqCst) >= target {
                return;
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn settles_only_when_every_receiver_has_every_line() {
        let ls = Arc::new(Lockstep::new(3));
        ls.settled().await; // nothing sent: settled at once
        ls.sending(2);
        ls.delivered(5);
        let mut waiting = tokio::spawn({
            let ls = ls.clone();
            async move { ls.settled().await }
        });
        // 5 of 6 deliveries: still waiting. (Proving that something does not happen takes a
        // window; nothing here waits for something to happen by sleeping.)
        let early = tokio::time::timeout(Duration::from_millis(50), &mut waiting).await;
        assert!(early.is_err(), "settled with a delivery missing");
        ls.delivered(1);
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("settled once the last delivery arrived")
            .unwrap();
    }
}
