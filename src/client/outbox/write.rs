//! The writer-lock protocol: who writes a client's output to its socket, and how much.
//!
//! Writing follows nats-server's "flush after the read": whoever produced output writes it. A
//! publisher, after appending to the room's log and unlocking, calls [`Outbox::flush`] for each
//! member; it takes the member's writer lock only if it is free (`try_lock`), writes with one
//! non-blocking `writev`, and moves on. Only when the socket would block is the client *parked*:
//! the session is woken once and writes the rest when the socket drains (and only it, so nobody
//! else spends syscalls on a full socket). A writer that finds the lock taken sets `dirty`, and
//! the holder looks again before it lets go, so no output is ever left behind (the two flags are
//! a Dekker pair: each side stores its own, then loads the other's, all `SeqCst`).
//!
//! An upgrade freezes the writer ([`Outbox::freeze_output`]): everything owed is taken, in order,
//! for the new process to send, and nothing more is written here unless it is thawed.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{Flushed, Lifecycle, Limits, Outbox, Writer, lock};
use crate::client::leave::{Close, LeaveReason};
use crate::client::socket::{Stream, WRITE_SLICES, advance, socket_error_reason, writev};
use crate::client::{ClientId, ClientStats};

/// `writev` calls one [`Outbox::flush`] makes before handing the rest to the session: a publisher
/// writes to many sockets after each read and must not spend its turn on one busy reader.
const FLUSH_WRITES: usize = 4;

thread_local! {
    /// Where a writer gathers the buffers of one `writev` (see [`Outbox::write`]).
    static SCRATCH: std::cell::RefCell<Vec<Bytes>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Outbox {
    /// Writes what is pending, as a publisher or anyone but the session: only if nobody else is
    /// writing and the session has not taken over. Never blocks.
    pub(crate) fn flush(
        &self,
        id: ClientId,
        stream: &Stream,
        stats: &ClientStats,
        limits: Limits<'_>,
    ) {
        self.dirty.store(true, Ordering::SeqCst);
        // Bounded: each round needs someone else to have added output meanwhile.
        for _ in 0..4 {
            if self.parked.load(Ordering::SeqCst) {
                return;
            }
            let Ok(mut w) = self.writer.try_lock() else {
                return; // the holder sees `dirty` before letting go
            };
            self.dirty.store(false, Ordering::SeqCst);
            let outcome = self.write(&mut w, id, stream, stats, limits);
            drop(w);
            match outcome {
                Flushed::Idle if !self.dirty.load(Ordering::SeqCst) => return,
                Flushed::Idle => {}
                // Socket full, or the end reached (the session closes the connection).
                Flushed::Parked | Flushed::Done(_) => return self.hand_to_session(),
                Flushed::Failed(reason) => {
                    self.record_failure(reason);
                    return self.hand_to_session();
                }
            }
        }
        // Output keeps coming while we write: let the session carry on.
        self.hand_to_session();
    }

    /// Ends the client for `reason` on behalf of a thread that cannot close it itself (the
    /// fan-out assistant, which judged it too slow): its session closes it, as after a write by
    /// someone else that failed.
    pub(crate) fn fail(&self, reason: LeaveReason) {
        self.record_failure(reason);
        self.hand_to_session();
    }

    /// From now on only the session writes; wake it.
    fn hand_to_session(&self) {
        self.parked.store(true, Ordering::SeqCst);
        self.ring();
    }

    /// Writes what is pending, as the session: waits for the writer lock, and takes over from
    /// publishers when the socket is full (the caller then waits until it is writable).
    pub(crate) fn flush_own(
        &self,
        id: ClientId,
        stream: &Stream,
        stats: &ClientStats,
        limits: Limits<'_>,
    ) -> Flushed {
        // Bounded: each round needs someone else to have added output meanwhile; after that the
        // session keeps the socket (parked) and comes back when it is writable.
        for _ in 0..4 {
            let mut w = lock(&self.writer);
            self.dirty.store(false, Ordering::SeqCst);
            let outcome = self.write(&mut w, id, stream, stats, limits);
            if outcome != Flushed::Idle {
                self.parked.store(true, Ordering::SeqCst);
                return outcome;
            }
            self.parked.store(false, Ordering::SeqCst);
            drop(w);
            if !self.dirty.load(Ordering::SeqCst) {
                return Flushed::Idle;
            }
        }
        self.parked.store(true, Ordering::SeqCst);
        Flushed::Parked
    }

    /// True while the session owns writing (socket full, or the end reached).
    pub(crate) fn is_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }

    /// Moves what others queued into the writer's hands; returns the close mark.
    // Inlined into the write loop, as it was when that was its only caller (an upgrade's
    // `freeze_output` is the other): out of line it costs the per-line path 7 % more instructions.
    #[inline(always)]
    pub(super) fn collect(&self, w: &mut Writer) -> Option<(u64, Close)> {
        if !self.mail.load(Ordering::SeqCst) {
            return None;
        }
        let mut mb = lock(&self.mailbox);
        // Cleared under the lock, and only a closed mailbox stays flagged (the close mark is
        // read on every write from then on).
        let closing = matches!(mb.state, Lifecycle::Closing { .. });
        self.mail.store(closing, Ordering::SeqCst);
        if let Some(start) = mb.start.take() {
            w.cursor = Some(start);
        }
        // Private lines are rare (replies, notices): an idle client keeps no capacity for them.
        w.private.extend(std::mem::take(&mut mb.queue));
        match &mb.state {
            Lifecycle::Open => None,
            Lifecycle::Closing { at, how } => Some((*at, how.clone())),
        }
    }

    /// Takes output in order into `out` (up to [`WRITE_SLICES`] buffers); returns lines taken.
    #[inline(always)]
    fn take(&self, w: &mut Writer, out: &mut Vec<Bytes>, id: ClientId, stop_at: u64) -> u64 {
        let mut lines = 0u64;
        while out.len() < WRITE_SLICES {
            let next = w
                .cursor
                .as_ref()
                .and_then(|c| c.next())
                .filter(|e| e.start() < stop_at)
                .cloned();
            let private_first = w
                .private
                .front()
                .is_some_and(|p| next.as_ref().is_none_or(|e| p.at <= e.start()));
            if private_first {
                let p = w.private.pop_front().expect("front exists");
                lines += u64::from(p.lines);
                out.push(p.bytes);
                continue;
            }
            let Some(entry) = next else { break };
            self.log_pos.store(entry.end, Ordering::SeqCst);
            if entry.from != id && !entry.bytes.is_empty() {
                self.held
                    .fetch_add(entry.bytes.len() as u64, Ordering::SeqCst);
                lines += u64::from(entry.lines);
                out.push(entry.bytes.clone());
            }
            w.cursor = Some(entry);
        }
        if w.private.is_empty() && w.private.capacity() > 0 {
            w.private = VecDeque::new();
        }
        lines
    }

    /// The write loop, under the writer lock.
    fn write(
        &self,
        w: &mut Writer,
        id: ClientId,
        stream: &Stream,
        stats: &ClientStats,
        limits: Limits<'_>,
    ) -> Flushed {
        if w.frozen {
            return Flushed::Idle;
        }
        let close = self.collect(w);
        if let Some((_, Close::Abort(reason))) = &close {
            self.release(w);
            return Flushed::Done(Close::Abort(reason.clone()));
        }
        let stop_at = close.as_ref().map_or(u64::MAX, |(at, _)| *at);
        // Buffers are gathered in a per-thread vector, so a write that completes (the usual
        // case) allocates nothing; only what a full socket leaves unwritten is kept per client.
        let outcome = SCRATCH.with_borrow_mut(|out| {
            out.clear();
            out.append(&mut w.pending);
            let outcome = self.write_from(w, out, id, stream, stats, limits, stop_at);
            if !out.is_empty() {
                w.pending.append(out);
            }
            outcome
        });
        if w.pending.is_empty() && w.pending.capacity() > 0 {
            w.pending = Vec::new(); // hold no buffers once everything is written
        }
        match (outcome, close) {
            (Flushed::Idle, Some((_, how))) => {
                self.release(w);
                Flushed::Done(how)
            }
            (outcome, _) => outcome,
        }
    }

    /// The write loop proper: `out` holds what is taken and not yet written.
    #[allow(clippy::too_many_arguments)]
    fn write_from(
        &self,
        w: &mut Writer,
        out: &mut Vec<Bytes>,
        id: ClientId,
        stream: &Stream,
        stats: &ClientStats,
        limits: Limits<'_>,
        stop_at: u64,
    ) -> Flushed {
        for _ in 0..FLUSH_WRITES {
            let lines = self.take(w, out, id, stop_at);
            stats.lines_out.fetch_add(lines, Ordering::Relaxed);
            if out.is_empty() {
                return Flushed::Idle;
            }
            match writev(stream, out) {
                Ok(0) => return Flushed::Failed(LeaveReason::Closed),
                Ok(n) => {
                    advance(out, n);
                    self.held.fetch_sub(n as u64, Ordering::SeqCst);
                    stats.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                    self.wrote(limits);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flushed::Parked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Flushed::Failed(socket_error_reason(&e)),
            }
        }
        Flushed::Parked
    }

    /// After a write: a congested client that is back under half its limit is relieved.
    fn wrote(&self, limits: Limits<'_>) {
        if !self.congested.load(Ordering::SeqCst) {
            return;
        }
        limits.congestion.progressed();
        let lag = self.lag(limits.log_end);
        if lag <= limits.max_queue_bytes as u64 / 2 {
            self.uncount();
        }
    }

    /// The end: drop everything held, so a closed client pins no part of the log.
    fn release(&self, w: &mut Writer) {
        w.cursor = None;
        w.pending = Vec::new();
        w.private = VecDeque::new();
    }
    /// Takes everything owed before log position `stop_at`, and every private line, as pending
    /// output, in order (a move to another room, a freeze).
    pub(super) fn take_all(&self, w: &mut Writer, id: ClientId, stats: &ClientStats, stop_at: u64) {
        let mut batch = Vec::new();
        // Bounded by the log and the queue: `take` returns nothing only at their end.
        loop {
            let lines = self.take(w, &mut batch, id, stop_at);
            stats.lines_out.fetch_add(lines, Ordering::Relaxed);
            if batch.is_empty() {
                break;
            }
            w.pending.append(&mut batch);
        }
    }

    /// Stops all writing and returns every byte owed to the client, in order: what was taken and
    /// not yet written, then the log and private lines not yet taken (all taken now, and kept as
    /// taken so that [`thaw`](Self::thaw) can carry on exactly where this left off).
    pub(crate) fn freeze_output(&self, id: ClientId, stats: &ClientStats) -> Vec<u8> {
        let mut w = lock(&self.writer);
        w.frozen = true;
        let stop_at = self.collect(&mut w).map_or(u64::MAX, |(at, _)| at);
        self.take_all(&mut w, id, stats, stop_at);
        let mut out = Vec::with_capacity(w.pending.iter().map(Bytes::len).sum());
        for b in &w.pending {
            out.extend_from_slice(b);
        }
        out
    }

    /// Lets writing resume after [`freeze_output`](Self::freeze_output) (an upgrade rolled back).
    pub(crate) fn thaw(&self) {
        lock(&self.writer).frozen = false;
        self.dirty.store(true, Ordering::SeqCst);
    }
}
