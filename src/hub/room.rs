//! One room: who sits in it, its log (the one order all of them see), its topic and history. The
//! registry of rooms is `registry`.
//!
//! Lock order: the hub's lock, then a room's; nothing holding a room's lock takes the hub's. A
//! publisher takes its room's lock only, so rooms publish in parallel, and under it does work in
//! proportion to what it publishes: check that the sender still sits here, append one log entry,
//! keep its lines as history (slices of the same buffer). The seats are kept here as well as in
//! the hub (which knows every member's room) so that this check and the recipients need no other
//! lock.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;

use super::deliver::Shards;
use super::history::History;
use super::log::{Entry, Log, NOBODY};
use super::names::SortedNames;
use super::relay::{Outgoing, Roster, Said};
use crate::client::{Client, ClientId, Congestion, Limits};
use crate::protocol::RoomName;
use crate::protocol::format::{Wrap, wrapped_notice};
use crate::settings::Settings;

/// Hashes client ids (unique, handed out in sequence) with one multiply: the membership check on
/// every publish need not pay for SipHash.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
        self.0 = self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type ById<V> = HashMap<ClientId, V, BuildHasherDefault<IdHasher>>;

/// Who gets a publish, handed from under the lock to the delivery after it.
pub(super) type Recipients = Arc<[Arc<Client>]>;

/// A member's seat in a room.
#[derive(Debug, Clone)]
pub(super) struct Seat {
    pub(super) nick: Arc<str>,
    pub(super) client: Arc<Client>,
}

/// How a room came to be, which decides when it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// From the configuration (`[[rooms]]` or `default_room`): exists until a reload removes it.
    Predefined,
    /// Made by a user's `/join`: goes, with its history, when its last member leaves.
    User,
}

/// What the room's lock guards.
#[derive(Debug)]
pub(super) struct RoomState {
    pub(super) seats: ById<Seat>,
    pub(super) log: Log,
    /// The seats as one shared list for publishers; rebuilt on the first publish after a change.
    recipients: Option<Recipients>,
    /// The members' nicknames in `/who` order, kept up to date seat by seat while every join's
    /// welcome lists them (see [`SortedNames`]); None otherwise, made again when asked for.
    names: Option<SortedNames>,
    pub(super) history: History,
    pub(super) topic: Arc<str>,
    /// The topic the configuration last gave (a reload that changes it replaces `topic`).
    pub(super) config_topic: Arc<str>,
    pub(super) kind: Kind,
    /// `history_lines` for this room from `[[rooms]]`, if set there.
    pub(super) history_override: Option<usize>,
    /// Copied from the settings so publishers read them under the lock they already hold.
    pub(super) presence_max: usize,
    pub(super) queue_limit: usize,
    pub(super) wrap: Wrap,
    /// Events waiting for the cluster link (rooms shared with a cluster only; see `relay`).
    pub(super) outgoing: Vec<Outgoing>,
    /// Members whose join is on its way through the cluster: they take their seat when it
    /// comes back (`Hub::arrive`).
    pub(super) arriving: Vec<ClientId>,
}

impl RoomState {
    pub(super) fn announce_presence(&self, members: usize) -> bool {
        self.presence_max == 0 || members <= self.presence_max
    }

    pub(super) fn recipients(&mut self) -> Recipients {
        let seats = &self.seats;
        self.recipients
            .get_or_insert_with(|| seats.values().map(|s| s.client.clone()).collect())
            .clone()
    }

    pub(super) fn seat(&mut self, id: ClientId, nick: Arc<str>, client: Arc<Client>) {
        let seat = Seat {
            nick: nick.clone(),
            client,
        };
        if let Some(old) = self.seats.insert(id, seat) {
            self.forget_name(&old.nick);
        }
        self.recipients = None;
        if !self.announce_presence(self.seats.len()) {
            self.names = None;
        } else if let Some(names) = self.names.as_mut() {
            names.insert(&nick);
        }
    }

    pub(super) fn unseat(&mut self, id: ClientId) -> Option<Seat> {
        let seat = self.seats.remove(&id);
        if let Some(seat) = &seat {
            self.recipients = None;
            self.forget_name(&seat.nick);
        }
        seat
    }

    /// Member `id` is now called `nick`.
    pub(super) fn rename(&mut self, id: ClientId, nick: Arc<str>) {
        let Some(seat) = self.seats.get_mut(&id) else {
            return;
        };
        let old = std::mem::replace(&mut seat.nick, nick.clone());
        self.forget_name(&old);
        if let Some(names) = self.names.as_mut() {
            names.insert(&nick);
        }
    }

    fn forget_name(&mut self, nick: &str) {
        if let Some(names) = self.names.as_mut() {
            names.remove(nick);
        }
    }

    /// Everyone leaves at once (the daemon is stopping).
    pub(super) fn clear(&mut self) {
        self.seats.clear();
        self.recipients = None;
        self.names = None;
    }

    /// The members' nicknames, sorted case-insensitively (kept from the last call, see
    /// [`SortedNames`]).
    pub(super) fn sorted_names(&mut self) -> &[Arc<str>] {
        let seats = &self.seats;
        self.names
            .get_or_insert_with(|| SortedNames::of(seats.values().map(|s| &s.nick)))
            .as_slice()
    }

    /// Follows the settings in force (at creation and on reload).
    pub(super) fn follow(&mut self, s: &Settings) {
        self.presence_max = s.presence_max_members;
        self.queue_limit = s.max_queue_bytes;
        self.wrap = s.wrap;
        let lines = self.history_override.unwrap_or(s.history_lines);
        self.history.set_limits(lines, s.history_bytes);
    }
}

/// One room. Shared as `Arc<Room>` by the registry, its members' entries in the hub, sessions
/// (which publish into it) and deliveries in flight.
#[derive(Debug)]
pub struct Room {
    /// `#name`, as first spelt.
    pub(crate) name: Arc<str>,
    /// The name's keys (case and look-alikes folded, see `RoomName::keys`): the first is the
    /// registry's, and no other room shares any of them.
    pub(crate) key: Arc<str>,
    pub(super) keys: Box<[Arc<str>]>,
    pub(super) slot: u16,
    state: Mutex<RoomState>,
    /// The log's end, readable without the lock (where a private line goes in a member's order).
    log_end: AtomicU64,
    /// History is kept: a publisher reads the clock only then.
    history_on: AtomicBool,
    /// Chat lines published here since it was made (carried across upgrades), for `/metrics`.
    lines: AtomicU64,
    pub(super) shards: Shards,
    /// Back-pressure among its members.
    pub(crate) congestion: Arc<Congestion>,
    /// Shared with a cluster: what is said here goes to the broker, and the log is appended to
    /// from what comes back (see `relay`). Fixed when the room is made.
    pub(super) relayed: bool,
    /// Something waits in `outgoing`: the link needs ringing.
    pub(super) queued: AtomicBool,
}

impl Room {
    pub(super) fn new(
        name: &RoomName,
        slot: u16,
        start: u64,
        kind: Kind,
        topic: &str,
        s: &Settings,
    ) -> Room {
        let mut state = RoomState {
            seats: ById::default(),
            log: Log::starting_at(start),
            recipients: None,
            names: None,
            history: History::default(),
            topic: Arc::from(topic),
            config_topic: Arc::from(""),
            kind,
            history_override: None,
            presence_max: 0,
            queue_limit: 0,
            wrap: Wrap::OFF,
            outgoing: Vec::new(),
            arriving: Vec::new(),
        };
        state.follow(s);
        Room {
            name: Arc::from(name.as_str()),
            key: Arc::from(name.key()),
            keys: name.keys().map(Arc::from).collect(),
            slot,
            history_on: AtomicBool::new(state.history.enabled()),
            lines: AtomicU64::new(0),
            state: Mutex::new(state),
            log_end: AtomicU64::new(start),
            shards: Shards::new(s.worker_threads),
            congestion: Arc::default(),
            relayed: s.cluster.is_some(),
            queued: AtomicBool::new(false),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, RoomState> {
        // Every critical section leaves the state consistent (see the hub's lock).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The log's end now.
    pub(crate) fn log_end(&self) -> u64 {
        self.log_end.load(Ordering::SeqCst)
    }

    /// What judging a member's lag needs.
    pub(crate) fn limits(&self, log_end: u64, max_queue_bytes: usize) -> Limits<'_> {
        Limits {
            log_end,
            max_queue_bytes,
            congestion: &self.congestion,
        }
    }

    /// Chat lines published here so far.
    pub(crate) fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    /// Counts `n` lines published before this process had the room (an upgrade's).
    pub(crate) fn add_lines(&self, n: u64) {
        self.lines.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` chat lines said here (a cluster's, as they come back from the broker).
    pub(super) fn count_lines(&self, n: u32) {
        self.lines.fetch_add(u64::from(n), Ordering::Relaxed);
    }

    /// Appends to the log under the lock `st` (which must be this room's).
    pub(super) fn append(
        &self,
        st: &mut RoomState,
        from: ClientId,
        bytes: Bytes,
        lines: u32,
    ) -> Arc<Entry> {
        let entry = st.log.append(from, bytes, lines);
        self.log_end.store(entry.end, Ordering::SeqCst);
        entry
    }

    /// Appends a server notice that carries someone's text, wrapped (or, in a room shared with
    /// a cluster, queues it for the broker).
    pub(super) fn notice(&self, st: &mut RoomState, text: &str) {
        self.notice_from(st, NOBODY, Said::Note, text);
    }

    /// [`notice`](Self::notice) about member `from`, who does not get it (its own join), of
    /// kind `said` (a topic change carries the topic).
    pub(super) fn notice_from(&self, st: &mut RoomState, from: ClientId, said: Said, text: &str) {
        self.told(st, from, said, text, Roster::default());
    }

    /// A notice that someone came or went (`moved` says who, for the cluster's other nodes).
    pub(super) fn presence_notice(
        &self,
        st: &mut RoomState,
        from: ClientId,
        text: &str,
        moved: Roster,
    ) {
        self.told(st, from, Said::Note, text, moved);
    }

    fn told(&self, st: &mut RoomState, from: ClientId, said: Said, text: &str, moved: Roster) {
        let line = wrapped_notice(st.wrap, text);
        if self.relayed {
            let topic = (said == Said::Topic).then(|| st.topic.clone());
            let out = Outgoing {
                said,
                from,
                bytes: line,
                lines: 1,
                topic,
                moved,
            };
            self.queue(st, out);
        } else {
            self.append(st, NOBODY, line, 1);
        }
    }

    /// Appends chat said by `from`, kept as history too; returns the queue limit to judge by,
    /// or None if `from` no longer sits here (it was moved: the caller finds its new room).
    pub(super) fn publish(&self, from: ClientId, buf: Bytes, lines: u32) -> Option<usize> {
        let now = self
            .history_on
            .load(Ordering::Relaxed)
            .then(SystemTime::now);
        let mut st = self.lock();
        if !st.seats.contains_key(&from) {
            return None;
        }
        if let Some(now) = now {
            st.history.record(&buf, now);
        }
        self.append(&mut st, from, buf, lines);
        self.lines.fetch_add(u64::from(lines), Ordering::Relaxed);
        Some(st.queue_limit)
    }

    /// The recipients, the log's end and the queue limit, for a delivery round.
    pub(super) fn delivery(&self) -> (Recipients, u64, usize) {
        let mut st = self.lock();
        (st.recipients(), st.log.end(), st.queue_limit)
    }

    /// Follows new settings (a reload), with this room's `history_lines` from `[[rooms]]`.
    pub(super) fn follow(&self, s: &Settings, history_override: Option<usize>) {
        let mut st = self.lock();
        st.history_override = history_override;
        st.follow(s);
        self.history_on
            .store(st.history.enabled(), Ordering::Relaxed);
    }
}

/// Facts about one room, for `/rooms` and `chatctl rooms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// `#name`.
    pub name: Arc<str>,
    /// Members now.
    pub members: usize,
    /// The topic; empty if none.
    pub topic: Arc<str>,
    /// History lines kept now.
    pub history: usize,
    /// True if it comes from the configuration (it stays when empty).
    pub predefined: bool,
    /// Chat lines published in it since it was made (in this process).
    pub lines: u64,
}

impl Room {
    /// Its facts now.
    pub(crate) fn info(&self) -> RoomInfo {
        let st = self.lock();
        RoomInfo {
            name: self.name.clone(),
            members: st.seats.len(),
            topic: st.topic.clone(),
            history: st.history.len(),
            predefined: st.kind == Kind::Predefined,
            lines: self.lines(),
        }
    }
}
