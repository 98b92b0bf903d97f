//! The hub's side of a cluster: when rooms are shared with other nodes (`[cluster]`), what
//! members say is not appended to the room's log here but queued for the cluster link, which
//! publishes it to the broker; the log is then appended to from what comes back, in the broker's
//! one order, by [`Hub::apply`]. So a node delivers its own members' lines at the same place in
//! the order as every other node does, and never out of it.
//!
//! The hub knows the link only through [`Relay`] (implemented in `cluster`), so nothing here does
//! I/O, and the hub without a cluster is the hub as it always was: rooms then append directly and
//! none of this runs. Queued events are taken by the link itself ([`Room::take_outgoing`]) under
//! the room's lock, in order; the hub only rings it after unlocking.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use tracing::debug;

use super::deliver::Patience;
use super::room::Room;
use super::{Hub, enter};
use crate::client::{ClientId, Lag};
use crate::protocol::format::{notice, wrapped_notice};
use std::sync::atomic::Ordering;

/// Told to a member whose line could not be published because the link is down.
pub const NOT_SENT: &str = "cluster link lost; your line was not sent";

/// What kind of event a room queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Said {
    /// Chat or `/me`, kept as history.
    Chat,
    /// A notice.
    Note,
    /// A topic change (a notice that sets the topic).
    Topic,
    /// A member of this node joined (with its notice, or none in a big room): it takes its seat
    /// where this comes back.
    Join,
}

/// One event a room queued for the cluster.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// What it is.
    pub said: Said,
    /// The member who said it (it does not get it back), or [`super::log::NOBODY`].
    pub from: ClientId,
    /// Formatted lines.
    pub bytes: Bytes,
    /// How many lines.
    pub lines: u32,
    /// For a topic change, the new topic.
    pub topic: Option<Arc<str>>,
    /// Who the notice says came or went.
    pub moved: Roster,
}

/// Who a notice says left and who joined (a rename is both), carried with it so that the other
/// nodes' lists of members change with the notice itself: their copy of the nickname bucket,
/// followed through a watch of its own, may come a moment later, and `/who` must not contradict
/// a notice just shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    /// The nickname that left the room.
    pub left: Option<Arc<str>>,
    /// The nickname that entered it.
    pub joined: Option<Arc<str>>,
}

impl Roster {
    /// `nick` left the room.
    pub(super) fn left(nick: &Arc<str>) -> Roster {
        Roster {
            left: Some(nick.clone()),
            joined: None,
        }
    }

    /// `nick` entered it.
    pub(super) fn joined(nick: &Arc<str>) -> Roster {
        Roster {
            left: None,
            joined: Some(nick.clone()),
        }
    }

    /// `old` is now called `new`.
    pub(super) fn renamed(old: &Arc<str>, new: &Arc<str>) -> Roster {
        Roster {
            left: Some(old.clone()),
            joined: Some(new.clone()),
        }
    }
}

/// An event that came back from the broker, for [`Hub::apply`].
#[derive(Debug, Clone)]
pub struct Incoming {
    /// What it is.
    pub said: Said,
    /// The local member who said it (so it is not echoed), or NOBODY.
    pub from: ClientId,
    /// Formatted lines.
    pub bytes: Bytes,
    /// How many lines.
    pub lines: u32,
    /// When the broker stored it (history's time stamps).
    pub at: SystemTime,
    /// For a topic change, the new topic.
    pub topic: Option<String>,
}

/// A change in who holds which nickname where, for the cluster's claims.
#[derive(Debug, Clone)]
pub enum Membership {
    /// The member now sits in `room` (it joined, moved or was renamed) under `nick`.
    In {
        /// Its nickname's registry keys.
        keys: Vec<Arc<str>>,
        /// As spelt.
        nick: Arc<str>,
        /// Its room, as spelt.
        room: Arc<str>,
    },
    /// These keys are no longer held (it left, or renamed away from them).
    Released {
        /// Registry keys given up.
        keys: Vec<Arc<str>>,
    },
}

/// A member on another node, found by nickname.
#[derive(Debug, Clone)]
pub struct Remote {
    /// Its node.
    pub node: String,
    /// Its nickname as spelt.
    pub nick: Arc<str>,
}

/// The cluster link, as the hub uses it. Every method returns at once: nothing blocks on the
/// broker, and none is called under the hub's or a room's lock.
pub trait Relay: Send + Sync + std::fmt::Debug {
    /// True while the link to the broker is up.
    fn up(&self) -> bool;
    /// `room` queued events: take them ([`Room::take_outgoing`]) and publish them.
    fn ring(&self, room: &Arc<Room>);
    /// Claims follow a member.
    fn membership(&self, change: Membership);
    /// Nicknames of members on other nodes sitting in the room with registry key `room_key`.
    fn remote_names(&self, room_key: &str) -> Vec<Arc<str>>;
    /// The member on another node holding any of `keys`.
    fn remote_member(&self, keys: &[Arc<str>]) -> Option<Remote>;
    /// Sends a formatted private line to `nick` on `node`.
    fn send_private(&self, node: &str, nick: &str, line: Bytes);
    /// Claims `keys` for client `owner`, called `nick`, sitting in `room`, across the cluster;
    /// the reason as the member is told it if not.
    fn claim(
        self: Arc<Self>,
        owner: ClientId,
        keys: Vec<Arc<str>>,
        nick: Arc<str>,
        room: Arc<str>,
    ) -> Waiting<Result<(), String>>;
    /// Makes sure the room called `name` is here with its history before a member enters it.
    fn prepare_room(self: Arc<Self>, name: String) -> Waiting<()>;
    /// The link's totals, for `/metrics`.
    fn totals(&self) -> RelayTotals;
}

/// The cluster link's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RelayTotals {
    /// Connected, with the stream and buckets made.
    pub up: bool,
    /// Events published.
    pub published: u64,
    /// Of those, acknowledged.
    pub acked: u64,
    /// Failed broker operations.
    pub errors: u64,
    /// Events applied from the stream.
    pub applied: u64,
    /// The last broker round trip in seconds (0 before the first).
    pub rtt_secs: f64,
}

/// An answer from the cluster, awaited by a session (which reads nothing more meanwhile).
pub type Waiting<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl Room {
    /// Queues an event for the cluster under the lock `st` (this room's).
    pub(super) fn queue(&self, st: &mut super::room::RoomState, out: Outgoing) {
        st.outgoing.push(out);
        self.queued.store(true, Ordering::Release);
    }

    /// Queues member `id`'s join as `nick` (`text`, if the room is told of it).
    pub(super) fn queue_join(
        &self,
        st: &mut super::room::RoomState,
        id: ClientId,
        nick: &Arc<str>,
        text: Option<&str>,
    ) {
        st.arriving.push(id);
        let (bytes, lines) = match text {
            Some(t) => (wrapped_notice(st.wrap, t), 1),
            None => (Bytes::new(), 0),
        };
        let out = Outgoing {
            said: Said::Join,
            from: id,
            bytes,
            lines,
            topic: None,
            moved: Roster::joined(nick),
        };
        self.queue(st, out);
    }

    /// The events queued for the cluster, oldest first.
    pub fn take_outgoing(&self) -> Vec<Outgoing> {
        let mut st = self.lock();
        self.queued.store(false, Ordering::Release);
        std::mem::take(&mut st.outgoing)
    }

    /// The registry key the cluster names this room by.
    pub fn cluster_key(&self) -> &str {
        &self.key
    }

    /// The room's name as spelt.
    pub fn display_name(&self) -> &str {
        &self.name
    }
}

impl Hub {
    /// Connects the hub to a cluster link: from now on rooms made with `[cluster]` in force
    /// queue for it. Set once, at start.
    pub fn set_relay(&self, relay: Arc<dyn Relay>) {
        let _ = self.relay.set(relay);
    }

    pub(super) fn relay(&self) -> Option<&Arc<dyn Relay>> {
        self.relay.get()
    }

    /// The cluster link, if rooms are shared with one.
    pub(crate) fn relay_handle(&self) -> Option<Arc<dyn Relay>> {
        self.relay.get().cloned()
    }

    /// A nickname as it would be taken, and its registry keys; or why it cannot be.
    pub(crate) fn nick_keys(
        &self,
        nick: &str,
    ) -> Result<(Arc<str>, Vec<Arc<str>>), super::NickRefused> {
        let valid = crate::protocol::validate_nick(nick).map_err(super::NickRefused::Invalid)?;
        let keys = super::names::NickKeys::of(&valid).to_vec();
        Ok((Arc::from(valid.as_str()), keys))
    }

    /// The name of the room newcomers enter.
    pub(crate) fn default_room_name(&self) -> Arc<str> {
        self.lock().rooms.default_room().name.clone()
    }

    /// Rings the link if `room` queued anything.
    pub(super) fn forward(&self, room: &Arc<Room>) {
        if room.queued.load(Ordering::Acquire)
            && let Some(relay) = self.relay()
        {
            relay.ring(room);
        }
    }

    /// A member's chat, in a room shared with the cluster: queued for the broker (the member's
    /// lines come back through [`apply`](Self::apply) like everyone's). While the link is down
    /// the sender is told its line was not sent, instead of it being dropped silently or
    /// delivered here out of the cluster's order. None if the sender no longer sits in `room`.
    pub(super) fn publish_relayed(
        &self,
        room: &Arc<Room>,
        from: ClientId,
        buf: Bytes,
        lines: u32,
    ) -> Option<bool> {
        let up = self.relay().is_some_and(|r| r.up());
        {
            let mut st = room.lock();
            if !st.seats.contains_key(&from) {
                return None;
            }
            if up {
                let out = Outgoing {
                    said: Said::Chat,
                    from,
                    bytes: buf,
                    lines,
                    topic: None,
                    moved: Roster::default(),
                };
                room.queue(&mut st, out);
            }
        }
        if up {
            self.forward(room);
        } else {
            self.tell_member(from, NOT_SENT);
        }
        Some(false)
    }

    /// A line for one client alone, now (`*** text`).
    pub fn tell_member(&self, id: ClientId, text: &str) {
        let found = {
            let st = self.lock();
            st.clients
                .get(&id)
                .map(|c| (c.clone(), st.members.get(&id).map(|m| m.room.clone())))
        };
        if let Some((client, room)) = found {
            let limit = self.config().max_queue_bytes;
            if self.reply(&client, room.as_deref(), notice(text), 1, limit) == Lag::Overflow {
                self.drop_slow(vec![id]);
            }
        }
    }

    /// Appends an event that came back from the broker to its room's log (if anyone here sits
    /// in it; a room nobody here is in is skipped, and its history is read from the broker when
    /// someone enters it) and delivers it. Called by the link's one consumer, in the broker's
    /// order.
    pub fn apply(self: &Arc<Self>, room_name: &str, ev: Incoming) {
        let Some(room) = enter::find(&self.lock().rooms, room_name).cloned() else {
            debug!(room = room_name, "event for a room nobody here is in");
            return;
        };
        if ev.said == Said::Join {
            let notice = (ev.lines > 0).then(|| ev.bytes.clone());
            if ev.from != super::log::NOBODY && self.arrive(ev.from, &room, notice) {
                return;
            }
            if ev.lines == 0 {
                return; // a silent join (a big room) of someone elsewhere
            }
        }
        let len = ev.bytes.len() as u64;
        let limit = {
            let mut st = room.lock();
            match ev.said {
                Said::Chat => {
                    st.history.record(&ev.bytes, ev.at);
                    room.count_lines(ev.lines);
                }
                Said::Topic => {
                    if let Some(t) = &ev.topic {
                        st.topic = Arc::from(t.as_str());
                    }
                }
                Said::Note | Said::Join => {}
            }
            room.append(&mut st, ev.from, ev.bytes, ev.lines);
            st.queue_limit
        };
        if ev.said == Said::Chat {
            let c = &self.counters;
            c.lines_relayed
                .fetch_add(u64::from(ev.lines), Ordering::Relaxed);
            c.bytes_relayed.fetch_add(len, Ordering::Relaxed);
        }
        // Someone's join elsewhere is a join notice here, as patient as one of this node's.
        let patience = match ev.said {
            Said::Join => Patience::Presence,
            Said::Chat | Said::Note | Said::Topic => Patience::Chat,
        };
        self.deliver_or_defer(&room, len, limit, patience);
    }

    /// Seeds a room's history and topic from the broker (a node starting, or the first member
    /// here entering a room that lives on other nodes). `lines` are (time, formatted chat), oldest
    /// first; they go before anything the room has recorded since.
    pub fn seed_room(
        &self,
        room_name: &str,
        lines: Vec<(SystemTime, Bytes)>,
        topic: Option<String>,
    ) {
        let Some(room) = enter::find(&self.lock().rooms, room_name).cloned() else {
            return;
        };
        let mut st = room.lock();
        st.history.seed(lines);
        if let Some(t) = topic {
            st.topic = Arc::from(t.as_str());
        }
    }

    /// Every member's nickname keys and nickname (claims to take over after an upgrade).
    pub fn member_keys(&self) -> Vec<(Vec<Arc<str>>, Arc<str>)> {
        self.lock()
            .members
            .values()
            .map(|m| (m.keys.to_vec(), m.nick.clone()))
            .collect()
    }

    /// Forgets rooms users made that nobody here sits in and, by `elsewhere` (given a room's
    /// key), nobody on another node either.
    pub fn sweep_empty_rooms(&self, elsewhere: impl Fn(&str) -> bool) {
        let mut st = self.lock();
        let empty: Vec<Arc<Room>> = st
            .rooms
            .iter()
            .filter(|r| !elsewhere(&r.key))
            .cloned()
            .collect();
        for room in empty {
            st.rooms.remove_if_abandoned(&room);
        }
    }

    /// Every room's name.
    pub fn room_names(&self) -> Vec<String> {
        self.lock()
            .rooms
            .iter()
            .map(|r| r.name.to_string())
            .collect()
    }

    /// The registry key of the room called `name`, made here (as users' rooms are) if it does
    /// not exist and may be made; with whether it was made now.
    pub fn room_for_cluster(&self, name: &str) -> Option<(String, bool)> {
        let valid = crate::protocol::validate_room(name).ok()?;
        let cfg = self.config();
        let mut st = self.lock();
        if let Some(room) = st.rooms.get(&valid) {
            return Some((room.key.to_string(), false));
        }
        if !cfg.allow_user_rooms || st.rooms.len() >= cfg.max_rooms {
            return None;
        }
        let room = st
            .rooms
            .create(&valid, super::room::Kind::User, "", None, &cfg)?;
        Some((room.key.to_string(), true))
    }

    /// Tells every member here one line, outside the cluster's order (the link itself: lost,
    /// restored): it is about this node, and the broker may be what is missing.
    pub fn tell_everyone_here(&self, text: &str) {
        let rooms: Vec<Arc<Room>> = self.lock().rooms.iter().cloned().collect();
        for room in &rooms {
            {
                let mut st = room.lock();
                let line = wrapped_notice(st.wrap, text);
                room.append(&mut st, super::log::NOBODY, line, 1);
            }
            self.deliver(room);
        }
    }
}
