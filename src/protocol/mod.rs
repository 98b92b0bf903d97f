//! Sans-IO chat protocol: everything between the socket's bytes and the hub's messages.
//!
//! Client input flows `framing` (bytes → lines, telnet stripped, length bounded) → `sanitise`
//! (line → text safe to show on any terminal) → `command` (text → [`ClientCmd`]); `nick` decides
//! which nicknames are allowed and which are the same, `ucd` holds the Unicode properties both
//! rule sets read. Nothing here does IO or knows about tokio, so every rule is unit-tested
//! exhaustively. Invariant: text that leaves this module for other clients has passed through the
//! sanitiser, and a nickname shown to others has passed [`validate_nick`].

pub mod command;
pub mod format;
pub mod framing;
pub mod nick;
pub mod sanitise;
pub mod ucd;

pub use command::{ClientCmd, HELP, NICK_PROMPT, parse_line};
pub use framing::{Frame, LineFramer};
pub use nick::{
    NICK_MAX_CHARS, NICK_MAX_MARKS, Nick, NickError, RESERVED_NICKS, fold_case, nick_key,
    validate_nick,
};
pub use sanitise::{MAX_MARKS, is_forbidden, sanitise_into, sanitise_str};
