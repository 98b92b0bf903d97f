//! Delivery after a publish: who writes a room's new log entries to its members' sockets. Every
//! room delivers on its own (its own shards and flags); nothing here takes the hub's lock.
//!
//! # Shards and flushers
//! - The members are split into shards: one per runtime worker, interleaved by position, and one
//!   more for the fan-out assistant when the daemon has one.
//! - A publisher appends to the log, then *combines*: it becomes the shard's flusher if nobody
//!   is, and writes every member of the shard up to the log's tail, one `writev` each.
//! - If a flusher is already at work on that shard, the publisher only marks the shard as having
//!   more and goes back to reading. The flusher's next round carries its lines too, in the same
//!   `writev` as whatever else arrived meanwhile. So a burst from many senders costs one write
//!   per member per round, not per line.
//! - A round that carries little to many members (a lone line to a big room) first hands one
//!   shard to the assistant, so two cores write it at once. The publisher takes it back if the
//!   assistant has not started by the time its own shard is written (see `assist`).
//! - Every hand-over follows the same pair of flags: publishers store `more`, then try to take
//!   `busy`; a flusher releases `busy`, then loads `more` (all `SeqCst`). So no entry is left
//!   without a flusher.
//!
//! # Waiting for the end of the worker's batch
//! Across senders, delivery waits for the end of the worker's batch of ready tasks. In the
//! daemon's runtime a publish only appends, and the worker delivers what it appended at the
//! first of:
//! - just before it parks (tokio's `on_thread_park`, run when the worker has no ready task left);
//! - once it has appended [`DEFER_PUBLISHES`] times;
//! - once it has appended 1/[`DEFER_SHARE`] of `max_queue_bytes`, so lags are judged, and
//!   senders paused, well before a reader could overflow;
//! - once an append has waited as long as its [`Patience`] allows (checked at each publish and
//!   at each session wake-up on that worker). Chat waits at most [`DEFER_AGE`]. Join notices wait
//!   up to [`PRESENCE_AGE`]: in a join storm the worker never idles and each round writes to
//!   every member, so the first `presence_max_members` joins would otherwise cost a write per
//!   member per millisecond (a room's later chat, or the worker idling, still takes them along
//!   at once).
//!
//! So the lines that several senders' reads bring in one pass of the scheduler leave in one write
//! per member, and a lone line leaves as soon as the worker is idle (no timer). A worker keeps up
//! to [`DEFER_ROOMS`] rooms' appends waiting like this (senders in different rooms on one
//! worker), and delivers the oldest room's when one more comes. Runtimes without the hook (the
//! tests' in-process servers) deliver at once.
//!
//! # Bounded turns
//! A flusher's turn is bounded: [`MAX_ROUNDS`] rounds, and [`FLUSH_BUDGET`] of time once
//! [`FLUSH_AT_LEAST`] members are written. A flusher whose shard keeps getting more, or whose
//! round to a very big room runs long, hands the rest to a member's session: it rings that
//! session's doorbell with the room, and the session carries on ([`Hub::carry_on`]) and then
//! yields before it waits. So no publisher's own client waits long for it to read again, and a
//! round to 10,000 members does not keep the worker from accepting and reading for its whole
//! length. A round left unfinished is kept in its shard with the members it started with, and
//! whoever enters the shard next finishes it first.
//!
//! # The fan-out histogram
//! `/metrics` gets one observation per delivery round that carries a publish, never one per
//! recipient: from the append (for deferred ones, the oldest append the round carries) to the
//! end of the caller's rounds. A round that finds every shard busy is not observed: the flusher
//! at work writes its entries, and that flusher's own observation, which started earlier, covers
//! them. Rounds handed to a member's session are not observed.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Hub;
use super::assist::{Assistant, Job, assistant};
use super::room::{Recipients, Room};
use crate::client::{ClientId, Lag, LeaveReason};

/// Rounds one flusher does in a row before handing over.
const MAX_ROUNDS: usize = 8;
/// The time one flusher's turn may take before it hands the rest over (checked every
/// [`FLUSH_AT_LEAST`] members): a loopback write costs about 10 µs, so a round to 10,000 members
/// would hold the worker for 100 ms, and a join storm's connects overflow the listen queue.
const FLUSH_BUDGET: Duration = Duration::from_millis(1);
/// Members one flusher writes before it looks at the time. A room of up to this many (per
/// shard) is always written in one turn, so each member's lag is judged at every delivery, as
/// the deferral bound ([`DEFER_SHARE`]) assumes; in a 64-member version of this split, a loaded
/// machine's preempted turns left the tail of a 100-member round unjudged for a pass, and a
/// batched flood (run.sh's S1b) cut off two readers that were keeping up.
const FLUSH_AT_LEAST: usize = 1024;
/// Publishes a worker appends before it delivers them even though it still has ready tasks...
const DEFER_PUBLISHES: u32 = 64;
/// ...and the longest a chat line waits for that...
const DEFER_AGE: Duration = Duration::from_micros(1000);
/// ...or a join notice (see [`Patience`])...
const PRESENCE_AGE: Duration = Duration::from_millis(10);
/// ...and the most they may add to a member's lag, as a fraction (1/N) of `max_queue_bytes`: a
/// member is judged below half its limit (not congested) at the last delivery, so it stays under
/// three quarters of it (plus one publish, at most an eighth) until the next judgement pauses
/// the senders; it is never cut off for lines that a pause would have held back.
const DEFER_SHARE: u64 = 4;
/// Rooms one worker keeps waiting at once.
const DEFER_ROOMS: usize = 8;
/// A round goes half to the fan-out assistant (`assist`) only to at least this many members...
const ASSIST_MEMBERS: usize = 64;
/// ...and only with at most this many bytes new since the last round (a few lines: a flood's
/// rounds stay on one thread, see `assist`).
const ASSIST_BYTES: u64 = 2048;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only the holder of a shard's `busy` flag takes it, and it is consistent whenever free.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Set once the runtime delivers deferred publishes before its workers park.
static DEFERRING: AtomicBool = AtomicBool::new(false);

/// How long an append may wait for the end of the worker's batch when the worker stays busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Patience {
    /// Chat, and anything someone waits to read: [`DEFER_AGE`].
    Chat,
    /// A join notice: [`PRESENCE_AGE`]. A join storm keeps the worker busy, and every round
    /// writes to every member, so these gather many joins per write.
    Presence,
}

impl Patience {
    fn age(self) -> Duration {
        match self {
            Patience::Chat => DEFER_AGE,
            Patience::Presence => PRESENCE_AGE,
        }
    }
}

/// What this worker thread appended to one room and has not delivered yet.
struct Deferred {
    hub: Arc<Hub>,
    room: Arc<Room>,
    /// The oldest append waiting (for the fan-out histogram).
    since: Instant,
    /// When the most impatient of them must leave.
    due: Instant,
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

/// Delivers what this worker appended and has waited as long as it may (a session calls this
/// each time it wakes, so a worker busy with other tasks still delivers in time).
pub(crate) fn deliver_overdue() {
    let due = DEFERRED.with_borrow_mut(|list| {
        if list.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        if !list.iter().any(|d| d.due <= now) {
            return Vec::new();
        }
        let (due, waiting) = std::mem::take(list).into_iter().partition(|d| d.due <= now);
        *list = waiting;
        due
    });
    for d in due {
        d.deliver();
    }
}

/// After an append to `room`: None if delivery is deferred to the end of the worker's batch,
/// else when the oldest append the caller must now deliver was made.
fn defer(
    hub: &Arc<Hub>,
    room: &Arc<Room>,
    bytes: u64,
    limit: usize,
    patience: Patience,
) -> Option<Instant> {
    if !DEFERRING.load(Ordering::Relaxed) {
        return Some(Instant::now());
    }
    let now = Instant::now();
    let due_by = now + patience.age();
    let max_bytes = limit as u64 / DEFER_SHARE;
    let (deliver_now, evicted) = DEFERRED.with_borrow_mut(|list| {
        if let Some(i) = list.iter().position(|d| Arc::ptr_eq(&d.room, room)) {
            let d = &mut list[i];
            d.publishes += 1;
            d.bytes += bytes;
            d.due = d.due.min(due_by);
            let due = d.publishes >= DEFER_PUBLISHES || d.bytes >= max_bytes || now >= d.due;
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
            due: due_by,
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
    /// A round a flusher left unfinished when its turn's budget ran out: whoever takes `busy`
    /// next carries it on before starting another. Only the holder of `busy` touches it.
    unfinished: Mutex<Option<Round>>,
}

/// A delivery round under way: the members as they were when it started, and the next one to
/// write (members who joined since were written at their join, and start after it).
#[derive(Debug)]
struct Round {
    recipients: Recipients,
    next: usize,
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
    /// The log's end when the latest round began (what it writes up to), and how many members
    /// it writes to: what a publisher looks at to decide whether the next round is worth
    /// splitting with the assistant. Only a hint, so never carried across an upgrade: the first
    /// round after it sets them again.
    round_end: AtomicU64,
    round_members: AtomicUsize,
}

impl Shards {
    /// One shard per runtime worker (`workers` 0: one per CPU core), the threads that can write
    /// in parallel, and one for the fan-out assistant if the daemon has one.
    pub(super) fn new(workers: usize) -> Shards {
        let cores = || std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = if workers == 0 { cores() } else { workers } + usize::from(assistant().is_some());
        Shards {
            shards: (0..n.clamp(1, 16)).map(|_| Shard::default()).collect(),
            next: AtomicUsize::new(0),
            round_end: AtomicU64::new(0),
            round_members: AtomicUsize::new(0),
        }
    }
}

impl Hub {
    /// After an append of `bytes` to `room`: delivers now, or leaves it to the end of the
    /// worker's batch (waiting at most as long as `patience` allows).
    pub(super) fn deliver_or_defer(
        self: &Arc<Self>,
        room: &Arc<Room>,
        bytes: u64,
        limit: usize,
        patience: Patience,
    ) {
        self.forward(room);
        if let Some(since) = defer(self, room, bytes, limit, patience) {
            self.deliver_since(room, since);
        }
    }

    /// [`Room::deliver_collect`], closing the too slow.
    pub(crate) fn deliver(&self, room: &Arc<Room>) {
        self.forward(room);
        let slow = room.deliver_collect();
        self.drop_slow(slow);
    }

    /// Carries on a delivery a flusher handed to this member's session (see `hand_over`): the
    /// rounds left unfinished and whatever is still owed, closing the too slow. Unlike
    /// [`deliver`](Self::deliver) it owes nothing new itself, so a turn that only finishes a
    /// round does not start another one over every member.
    pub(crate) fn carry_on(&self, room: &Arc<Room>) {
        self.forward(room);
        let slow = room.carry_on();
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
        // The next shard to the assistant, before writing ours, so both halves go out at once.
        let handed = (n > 1)
            .then(|| (first + 1) % n)
            .filter(|&i| self.hand_to_assistant(i));
        let mut slow = Vec::new();
        let mut wrote = false;
        for k in 0..n {
            let i = (first + k) % n;
            if Some(i) != handed {
                wrote |= self.flush_shard(i, &mut slow);
            }
        }
        // Not started while we wrote ours (the assistant's core is busy): withdrawn, and
        // written here like any other shard.
        if let Some(i) = handed
            && assistant().and_then(Assistant::take_back).is_some()
        {
            wrote |= self.flush_shard(i, &mut slow);
        }
        (slow, wrote)
    }

    /// A publisher's part in shard `i`: marks it as owed more, and flushes it unless a flusher
    /// is already at work there (who then carries the new entries). True if this caller flushed.
    fn flush_shard(self: &Arc<Self>, i: usize, slow: &mut Vec<ClientId>) -> bool {
        let shard = &self.shards.shards[i];
        shard.more.store(true, Ordering::SeqCst);
        if !shard.try_enter() {
            return false;
        }
        self.combine(i, slow);
        true
    }

    /// Hands shard `i` of this round to the fan-out assistant if it is free and the round is
    /// worth splitting (many members, little to write to each).
    fn hand_to_assistant(self: &Arc<Self>, i: usize) -> bool {
        let Some(assistant) = assistant() else {
            return false;
        };
        let shards = &self.shards;
        let new = self
            .log_end()
            .saturating_sub(shards.round_end.load(Ordering::Relaxed));
        if shards.round_members.load(Ordering::Relaxed) < ASSIST_MEMBERS || new > ASSIST_BYTES {
            return false;
        }
        // Stored before the hand-over, as a publisher does before trying `busy`: if a flusher
        // is at work on this shard, it carries these entries and the assistant finds it busy.
        shards.shards[i].more.store(true, Ordering::SeqCst);
        let room = self.clone();
        let job: Job = Box::new(move || room.assist(i));
        assistant.try_hand(job).is_ok()
    }

    /// The assistant's job, on its thread: flushes shard `i` like a publisher. It has no hub to
    /// close the too slow with (it is not a runtime thread), so their sessions close them, as
    /// after a write that failed.
    fn assist(self: &Arc<Self>, i: usize) {
        let mut slow = Vec::new();
        if self.flush_shard(i, &mut slow) {
            tracing::debug!(room = %self.name, shard = i, "fan-out thread wrote its share of a round");
        }
        if slow.is_empty() {
            return;
        }
        let (recipients, _, _) = self.delivery();
        for client in recipients.iter().filter(|c| slow.contains(&c.id)) {
            client.outbox.fail(LeaveReason::QueueFull);
        }
    }

    /// [`Hub::carry_on`]: enters each shard that has an unfinished round or more owed.
    fn carry_on(self: &Arc<Self>) -> Vec<ClientId> {
        let mut slow = Vec::new();
        for (i, shard) in self.shards.shards.iter().enumerate() {
            while shard.try_enter() {
                if shard.more.load(Ordering::SeqCst) || lock(&shard.unfinished).is_some() {
                    self.combine(i, &mut slow);
                    break;
                }
                // Nothing owed: let go, then look again (a publisher that found us here left
                // its entries to us).
                shard.busy.store(false, Ordering::SeqCst);
                if !shard.more.load(Ordering::SeqCst) {
                    break;
                }
            }
        }
        slow
    }

    /// Flushes shard `i` (whose `busy` flag we hold) until no more is owed, or hands over once
    /// this turn has done [`MAX_ROUNDS`] rounds or spent [`FLUSH_BUDGET`].
    fn combine(self: &Arc<Self>, i: usize, slow: &mut Vec<ClientId>) {
        let shard = &self.shards.shards[i];
        let n = self.shards.shards.len();
        let began = Instant::now();
        let mut written = 0;
        let mut left = lock(&shard.unfinished).take();
        for _ in 0..MAX_ROUNDS {
            if left.is_none() {
                // A new round: cleared before its members are read (in `delivery`, below), so
                // whatever is appended after that, for anyone seated after that, sets it again.
                shard.more.store(false, Ordering::SeqCst);
            }
            let (recipients, end, limit) = self.delivery();
            let Round {
                recipients,
                mut next,
            } = left.take().unwrap_or(Round {
                recipients,
                next: i,
            });
            self.shards.round_end.store(end, Ordering::Relaxed);
            self.shards
                .round_members
                .store(recipients.len(), Ordering::Relaxed);
            let limits = self.limits(end, limit);
            while let Some(client) = recipients.get(next) {
                client.flush(limits);
                if client.outbox.judge(0, limits) == Lag::Overflow {
                    slow.push(client.id);
                }
                next += n;
                written += 1;
                if written % FLUSH_AT_LEAST == 0
                    && began.elapsed() >= FLUSH_BUDGET
                    && next < recipients.len()
                {
                    *lock(&shard.unfinished) = Some(Round { recipients, next });
                    return self.hand_over(shard);
                }
            }
            shard.busy.store(false, Ordering::SeqCst);
            if !shard.more.load(Ordering::SeqCst) || !shard.try_enter() {
                return;
            }
        }
        self.hand_over(shard);
    }

    /// Still more after our turn: lets go of `shard`, and a member's session takes it from
    /// here (it wakes behind the tasks already waiting, so a round to thousands of members does
    /// not keep the worker from accepting, reading or anything else for its whole length).
    fn hand_over(self: &Arc<Self>, shard: &Shard) {
        shard.busy.store(false, Ordering::SeqCst);
        let (recipients, _, _) = self.delivery();
        if let Some(member) = recipients.iter().find(|c| !c.outbox.is_closing()) {
            member.outbox.hand_delivery(self.clone());
        }
    }
}
