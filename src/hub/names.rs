//! Names in the room: the case-insensitive nickname key, why a nickname is refused, and the
//! lines that greet a newcomer and list who is online.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::protocol::format::{self, Wrap};
use crate::protocol::{NickError, fold_case};

/// Width a `/who` or welcome name list wraps at.
const NAME_LINE_WIDTH: usize = 400;

/// Why a nickname could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NickRefused {
    /// It breaks the nickname rules.
    Invalid(NickError),
    /// Another client has it (case-insensitively).
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

/// A nickname that hashes and compares without regard to case. It shares the member's `Arc<str>`,
/// so the registry costs no second string per member.
#[derive(Debug, Clone)]
pub(super) struct NickKey(pub(super) Arc<str>);

impl NickKey {
    pub(super) fn of(nick: &str) -> NickKey {
        NickKey(Arc::from(nick))
    }
}

impl PartialEq for NickKey {
    fn eq(&self, other: &Self) -> bool {
        fold_case(&self.0).eq(fold_case(&other.0))
    }
}

impl Eq for NickKey {}

impl std::hash::Hash for NickKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for c in fold_case(&self.0) {
            state.write_u32(u32::from(c));
        }
    }
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

/// A newcomer's welcome: who is online (`names`, or only the count of `members` when the room is
/// too big to list), then where to find help.
pub(super) fn welcome(wrap: Wrap, nick: &str, members: usize, names: Option<&[Arc<str>]>) -> Bytes {
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
    format::push_notice(&mut out, "Type /help for commands.");
    out.freeze()
}
