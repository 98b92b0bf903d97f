//! Names: the nickname key the registry hashes, why a nickname is refused, a room's names kept
//! sorted between joins, and the lines that greet a newcomer and list who is in a room.

use std::borrow::Cow;
use std::cmp;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

use super::Hub;
use super::room::{Room, RoomState};
use crate::client::{Client, ClientId};
use crate::protocol::format::{self, Wrap};
use crate::protocol::{Nick, NickError, fold_case};

/// Width a `/who` or welcome name list wraps at.
const NAME_LINE_WIDTH: usize = 400;

/// Why a nickname could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NickRefused {
    /// It breaks the nickname rules.
    Invalid(NickError),
    /// Another client has it, or one that looks the same (same [`Nick::key`]).
    Taken,
    /// It is already this client's nickname.
    Unchanged,
    /// The client is gone or the daemon is stopping.
    Gone,
}

impl std::fmt::Display for NickRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NickRefused::Invalid(e) => write!(f, "{e}"),
            NickRefused::Taken => f.write_str("that nickname is taken"),
            NickRefused::Unchanged => f.write_str("that is already your nickname"),
            NickRefused::Gone => f.write_str("the server is shutting down"),
        }
    }
}

/// Nickname registry: each key a member's nickname holds → that member.
pub(super) type Registry = HashMap<Arc<str>, ClientId>;

/// The registry keys a member's nickname holds ([`Nick::keys`]: one or two case-folded confusable
/// skeletons), computed once when the nickname is validated and kept beside the member's display
/// form, so hashing and comparing in the registry is plain string work.
#[derive(Debug, Clone)]
pub(crate) struct NickKeys(Box<[Arc<str>]>);

impl NickKeys {
    pub(super) fn of(nick: &Nick) -> NickKeys {
        NickKeys(nick.keys().map(Arc::from).collect())
    }

    /// A member other than `me` whose nickname shares a key with this one.
    pub(super) fn held_by_other(&self, nicks: &Registry, me: ClientId) -> bool {
        self.0
            .iter()
            .any(|k| nicks.get(k).is_some_and(|&owner| owner != me))
    }

    pub(super) fn insert(&self, nicks: &mut Registry, id: ClientId) {
        for k in &self.0 {
            nicks.insert(k.clone(), id);
        }
    }

    /// Removes the keys `id` holds (never another member's).
    /// The keys, for the cluster's claims.
    pub(super) fn to_vec(&self) -> Vec<Arc<str>> {
        self.0.to_vec()
    }

    pub(super) fn remove(&self, nicks: &mut Registry, id: ClientId) {
        for k in &self.0 {
            if nicks.get(k) == Some(&id) {
                nicks.remove(k);
            }
        }
    }
}

/// The member whose nickname looks like `nick` (shares a key with it).
pub(super) fn lookup(nicks: &Registry, nick: &Nick) -> Option<ClientId> {
    nick.keys().find_map(|k| nicks.get(k).copied())
}

/// Appends `*** {lead}N online: a, b, c`, or, when that would be too wide, the count on one line and
/// the names wrapped over as many notice lines as they need (a `/who` in a room of thousands).
/// Each notice is also broken at `wrap`, like every line the server sends with names in it.
pub(super) fn push_online(out: &mut BytesMut, wrap: Wrap, lead: &str, names: &[Arc<str>]) {
    let n = names.len();
    let list = names.iter().map(|s| &**s).collect::<Vec<_>>().join(", ");
    let line = format!("{lead}{n} online: {list}");
    if line.len() <= NAME_LINE_WIDTH {
        format::push_wrapped_notice(out, wrap, &line);
    } else {
        format::push_wrapped_notice(out, wrap, &format!("{lead}{n} online:"));
        format::push_name_lines(out, wrap, names.iter().map(|s| &**s), NAME_LINE_WIDTH);
    }
}

/// A newcomer's welcome: who is online in its room (`names`, or only the count of `members` when
/// the room is too big to list), the room's topic if it has one, then where to find help.
pub(super) fn welcome(
    wrap: Wrap,
    nick: &str,
    members: usize,
    names: Option<&[Arc<str>]>,
    topic: &str,
) -> Bytes {
    let mut out = BytesMut::new();
    let lead = format!("Welcome, {nick}! ");
    match names {
        Some(names) => push_online(&mut out, wrap, &lead, names),
        None => format::push_wrapped_notice(
            &mut out,
            wrap,
            &format!("{lead}{members} online (type /who to list them)"),
        ),
    }
    if !topic.is_empty() {
        format::push_wrapped_notice(&mut out, wrap, &format!("Topic: {topic}"));
    }
    format::push_notice(&mut out, "Type /help for commands.");
    out.freeze()
}

/// Nicknames sorted case-insensitively (`/who` order), with the folded form each sorts by: a
/// room's list between joins (see `RoomState::sorted_names`).
///
/// Kept up to date by insertion and removal (a binary search and a move of the tail) only while
/// the room announces joins: then every join's welcome lists the names, and sorting them afresh
/// per join made a join storm's first `presence_max_members` joins quadratic in allocations. A
/// bigger room drops the list (a move per join would cost more than the rare `/who` that sorts).
#[derive(Debug, Default)]
pub(super) struct SortedNames {
    /// `fold_case` of each name, in the same order.
    keys: Vec<Box<str>>,
    names: Vec<Arc<str>>,
}

impl SortedNames {
    fn key(nick: &str) -> Box<str> {
        fold_case(nick).collect::<String>().into_boxed_str()
    }

    pub(super) fn of<'a>(nicks: impl Iterator<Item = &'a Arc<str>>) -> SortedNames {
        let mut pairs: Vec<(Box<str>, Arc<str>)> =
            nicks.map(|n| (SortedNames::key(n), n.clone())).collect();
        pairs.sort_unstable();
        let (keys, names) = pairs.into_iter().unzip();
        SortedNames { keys, names }
    }

    pub(super) fn as_slice(&self) -> &[Arc<str>] {
        &self.names
    }

    /// Where (`key`, `nick`) is, or goes.
    fn position(&self, key: &str, nick: &str) -> Result<usize, usize> {
        let (mut low, mut high) = (0, self.keys.len());
        while low < high {
            let mid = low + (high - low) / 2;
            match (&*self.keys[mid], &*self.names[mid]).cmp(&(key, nick)) {
                cmp::Ordering::Less => low = mid + 1,
                cmp::Ordering::Greater => high = mid,
                cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(low)
    }

    pub(super) fn insert(&mut self, nick: &Arc<str>) {
        let key = SortedNames::key(nick);
        if let Err(i) = self.position(&key, nick) {
            self.keys.insert(i, key);
            self.names.insert(i, nick.clone());
        }
    }

    pub(super) fn remove(&mut self, nick: &str) {
        if let Ok(i) = self.position(&SortedNames::key(nick), nick) {
            self.keys.remove(i);
            self.names.remove(i);
        }
    }
}

impl Hub {
    /// Starts a newcomer's output at the end of `room`'s log (`rs`, its state, locked): the
    /// welcome (`n` members, their names if `listed`, the topic), then the room's history. For
    /// a join here and for a seat taken where a cluster join comes back (`Hub::arrive`).
    pub(super) fn welcome_here(
        &self,
        room: &Room,
        rs: &mut RoomState,
        client: &Client,
        nick: &str,
        n: usize,
        listed: bool,
    ) {
        let start = rs.log.tail().clone();
        let end = start.end;
        client.outbox.start_after(start);
        // The names are borrowed from the room's sorted list (no copy unless other nodes add
        // some), so the rest of `rs` is read before it.
        let (wrap, topic) = (rs.wrap, rs.topic.clone());
        let names = listed.then(|| self.with_remote(room, rs.sorted_names()));
        let welcome = welcome(wrap, nick, n, names.as_deref(), &topic);
        client.outbox.push_private(end, welcome, 2);
        let history = rs.history.replay(&room.name, SystemTime::now());
        client.outbox.push_private_all(end, history);
    }

    /// The nicknames in `id`'s room, sorted case-insensitively, with the room.
    pub fn who(&self, id: ClientId) -> Option<(Arc<str>, Vec<Arc<str>>)> {
        let room = self.room_of(id)?;
        let names = room.lock().sorted_names().to_vec();
        let names = self.with_remote(&room, &names).into_owned();
        Some((room.name.clone(), names))
    }

    /// `names` (of members here, sorted) with the members of `room` on the cluster's other
    /// nodes, sorted the same way.
    pub(super) fn with_remote<'a>(
        &self,
        room: &Room,
        names: &'a [Arc<str>],
    ) -> Cow<'a, [Arc<str>]> {
        if let Some(relay) = self.relay() {
            let remote = relay.remote_names(&room.key);
            if !remote.is_empty() {
                let mut names = names.to_vec();
                names.extend(remote);
                names.sort_by_cached_key(|n| fold_case(n).collect::<String>());
                names.dedup();
                return Cow::Owned(names);
            }
        }
        Cow::Borrowed(names)
    }

    /// `/who` output for a client: how many are in its room and every name, wrapped into
    /// notice lines (as before rooms existed: the room is named on entering it, and by `/rooms`).
    pub fn who_lines(&self, id: ClientId) -> Bytes {
        let mut out = BytesMut::new();
        if let Some((_, names)) = self.who(id) {
            push_online(&mut out, self.config().wrap, "", &names);
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::validate_nick;

    fn keys(nick: &str) -> NickKeys {
        NickKeys::of(&validate_nick(nick).unwrap())
    }

    #[test]
    fn look_alikes_share_keys_and_only_the_holder_releases_them() {
        let mut nicks = Registry::new();
        keys("Al").insert(&mut nicks, 1);
        keys("bob").insert(&mut nicks, 2);
        // Capital I looks like l, rn like m, Cyrillic capitals like Latin ones, case aside.
        for (nick, holder) in [
            ("AI", 1),
            ("aL", 1),
            ("\u{412}\u{41e}\u{412}", 2),
            ("BOB", 2),
        ] {
            assert!(keys(nick).held_by_other(&nicks, 99), "{nick}");
            assert!(!keys(nick).held_by_other(&nicks, holder), "{nick}");
            assert_eq!(lookup(&nicks, &validate_nick(nick).unwrap()), Some(holder));
        }
        assert!(!keys("carol").held_by_other(&nicks, 99));
        // Removing a name another member holds leaves that member's keys alone.
        keys("AI").remove(&mut nicks, 2);
        assert!(keys("Al").held_by_other(&nicks, 99));
        keys("Al").remove(&mut nicks, 1);
        assert!(!keys("AI").held_by_other(&nicks, 99));
        assert_eq!(nicks.len(), 1, "{nicks:?}");
    }

    /// What `SortedNames` must always equal: the names sorted afresh.
    fn sorted(names: &[&str]) -> Vec<Arc<str>> {
        let mut v: Vec<Arc<str>> = names.iter().map(|&n| Arc::from(n)).collect();
        v.sort_by_cached_key(|n| fold_case(n).collect::<String>());
        v
    }

    #[test]
    fn names_kept_by_insertion_and_removal_match_a_fresh_sort() {
        let mut names = SortedNames::default();
        let mut now: Vec<&str> = Vec::new();
        let all = [
            "bob", "Alice", "carol", "ÉLODIE", "élan", "Zed", "_x", "9lives", "Straße", "strasse",
        ];
        for n in all {
            names.insert(&Arc::from(n));
            now.push(n);
            assert_eq!(names.names, sorted(&now), "after inserting {n}");
        }
        for n in ["carol", "bob", "nobody", "Zed"] {
            names.remove(n);
            now.retain(|&m| m != n);
            assert_eq!(names.names, sorted(&now), "after removing {n}");
        }
        let fresh = SortedNames::of(now.iter().map(|&n| Arc::from(n)).collect::<Vec<_>>().iter());
        assert_eq!(fresh.names, names.names);
        assert_eq!(fresh.keys, names.keys);
    }
}
