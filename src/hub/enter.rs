//! Changing rooms, topics, the room list, and the rooms the configuration defines.
//!
//! A move is one step under the hub's lock with both rooms locked (safe: moves are serialised by
//! the hub's lock, and a publisher only ever holds one room's): the member loses its seat in the
//! old room, gets one in the new room, and its output is switched between the two logs while
//! neither can grow, so it receives everything said in the old room before it left and
//! everything said in the new one after it came, nothing of either beyond that, and never its
//! own leave notice. Then the old room is told `*** alice left (moved to #rust)`, the new one
//! `*** alice joined`, and the member gets the room's name, topic, who is there and its history.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use tracing::info;

use super::log::NOBODY;
use super::registry::Rooms;
use super::relay::Said;
use super::room::{Kind, Room, RoomInfo};
use super::{Hub, State, names};
use crate::client::ClientId;
use crate::protocol::format::{self, Wrap};
use crate::protocol::{RoomName, RoomNameError, fold_case, validate_room};
use crate::settings::Settings;

/// Longest topic, in characters.
pub const TOPIC_MAX_CHARS: usize = 300;

/// Why a member could not enter a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnterRefused {
    /// Not a room name.
    Invalid(RoomNameError),
    /// The member is in that room already.
    AlreadyThere(Arc<str>),
    /// No such room, and users may not make rooms.
    NoSuchRoom(String),
    /// Making it would pass `max_rooms`.
    TooManyRooms(usize),
    /// The client is not a member (or is leaving), or the daemon is stopping.
    Gone,
}

impl std::fmt::Display for EnterRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnterRefused::Invalid(e) => write!(f, "{e}"),
            EnterRefused::AlreadyThere(room) => write!(f, "you are in {room} already"),
            EnterRefused::NoSuchRoom(room) => write!(
                f,
                "there is no room {room}, and new rooms cannot be made here (/rooms lists them)"
            ),
            EnterRefused::TooManyRooms(max) => write!(
                f,
                "the server has reached its limit of {max} rooms (/rooms lists them)"
            ),
            EnterRefused::Gone => f.write_str("not in a room"),
        }
    }
}

/// Why a topic was not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicRefused {
    /// No room by that name (or the member is in none).
    NoSuchRoom,
    /// Longer than [`TOPIC_MAX_CHARS`].
    TooLong,
}

impl std::fmt::Display for TopicRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopicRefused::NoSuchRoom => f.write_str("no such room"),
            TopicRefused::TooLong => write!(f, "topics are at most {TOPIC_MAX_CHARS} characters"),
        }
    }
}

/// Whose room a topic is set for.
#[derive(Debug, Clone, Copy)]
pub enum TopicOf<'a> {
    /// The room of that name (with or without `#`): the operator's `chatctl topic`.
    Room(&'a str),
    /// The room this member sits in: its `/topic TEXT`.
    MemberOf(ClientId),
}

/// The room called `name` (with or without `#`), if there is one.
pub(super) fn find<'a>(rooms: &'a Rooms, name: &str) -> Option<&'a Arc<Room>> {
    rooms.get(&validate_room(name).ok()?)
}

/// Makes the configuration's rooms (the default room first) in a new hub.
pub(super) fn make_predefined(rooms: &mut Rooms, s: &Settings) {
    for rc in s.predefined_rooms() {
        if let Ok(name) = validate_room(&rc.name) {
            let room = rooms.create(&name, Kind::Predefined, &rc.topic, rc.history_lines, s);
            if let Some(room) = room {
                room.lock().config_topic = Arc::from(rc.topic.as_str());
            }
        }
    }
    if let Ok(name) = validate_room(&s.default_room) {
        rooms.set_default(&name);
    }
    if !rooms.has_default() {
        // Not reached with a configuration that passed its checks; a hub must have a room.
        if let Ok(name) = validate_room("lobby") {
            rooms.create(&name, Kind::Predefined, "", None, s);
            rooms.set_default(&name);
        }
    }
}

/// What a move leaves to do once the hub's lock is released.
pub(super) struct Moved {
    old: Arc<Room>,
    new: Arc<Room>,
    client: Arc<crate::client::Client>,
    /// Someone was told in each room (so it needs a delivery).
    told_old: bool,
    told_new: bool,
    /// Its nickname and keys, for the cluster's claims.
    keys: super::names::NickKeys,
    nick: Arc<str>,
}

impl Hub {
    /// Moves member `id` into the room called `name`, made if it does not exist and
    /// `allow_user_rooms` (or `by_operator`) permits; `note` goes to the member first.
    pub fn enter(
        self: &Arc<Self>,
        id: ClientId,
        name: &str,
        note: Option<&str>,
        by_operator: bool,
    ) -> Result<Arc<Room>, EnterRefused> {
        let valid = validate_room(name).map_err(EnterRefused::Invalid)?;
        let cfg = self.config();
        let moved = {
            let mut st = self.lock();
            if st.stopping {
                return Err(EnterRefused::Gone);
            }
            let old = st.members.get(&id).ok_or(EnterRefused::Gone)?.room.clone();
            if st.rooms.get(&valid).is_some_and(|r| Arc::ptr_eq(r, &old)) {
                return Err(EnterRefused::AlreadyThere(old.name.clone()));
            }
            let new = match st.rooms.get(&valid) {
                Some(room) => room.clone(),
                None => {
                    // Alone in a room users made, the member frees one by leaving it: moving
                    // from it to a new room does not add one.
                    let frees = {
                        let rs = old.lock();
                        rs.kind == Kind::User && rs.seats.len() == 1
                    };
                    self.make_room(&mut st, &valid, &cfg, by_operator, frees)?
                }
            };
            let note = note.map(|n| format::wrapped_notice(cfg.wrap, n));
            self.relocate(&mut st, id, &new, note)
                .ok_or(EnterRefused::Gone)?
        };
        Ok(self.after_move(moved))
    }

    fn make_room(
        &self,
        st: &mut State,
        name: &RoomName,
        cfg: &Settings,
        by_operator: bool,
        frees_one: bool,
    ) -> Result<Arc<Room>, EnterRefused> {
        if !cfg.allow_user_rooms && !by_operator {
            return Err(EnterRefused::NoSuchRoom(name.as_str().to_owned()));
        }
        if st.rooms.len() - usize::from(frees_one) >= cfg.max_rooms {
            return Err(EnterRefused::TooManyRooms(cfg.max_rooms));
        }
        let room = st
            .rooms
            .create(name, Kind::User, "", None, cfg)
            .ok_or(EnterRefused::TooManyRooms(cfg.max_rooms))?;
        info!(room = %room.name, event = "room_created", "room created");
        Ok(room)
    }

    /// Moves member `id` back to the default room (`/part`).
    pub fn part(self: &Arc<Self>, id: ClientId) -> Result<Arc<Room>, EnterRefused> {
        let default = self.lock().rooms.default_room().name.clone();
        self.enter(id, &default, None, false)
    }

    /// Deliveries and the log once a move is done and the hub's lock released.
    fn after_move(self: &Arc<Self>, m: Moved) -> Arc<Room> {
        // Released now, not in the move: it may wake senders, never done under a room's lock.
        m.client.outbox.release_congestion();
        info!(
            client = m.client.id, from = %m.old.name, room = %m.new.name, event = "move",
            "changed rooms"
        );
        self.changed();
        self.claims_follow(&m.keys, &m.nick, &m.new);
        if m.told_old {
            self.deliver(&m.old);
        }
        if m.told_new {
            self.deliver(&m.new);
        } else {
            self.flush_one(&m.client, &m.new);
        }
        m.new
    }

    /// The topic of `room` (a name), or of `id`'s room.
    pub fn topic(&self, id: ClientId) -> Option<(Arc<str>, Arc<str>)> {
        let room = self.room_of(id)?;
        let topic = room.lock().topic.clone();
        Some((room.name.clone(), topic))
    }

    /// Sets the topic of `room` as `by` (a nickname; None for the operator), and tells the room.
    /// An empty text clears it. Returns the room's name.
    pub fn set_topic(
        &self,
        room: TopicOf<'_>,
        text: &str,
        by: Option<&str>,
    ) -> Result<Arc<str>, TopicRefused> {
        let text = text.trim();
        if text.chars().nth(TOPIC_MAX_CHARS).is_some() {
            return Err(TopicRefused::TooLong);
        }
        let room = match room {
            TopicOf::Room(name) => find(&self.lock().rooms, name).cloned(),
            TopicOf::MemberOf(id) => self.room_of(id),
        }
        .ok_or(TopicRefused::NoSuchRoom)?;
        let who = by.unwrap_or("the operator");
        {
            let mut rs = room.lock();
            rs.topic = Arc::from(text);
            let line = topic_notice(who, text);
            room.notice_from(&mut rs, NOBODY, Said::Topic, &line);
        }
        info!(room = %room.name, by = who, topic = text, event = "topic", "topic set");
        self.deliver(&room);
        Ok(room.name.clone())
    }

    /// Every room, sorted by name.
    pub fn rooms(&self) -> Vec<RoomInfo> {
        let rooms: Vec<Arc<Room>> = self.lock().rooms.iter().cloned().collect();
        let mut infos: Vec<RoomInfo> = rooms.iter().map(|r| r.info()).collect();
        infos.sort_by_cached_key(|i| fold_case(&i.name).collect::<String>());
        infos
    }

    /// `/rooms` for member `id`: every room with its member count and topic, its own marked.
    pub fn rooms_lines(&self, id: ClientId) -> Bytes {
        let here = self.room_of(id).map(|r| r.name.clone());
        let wrap = self.config().wrap;
        let rooms = self.rooms();
        let mut out = BytesMut::new();
        let n = rooms.len();
        let count = if n == 1 {
            "1 room".to_owned()
        } else {
            format!("{n} rooms")
        };
        format::push_notice(&mut out, &format!("{count} (/join NAME to enter one):"));
        for r in &rooms {
            let mark = if here.as_ref() == Some(&r.name) {
                ", you are here"
            } else {
                ""
            };
            let mut line = format!("{} ({}{mark})", r.name, r.members);
            if !r.topic.is_empty() {
                line.push_str(": ");
                line.push_str(&r.topic);
            }
            format::push_wrapped_notice(&mut out, wrap, &line);
        }
        out.freeze()
    }

    /// Applies the configuration's rooms (a reload): makes new ones, follows changed ones (a
    /// topic the configuration changed replaces the current one), and closes removed ones, moving
    /// their members to the default room with a notice. Every room follows the new settings.
    pub(crate) fn apply_rooms(self: &Arc<Self>, s: &Settings) {
        let mut moves = Vec::new();
        let mut topics = Vec::new();
        {
            let mut st = self.lock();
            let mut wanted = Vec::new();
            for rc in s.predefined_rooms() {
                let Ok(name) = validate_room(&rc.name) else {
                    continue; // checked when the configuration was read
                };
                let room = match st.rooms.get(&name) {
                    Some(room) => room.clone(),
                    None => {
                        let made = st.rooms.create(&name, Kind::Predefined, &rc.topic, None, s);
                        let Some(room) = made else { continue };
                        info!(room = %room.name, event = "room_created", "room created (configuration)");
                        room
                    }
                };
                wanted.push(room.key.clone());
                room.follow(s, rc.history_lines);
                let mut rs = room.lock();
                rs.kind = Kind::Predefined;
                if *rs.config_topic != *rc.topic {
                    rs.config_topic = Arc::from(rc.topic.as_str());
                    if *rs.topic != *rc.topic {
                        rs.topic = rs.config_topic.clone();
                        let line = topic_notice("the operator", &rc.topic);
                        room.notice_from(&mut rs, NOBODY, Said::Topic, &line);
                        topics.push(room.clone());
                    }
                }
            }
            if let Ok(name) = validate_room(&s.default_room) {
                st.rooms.set_default(&name);
            }
            let default = st.rooms.default_room().clone();
            let closing: Vec<Arc<Room>> = st
                .rooms
                .iter()
                .filter(|r| {
                    r.lock().kind == Kind::Predefined && !wanted.iter().any(|k| **k == *r.key)
                })
                .cloned()
                .collect();
            for room in closing {
                let ids: Vec<ClientId> = room.lock().seats.keys().copied().collect();
                let note = format::wrapped_notice(
                    s.wrap,
                    &format!(
                        "{} was closed by the operator; you are back in {}.",
                        room.name, default.name
                    ),
                );
                for id in ids {
                    if let Some(m) = self.relocate(&mut st, id, &default, Some(note.clone())) {
                        moves.push(m);
                    }
                }
                st.rooms.remove(&room);
                info!(room = %room.name, event = "room_closed", "room closed (configuration)");
            }
            for room in st.rooms.iter() {
                if room.lock().kind == Kind::User {
                    room.follow(s, None);
                }
            }
        }
        for m in moves {
            self.after_move(m);
        }
        for room in &topics {
            self.deliver(room);
        }
        self.changed();
    }
}

/// Moves member `id` to `new` under the hub's lock `st` (see the module header); None if it is
/// not a member. The caller finishes with [`Hub::after_move`] once it has released the lock.
impl Hub {
    fn relocate(
        &self,
        st: &mut State,
        id: ClientId,
        new: &Arc<Room>,
        note: Option<Bytes>,
    ) -> Option<Moved> {
        let member = st.members.get_mut(&id)?;
        let keys = member.keys.clone();
        let old = member.room.clone();
        if Arc::ptr_eq(&old, new) {
            return None;
        }
        let client = member.client.clone();
        let nick = member.nick.clone();
        let (told_old, told_new) = {
            let mut from = old.lock();
            let mut to = new.lock();
            from.unseat(id);
            let stop_at = from.log.end();
            to.seat(id, nick.clone(), client.clone());
            let n = to.seats.len();
            let listed = to
                .announce_presence(n)
                .then(|| self.with_remote(new, to.sorted_names()).into_owned());
            if listed.is_some() {
                let moved = super::relay::Roster::joined(&nick);
                new.presence_notice(&mut to, id, &format!("{nick} joined"), moved);
            }
            let start = to.log.tail().clone();
            let at = start.end;
            // Neither log can grow while both locks are held, so the switch point is exact.
            client.outbox.switch(id, &client.stats, stop_at, start);
            let told_old = from.announce_presence(from.seats.len() + 1);
            if told_old {
                let moved = super::relay::Roster::left(&nick);
                let text = format!("{nick} left (moved to {})", new.name);
                old.presence_notice(&mut from, NOBODY, &text, moved);
            }
            if let Some(note) = note {
                client.outbox.push_private(at, note, 1);
            }
            let entered = entered(to.wrap, &new.name, &to.topic, n, listed.as_deref());
            client.outbox.push_private(at, entered, 1);
            let history = to.history.replay(&new.name, SystemTime::now());
            client.outbox.push_private_all(at, history);
            (told_old, listed.is_some())
        };
        member.room = new.clone();
        st.rooms.remove_if_abandoned(&old);
        Some(Moved {
            old,
            new: new.clone(),
            client,
            told_old,
            told_new,
            keys,
            nick,
        })
    }
}

/// What a room is told when `who` sets its topic to `text` (empty: clears it).
pub(super) fn topic_notice(who: &str, text: &str) -> String {
    if text.is_empty() {
        format!("{who} cleared the topic")
    } else {
        format!("{who} set the topic: {text}")
    }
}

/// What a member sees on entering a room: its name, topic and who is there (or how many).
fn entered(wrap: Wrap, room: &str, topic: &str, n: usize, names: Option<&[Arc<str>]>) -> Bytes {
    let topic = if topic.is_empty() {
        "no topic".to_owned()
    } else {
        format!("topic: {topic}")
    };
    let lead = format!("Now in {room} ({topic}). ");
    let mut out = BytesMut::new();
    match names {
        Some(names) => names::push_online(&mut out, wrap, &lead, names),
        None => format::push_wrapped_notice(
            &mut out,
            wrap,
            &format!("{lead}{n} online (type /who to list them)"),
        ),
    }
    out.freeze()
}
