//! Names: the nickname key the registry hashes, why a nickname is refused, and the lines that
//! greet a newcomer and list who is in a room.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::client::ClientId;
use crate::protocol::format::{self, Wrap};
use crate::protocol::{Nick, NickError};

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
}
