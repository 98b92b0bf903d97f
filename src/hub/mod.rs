//! The server's people and places: who is connected, who has joined under which nickname, which
//! room each member is in ([`room`]), and delivery between them.
//!
//! Invariants:
//! - The hub's `std::sync::Mutex` guards connections, nicknames, the rooms' registry and which
//!   room each member sits in; each room has its own lock for its seats, log and history (lock
//!   order: hub, then room). Neither is held across an `.await`. A publish takes only its room's
//!   lock, and under it appends one entry (the order everyone in the room sees) and keeps the
//!   lines as history; nothing is pushed to, locked for or woken in any recipient there.
//! - After unlocking, the publisher writes to every member's socket itself ([`Client::flush`]),
//!   and judges each member's lag: past `max_queue_bytes` the member is cut off as too slow,
//!   nobody else is delayed or loses a line.
//! - A client ends through [`Hub::close`] only (see `close.rs`): the removal is the state change,
//!   so its leave is announced exactly once whoever closes it, and its last line (goodbye, kick
//!   notice, shutdown notice) is queued with the removal, so nothing follows it. A member changes
//!   rooms through [`Hub::enter`] only (see `enter.rs`), which moves its output in the same step.
//! - Lines are formatted once and shared as [`Bytes`]; recipients (and history) get
//!   reference-count bumps.

pub(crate) mod admission;
mod arrive;
mod assist;
mod close;
mod deliver;
mod door;
mod enter;
pub(crate) mod handover;
pub(crate) mod history;
mod join;
pub(crate) use assist::enable_fanout_assistant;
use deliver::Patience;
pub(crate) use deliver::{deliver_deferred, deliver_overdue, enable_deferred_delivery};
pub(crate) mod log;
mod names;
mod registry;
pub mod relay;
mod room;

pub use door::Refusal;
pub use enter::{EnterRefused, TopicOf, TopicRefused};
pub use names::NickRefused;
use names::{NickKeys, Registry};
pub use room::{Room, RoomInfo};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;

use crate::client::{Client, ClientId, Congestion, Lag, Limits, Transport};
use crate::config::{Config, IpNet};
use crate::drain::Drain;
use crate::metrics::histogram::Latency;
use crate::protocol::validate_nick;
use crate::settings::{Settings, SettingsCell};
use registry::Rooms;

/// Daemon-wide counters (monotonic totals), readable without the hub lock.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted and registered.
    pub connections: AtomicU64,
    /// Connections refused (server full, per-network limit or rate, shutting down).
    pub rejected: AtomicU64,
    /// Chat lines relayed (each counted once, however many recipients).
    pub lines_relayed: AtomicU64,
    /// Bytes of relayed output (each buffer counted once).
    pub bytes_relayed: AtomicU64,
    /// Operator kicks.
    pub kicks: AtomicU64,
    /// Clients disconnected as too slow.
    pub slow_drops: AtomicU64,
    /// Throttle episodes (a sender over its flood budget).
    pub throttled: AtomicU64,
    /// Upgrades that handed the service to a new process (`chatctl upgrade`).
    pub upgrades: AtomicU64,
    /// TLS handshakes that failed or were not done in time (port scanners, clients that do not
    /// trust the certificate, plaintext on the TLS port).
    /// TLS handshakes that failed (bad client hello, no common version, timed out): the TLS
    /// front end counts them; none while no TLS listener exists.
    pub tls_handshake_failures: AtomicU64,
}

/// A joined member: the nickname and room live here, the connection in [`Client`].
#[derive(Debug, Clone)]
struct Member {
    nick: Arc<str>,
    /// The nickname's registry keys, computed once at join or rename.
    keys: NickKeys,
    client: Arc<Client>,
    /// The room it sits in (it has a seat there too).
    room: Arc<Room>,
}

/// A snapshot of one connection for `chatctl list`.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The shared client.
    pub client: Arc<Client>,
    /// Its nickname, if it has joined.
    pub nick: Option<Arc<str>>,
    /// Its room, if it has joined.
    pub room: Option<Arc<str>>,
    /// Bytes owed to it and not yet written.
    pub unsent: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Every open connection, joined or still choosing a nickname.
    clients: HashMap<ClientId, Arc<Client>>,
    /// Joined members.
    members: HashMap<ClientId, Member>,
    /// Nickname keys (case- and confusable-insensitive) → member, for uniqueness and lookups.
    nicks: Registry,
    /// Every room.
    rooms: Rooms,
    /// Open connections per network (`Config::network_of`), for non-exempt peers only.
    per_ip: HashMap<IpNet, usize>,
    /// The network each counted client was counted under, fixed at connect time: a reload that
    /// changes the prefixes or exemptions must not make a close decrement another entry.
    counted_as: HashMap<ClientId, IpNet>,
    peak: usize,
    stopping: bool,
}

/// The server. Shared as `Arc<Hub>` by the accept loops, sessions, the admin socket and the
/// notifier.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    settings: SettingsCell,
    next_id: AtomicU64,
    /// Bumped on every membership change, for the status notifier (and tests) to wait on.
    changes: watch::Sender<u64>,
    /// The congestion of clients in no room (still choosing a nickname): only their own replies
    /// can make them lag, and nobody waits on it.
    roomless: Arc<Congestion>,
    /// Recent connections per network, for `connect_rate` (see `admission`).
    connect_rate: admission::ConnectRate,
    /// Stopping, phase one (see [`Hub::begin_drain`]).
    drain: Drain,
    /// Daemon-wide totals.
    pub counters: Counters,
    /// How long publishes wait for their delivery round to end (see `deliver.rs`).
    pub(crate) fanout: Latency,
    /// When the service started (this process, or the first of a line of upgrades), wall clock.
    pub started_at: SystemTime,
    /// When this process's hub was created, monotonic.
    pub started: Instant,
    /// The cluster link, when rooms are shared with other nodes (see `relay`).
    relay: std::sync::OnceLock<Arc<dyn relay::Relay>>,
    /// Members whose join is on its way through the cluster, and who waits for it.
    arrivals: Mutex<HashMap<ClientId, tokio::sync::oneshot::Sender<()>>>,
    arrival_waits: Mutex<HashMap<ClientId, tokio::sync::oneshot::Receiver<()>>>,
}

impl Hub {
    /// A server with the configuration's rooms and nobody in them.
    pub fn new(config: Config) -> Self {
        let settings = Settings::new(config);
        let mut state = State::default();
        enter::make_predefined(&mut state.rooms, &settings);
        Hub {
            state: Mutex::new(state),
            settings: SettingsCell::new(settings),
            next_id: AtomicU64::new(1),
            changes: watch::Sender::new(0),
            roomless: Arc::default(),
            connect_rate: admission::ConnectRate::default(),
            drain: Drain::default(),
            counters: Counters::default(),
            fanout: Latency::default(),
            started_at: SystemTime::now(),
            started: Instant::now(),
            relay: std::sync::OnceLock::new(),
            arrivals: Mutex::default(),
            arrival_waits: Mutex::default(),
        }
    }

    /// A receiver that wakes whenever a client connects, joins, renames, moves or leaves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|generation| *generation += 1);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the whole server down with a poisoned lock: the state
        // is updated in single steps, so it is consistent whenever the lock is free.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The settings in force.
    pub fn config(&self) -> Arc<Settings> {
        self.settings.load()
    }

    /// The cell sessions follow the settings through.
    pub fn settings(&self) -> &SettingsCell {
        &self.settings
    }

    /// Puts a new configuration in force (reload). Limits apply to existing clients from their
    /// next read or publish; rooms added to or removed from `[[rooms]]` are made or closed (their
    /// members moved to the default room, told why), changed ones follow.
    pub fn set_config(self: &Arc<Self>, config: Config) {
        self.settings.store(Settings::new(config));
        self.apply_rooms(&self.config());
    }

    /// What judging the lag of a client in no room needs.
    pub(crate) fn roomless_limits(&self, max_queue_bytes: usize) -> Limits<'_> {
        Limits {
            log_end: 0,
            max_queue_bytes,
            congestion: &self.roomless,
        }
    }

    /// Relays one buffer of `lines` already-formatted lines to everyone in `room` but the
    /// sender, in the room's one order. Returns None if the sender no longer sits in `room` (it
    /// was moved: publish in [`room_of`](Self::room_of) instead); else whether some member is
    /// congested: the sender should then pause before reading more (back-pressure that paces a
    /// burst to what readers can take, instead of cutting off readers that are keeping up).
    pub fn publish(
        self: &Arc<Self>,
        room: &Arc<Room>,
        from: ClientId,
        buf: Bytes,
        lines: u32,
    ) -> Option<bool> {
        if room.relayed {
            return self.publish_relayed(room, from, buf, lines);
        }
        let len = buf.len() as u64;
        let limit = room.publish(from, buf, lines)?;
        let relayed = &self.counters;
        relayed
            .lines_relayed
            .fetch_add(u64::from(lines), Ordering::Relaxed);
        relayed.bytes_relayed.fetch_add(len, Ordering::Relaxed);
        self.deliver_or_defer(room, len, limit, Patience::Chat);
        Some(room.congestion.any())
    }

    /// The room `id` sits in, if it has joined.
    pub fn room_of(&self, id: ClientId) -> Option<Arc<Room>> {
        self.lock().members.get(&id).map(|m| m.room.clone())
    }

    /// Writes `client`'s pending output now (a line for it alone was queued under the lock).
    fn flush_one(&self, client: &Client, room: &Room) {
        client.flush(room.limits(room.log_end(), self.config().max_queue_bytes));
    }

    /// Queues a line for `client` alone (a reply to its own command; `room` is where it sits, if
    /// anywhere), writes it if the socket takes it, and says whether the client is now too far
    /// behind.
    pub(crate) fn reply(
        &self,
        client: &Client,
        room: Option<&Room>,
        buf: Bytes,
        lines: u32,
        limit: usize,
    ) -> Lag {
        let len = buf.len() as u64;
        let limits = match room {
            Some(room) => room.limits(room.log_end(), limit),
            None => self.roomless_limits(limit),
        };
        client.outbox.push_private(limits.log_end, buf, lines);
        client.flush(limits);
        client.outbox.judge(len, limits)
    }

    /// Delivers a private line to the member called `to` (in any room, on any node of the
    /// cluster); returns that member's nickname as spelt.
    pub fn send_private(&self, to: &str, line: Bytes) -> Option<Arc<str>> {
        if let Some(nick) = self.send_private_here(to, line.clone()) {
            return Some(nick);
        }
        // Perhaps on another node of the cluster.
        let to = validate_nick(to).ok()?;
        let relay = self.relay()?;
        let remote = relay.remote_member(&NickKeys::of(&to).to_vec())?;
        relay.send_private(&remote.node, &remote.nick, line);
        Some(remote.nick)
    }

    /// [`send_private`](Self::send_private) to a member of this node only.
    pub fn send_private_here(&self, to: &str, line: Bytes) -> Option<Arc<str>> {
        // No member has an invalid name, so an invalid one needs no lookup.
        let to = validate_nick(to).ok()?;
        let (nick, client, room) = {
            let st = self.lock();
            let id = names::lookup(&st.nicks, &to)?;
            let m = st.members.get(&id)?;
            (m.nick.clone(), m.client.clone(), m.room.clone())
        };
        let limit = self.config().max_queue_bytes;
        if self.reply(&client, Some(&room), line, 1, limit) == Lag::Overflow {
            self.drop_slow(vec![client.id]);
        }
        Some(nick)
    }

    /// Sends one notice to every member of `room` (a name, with or without `#`), or of every
    /// room; returns how many members it was sent to, or None if there is no such room.
    pub fn announce(&self, room: Option<&str>, text: &str) -> Option<usize> {
        if let (Some(name), Some(_)) = (room, self.relay()) {
            // In a cluster the room may live on other nodes only: it is made here (empty) so
            // the announcement has a room to be queued in.
            let _ = self.room_for_cluster(name);
        }
        let rooms: Vec<Arc<Room>> = {
            let st = self.lock();
            match room {
                Some(name) => vec![enter::find(&st.rooms, name)?.clone()],
                None => st.rooms.iter().cloned().collect(),
            }
        };
        let mut members = 0;
        for room in &rooms {
            let mut rs = room.lock();
            members += rs.seats.len();
            room.notice(&mut rs, text);
        }
        for room in &rooms {
            self.deliver(room);
        }
        Some(members)
    }

    /// Finds a client by id (a target made only of digits; nicknames always contain a letter) or nickname.
    pub fn resolve(&self, target: &str) -> Option<ClientId> {
        if let Ok(id) = target.parse::<ClientId>() {
            return self.lock().clients.contains_key(&id).then_some(id);
        }
        // No member has an invalid name; the key is worked out before taking the lock.
        let nick = validate_nick(target).ok()?;
        names::lookup(&self.lock().nicks, &nick)
    }

    /// Every connection, joined or not, ordered by id.
    pub fn list(&self) -> Vec<ClientInfo> {
        let st = self.lock();
        let mut out: Vec<ClientInfo> = st
            .clients
            .values()
            .map(|c| {
                let member = st.members.get(&c.id);
                let end = member.map_or(0, |m| m.room.log_end());
                ClientInfo {
                    client: c.clone(),
                    nick: member.map(|m| m.nick.clone()),
                    room: member.map(|m| m.room.name.clone()),
                    unsent: c.outbox.lag(end),
                }
            })
            .collect();
        drop(st);
        out.sort_unstable_by_key(|i| i.client.id);
        out
    }

    /// (connections now, joined members now, peak connections).
    pub fn counts(&self) -> (usize, usize, usize) {
        let st = self.lock();
        (st.clients.len(), st.members.len(), st.peak)
    }

    /// Connections now by how they came, in [`Transport::ALL`] order (joined or not).
    pub fn clients_by_transport(&self) -> [(Transport, usize); 4] {
        let mut counts = Transport::ALL.map(|t| (t, 0));
        for client in self.lock().clients.values() {
            if let Some(slot) = counts.iter_mut().find(|(t, _)| *t == client.transport) {
                slot.1 += 1;
            }
        }
        counts
    }

    /// How many clients are congested now, in all rooms (for `chatctl stats`).
    pub fn congested_count(&self) -> usize {
        let rooms: Vec<Arc<Room>> = self.lock().rooms.iter().cloned().collect();
        rooms.iter().map(|r| r.congestion.count()).sum::<usize>() + self.roomless.count()
    }

    /// The nickname and room of member `id`, if it has joined (for `chatctl move`).
    pub fn membership(&self, id: ClientId) -> Option<(Arc<str>, Arc<str>)> {
        let st = self.lock();
        let member = st.members.get(&id)?;
        Some((member.nick.clone(), member.room.name.clone()))
    }
}

#[cfg(test)]
mod tests;
