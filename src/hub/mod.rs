//! The room: who is connected, who has joined under which nickname, and fan-out between them.
//!
//! Invariants:
//! - One `std::sync::Mutex` guards membership. It is never held across an `.await` (every method is
//!   synchronous) and every delivery to every member happens under it, which is what gives all members
//!   the same total order of lines.
//! - Fan-out never waits: a recipient whose outbox is full is collected and, after the lock is released,
//!   disconnected as too slow. Nobody else is delayed or loses a line.
//! - A client is removed exactly once ([`Hub::leave`] finds it or does nothing), so its leave notice is
//!   announced exactly once whatever the mix of quit, kick, overflow, EOF and shutdown.
//! - Lines are formatted once by the caller and shared as [`Bytes`]; recipients get reference-count bumps.
//!   Join/leave/rename notices are formatted under the lock: they are rare, and it keeps them ordered.

mod names;

use names::NickKey;
pub use names::NickRefused;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::client::{Client, ClientId, Close, LeaveReason, Pushed};
use crate::config::Config;
use crate::protocol::format::notice;
use crate::protocol::{nick_key, validate_nick};

/// Daemon-wide counters (monotonic totals), readable without the hub lock.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted and registered.
    pub connections: AtomicU64,
    /// Connections refused (server full, per-IP limit, shutting down).
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
}

/// Why a connection was refused at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_clients` reached.
    Full,
    /// `max_clients_per_ip` reached for the peer's address.
    PerIp,
    /// The daemon is stopping.
    ShuttingDown,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Full => "server full",
            Refusal::PerIp => "too many connections from your address",
            Refusal::ShuttingDown => "server shutting down",
        })
    }
}

/// A joined member: the nickname lives here, the connection in [`Client`].
#[derive(Debug, Clone)]
struct Member {
    nick: Arc<str>,
    client: Arc<Client>,
}

/// A snapshot of one connection for `chatctl list`.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The shared client.
    pub client: Arc<Client>,
    /// Its nickname, if it has joined.
    pub nick: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct State {
    /// Every open connection, joined or still choosing a nickname.
    clients: HashMap<ClientId, Arc<Client>>,
    /// Joined members: the fan-out set.
    members: HashMap<ClientId, Member>,
    /// Nickname (case-insensitively) → member, for uniqueness and lookups.
    nicks: HashMap<NickKey, ClientId>,
    /// Open connections per remote address (only counted for non-exempt addresses).
    per_ip: HashMap<IpAddr, usize>,
    peak: usize,
    stopping: bool,

    /// Clients whose queue is more than half full (shared with [`Hub`], which reads it without the
    /// lock). While any is, senders pause before reading more (see [`Hub::publish`]).
    congested: Arc<AtomicUsize>,
    /// Copied from the config so the hot path reads it under the lock it already holds.
    queue_limit: usize,
    presence_max: usize,
}

impl State {
    fn announce_presence(&self, members: usize) -> bool {
        self.presence_max == 0 || members <= self.presence_max
    }

    /// Pushes `buf` to every member except `skip`; returns the ids that overflowed.
    fn fan_out(&self, skip: Option<ClientId>, buf: &Bytes, lines: u32, slow: &mut Vec<ClientId>) {
        for (id, m) in &self.members {
            if Some(*id) == skip {
                continue;
            }
            match m.client.outbox.push(buf.clone(), lines, self.queue_limit) {
                Pushed::Overflow => slow.push(*id),
                Pushed::Congested => {
                    self.congested.fetch_add(1, Ordering::Relaxed);
                }
                Pushed::Queued | Pushed::Closed => {}
            }
        }
    }

    fn sorted_names(&self) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self.members.values().map(|m| m.nick.clone()).collect();
        names.sort_by_cached_key(|n| nick_key(n));
        names
    }
}

/// The room. Shared as `Arc<Hub>` by the accept loops, sessions, the admin socket and the notifier.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    config: RwLock<Arc<Config>>,
    /// MOTD and nickname prompt, sanitised and formatted once per configuration.
    greeting: RwLock<Bytes>,
    next_id: AtomicU64,
    /// Bumped on every membership change, for the status notifier (and tests) to wait on.
    changes: watch::Sender<u64>,
    /// The same counter as `State::congested`, readable without the lock.
    congested: Arc<AtomicUsize>,
    /// Bumped whenever a congested member's writer makes progress.
    drains: AtomicU32,
    /// Stopping, phase one: sessions relay what their clients already sent (see [`Hub::begin_drain`]).
    draining: AtomicBool,
    /// Sessions that have not finished that yet, and a wake-up for when none is left.
    undrained: AtomicUsize,
    drained: Notify,
    /// Daemon-wide totals.
    pub counters: Counters,
    /// When the hub was created (daemon start), wall clock.
    pub started_at: SystemTime,
    /// When the hub was created, monotonic.
    pub started: Instant,
}

impl Hub {
    /// An empty room governed by `config`.
    pub fn new(config: Arc<Config>) -> Self {
        let congested = Arc::new(AtomicUsize::new(0));
        let state = State {
            congested: congested.clone(),
            queue_limit: config.max_queue_bytes,
            presence_max: config.presence_max_members,
            ..State::default()
        };
        Hub {
            state: Mutex::new(state),
            greeting: RwLock::new(names::greeting(&config)),
            config: RwLock::new(config),
            next_id: AtomicU64::new(1),
            changes: watch::Sender::new(0),
            congested,
            drains: AtomicU32::new(0),
            draining: AtomicBool::new(false),
            undrained: AtomicUsize::new(0),
            drained: Notify::new(),
            counters: Counters::default(),
            started_at: SystemTime::now(),
            started: Instant::now(),
        }
    }

    /// A receiver that wakes whenever a client connects, joins, renames or leaves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|generation| *generation += 1);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the whole room down with a poisoned lock: the state is
        // updated in single steps, so it is consistent whenever the lock is free.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the configuration (reload). Limits apply to existing clients from their next line/push.
    pub fn set_config(&self, config: Arc<Config>) {
        {
            let mut st = self.lock();
            st.queue_limit = config.max_queue_bytes;
            st.presence_max = config.presence_max_members;
        }
        *self.greeting.write().unwrap_or_else(|e| e.into_inner()) = names::greeting(&config);
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// What a new connection is sent first: the MOTD and the nickname prompt.
    pub fn greeting(&self) -> Bytes {
        self.greeting
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Admits a new connection (still without a nickname), or says why not.
    pub fn register(&self, peer: SocketAddr) -> Result<Arc<Client>, Refusal> {
        let cfg = self.config();
        let ip = peer.ip().to_canonical();
        let per_ip_limited =
            cfg.max_clients_per_ip > 0 && !cfg.per_ip_exempt.iter().any(|net| net.contains(ip));
        let client = {
            let mut st = self.lock();
            if st.stopping {
                return self.refuse(Refusal::ShuttingDown);
            }
            if cfg.max_clients > 0 && st.clients.len() >= cfg.max_clients {
                drop(st);
                return self.refuse(Refusal::Full);
            }
            if per_ip_limited {
                let n = st.per_ip.entry(ip).or_insert(0);
                if *n >= cfg.max_clients_per_ip {
                    drop(st);
                    return self.refuse(Refusal::PerIp);
                }
                *n += 1;
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let client = Arc::new(Client::new(id, peer));
            st.clients.insert(id, client.clone());
            st.peak = st.peak.max(st.clients.len());
            client
        };
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        self.changed();
        Ok(client)
    }

    fn refuse(&self, why: Refusal) -> Result<Arc<Client>, Refusal> {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        Err(why)
    }

    /// Takes `nick` for a registered client: the client gets the welcome line, others `*** nick joined`.
    pub fn join(&self, id: ClientId, nick: &str) -> Result<Arc<str>, NickRefused> {
        validate_nick(nick).map_err(NickRefused::Invalid)?;
        let nick: Arc<str> = Arc::from(nick);
        let key = NickKey(nick.clone());
        let mut slow = Vec::new();
        let peer;
        {
            let mut st = self.lock();
            let Some(client) = st.clients.get(&id).cloned() else {
                return Err(NickRefused::Gone);
            };
            peer = client.peer;
            if st.stopping {
                return Err(NickRefused::Gone);
            }
            if st.nicks.contains_key(&key) {
                return Err(NickRefused::Taken);
            }
            st.nicks.insert(key, id);
            let member = Member {
                nick: nick.clone(),
                client: client.clone(),
            };
            st.members.insert(id, member);
            let n = st.members.len();
            // In a big room the welcome gives only the count, and nobody is told of the join.
            let listed = st.announce_presence(n).then(|| st.sorted_names());
            if listed.is_some() {
                st.fan_out(Some(id), &notice(&format!("{nick} joined")), 1, &mut slow);
            }
            let welcome = names::welcome(&nick, n, listed.as_deref());
            client.outbox.push(welcome, 2, usize::MAX);
        }
        info!(client = id, peer = %peer, nick = %nick, event = "join", "joined");
        self.changed();
        self.drop_slow(slow);
        Ok(nick)
    }

    /// Changes a member's nickname; everyone (the member included) sees `*** old is now known as new`.
    pub fn rename(&self, id: ClientId, new: &str) -> Result<(Arc<str>, Arc<str>), NickRefused> {
        validate_nick(new).map_err(NickRefused::Invalid)?;
        let new: Arc<str> = Arc::from(new);
        let key = NickKey(new.clone());
        let mut slow = Vec::new();
        let old = {
            let mut st = self.lock();
            let Some(member) = st.members.get(&id) else {
                return Err(NickRefused::Gone);
            };
            let old = member.nick.clone();
            if *old == *new {
                return Err(NickRefused::Unchanged);
            }
            match st.nicks.get(&key) {
                Some(owner) if *owner != id => return Err(NickRefused::Taken),
                _ => {}
            }
            st.members.get_mut(&id).unwrap().nick = new.clone();
            // Remove first: a change of case only (alice → Alice) is the same key.
            st.nicks.remove(&NickKey(old.clone()));
            st.nicks.insert(key, id);
            let line = notice(&format!("{old} is now known as {new}"));
            if st.announce_presence(st.members.len()) {
                st.fan_out(None, &line, 1, &mut slow);
            } else if let Some(m) = st.members.get(&id) {
                m.client.outbox.push(line, 1, usize::MAX);
            }
            old
        };
        info!(client = id, old = %old, nick = %new, event = "rename", "changed nickname");
        self.changed();
        self.drop_slow(slow);
        Ok((old, new))
    }

    /// Relays one buffer of `lines` already-formatted lines to every member except the sender.
    /// Returns true while some member's queue is more than half full: the sender should then pause
    /// before publishing more (back-pressure that paces a burst to what readers can take, instead
    /// of cutting off readers that are keeping up).
    pub fn publish(&self, from: ClientId, buf: Bytes, lines: u32) -> bool {
        let mut slow = Vec::new();
        let len = buf.len() as u64;
        let congested = {
            self.lock().fan_out(Some(from), &buf, lines, &mut slow);
            self.congested()
        };
        let relayed = &self.counters;
        relayed
            .lines_relayed
            .fetch_add(u64::from(lines), Ordering::Relaxed);
        relayed.bytes_relayed.fetch_add(len, Ordering::Relaxed);
        self.drop_slow(slow);
        congested
    }

    /// How many clients' queues are more than half full.
    pub fn congested_count(&self) -> usize {
        self.congested.load(Ordering::Relaxed)
    }

    /// True while some member's queue is more than half full. Lock-free: senders ask before reading.
    pub fn congested(&self) -> bool {
        self.congested_count() > 0
    }

    /// Counts clients that became congested outside a fan-out (a session's own replies).
    pub fn congested_by(&self, n: usize) {
        self.congested.fetch_add(n, Ordering::Relaxed);
    }

    /// A congested member's writer made progress (paused senders keep waiting while this moves).
    pub fn draining(&self) {
        self.drains.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times congested members made progress (wrapping; only compared for change).
    pub fn drains(&self) -> u32 {
        self.drains.load(Ordering::Relaxed)
    }

    /// A member's queue drained to half its limit, or the member left while congested.
    pub fn relieved(&self) {
        self.draining();
        // Every decrement matches an earlier increment for the same client (the outbox's flag
        // makes each transition happen once), so this cannot underflow.
        self.congested.fetch_sub(1, Ordering::Relaxed);
    }

    /// Delivers a private line to the member called `to`; returns that member's nickname as spelt.
    pub fn send_private(&self, to: &str, line: Bytes) -> Option<Arc<str>> {
        let key = NickKey::of(to);
        let (nick, pushed, id) = {
            let st = self.lock();
            let id = *st.nicks.get(&key)?;
            let m = st.members.get(&id)?;
            let (nick, pushed) = (
                m.nick.clone(),
                m.client.outbox.push(line, 1, st.queue_limit),
            );
            if pushed == Pushed::Congested {
                self.congested_by(1);
            }
            (nick, pushed, id)
        };
        if pushed == Pushed::Overflow {
            self.drop_slow(vec![id]);
        }
        Some(nick)
    }

    /// Sends one notice to every joined member; returns how many it reached.
    pub fn announce(&self, text: &str) -> usize {
        let line = notice(text);
        let mut slow = Vec::new();
        let n = {
            let st = self.lock();
            st.fan_out(None, &line, 1, &mut slow);
            st.members.len()
        };
        let reached = n - slow.len();
        self.drop_slow(slow);
        reached
    }

    /// The joined members' nicknames, sorted case-insensitively.
    pub fn who(&self) -> Vec<Arc<str>> {
        self.lock().sorted_names()
    }

    /// `/who` output for a client: a count and every name, wrapped into notice lines.
    pub fn who_lines(&self) -> Bytes {
        let mut out = BytesMut::new();
        names::push_online(&mut out, "", &self.who());
        out.freeze()
    }

    /// Removes a client (once): closes its outbox and, if it had joined, tells the others it left.
    /// Returns the nickname it had, if any. Calling it for a client already gone does nothing.
    pub fn leave(&self, id: ClientId, reason: LeaveReason) -> Option<Arc<str>> {
        self.leave_saying(id, reason, None)
    }

    /// Like [`leave`](Self::leave), queueing `farewell` (a goodbye, a kick or timeout notice) as
    /// the client's last line: it is pushed under the same lock as the removal, so no other line
    /// can follow it.
    pub fn leave_saying(
        &self,
        id: ClientId,
        reason: LeaveReason,
        farewell: Option<Bytes>,
    ) -> Option<Arc<str>> {
        let mut farewell = farewell;
        let mut work = vec![(id, reason)];
        let mut first_nick = None;
        let mut first = true;
        while let Some((id, reason)) = work.pop() {
            let mut slow = Vec::new();
            let removed = {
                let mut st = self.lock();
                let Some(client) = st.clients.remove(&id) else {
                    first = false;
                    continue;
                };
                if first && let Some(line) = farewell.take() {
                    client.outbox.push(line, 1, usize::MAX);
                }
                if client.outbox.take_drain_request() {
                    self.input_drained();
                }
                let ip = client.peer.ip().to_canonical();
                if let Some(n) = st.per_ip.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        st.per_ip.remove(&ip);
                    }
                }
                if client.outbox.close(Close::for_reason(reason.clone())) {
                    self.relieved();
                }
                let member = st.members.remove(&id);
                if let Some(m) = &member {
                    st.nicks.remove(&NickKey(m.nick.clone()));
                    if !st.stopping && st.announce_presence(st.members.len() + 1) {
                        let line = notice(&format!("{} left ({reason})", m.nick));
                        st.fan_out(None, &line, 1, &mut slow);
                    }
                }
                (client, member.map(|m| m.nick))
            };
            let (client, nick) = removed;
            self.changed();
            if matches!(reason, LeaveReason::QueueFull | LeaveReason::WriteTimeout) {
                self.counters.slow_drops.fetch_add(1, Ordering::Relaxed);
                warn!(
                    client = id, peer = %client.peer, nick = nick.as_deref().unwrap_or(""),
                    queued = client.outbox.unsent(), event = "slow_consumer",
                    "send queue full; disconnected as too slow"
                );
            }
            match &nick {
                Some(nick) => info!(
                    client = id, nick = %nick, event = "leave", reason = reason.kind(),
                    detail = %reason, "left"
                ),
                None => tracing::debug!(
                    client = id, peer = %client.peer, event = "disconnect", reason = reason.kind(),
                    "disconnected before choosing a nickname"
                ),
            }
            if first {
                first_nick = nick;
                first = false;
            }
            work.extend(slow.into_iter().map(|id| (id, LeaveReason::QueueFull)));
        }
        first_nick
    }

    /// Disconnects clients whose outbox overflowed during a fan-out (and any that overflow while
    /// hearing about it).
    fn drop_slow(&self, ids: Vec<ClientId>) {
        for id in ids {
            self.leave(id, LeaveReason::QueueFull);
        }
    }

    /// Kicks a client by id (all digits) or nickname: it gets `*** you were kicked: reason`, then leaves.
    /// Returns the id and nickname (if joined) of who was kicked.
    pub fn kick(&self, target: &str, reason: Option<&str>) -> Option<(ClientId, Option<Arc<str>>)> {
        let id = self.resolve(target)?;
        let text = match reason {
            Some(r) => format!("you were kicked: {r}"),
            None => "you were kicked".to_owned(),
        };
        let reason = LeaveReason::Kicked(reason.map(str::to_owned));
        let nick = self.leave_saying(id, reason, Some(notice(&text)));
        self.counters.kicks.fetch_add(1, Ordering::Relaxed);
        Some((id, nick))
    }

    /// Finds a client by id (a target made only of digits; nicknames always contain a letter) or nickname.
    pub fn resolve(&self, target: &str) -> Option<ClientId> {
        let st = self.lock();
        match target.parse::<ClientId>() {
            Ok(id) => st.clients.contains_key(&id).then_some(id),
            Err(_) => st.nicks.get(&NickKey::of(target)).copied(),
        }
    }

    /// The shared client with this id, if connected.
    pub fn client(&self, id: ClientId) -> Option<Arc<Client>> {
        self.lock().clients.get(&id).cloned()
    }

    /// Every connection, joined or not, ordered by id.
    pub fn list(&self) -> Vec<ClientInfo> {
        let st = self.lock();
        let mut out: Vec<ClientInfo> = st
            .clients
            .values()
            .map(|c| ClientInfo {
                client: c.clone(),
                nick: st.members.get(&c.id).map(|m| m.nick.clone()),
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

    /// Stopping, phase one (after the listeners closed): every session is asked to read and relay
    /// what its client has already sent, so that lines written before the stop reach the room
    /// before `*** server shutting down`. Wait for it with [`drained_all`](Self::drained_all).
    pub fn begin_drain(&self) {
        let st = self.lock();
        self.undrained.store(st.clients.len(), Ordering::SeqCst);
        self.draining.store(true, Ordering::SeqCst);
        for client in st.clients.values() {
            client.outbox.request_drain();
        }
        drop(st);
        self.drained.notify_waiters();
    }

    /// True during phase one of a stop.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// A session relayed its client's pending input, or left before it could: once per client asked.
    pub fn input_drained(&self) {
        if self.undrained.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.drained.notify_waiters();
        }
    }

    /// Resolves once every session has called [`input_drained`](Self::input_drained).
    pub async fn drained_all(&self) {
        loop {
            let done = self.drained.notified();
            if self.undrained.load(Ordering::SeqCst) == 0 {
                return;
            }
            done.await;
        }
    }

    /// Begins a graceful stop: refuses newcomers, and gives every connection `*** server shutting
    /// down` and a flushing close. Sessions then end by themselves and call [`leave`](Self::leave),
    /// which stays silent because everyone is leaving at once.
    pub fn shutdown(&self) {
        let line = notice("server shutting down");
        let mut relieved = 0;
        let mut st = self.lock();
        st.stopping = true;
        // Queue and close under the lock, so no fan-out can slip a line in after the notice.
        for client in st.clients.values() {
            client.outbox.push(line.clone(), 1, usize::MAX);
            relieved += usize::from(client.outbox.close(Close::Flush(LeaveReason::ShuttingDown)));
        }
        drop(st);
        self.congested.fetch_sub(relieved, Ordering::Relaxed);
    }

    /// True once [`shutdown`](Self::shutdown) has begun.
    pub fn is_stopping(&self) -> bool {
        self.lock().stopping
    }
}

#[cfg(test)]
mod tests;
