//! The room: who is connected, who has joined under which nickname, and delivery between them.
//!
//! Invariants:
//! - One `std::sync::Mutex` guards membership and the room's [`log`]. It is never held across an
//!   `.await`, and under it a publish does only O(1) work: append one entry (the order everyone
//!   sees) and clone the shared member list. Nothing is pushed to, locked for or woken in any
//!   recipient there.
//! - After unlocking, the publisher writes to every member's socket itself ([`Client::flush`]),
//!   and judges each member's lag: past `max_queue_bytes` the member is cut off as too slow,
//!   nobody else is delayed or loses a line.
//! - A client ends through [`Hub::close`] only (see `close.rs`): the removal from the room is the
//!   state change, so its leave is announced exactly once whoever closes it, and its last line
//!   (goodbye, kick notice, shutdown notice) is queued with the removal, so nothing follows it.
//! - Lines are formatted once and shared as [`Bytes`]; recipients get reference-count bumps.

pub(crate) mod admission;
mod close;
mod deliver;
pub(crate) mod handover;
pub(crate) use deliver::{deliver_deferred, deliver_overdue, enable_deferred_delivery};
pub(crate) mod log;
mod names;

pub use names::NickRefused;
use names::{NickKeys, Registry};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::info;

use crate::client::{Client, ClientId, Congestion, Lag, Limits};
use crate::config::{Config, IpNet};
use crate::drain::Drain;
use crate::protocol::format::{Wrap, wrapped_notice};
use crate::protocol::{fold_case, validate_nick};
use crate::settings::{Settings, SettingsCell};
use deliver::Shards;
use log::{Log, NOBODY};

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
}

/// Why a connection was refused at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_clients` reached.
    Full,
    /// `max_clients_per_ip` reached for the peer's network.
    PerIp,
    /// The peer's network is over `connect_rate`; its next connection is admitted in about this
    /// many seconds.
    ConnectRate {
        /// Whole seconds, at least 1.
        retry_secs: u32,
    },
    /// The daemon is stopping.
    ShuttingDown,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Full => f.write_str("server full"),
            // "address" although it counts per network: with the default prefixes (/32, /64)
            // that is what a user has, and scripts already match on it.
            Refusal::PerIp => f.write_str("too many connections from your address"),
            Refusal::ConnectRate { retry_secs } => write!(
                f,
                "too many connections from your network; try again in {retry_secs} s"
            ),
            Refusal::ShuttingDown => f.write_str("server shutting down"),
        }
    }
}

/// A joined member: the nickname lives here, the connection in [`Client`].
#[derive(Debug, Clone)]
struct Member {
    nick: Arc<str>,
    /// The nickname's registry keys, computed once at join or rename.
    keys: NickKeys,
    client: Arc<Client>,
}

/// A snapshot of one connection for `chatctl list`.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The shared client.
    pub client: Arc<Client>,
    /// Its nickname, if it has joined.
    pub nick: Option<Arc<str>>,
    /// Bytes owed to it and not yet written.
    pub unsent: u64,
}

/// Who gets a publish, handed from under the lock to the delivery after it.
type Recipients = Arc<[Arc<Client>]>;

#[derive(Debug, Default)]
struct State {
    /// Every open connection, joined or still choosing a nickname.
    clients: HashMap<ClientId, Arc<Client>>,
    /// Joined members.
    members: HashMap<ClientId, Member>,
    /// Nickname keys (case- and confusable-insensitive) → member, for uniqueness and lookups.
    nicks: Registry,
    /// Open connections per network (`Config::network_of`), for non-exempt peers only.
    per_ip: HashMap<IpNet, usize>,
    /// The network each counted client was counted under, fixed at connect time: a reload that
    /// changes the prefixes or exemptions must not make a close decrement another entry.
    counted_as: HashMap<ClientId, IpNet>,
    /// The room's output, in the one order every member sees.
    log: Log,
    /// The members as one shared list for publishers; rebuilt on the first publish after a
    /// membership change, so a join storm without notices costs nothing here.
    recipients: Option<Recipients>,
    peak: usize,
    stopping: bool,
    /// Copied from the settings so publishers read them under the lock they already hold.
    presence_max: usize,
    queue_limit: usize,
    wrap: Wrap,
}

impl State {
    fn announce_presence(&self, members: usize) -> bool {
        self.presence_max == 0 || members <= self.presence_max
    }

    fn recipients(&mut self) -> Recipients {
        let members = &self.members;
        self.recipients
            .get_or_insert_with(|| members.values().map(|m| m.client.clone()).collect())
            .clone()
    }

    fn members_changed(&mut self) {
        self.recipients = None;
    }

    fn sorted_names(&self) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self.members.values().map(|m| m.nick.clone()).collect();
        names.sort_by_cached_key(|n| fold_case(n).collect::<String>());
        names
    }
}

/// The room. Shared as `Arc<Hub>` by the accept loops, sessions, the admin socket and the notifier.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    settings: SettingsCell,
    /// The log's length, readable without the lock (where a private reply goes in the order).
    log_end: AtomicU64,
    next_id: AtomicU64,
    /// Bumped on every membership change, for the status notifier (and tests) to wait on.
    changes: watch::Sender<u64>,
    congestion: Arc<Congestion>,
    /// Who writes new log entries to the members (see `deliver`).
    shards: Shards,
    /// Recent connections per network, for `connect_rate` (see `admission`).
    connect_rate: admission::ConnectRate,
    /// Stopping, phase one (see [`Hub::begin_drain`]).
    drain: Drain,
    /// Daemon-wide totals.
    pub counters: Counters,
    /// When the service started (this process, or the first of a line of upgrades), wall clock.
    pub started_at: SystemTime,
    /// When this process's hub was created, monotonic.
    pub started: Instant,
}

impl Hub {
    /// An empty room governed by `config`.
    pub fn new(config: Config) -> Self {
        let workers = config.worker_threads;
        let state = State {
            presence_max: config.presence_max_members,
            queue_limit: config.max_queue_bytes,
            wrap: Wrap::at(config.wrap_width),
            ..State::default()
        };
        Hub {
            state: Mutex::new(state),
            settings: SettingsCell::new(Settings::new(config)),
            log_end: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            changes: watch::Sender::new(0),
            congestion: Arc::default(),
            shards: Shards::new(workers),
            connect_rate: admission::ConnectRate::default(),
            drain: Drain::default(),
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

    /// The settings in force.
    pub fn config(&self) -> Arc<Settings> {
        self.settings.load()
    }

    /// The cell sessions follow the settings through.
    pub fn settings(&self) -> &SettingsCell {
        &self.settings
    }

    /// Puts a new configuration in force (reload). Limits apply to existing clients from their
    /// next read or publish.
    pub fn set_config(&self, config: Config) {
        {
            let mut st = self.lock();
            st.presence_max = config.presence_max_members;
            st.queue_limit = config.max_queue_bytes;
            st.wrap = Wrap::at(config.wrap_width);
        }
        self.settings.store(Settings::new(config));
    }

    /// The room's congestion, for senders that pause on it.
    pub fn congestion(&self) -> &Arc<Congestion> {
        &self.congestion
    }

    /// The log's length now: where a private line queued now goes in a member's order.
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

    /// Admits a new connection on `stream` (still without a nickname), or says why not and hands
    /// the stream back.
    pub fn register(
        &self,
        peer: SocketAddr,
        stream: TcpStream,
    ) -> Result<Arc<Client>, (Refusal, TcpStream)> {
        let cfg = self.config();
        // Counted per network, under the key computed now (see `counted_as`).
        let network = (cfg.max_clients_per_ip > 0 && !cfg.is_exempt(peer.ip()))
            .then(|| cfg.network_of(peer.ip()));
        let refused = {
            let mut st = self.lock();
            if st.stopping {
                Some(Refusal::ShuttingDown)
            } else if cfg.max_clients > 0 && st.clients.len() >= cfg.max_clients {
                Some(Refusal::Full)
            } else if let Some(net) = network
                && st.per_ip.get(&net).copied().unwrap_or(0) >= cfg.max_clients_per_ip
            {
                Some(Refusal::PerIp)
            } else {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                if let Some(net) = network {
                    *st.per_ip.entry(net).or_insert(0) += 1;
                    st.counted_as.insert(id, net);
                }
                let client = Arc::new(Client::new(id, peer, stream));
                client
                    .outbox
                    .push_private(0, cfg.greeting.clone(), 1 + cfg.motd.len() as u32);
                st.clients.insert(id, client.clone());
                st.peak = st.peak.max(st.clients.len());
                drop(st);
                self.counters.connections.fetch_add(1, Ordering::Relaxed);
                self.changed();
                return Ok(client);
            }
        };
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        Err((refused.expect("refused"), stream))
    }

    /// Takes `nick` for a registered client: the client gets the welcome line, others `*** nick joined`.
    pub fn join(self: &Arc<Self>, id: ClientId, nick: &str) -> Result<Arc<str>, NickRefused> {
        let valid = validate_nick(nick).map_err(NickRefused::Invalid)?;
        let keys = NickKeys::of(&valid);
        let nick: Arc<str> = Arc::from(valid.as_str());
        let (client, notified) = {
            let mut st = self.lock();
            let Some(client) = st.clients.get(&id).cloned() else {
                return Err(NickRefused::Gone);
            };
            if st.stopping {
                return Err(NickRefused::Gone);
            }
            if keys.held_by_other(&st.nicks, id) {
                return Err(NickRefused::Taken);
            }
            keys.insert(&mut st.nicks, id);
            let member = Member {
                nick: nick.clone(),
                keys,
                client: client.clone(),
            };
            st.members.insert(id, member);
            st.members_changed();
            let n = st.members.len();
            // In a big room the welcome gives only the count, and nobody is told of the join.
            let listed = st.announce_presence(n).then(|| st.sorted_names());
            if listed.is_some() {
                let line = wrapped_notice(st.wrap, &format!("{nick} joined"));
                st.log.append(NOBODY, line, 1);
            }
            let end = st.log.end();
            self.log_end.store(end, Ordering::SeqCst);
            // The newcomer's output starts after the notice, with the welcome.
            client.outbox.start_after(st.log.tail().clone());
            let welcome = names::welcome(st.wrap, &nick, n, listed.as_deref());
            client.outbox.push_private(end, welcome, 2);
            (client, listed.is_some())
        };
        info!(client = id, peer = %client.peer, nick = %nick, event = "join", "joined");
        self.changed();
        // A join storm's notices are delivered like chat: at the end of the worker's batch, so
        // many joins cost one write per member, not one each.
        if notified {
            self.deliver_or_defer(0, self.config().max_queue_bytes);
        } else {
            self.flush_one(&client);
        }
        Ok(nick)
    }

    /// Changes a member's nickname; everyone (the member included) sees `*** old is now known as new`.
    pub fn rename(&self, id: ClientId, new: &str) -> Result<(Arc<str>, Arc<str>), NickRefused> {
        let valid = validate_nick(new).map_err(NickRefused::Invalid)?;
        let keys = NickKeys::of(&valid);
        let new: Arc<str> = Arc::from(valid.as_str());
        let old = {
            let mut st = self.lock();
            let Some(member) = st.members.get(&id) else {
                return Err(NickRefused::Gone);
            };
            let old = member.nick.clone();
            let old_keys = member.keys.clone();
            if *old == *new {
                return Err(NickRefused::Unchanged);
            }
            if keys.held_by_other(&st.nicks, id) {
                return Err(NickRefused::Taken);
            }
            // Remove first: a change of case only (alice → Alice) holds the same keys.
            old_keys.remove(&mut st.nicks, id);
            keys.insert(&mut st.nicks, id);
            if let Some(m) = st.members.get_mut(&id) {
                m.nick = new.clone();
                m.keys = keys;
            }
            // Announced at any room size, unlike joins and leaves: renames are rare, and a silent
            // one is how someone would take over a name that just left.
            let line = wrapped_notice(st.wrap, &format!("{old} is now known as {new}"));
            let end = st.log.append(NOBODY, line, 1).end;
            self.log_end.store(end, Ordering::SeqCst);
            old
        };
        info!(client = id, old = %old, nick = %new, event = "rename", "changed nickname");
        self.changed();
        self.deliver();
        Ok((old, new))
    }

    /// Relays one buffer of `lines` already-formatted lines to every member except the sender, in
    /// the room's one order. Returns true while some member is congested: the sender should then
    /// pause before reading more (back-pressure that paces a burst to what readers can take,
    /// instead of cutting off readers that are keeping up).
    pub fn publish(self: &Arc<Self>, from: ClientId, buf: Bytes, lines: u32) -> bool {
        let len = buf.len() as u64;
        let limit = {
            let mut st = self.lock();
            let end = st.log.append(from, buf, lines).end;
            self.log_end.store(end, Ordering::SeqCst);
            st.queue_limit
        };
        let relayed = &self.counters;
        relayed
            .lines_relayed
            .fetch_add(u64::from(lines), Ordering::Relaxed);
        relayed.bytes_relayed.fetch_add(len, Ordering::Relaxed);
        self.deliver_or_defer(len, limit);
        self.congestion.any()
    }

    /// Writes `client`'s pending output now (a line for it alone was queued under the lock).
    fn flush_one(&self, client: &Client) {
        client.flush(self.limits(self.log_end(), self.config().max_queue_bytes));
    }

    /// Queues a line for `client` alone (a reply to its own command), writes it if the socket
    /// takes it, and says whether the client is now too far behind.
    pub(crate) fn reply(&self, client: &Client, buf: Bytes, lines: u32, limit: usize) -> Lag {
        let len = buf.len() as u64;
        let end = self.log_end();
        client.outbox.push_private(end, buf, lines);
        let limits = self.limits(end, limit);
        client.flush(limits);
        client.outbox.judge(len, limits)
    }

    /// Delivers a private line to the member called `to`; returns that member's nickname as spelt.
    pub fn send_private(&self, to: &str, line: Bytes) -> Option<Arc<str>> {
        // No member has an invalid name, so an invalid one needs no lookup.
        let to = validate_nick(to).ok()?;
        let (nick, client, limit) = {
            let st = self.lock();
            let id = names::lookup(&st.nicks, &to)?;
            let m = st.members.get(&id)?;
            (m.nick.clone(), m.client.clone(), st.queue_limit)
        };
        if self.reply(&client, line, 1, limit) == Lag::Overflow {
            self.drop_slow(vec![client.id]);
        }
        Some(nick)
    }

    /// Sends one notice to every joined member; returns how many it was sent to.
    pub fn announce(&self, text: &str) -> usize {
        let members = {
            let mut st = self.lock();
            let line = wrapped_notice(st.wrap, text);
            let end = st.log.append(NOBODY, line, 1).end;
            self.log_end.store(end, Ordering::SeqCst);
            st.members.len()
        };
        self.deliver();
        members
    }

    /// The joined members' nicknames, sorted case-insensitively.
    pub fn who(&self) -> Vec<Arc<str>> {
        self.lock().sorted_names()
    }

    /// `/who` output for a client: a count and every name, wrapped into notice lines.
    pub fn who_lines(&self) -> Bytes {
        let mut out = BytesMut::new();
        names::push_online(&mut out, self.config().wrap, "", &self.who());
        out.freeze()
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
        let end = self.log_end();
        let st = self.lock();
        let mut out: Vec<ClientInfo> = st
            .clients
            .values()
            .map(|c| ClientInfo {
                client: c.clone(),
                nick: st.members.get(&c.id).map(|m| m.nick.clone()),
                unsent: c.outbox.lag(end),
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

    /// How many clients are congested now (for `chatctl stats`).
    pub fn congested_count(&self) -> usize {
        self.congestion.count()
    }
}

#[cfg(test)]
mod tests;
