//! Stopping, phase one: every session relays what its client already sent before the room
//! hears `*** server shutting down`.
//!
//! The coordinator hands each connection a [`DrainTicket`]; a session drops its ticket once it
//! has relayed its client's pending input, and a connection that closes first drops it with the
//! connection. The last ticket dropped wakes [`Drain::finished`]. Dropping is the only way to
//! give a ticket back, so every connection is counted exactly once whatever ends it (the
//! `_shutdown_complete` drop guard of mini-redis, counted).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Shared {
    outstanding: AtomicUsize,
    all_back: Notify,
}

/// The phase-one coordinator.
#[derive(Debug, Default)]
pub struct Drain {
    shared: Arc<Shared>,
}

/// One connection's share of the drain; dropping it says "done".
#[derive(Debug)]
pub struct DrainTicket {
    shared: Arc<Shared>,
}

impl Drain {
    /// A ticket for one more connection that must relay its input.
    pub fn ticket(&self) -> DrainTicket {
        self.shared.outstanding.fetch_add(1, Ordering::SeqCst);
        DrainTicket {
            shared: self.shared.clone(),
        }
    }

    /// Resolves once every ticket handed out has been dropped.
    pub async fn finished(&self) {
        loop {
            let back = self.shared.all_back.notified();
            tokio::pin!(back);
            back.as_mut().enable();
            if self.shared.outstanding.load(Ordering::SeqCst) == 0 {
                return;
            }
            back.await;
        }
    }
}

impl Drop for DrainTicket {
    fn drop(&mut self) {
        if self.shared.outstanding.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.all_back.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn finishes_when_the_last_ticket_is_dropped() {
        let drain = Drain::default();
        drain.finished().await; // none handed out
        let (a, b) = (drain.ticket(), drain.ticket());
        drop(a);
        // Paused clock: the timeout passes as soon as nothing else can run, so this is a check
        // that `finished` stays pending, not a sleep.
        let early = tokio::time::timeout(Duration::from_millis(20), drain.finished()).await;
        assert!(early.is_err(), "one ticket is still out");
        let waiter = async {
            drain.finished().await;
        };
        let dropper = async move {
            tokio::task::yield_now().await;
            drop(b);
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(waiter, dropper)
        })
        .await
        .expect("finished after the last drop");
    }
}
