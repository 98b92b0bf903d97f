//! Sans-IO chat protocol: everything between the socket's bytes and the hub's messages.
//!
//! Client input flows `framing` (bytes → lines, telnet stripped, length bounded) → `sanitise`
//! (line → text safe to show on any terminal) → `command` (text → [`ClientCmd`]); `nick` and
//! `room` decide which nicknames and room names are allowed and which are the same, by the rules
//! they share in `ident`; `ucd` holds the Unicode properties the rule sets read. Nothing here does
//! IO or knows about tokio, so every rule is unit-tested exhaustively. Invariant: text that leaves
//! this module for other clients has passed through the sanitiser, and a nickname or room name
//! shown to others has passed [`validate_nick`] or [`validate_room`].

pub mod command;
pub mod format;
pub mod framing;
mod ident;
pub mod nick;
pub mod room;
pub mod sanitise;
pub mod ucd;

pub use command::{ClientCmd, HELP, NICK_PROMPT, parse_line};
pub use framing::{Frame, LineFramer};
pub use nick::{
    NICK_MAX_CHARS, NICK_MAX_MARKS, Nick, NickError, RESERVED_NICKS, fold_case, nick_key,
    validate_nick,
};
pub use room::{ROOM_MAX_CHARS, RoomName, RoomNameError, validate_room};
pub use sanitise::{MAX_MARKS, is_forbidden, sanitise_into, sanitise_str};
