//! One client's output: its cursor in the room's log, the lines meant for it alone, the close
//! mark, and what its lag says (congestion, overflow). Who writes it to the socket is
//! [`write`]'s protocol; how the session is told to act is the [`doorbell`].
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

mod doorbell;
mod write;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::congestion::Congestion;
use super::leave::{Close, LeaveReason};
use super::{ClientId, ClientStats};
use crate::hub::log::{Entry, same_log};

use doorbell::Doorbell;

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
        self.take_all(&mut w, id, stats, stop_at);
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
        self.drop_requests();
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
}
