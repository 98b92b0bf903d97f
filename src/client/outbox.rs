//! One client's output: its cursor in the room's log, the lines meant for it alone, the close
//! mark, and the protocol for who writes to its socket.
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
//! Bounds: the client's lag is the log bytes after its cursor plus the bytes taken or queued for
//! it and not yet written; past `max_queue_bytes` it is cut off as too slow, past half of it it
//! counts as congested in its room (see [`Congestion`]). An idle client holds no buffers.
//!
//! Moving to another room ([`Outbox::switch`]) happens under the writer lock: what the old room
//! still owes the client (up to its leave) and every private line queued before it are taken as
//! pending output, then the cursor jumps to the new room's log. Log positions carry their room's
//! slot in their top bits (see `hub::log`), so a publisher that judges the client against a room
//! it has just left sees no lag there rather than a nonsense one.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::congestion::Congestion;
use super::leave::{Close, LeaveReason};
use super::socket::{Stream, WRITE_SLICES, advance, socket_error_reason, writev};
use super::{ClientId, ClientStats};
use crate::drain::DrainTicket;
use crate::hub::Room;
use crate::hub::handover::FreezeRequest;
use crate::hub::log::{Entry, same_log};

/// `writev` calls one [`Outbox::flush`] makes before handing the rest to the session: a publisher
/// writes to many sockets after each read and must not spend its turn on one busy reader.
const FLUSH_WRITES: usize = 4;

/// A line (or a few) for this client alone, to go out after the log entries before `at`.
#[derive(Debug)]
struct Private {
    /// The room log's length when it was queued.
    at: u64,
    bytes: Bytes,
    lines: u32,
}

/// What others hand to the writer: private lines, where to start in a log, and the close mark.
#[derive(Debug, Default)]
struct Mailbox {
    queue: Vec<Private>,
    /// Set on joining a room: the entry to start after.
    start: Option<Arc<Entry>>,
    /// Where the client is in its life (the writer reads it on every write once it is closing).
    state: Lifecycle,
}

/// A client's life as its output sees it. It moves forward only: `Open` to `Closing` once (the
/// first close decides the reason), and a flushing close can still become an abort.
#[derive(Debug, Clone, Default)]
enum Lifecycle {
    #[default]
    Open,
    /// Closed by [`Outbox::close`]: room output up to log length `at` is still owed (for a
    /// `Flush`), nothing after it.
    Closing { at: u64, how: Close },
}

/// The writer's state: only the holder of the writer lock touches it.
#[derive(Debug, Default)]
struct Writer {
    /// The last log entry consumed (written or skipped). None until the client joins a room.
    cursor: Option<Arc<Entry>>,
    /// Taken and not yet fully written, in order.
    pending: Vec<Bytes>,
    /// Private lines moved from the mailbox, waiting for their place in the order.
    private: VecDeque<Private>,
    /// Handed to another process (upgrade): nothing more is written unless it is thawed.
    frozen: bool,
}

/// The session's doorbell: rung when the session must act (output handed to it, a close, a
/// failed write, a stop request).
#[derive(Debug, Default)]
struct Doorbell {
    rung: bool,
    waker: Option<Waker>,
    /// A write by someone else failed: why the session must end.
    failure: Option<LeaveReason>,
    /// The daemon is stopping: relay the client's pending input, then drop this.
    drain: Option<DrainTicket>,
    /// The daemon is upgrading: give up the input state and end the session.
    freeze: Option<FreezeRequest>,
    /// A room's delivery that a flusher handed on: the session carries it on.
    owed: Option<Arc<Room>>,
}

/// What the session is asked to do, taken from the doorbell in one go.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    pub(crate) owed: Option<Arc<Room>>,
    pub(crate) drain: Option<DrainTicket>,
    pub(crate) failure: Option<LeaveReason>,
}

/// What a flush achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Everything is written (or another writer has it in hand).
    Idle,
    /// The socket is full (or this flush's budget is spent): the session takes over.
    Parked,
    /// The connection is closed and its final output is written (or dropped, for an abort).
    Done(Close),
    /// The socket failed.
    Failed(LeaveReason),
}

/// What a member's lag says after a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lag {
    Fine,
    /// Over the limit: the client must be cut off as too slow.
    Overflow,
}

/// The room-wide facts an outbox needs to judge a client's lag.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits<'a> {
    /// The room log's length now (a client in another room has no lag in this one).
    pub(crate) log_end: u64,
    pub(crate) max_queue_bytes: usize,
    /// The room's congestion, which the client joins when its lag passes half the limit.
    pub(crate) congestion: &'a Arc<Congestion>,
}

/// One client's output.
#[derive(Debug)]
pub struct Outbox {
    writer: Mutex<Writer>,
    mailbox: Mutex<Mailbox>,
    /// Output was added since the writer last looked.
    dirty: AtomicBool,
    /// The mailbox has something: the writer locks it only then (most flushes carry room
    /// output only, and must not take a second lock per recipient).
    mail: AtomicBool,
    /// The socket would block: only the session writes until it clears this.
    parked: AtomicBool,
    /// The log length up to which this client's output has been taken by the writer.
    log_pos: AtomicU64,
    /// Bytes queued privately or taken from the log, not yet written.
    held: AtomicU64,
    /// Counted in a room's [`Congestion`] (a lock-free check before looking at `counted_in`).
    congested: AtomicBool,
    /// The congestion this client is counted in, so it is uncounted from the same one, whichever
    /// room it is in by then.
    counted_in: Mutex<Option<Arc<Congestion>>>,
    /// Set once the close mark is set.
    closing: AtomicBool,
    doorbell: Mutex<Doorbell>,
}

thread_local! {
    /// Where a writer gathers the buffers of one `writev` (see [`Outbox::write`]).
    static SCRATCH: std::cell::RefCell<Vec<Bytes>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent, so a panic elsewhere must not make
    // the client unusable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            writer: Mutex::default(),
            mailbox: Mutex::default(),
            dirty: AtomicBool::new(false),
            mail: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            // Not in a room: no log output is owed (see `lag`).
            log_pos: AtomicU64::new(u64::MAX),
            held: AtomicU64::new(0),
            congested: AtomicBool::new(false),
            counted_in: Mutex::default(),
            closing: AtomicBool::new(false),
            doorbell: Mutex::default(),
        }
    }
}

impl Outbox {
    /// Queues `bytes` for this client alone, after the log entries published before `at`.
    pub(crate) fn push_private(&self, at: u64, bytes: Bytes, lines: u32) {
        if bytes.is_empty() {
            return;
        }
        self.held.fetch_add(bytes.len() as u64, Ordering::SeqCst);
        lock(&self.mailbox).queue.push(Private { at, bytes, lines });
        self.mail.store(true, Ordering::SeqCst);
    }

    /// Queues several buffers for this client alone, in order, after the log entries published
    /// before `at` (one lock for all of them: a room's history on entering it).
    pub(crate) fn push_private_all(&self, at: u64, items: Vec<(Bytes, u32)>) {
        if items.is_empty() {
            return;
        }
        let len: u64 = items.iter().map(|(b, _)| b.len() as u64).sum();
        self.held.fetch_add(len, Ordering::SeqCst);
        let mut mb = lock(&self.mailbox);
        mb.queue.extend(
            items
                .into_iter()
                .map(|(bytes, lines)| Private { at, bytes, lines }),
        );
        drop(mb);
        self.mail.store(true, Ordering::SeqCst);
    }

    /// Starts this client's room output after `entry` (it has just joined its first room).
    pub(crate) fn start_after(&self, entry: Arc<Entry>) {
        self.log_pos.store(entry.end, Ordering::SeqCst);
        lock(&self.mailbox).start = Some(entry);
        self.mail.store(true, Ordering::SeqCst);
    }

    /// Moves this client's room output to another room: everything owed before `stop_at` in the
    /// room it leaves, and every private line queued so far, is taken as pending (in order), and
    /// room output continues after `start`. Never wakes anyone (the caller holds rooms' locks).
    pub(crate) fn switch(
        &self,
        id: ClientId,
        stats: &ClientStats,
        stop_at: u64,
        start: Arc<Entry>,
    ) {
        let mut w = lock(&self.writer);
        // A closing client is not moved (the hub checks), so the close mark is not in play.
        let _ = self.collect(&mut w);
        let mut batch = Vec::new();
        // Bounded by the old log and the queue: `take` returns nothing only at their end.
        loop {
            let lines = self.take(&mut w, &mut batch, id, stop_at);
            stats.lines_out.fetch_add(lines, Ordering::SeqCst);
            if batch.is_empty() {
                break;
            }
            w.pending.append(&mut batch);
        }
        self.log_pos.store(start.end, Ordering::SeqCst);
        w.cursor = Some(start);
        drop(w);
        self.dirty.store(true, Ordering::SeqCst);
    }

    /// After a [`switch`](Self::switch), once no room's lock is held (it may wake senders): a
    /// client counted as congested in the room it left is counted there no more.
    pub(crate) fn release_congestion(&self) {
        self.uncount();
    }

    /// Stops counting this client as congested, in whichever room's count it is in.
    fn uncount(&self) {
        if self.congested.swap(false, Ordering::SeqCst)
            && let Some(c) = lock(&self.counted_in).take()
        {
            c.leave();
        }
    }

    /// Sets the close mark: nothing logged after `at` is sent. The first close wins, except that
    /// an abort upgrades a pending flush (the reason stays). Returns false if already closing.
    pub(crate) fn close(&self, at: u64, how: Close) -> bool {
        let first = {
            let mut mb = lock(&self.mailbox);
            match (&mb.state, &how) {
                (Lifecycle::Open, _) => {
                    mb.state = Lifecycle::Closing { at, how };
                    true
                }
                (
                    Lifecycle::Closing {
                        at,
                        how: Close::Flush(r),
                    },
                    Close::Abort(_),
                ) => {
                    let how = Close::Abort(r.clone());
                    mb.state = Lifecycle::Closing { at: *at, how };
                    false
                }
                _ => false,
            }
        };
        self.mail.store(true, Ordering::SeqCst);
        self.closing.store(true, Ordering::SeqCst);
        // A closing client relays nothing more, so it is not waited for by a stop or an upgrade.
        let (ticket, freeze) = {
            let mut bell = lock(&self.doorbell);
            (bell.drain.take(), bell.freeze.take())
        };
        drop((ticket, freeze));
        self.uncount();
        self.ring();
        first
    }

    /// True once a close mark is set.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Bytes pushed or published for this client and not yet written, with `log_end` the end
    /// of its room's log (the end of another room's counts nothing).
    pub(crate) fn lag(&self, log_end: u64) -> u64 {
        let pos = self.log_pos.load(Ordering::SeqCst);
        let behind = if same_log(pos, log_end) {
            log_end.saturating_sub(pos)
        } else {
            0
        };
        behind + self.held.load(Ordering::SeqCst)
    }

    /// Judges the lag after a publish of `added` bytes: over half the limit counts the client as
    /// congested; over the limit it must go, unless the queue was empty before (one big buffer, a
    /// `/who` of a huge room, does not by itself make a client slow).
    pub(crate) fn judge(&self, added: u64, limits: Limits<'_>) -> Lag {
        if self.is_closing() {
            return Lag::Fine;
        }
        let lag = self.lag(limits.log_end);
        let limit = limits.max_queue_bytes as u64;
        if lag > limit && lag > added {
            return Lag::Overflow;
        }
        if lag > limit / 2 && !self.congested.load(Ordering::SeqCst) {
            let mut counted = lock(&self.counted_in);
            if counted.is_none() {
                limits.congestion.enter();
                *counted = Some(limits.congestion.clone());
                self.congested.store(true, Ordering::SeqCst);
            }
        }
        Lag::Fine
    }

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
                    lock(&self.doorbell).failure.get_or_insert(reason);
                    return self.hand_to_session();
                }
            }
        }
        // Output keeps coming while we write: let the session carry on.
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
    fn collect(&self, w: &mut Writer) -> Option<(u64, Close)> {
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

    /// Wakes the session.
    pub(crate) fn ring(&self) {
        let waker = {
            let mut bell = lock(&self.doorbell);
            bell.rung = true;
            bell.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Hands `room`'s owed delivery to the session (see `hub::deliver`).
    pub(crate) fn hand_delivery(&self, room: Arc<Room>) {
        lock(&self.doorbell).owed = Some(room);
        self.ring();
    }

    /// Everything the session has been asked to do since it last looked, in one lock.
    pub(crate) fn take_requests(&self) -> Requests {
        let mut bell = lock(&self.doorbell);
        Requests {
            owed: bell.owed.take(),
            drain: bell.drain.take(),
            failure: bell.failure.take(),
        }
    }

    /// Asks the session to relay its client's pending input (the daemon is stopping).
    pub(crate) fn request_drain(&self, ticket: DrainTicket) {
        if self.is_closing() {
            return;
        }
        lock(&self.doorbell).drain = Some(ticket);
        self.ring();
    }

    /// Asks the session to give up its input state and end (the daemon is upgrading).
    pub(crate) fn request_freeze(&self, request: FreezeRequest) {
        if self.is_closing() {
            return;
        }
        lock(&self.doorbell).freeze = Some(request);
        self.ring();
    }

    /// The freeze request, if one is waiting.
    pub(crate) fn take_freeze(&self) -> Option<FreezeRequest> {
        lock(&self.doorbell).freeze.take()
    }

    /// Stops all writing and returns every byte owed to the client, in order: what was taken and
    /// not yet written, then the log and private lines not yet taken (all taken now, and kept as
    /// taken so that [`thaw`](Self::thaw) can carry on exactly where this left off).
    pub(crate) fn freeze_output(&self, id: ClientId, stats: &ClientStats) -> Vec<u8> {
        let mut w = lock(&self.writer);
        w.frozen = true;
        let stop_at = self.collect(&mut w).map_or(u64::MAX, |(at, _)| at);
        let mut batch = Vec::new();
        // Bounded by the log and the queue: `take` returns nothing only at their end.
        loop {
            let lines = self.take(&mut w, &mut batch, id, stop_at);
            stats.lines_out.fetch_add(lines, Ordering::Relaxed);
            if batch.is_empty() {
                break;
            }
            w.pending.append(&mut batch);
        }
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

    /// The session's side of the doorbell: ready (and reset) if rung since the last call.
    pub(crate) fn poll_doorbell(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut bell = lock(&self.doorbell);
        if std::mem::take(&mut bell.rung) {
            return Poll::Ready(());
        }
        match &mut bell.waker {
            Some(w) => w.clone_from(cx.waker()),
            None => bell.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}
