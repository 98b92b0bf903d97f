//! The room's output as one append-only log: the single order every member sees.
//!
//! Publishing appends one [`Entry`] under the room's lock, which is O(1) whatever the room's
//! size: nothing is pushed to, locked for or woken in any recipient there. Each member's writer
//! keeps a cursor (an `Arc` of the last entry it consumed) and walks the `next` links without any
//! lock, so the publisher can write to everyone's socket after unlocking (see `outbox`).
//! Memory: an entry lives while some cursor still points at or before it. A member that stops
//! reading pins the log behind it until its lag passes `max_queue_bytes` and it is cut off, so the
//! log is bounded by that limit plus what is in flight.
//!
//! Positions: every room has its own log, and a position is its room's *slot* (top 16 bits) and
//! a byte offset (low 48 bits). A slot freed by a room that closed is given to the next new room
//! with the offset carried on, so within a slot positions only grow, and a position from one room
//! is never taken for one in another: [`same_log`] tells them apart, so a client that has just
//! moved is not judged by the room it left. 2^48 bytes (256 TiB) per slot is years of any chat.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::client::ClientId;

/// The sender id of lines nobody in the room said (notices): delivered to everyone.
pub(crate) const NOBODY: ClientId = 0;

/// Where a position's slot starts.
const SLOT_SHIFT: u32 = 48;

/// Slots rooms can have: 1 to this (0 sorts before every room, the top one is "no room").
pub(crate) const MAX_SLOT: u16 = u16::MAX - 1;

/// True if positions `a` and `b` are in the same room's log.
pub(crate) fn same_log(a: u64, b: u64) -> bool {
    a >> SLOT_SHIFT == b >> SLOT_SHIFT
}

/// The first position of `slot`.
pub(crate) fn slot_start(slot: u16) -> u64 {
    u64::from(slot) << SLOT_SHIFT
}

/// One published buffer: some whole lines, formatted once and shared by every recipient.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Who said it: that member skips it (no echo). [`NOBODY`] for notices.
    pub(crate) from: ClientId,
    pub(crate) bytes: Bytes,
    /// Lines in `bytes`, for the per-client counters.
    pub(crate) lines: u32,
    /// The log's length in bytes up to and including this entry: a member's lag is the tail's
    /// `end` minus its cursor's.
    pub(crate) end: u64,
    next: OnceLock<Arc<Entry>>,
}

impl Entry {
    /// The start of a log at position `at`: an empty entry that everyone has already consumed.
    pub(crate) fn origin(at: u64) -> Arc<Entry> {
        Arc::new(Entry {
            from: NOBODY,
            bytes: Bytes::new(),
            lines: 0,
            end: at,
            next: OnceLock::new(),
        })
    }

    /// The entry after this one, once it has been published.
    pub(crate) fn next(&self) -> Option<&Arc<Entry>> {
        self.next.get()
    }

    /// Where this entry starts in the log.
    pub(crate) fn start(&self) -> u64 {
        self.end - self.bytes.len() as u64
    }
}

impl Drop for Entry {
    /// Frees a chain of entries nobody points at any more one by one: the default recursive drop
    /// would overflow the stack when a long-stalled cursor lets go of thousands at once.
    fn drop(&mut self) {
        let mut next = self.next.take();
        while let Some(entry) = next {
            match Arc::try_unwrap(entry) {
                Ok(mut entry) => next = entry.next.take(),
                Err(_) => break,
            }
        }
    }
}

/// The writing end of a log. Owned by the room, under its lock.
#[derive(Debug)]
pub(crate) struct Log {
    tail: Arc<Entry>,
}

impl Default for Log {
    fn default() -> Self {
        Log::starting_at(0)
    }
}

impl Log {
    /// An empty log whose positions start at `at`.
    pub(crate) fn starting_at(at: u64) -> Log {
        Log {
            tail: Entry::origin(at),
        }
    }

    /// Appends `bytes` (holding `lines` lines) said by `from`; returns the new tail.
    pub(crate) fn append(&mut self, from: ClientId, bytes: Bytes, lines: u32) -> Arc<Entry> {
        let entry = Arc::new(Entry {
            from,
            end: self.tail.end + bytes.len() as u64,
            bytes,
            lines,
            next: OnceLock::new(),
        });
        // The tail's `next` is only ever set here, under the room's lock, so it is empty.
        let _ = self.tail.next.set(entry.clone());
        self.tail = entry.clone();
        entry
    }

    /// The last entry: where a member who joins now starts reading.
    pub(crate) fn tail(&self) -> &Arc<Entry> {
        &self.tail
    }

    /// The log's length in bytes.
    pub(crate) fn end(&self) -> u64 {
        self.tail.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_link_in_order_and_count_bytes() {
        let mut log = Log::default();
        let start = log.tail().clone();
        log.append(1, Bytes::from_static(b"a\r\n"), 1);
        log.append(NOBODY, Bytes::from_static(b"bb\r\n"), 1);
        let first = start.next().unwrap();
        assert_eq!((first.from, first.start(), first.end), (1, 0, 3));
        let second = first.next().unwrap();
        assert_eq!((second.start(), second.end), (3, 7));
        assert!(second.next().is_none());
        assert_eq!(log.end(), 7);
    }

    #[test]
    fn a_long_unreferenced_chain_drops_without_recursion() {
        let mut log = Log::default();
        let start = log.tail().clone();
        for _ in 0..1_000_000 {
            log.append(1, Bytes::from_static(b"x\r\n"), 1);
        }
        drop(log);
        // One million nested drops would overflow a test thread's stack.
        drop(start);
    }
}
