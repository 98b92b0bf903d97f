//! Sans-IO chat protocol: everything between the socket's bytes and the hub's messages.
//!
//! Client input flows `framing` (bytes → lines, telnet stripped, length bounded) → `sanitise`
//! (line → text safe to show on any terminal) → `command` (text → [`ClientCmd`]). Nothing here
//! does IO or knows about tokio, so every rule is unit-tested exhaustively. Invariant: text that
//! leaves this module for other clients has passed through the sanitiser.

pub mod command;
pub mod format;
pub mod framing;
pub mod sanitise;

pub use command::{
    ClientCmd, HELP, NICK_MAX_CHARS, NICK_PROMPT, NickError, RESERVED_NICKS, fold_case, nick_key,
    parse_line, validate_nick,
};
pub use framing::{Frame, LineFramer};
pub use sanitise::{is_forbidden, sanitise_into, sanitise_str};
