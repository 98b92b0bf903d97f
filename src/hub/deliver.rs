//! Delivery after a publish: who writes a room's new log entries to its members' sockets. Every
//! room delivers on its own (its own shards and flags); nothing here takes the hub's lock.
//!
//! The members are split into shards (one per runtime worker, interleaved by position). A
//! publisher appends to the log, then *combines*: it becomes the shard's flusher if nobody is,
//! and writes every member of the shard up to the log's tail, one `writev` each. If a flusher is
//! already at work on that shard, the publisher just marks the shard as having more and goes
//! back to reading: the flusher's next round carries its lines too, in the same `writev` as
//! whatever else arrived meanwhile. So a burst from many senders costs one write per member per
//! round, not per line, and a lone line still leaves at once (no timer, no deferral).
//!
//! Across senders, delivery waits for the end of the worker's batch of ready tasks: in the
//! daemon's runtime, a publish only appends, and the worker delivers what it appended just before
//! it parks (tokio's `on_thread_park`, which runs when the worker has no ready task left), or once
//! it has appended [`DEFER_PUBLISHES`] times, or 1/[`DEFER_SHARE`] of `max_queue_bytes` (so lags
//! are judged, and senders paused, well before a reader could overflow), or the oldest append is
//! [`DEFER_AGE`] old (checked at each publish and each session wake-up on that worker), whichever
//! comes first. So lines that
//! several senders' reads bring in one pass of the scheduler leave in one write per member, and a
//! lone line leaves as soon as the worker is idle. A worker keeps up to [`DEFER_ROOMS`] rooms'
//! appends waiting like this (senders in different rooms on one worker), delivering the oldest
//! room's when one more comes. Runtimes without the hook (tests' in-process
//! servers) deliver at once.
//!
//! Rounds are bounded ([`MAX_ROUNDS`]): a flusher whose shard keeps getting more hands the rest to
//! a member's session (it rings its doorbell with the room; the session carries on before it waits), so
//! no one publisher's own client waits long for it to read again. Every handover follows the
//! same pair of flags: publishers store `more` then try to take `busy`; a flusher releases `busy`
//! then loads `more` (all `SeqCst`), so no entry is left without a flusher.
//!
//! The fan-out histogram (`/metrics`) gets one observation per delivery round that carries a
//! publish, never one per recipient: from the append (for deferred ones, the oldest append the
//! round carries) to the end of the caller's rounds. A round that finds every shard busy is not
//! observed: the flusher at work writes its entries, and that flusher's own observation, which
//! started earlier, covers them. Rounds handed to a member's session are not observed.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Hub;
use super::room::Room;
use crate::client::{ClientId, Lag};

/// Rounds one flusher does in a row before handing over.
const MAX_ROUNDS: usize = 8;
/// Publishes a worker appends before it delivers them even though it still has ready tasks...
const DEFER_PUBLISHES: u32 = 64;
/// ...and the longest the oldest of them waits for that...
const DEFER_AGE: Duration = Duration::from_micros(1000);
/// ...and the most they may add to a member's lag, as a fraction (1/N) of `max_queue_bytes`: a
/// member is judged below half its limit (not congested) at the last delivery, so it stays under
/// three quarters of it (plus one publish, at most an eighth) until the next judgement pauses
/// the senders; it is never cut off for lines that a pause would have held back.
const DEFER_SHARE: u64 = 4;
/// Rooms one worker keeps waiting at once.
const DEFER_ROOMS: usize = 8;

/// Set once the runtime delivers deferred publishes before its workers park.
static DEFERRING: AtomicBool = AtomicBool::new(false);

/// What this worker thread appended to one room and has not delivered yet.
struct Deferred {
    hub: Arc<Hub>,
    room: Arc<Room>,
    since: Instant,
    publishes: u32,
    /// Bytes appended meanwhile: no member's lag may grow by more than [`DEFER_SHARE`] of its
    /// limit before it is judged, or a burst could overflow a reader that keeps up before the
    /// senders were ever told to pause.
    bytes: u64,
}

impl Deferred {
    fn deliver(self) {
        self.hub.deliver_since(&self.room, self.since);
    }
}

thread_local! {
    /// Oldest first.
    static DEFERRED: RefCell<Vec<Deferred>> = const { RefCell::new(Vec::new()) };
}

/// Lets publishes wait for the end of the worker's batch: call it once the runtime calls
/// [`deliver_deferred`] from `on_thread_park` on every worker.
pub(crate) fn enable_deferred_delivery() {
    DEFERRING.store(true, Ordering::SeqCst);
}

/// Delivers what this worker thread appended: the runtime's `on_thread_park` hook.
pub(crate) fn deliver_deferred() {
    let due = DEFERRED.with_borrow_mut(std::mem::take);
    for d in due {
        d.deliver();
    }
}

/// Delivers what this worker appended if it has waited [`DEFER_AGE`] (a session calls this each
/// time it wakes, so a worker busy with other tasks still delivers in time).
pub(crate) fn deliver_overdue() {
    let due = DEFERRED.with_borrow_mut(|d| {
        if d.first().is_some_and(|d| d.since.elapsed() >= DEFER_AGE) {
            std::mem::take(d)
        } else {
            Vec::new()
        }
    });
    for d in due {
        d.deliver();
    }
}

/// After an append to `room`: None if delivery is deferred to the end of the worker's batch,
/// else when the oldest append the caller must now deliver was made.
fn defer(hub: &Arc<Hub>, room: &Arc<Room>, bytes: u64, limit: usize) -> Option<Instant> {
    if !DEFERRING.load(Ordering::Relaxed) {
        return Some(Instant::now());
    }
    let now = Instant::now();
    let max_bytes = limit as u64 / DEFER_SHARE;
    let (deliver_now, evicted) = DEFERRED.with_borrow_mut(|list| {
        if let Some(i) = list.iter().position(|d| Arc::ptr_eq(&d.room, room)) {
            let d = &mut list[i];
            d.publishes += 1;
            d.bytes += bytes;
            let due = d.publishes >= DEFER_PUBLISHES
                || d.bytes >= max_bytes
                || now - d.since >= DEFER_AGE;
            if due {
                return (Some(list.remove(i).since), None);
            }
            return (None, None);
        }
        if bytes >= max_bytes {
            return (Some(now), None);
        }
        let evicted = (list.len() >= DEFER_ROOMS).then(|| list.remove(0));
        list.push(Deferred {
            hub: hub.clone(),
            room: room.clone(),
            since: now,
            publishes: 1,
            bytes,
        });
        (None, evicted)
    });
    if let Some(d) = evicted {
        d.deliver();
    }
    deliver_now
}

/// One shard's flags.
#[derive(Debug, Default)]
pub(super) struct Shard {
    busy: AtomicBool,
    more: AtomicBool,
}

impl Shard {
    fn try_enter(&self) -> bool {
        self.busy
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

/// The shards of one room.
#[derive(Debug)]
pub(super) struct Shards {
    shards: Box<[Shard]>,
    /// Spreads publishers over the shards they try first, so two flush in parallel.
    next: AtomicUsize,
}

impl Shards {
    /// One shard per runtime worker (`workers` 0: one per CPU core), the threads that can write
    /// in parallel.
    pub(super) fn new(workers: usize) -> Shards {
        let cores = || std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = if workers == 0 { cores() } else { workers };
        Shards {
            shards: (0..n.clamp(1, 16)).map(|_| Shard::default()).collect(),
            next: AtomicUsize::new(0),
        }
    }
}

impl Hub {
    /// After an append of `bytes` to `room`: delivers now, or leaves it to the end of the
    /// worker's batch.
    pub(super) fn deliver_or_defer(self: &Arc<Self>, room: &Arc<Room>, bytes: u64, limit: usize) {
        self.forward(room);
        if let Some(since) = defer(self, room, bytes, limit) {
            self.deliver_since(room, since);
        }
    }

    /// [`Room::deliver_collect`], closing the too slow.
    pub(crate) fn deliver(&self, room: &Arc<Room>) {
        self.forward(room);
        let slow = room.deliver_collect();
        self.drop_slow(slow);
    }

    /// [`deliver`](Self::deliver) for appends made since `since`, observed in the fan-out
    /// histogram if this caller wrote any of them.
    fn deliver_since(&self, room: &Arc<Room>, since: Instant) {
        let (slow, wrote) = room.deliver_rounds();
        if wrote {
            self.fanout.observe(since.elapsed());
        }
        self.drop_slow(slow);
    }
}

impl Room {
    /// After an append: gets the new entries written to every member (by this caller, or by the
    /// flusher already at work), and returns the members found too slow (the caller closes them).
    pub(super) fn deliver_collect(self: &Arc<Self>) -> Vec<ClientId> {
        self.deliver_rounds().0
    }

    /// [`deliver_collect`](Self::deliver_collect), and whether this caller flushed any shard
    /// itself (else flushers already at work carry the new entries).
    fn deliver_rounds(self: &Arc<Self>) -> (Vec<ClientId>, bool) {
        let shards = &self.shards;
        let n = shards.shards.len();
        let first = shards.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut slow = Vec::new();
        let mut wrote = false;
        for k in 0..n {
            let i = (first + k) % n;
            let shard = &shards.shards[i];
            shard.more.store(true, Ordering::SeqCst);
            if shard.try_enter() {
                wrote = true;
                self.combine(i, &mut slow);
            }
        }
        (slow, wrote)
    }

    /// Flushes shard `i` (whose `busy` flag we hold) until no more is owed, or hands over.
    fn combine(self: &Arc<Self>, i: usize, slow: &mut Vec<ClientId>) {
        let shard = &self.shards.shards[i];
        let n = self.shards.shards.len();
        for _ in 0..MAX_ROUNDS {
            shard.more.store(false, Ordering::SeqCst);
            let (recipients, end, limit) = self.delivery();
            let limits = self.limits(end, limit);
            for client in recipients.iter().skip(i).step_by(n) {
                client.flush(limits);
                if client.outbox.judge(0, limits) == Lag::Overflow {
                    slow.push(client.id);
                }
            }
            shard.busy.store(false, Ordering::SeqCst);
            if !shard.more.load(Ordering::SeqCst) || !shard.try_enter() {
                return;
            }
        }
        // Still more after our rounds: a member's session takes it from here.
        shard.busy.store(false, Ordering::SeqCst);
        let (recipients, _, _) = self.delivery();
        if let Some(member) = recipients.iter().find(|c| !c.outbox.is_closing()) {
            member.outbox.hand_delivery(self.clone());
        }
    }
}
