//! The accept gate: how an upgrade stops new connections being accepted while it hands the
//! listeners over, and waits until every accept loop has parked. Separate from the upgrade
//! protocol because every accept loop (chat, TLS, HTTP, WebSocket) holds one, upgrade or not.

use std::time::Duration;

use tokio::sync::watch;

/// Whether the accept loops take new connections: closed while a hand-over is under way, so
/// newcomers wait in the kernel's listen backlog for whichever process serves next.
#[derive(Debug, Clone)]
pub struct AcceptGate {
    open: watch::Sender<bool>,
    /// Chat accept loops waiting at the closed gate: once all are, no connection is between
    /// `accept` and its session (one accepted as the gate closed is registered first).
    parked: watch::Sender<usize>,
}

impl Default for AcceptGate {
    fn default() -> Self {
        AcceptGate {
            open: watch::Sender::new(true),
            parked: watch::Sender::new(0),
        }
    }
}

/// Counts one accept loop as parked while it lives.
struct Parked<'a>(&'a watch::Sender<usize>);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl AcceptGate {
    pub(super) fn set(&self, open: bool) {
        self.open.send_replace(open);
    }

    /// For a chat accept loop: waits while the gate is closed, counted as parked.
    pub async fn park_until_open(&self) {
        self.parked.send_modify(|n| *n += 1);
        let _parked = Parked(&self.parked);
        self.opened().await;
    }

    /// Closes the gate and waits (at most `limit`) until `loops` chat accept loops are parked.
    pub(super) async fn close_and_settle(&self, loops: usize, limit: Duration) -> bool {
        self.set(false);
        let mut parked = self.parked.subscribe();
        tokio::time::timeout(limit, parked.wait_for(|n| *n >= loops))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Resolves at once while open, else when opened again.
    pub async fn opened(&self) {
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }

    /// Resolves once closed.
    pub async fn closed(&self) {
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|open| !*open).await;
    }

    /// True while accepting.
    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }
}
