//! Handing the room to a new process (upgrade) and taking it over.
//!
//! The old side: [`Hub::freeze`] asks every session to stop at a consistent point, between two
//! reads, and give up its input state (a [`FreezeRequest`] each, counted like the stop's drain
//! tickets); [`Hub::export`] then stops every writer and takes what each client is still owed, and
//! [`Hub::thaw`] undoes both if the upgrade is rolled back. Nothing is read or written between the
//! freeze and the commit or the thaw, so the snapshot is exactly what the clients have not seen
//! and the new process starts where this one stopped: no line lost, none twice.
//!
//! The new side: [`Hub::restore`] rebuilds the room from the snapshot around the sockets that came
//! with it, before any session runs. Chat rooms move with their topics and history, and every
//! member keeps its room; the new process's configuration decides which rooms are predefined and
//! which is the default (see [`restore_rooms`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::history::SavedLine;
use super::names::NickKeys;
use super::registry::Rooms;
use super::room::Kind;
use super::{Counters, Hub, Member};
use crate::client::{Client, ClientId, Stream, Transport};
use crate::config::IpNet;
use crate::drain::{Drain, DrainTicket};
use crate::protocol::validate_room;
use crate::session::InputState;
use crate::settings::Settings;
use crate::upgrade::snapshot::{ChatRoom, ClientState, HistoryLine, Room, RoomKind, Totals};
use crate::ws::handover::Given;

/// One session's part in a freeze: it gives its input state and so gives back the ticket.
#[derive(Debug)]
pub(crate) struct FreezeRequest {
    _ticket: DrainTicket,
    states: Arc<Mutex<HashMap<ClientId, InputState>>>,
}

impl FreezeRequest {
    /// Hands over `id`'s input state; the session then ends without touching the connection.
    pub(crate) fn give(self, id: ClientId, state: InputState) {
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, state);
    }
}

/// The room while frozen: the sessions that stopped, with what they gave up.
#[derive(Debug, Default)]
pub(crate) struct Frozen {
    sessions: Vec<(Arc<Client>, InputState)>,
    exported: bool,
}

/// A connection ready for a session, after a thaw or a restore.
pub(crate) struct Resumed {
    pub(crate) client: Arc<Client>,
    pub(crate) nick: Option<Arc<str>>,
    pub(crate) input: InputState,
}

impl Counters {
    fn totals(&self) -> Totals {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        Totals {
            connections: get(&self.connections),
            rejected: get(&self.rejected),
            lines_relayed: get(&self.lines_relayed),
            bytes_relayed: get(&self.bytes_relayed),
            kicks: get(&self.kicks),
            slow_drops: get(&self.slow_drops),
            throttled: get(&self.throttled),
            tls_handshake_failures: get(&self.tls_handshake_failures),
        }
    }

    fn restore(&self, t: &Totals) {
        let set = |n: &AtomicU64, v: u64| n.store(v, Ordering::Relaxed);
        set(&self.connections, t.connections);
        set(&self.rejected, t.rejected);
        set(&self.lines_relayed, t.lines_relayed);
        set(&self.bytes_relayed, t.bytes_relayed);
        set(&self.kicks, t.kicks);
        set(&self.slow_drops, t.slow_drops);
        set(&self.throttled, t.throttled);
        set(&self.tls_handshake_failures, t.tls_handshake_failures);
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Hub {
    /// Stops every session between two reads and collects its input state; waits at most
    /// `limit`. On failure every session that stopped is already running again.
    pub(crate) async fn freeze(&self, limit: Duration) -> Result<Frozen, String> {
        let drain = Drain::default();
        let states = Arc::new(Mutex::new(HashMap::new()));
        // TLS clients (line and `wss://`) are not frozen: their TLS session cannot leave this
        // process, so they are closed before an upgrade instead (`upgrade::upgrader::part_relayed`).
        // WebSocket clients over plain HTTP are, their relays frozen first (`ws::handover`).
        let clients: Vec<Arc<Client>> = self
            .lock()
            .clients
            .values()
            .filter(|c| c.moves())
            .cloned()
            .collect();
        for client in &clients {
            client.outbox.request_freeze(FreezeRequest {
                _ticket: drain.ticket(),
                states: states.clone(),
            });
        }
        let finished = tokio::time::timeout(limit, drain.finished()).await.is_ok();
        // Requests not yet taken are withdrawn, so no session freezes after this point.
        for client in &clients {
            drop(client.outbox.take_freeze());
        }
        let mut states = std::mem::take(&mut *states.lock().unwrap_or_else(|e| e.into_inner()));
        let sessions = clients
            .into_iter()
            .filter_map(|c| states.remove(&c.id).map(|s| (c, s)))
            .collect();
        let frozen = Frozen {
            sessions,
            exported: false,
        };
        if finished {
            Ok(frozen)
        } else {
            let n = frozen.sessions.len();
            self.thaw(frozen);
            Err(format!("sessions did not stop within {limit:?} ({n} did)"))
        }
    }

    /// The room for a snapshot. Stops all writing to the frozen clients: from here on their
    /// output is the snapshot's, until [`thaw`](Self::thaw). `relays` are the frozen WebSocket
    /// relays: a WebSocket client goes with its relay's sockets and state, or not at all.
    pub(crate) fn export(
        &self,
        frozen: &mut Frozen,
        upgrades: u64,
        relays: &HashMap<ClientId, Given>,
    ) -> (Room, Vec<std::os::fd::RawFd>) {
        use std::os::fd::AsRawFd;
        frozen.exported = true;
        let st = self.lock();
        let now = Instant::now();
        let mut fds = Vec::with_capacity(frozen.sessions.len());
        // The sockets come from the frozen clients themselves, in the same order; one closed
        // since it froze (nothing of it is in the room any more) is not handed over.
        let clients = frozen
            .sessions
            .iter()
            .filter(|(client, _)| {
                st.clients.contains_key(&client.id) && !client.outbox.is_closing()
            })
            .filter_map(|(client, input)| {
                let relay = match client.transport {
                    Transport::WebSocket => Some(relays.get(&client.id)?),
                    _ => None,
                };
                Some((client, input, relay))
            })
            .map(|(client, input, relay)| {
                let c = client.as_ref();
                let member = st.members.get(&c.id);
                let state = ClientState {
                    id: c.id,
                    peer: c.peer,
                    connected_at_ms: unix_ms(c.connected_at),
                    connected_for_ms: now.saturating_duration_since(c.connected).as_millis() as u64,
                    nick: member.map(|m| m.nick.to_string()),
                    counted_as: st.counted_as.get(&c.id).map(ToString::to_string),
                    lines_in: c.stats.lines_in.load(Ordering::Relaxed),
                    bytes_in: c.stats.bytes_in.load(Ordering::Relaxed),
                    lines_out: c.stats.lines_out.load(Ordering::Relaxed),
                    bytes_out: c.stats.bytes_out.load(Ordering::Relaxed),
                    last_active_ms: c.stats.last_active_ms.load(Ordering::Relaxed),
                    input: input.clone(),
                    unsent: c.outbox.freeze_output(c.id, &c.stats),
                    room: member.map(|m| m.room.name.to_string()),
                    websocket: relay.map(|r| r.state.clone()),
                };
                fds.push(c.stream.as_raw_fd());
                fds.extend(relay.iter().flat_map(|r| [r.pipe, r.tcp]));
                state
            })
            .collect();
        let mut rooms: Vec<ChatRoom> = st.rooms.iter().map(|r| save_room(r)).collect();
        rooms.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let room = Room {
            service_started_at_ms: unix_ms(self.started_at),
            upgrades,
            next_id: self.next_id.load(Ordering::SeqCst),
            peak: st.peak,
            counters: self.counters.totals(),
            clients,
            connect_rate: self.connect_rate.export(now),
            rooms,
        };
        (room, fds)
    }

    /// Undoes a freeze (the upgrade was rolled back): writing resumes and the sessions to start
    /// again are returned, each with the input it gave up.
    pub(crate) fn thaw(&self, frozen: Frozen) -> Vec<Resumed> {
        let st = self.lock();
        frozen
            .sessions
            .into_iter()
            .map(|(client, input)| {
                if frozen.exported {
                    client.outbox.thaw();
                }
                let nick = st.members.get(&client.id).map(|m| m.nick.clone());
                Resumed {
                    client,
                    nick,
                    input,
                }
            })
            .collect()
    }

    /// Rebuilds `room` in this (new, empty) hub around `streams`, one per client in order (a
    /// WebSocket client's is the session's end of its socket pair); the sessions to start are
    /// returned. Called before anything is served.
    pub(crate) fn restore(&mut self, room: Room, streams: Vec<Stream>) -> Vec<Resumed> {
        let now = Instant::now();
        self.started_at = UNIX_EPOCH + Duration::from_millis(room.service_started_at_ms);
        self.counters
            .upgrades
            .store(room.upgrades, Ordering::Relaxed);
        self.next_id.store(room.next_id, Ordering::SeqCst);
        self.counters.restore(&room.counters);
        self.connect_rate.import(&room.connect_rate, now);
        let cfg = self.config();
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        st.peak = room.peak;
        let (homes, retitled) = restore_rooms(&mut st.rooms, room.rooms, &room.clients, &cfg);
        let default = st.rooms.default_room().clone();
        let mut resumed = Vec::with_capacity(room.clients.len());
        for (c, stream) in room.clients.into_iter().zip(streams) {
            let connected = now
                .checked_sub(Duration::from_millis(c.connected_for_ms))
                .unwrap_or(now);
            let connected_at = UNIX_EPOCH + Duration::from_millis(c.connected_at_ms);
            let transport = match c.websocket {
                Some(_) => Transport::WebSocket,
                None => Transport::Tcp,
            };
            let client = Arc::new(Client::restored(
                c.id,
                c.peer,
                connected_at,
                connected,
                stream,
                transport,
            ));
            let s = &client.stats;
            s.lines_in.store(c.lines_in, Ordering::Relaxed);
            s.bytes_in.store(c.bytes_in, Ordering::Relaxed);
            s.lines_out.store(c.lines_out, Ordering::Relaxed);
            s.bytes_out.store(c.bytes_out, Ordering::Relaxed);
            s.last_active_ms.store(c.last_active_ms, Ordering::Relaxed);
            if let Some(net) = c.counted_as.and_then(|n| n.parse::<IpNet>().ok()) {
                *st.per_ip.entry(net).or_insert(0) += 1;
                st.counted_as.insert(c.id, net);
            }
            // Checked by `Snapshot::decode`: valid, in display form, no key shared.
            let valid = c
                .nick
                .as_deref()
                .and_then(|n| crate::protocol::validate_nick(n).ok());
            let nick: Option<Arc<str>> = valid.as_ref().map(|v| Arc::from(v.as_str()));
            if let (Some(nick), Some(valid)) = (&nick, &valid) {
                // A version 1 snapshot names no room, and a room may not have been restored.
                let home = c.room.as_deref().and_then(|r| homes.get(r));
                let home = home.unwrap_or(&default).clone();
                let keys = NickKeys::of(valid);
                keys.insert(&mut st.nicks, c.id);
                st.members.insert(
                    c.id,
                    Member {
                        nick: nick.clone(),
                        keys,
                        client: client.clone(),
                        room: home.clone(),
                    },
                );
                let mut rs = home.lock();
                rs.seat(c.id, nick.clone(), client.clone());
                // Room output starts at the new log's beginning, after what was owed.
                client.outbox.start_after(rs.log.tail().clone());
            }
            client
                .outbox
                .push_private(0, bytes::Bytes::from(c.unsent), 0);
            st.clients.insert(c.id, client.clone());
            resumed.push(Resumed {
                client,
                nick,
                input: c.input,
            });
        }
        st.peak = st.peak.max(st.clients.len());
        // Told once everyone sits there, as a reload tells it (and words it: see `apply_rooms`).
        for room in retitled {
            let mut rs = room.lock();
            let line = super::enter::topic_notice("the operator", &rs.topic.clone());
            room.notice(&mut rs, &line);
        }
        resumed
    }
}

/// A chat room for the snapshot.
fn save_room(room: &super::Room) -> ChatRoom {
    let rs = room.lock();
    let history = rs.history.export().into_iter();
    ChatRoom {
        name: room.name.to_string(),
        topic: rs.topic.to_string(),
        config_topic: rs.config_topic.to_string(),
        kind: match rs.kind {
            Kind::Predefined => RoomKind::Predefined,
            Kind::User => RoomKind::User,
        },
        history: history
            .map(|l| HistoryLine {
                at: l.at,
                line: l.line,
            })
            .collect(),
        lines: room.lines(),
    }
}

/// Rebuilds the snapshot's chat rooms in a new hub, whose configuration has made the predefined
/// ones (and chosen the default) already. Returns the room for each saved name restored, and the
/// rooms whose topic the configuration changed (to be announced).
/// - A room the configuration predefines takes the saved history, and the saved topic unless the
///   configuration's topic for it has changed since (as a reload does: see `apply_rooms`).
/// - Any other room stays, as one users made, if someone sits in it: a predefined room the new
///   configuration dropped too, so an upgrade moves nobody; it goes when its last member leaves.
///   `max_rooms` is not applied to rooms that exist already (nor is it by a reload).
/// - A room nobody sits in that the configuration does not predefine is dropped.
fn restore_rooms(
    rooms: &mut Rooms,
    saved: Vec<ChatRoom>,
    clients: &[ClientState],
    s: &Settings,
) -> (HashMap<String, Arc<super::Room>>, Vec<Arc<super::Room>>) {
    let occupied: std::collections::HashSet<&str> =
        clients.iter().filter_map(|c| c.room.as_deref()).collect();
    let mut homes = HashMap::with_capacity(saved.len());
    let mut retitled = Vec::new();
    for r in saved {
        let Ok(name) = validate_room(&r.name) else {
            continue; // checked by `Snapshot::decode`
        };
        let room = match rooms.get(&name) {
            Some(room) => {
                let mut rs = room.lock();
                if *rs.config_topic == *r.config_topic {
                    rs.topic = Arc::from(r.topic.as_str());
                } else if *rs.topic != *r.topic {
                    retitled.push(room.clone());
                }
                room.clone()
            }
            None if occupied.contains(r.name.as_str()) => {
                let Some(room) = rooms.create(&name, Kind::User, &r.topic, None, s) else {
                    warn!(
                        room = %r.name, event = "room_lost",
                        "upgrade: no log slot for a room; its members go to the default room"
                    );
                    continue;
                };
                room.lock().config_topic = Arc::from(r.config_topic.as_str());
                if r.kind == RoomKind::Predefined {
                    info!(
                        room = %room.name, event = "room_kept",
                        "upgrade: room no longer configured kept as a user room while occupied"
                    );
                }
                room
            }
            None => {
                if r.kind == RoomKind::Predefined {
                    info!(
                        room = %r.name, event = "room_closed",
                        "upgrade: room no longer configured, and empty, closed"
                    );
                }
                continue;
            }
        };
        let lines = r.history.into_iter().map(|l| SavedLine {
            at: l.at,
            line: l.line,
        });
        room.lock().history.import(lines.collect());
        room.add_lines(r.lines);
        homes.insert(r.name, room);
    }
    (homes, retitled)
}
