//! Admission to the admin socket: a fixed number of slots for callers that passed the credential
//! check. When every slot is taken, the connection that has gone longest without a complete request
//! is closed to make room, so an operator's `chatctl` always gets through: allowed callers that hog
//! slots can only delay each other, and strangers never hold one (they are refused before admission).

use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The slot table.
#[derive(Debug)]
pub(super) struct Slots {
    max: usize,
    held: Mutex<Vec<Held>>,
}

#[derive(Debug)]
struct Held {
    id: u64,
    uid: u32,
    pid: i32,
    /// When the connection was admitted or last sent a complete request.
    active: Instant,
    evict: CancellationToken,
}

/// One admitted connection's slot; freed when dropped.
#[derive(Debug)]
pub(super) struct Slot {
    slots: Arc<Slots>,
    id: u64,
    evict: CancellationToken,
}

impl Slots {
    pub(super) fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max: max.max(1),
            held: Mutex::new(Vec::new()),
        })
    }

    /// Admits a connection, closing the longest-idle one first when all slots are taken.
    pub(super) fn admit(self: &Arc<Self>, id: u64, uid: u32, pid: i32) -> Slot {
        let evict = CancellationToken::new();
        let now = Instant::now();
        let mut held = self.lock();
        if held.len() >= self.max
            && let Some(oldest) = (0..held.len()).min_by_key(|&i| held[i].active)
        {
            let gone = held.swap_remove(oldest);
            gone.evict.cancel();
            info!(
                uid = gone.uid,
                pid = gone.pid,
                idle_ms = now.duration_since(gone.active).as_millis() as u64,
                by_uid = uid,
                event = "admin_evicted",
                "admin connection closed to admit a new one"
            );
        }
        held.push(Held {
            id,
            uid,
            pid,
            active: now,
            evict: evict.clone(),
        });
        Slot {
            slots: self.clone(),
            id,
            evict,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Slot {
    /// Records a complete request: this connection is no longer idle.
    pub(super) fn touch(&self) {
        if let Some(h) = self.slots.lock().iter_mut().find(|h| h.id == self.id) {
            h.active = Instant::now();
        }
    }

    /// Resolves when the slot was given to a newer connection.
    pub(super) async fn evicted(&self) {
        self.evict.cancelled().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().retain(|h| h.id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_table_evicts_the_longest_idle() {
        let slots = Slots::new(2);
        let a = slots.admit(1, 0, 1);
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let b = slots.admit(2, 0, 2);
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        a.touch();
        // b is now the longest idle: admitted after a, but a sent a request since.
        let c = slots.admit(3, 0, 3);
        assert!(b.evict.is_cancelled() && !a.evict.is_cancelled());
        drop(b);
        assert_eq!(
            slots.lock().len(),
            2,
            "the evicted slot's drop frees nothing twice"
        );
        drop(c);
        let _d = slots.admit(4, 0, 4);
        assert!(
            !a.evict.is_cancelled(),
            "a free slot is used before evicting"
        );
    }
}
