//! Client commands (`/nick`, `/msg`, …) and the nickname rules.
//!
//! [`parse_line`] only splits an already sanitised line into a [`ClientCmd`]; it never fails, so
//! every line gets either an action or a usage/unknown reply. Nicknames are validated separately
//! by [`validate_nick`] and compared through [`nick_key`], so uniqueness is case-insensitive and a
//! nickname can never look like a bare client id (it always has a letter).

use std::fmt;

/// What a client's line asks for. Borrowed parts point into the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCmd<'a> {
    /// A plain message. `//text` gives `Say("/text")`, so messages can start with a slash.
    Say(&'a str),
    /// `/me ACTION`.
    Me(&'a str),
    /// `/nick NEWNICK`: the rest of the line, trimmed and not yet validated.
    Nick(&'a str),
    /// `/who` (arguments ignored).
    Who,
    /// `/msg NICK TEXT`: a private message.
    Msg {
        /// The recipient's nickname as typed.
        to: &'a str,
        /// The message.
        text: &'a str,
    },
    /// `/quit [REASON]`.
    Quit(Option<&'a str>),
    /// `/help` (arguments ignored).
    Help,
    /// A known command with bad arguments; carries its usage text.
    Usage(&'static str),
    /// An unknown command name (without the slash; empty for a lone `/`).
    Unknown(&'a str),
}

const USAGE_ME: &str = "usage: /me ACTION";
const USAGE_NICK: &str = "usage: /nick NEWNICK";
const USAGE_MSG: &str = "usage: /msg NICK TEXT";

/// Parses a sanitised, non-empty line. Command names are case-insensitive.
pub fn parse_line(line: &str) -> ClientCmd<'_> {
    let Some(rest) = line.strip_prefix('/') else {
        return ClientCmd::Say(line);
    };
    if rest.starts_with('/') {
        return ClientCmd::Say(rest);
    }
    let (name, args) = split_word(rest);
    let is = |cmd: &str| name.eq_ignore_ascii_case(cmd);
    if is("me") {
        non_empty(args).map_or(ClientCmd::Usage(USAGE_ME), ClientCmd::Me)
    } else if is("nick") {
        non_empty(args).map_or(ClientCmd::Usage(USAGE_NICK), ClientCmd::Nick)
    } else if is("msg") {
        match split_word(args) {
            (to, text) if !to.is_empty() && !text.is_empty() => ClientCmd::Msg { to, text },
            _ => ClientCmd::Usage(USAGE_MSG),
        }
    } else if is("who") {
        ClientCmd::Who
    } else if is("quit") {
        ClientCmd::Quit(non_empty(args))
    } else if is("help") {
        ClientCmd::Help
    } else {
        ClientCmd::Unknown(name)
    }
}

/// Splits `s` at its first whitespace; the remainder is trimmed.
fn split_word(s: &str) -> (&str, &str) {
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// The prompt that asks for a nickname (after the MOTD, and again after a refused one).
pub const NICK_PROMPT: &str = "Choose a nickname:";

/// The `/help` text, one entry per line, without any prefix.
pub const HELP: &[&str] = &[
    "TEXT             send TEXT to everyone",
    "/me ACTION       describe what you are doing",
    "/nick NEWNICK    change your nickname",
    "/who             list who is here",
    "/msg NICK TEXT   send TEXT to NICK only",
    "/quit [REASON]   leave the chat",
    "/help            show this help",
    "//TEXT           send a message that starts with /",
];

/// Longest nickname, in chars (not bytes).
pub const NICK_MAX_CHARS: usize = 24;

/// Nicknames nobody may take, compared by [`nick_key`], so users cannot pose as staff or
/// the server itself.
pub const RESERVED_NICKS: &[&str] = &[
    "server",
    "admin",
    "administrator",
    "root",
    "system",
    "operator",
    "sysop",
    "groupchatd",
    "chatctl",
    "nobody",
    "everyone",
    "all",
];

/// Why a nickname was refused. `Display` gives a message meant for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NickError {
    /// No characters at all.
    Empty,
    /// More than [`NICK_MAX_CHARS`] chars.
    TooLong,
    /// A char other than a letter, digit, `_` or `-`.
    InvalidChar(char),
    /// Only digits, `_` and `-`: it would look like a client id.
    NoLetter,
    /// One of [`RESERVED_NICKS`].
    Reserved,
}

impl fmt::Display for NickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NickError::Empty => f.write_str("a nickname cannot be empty"),
            NickError::TooLong => write!(f, "nicknames are at most {NICK_MAX_CHARS} characters"),
            NickError::InvalidChar(c) => {
                f.write_str("'")?;
                // Show spaces as they are, but never echo an invisible char raw: the user
                // must be able to see what was refused.
                if c.is_whitespace() && *c != ' ' {
                    write!(f, "{}", c.escape_unicode())?;
                } else {
                    write!(f, "{}", c.escape_debug())?;
                }
                f.write_str("' is not allowed in a nickname (use letters, digits, _ and -)")
            }
            NickError::NoLetter => f.write_str("a nickname needs at least one letter"),
            NickError::Reserved => f.write_str("that nickname is reserved"),
        }
    }
}

impl std::error::Error for NickError {}

/// Checks a nickname against the rules: 1 to [`NICK_MAX_CHARS`] chars, each a letter, digit,
/// `_` or `-`, at least one letter, and not reserved. Uniqueness is the caller's job.
pub fn validate_nick(nick: &str) -> Result<(), NickError> {
    if nick.is_empty() {
        return Err(NickError::Empty);
    }
    // nth() stops early, so a hostile megabyte-long nick costs no more than a short one.
    if nick.chars().nth(NICK_MAX_CHARS).is_some() {
        return Err(NickError::TooLong);
    }
    if let Some(c) = nick
        .chars()
        .find(|&c| !(c.is_alphanumeric() || c == '_' || c == '-'))
    {
        return Err(NickError::InvalidChar(c));
    }
    if !nick.chars().any(char::is_alphabetic) {
        return Err(NickError::NoLetter);
    }
    if RESERVED_NICKS.contains(&nick_key(nick).as_str()) {
        return Err(NickError::Reserved);
    }
    Ok(())
}

/// The key under which nicknames are unique: the Unicode lowercase form.
pub fn nick_key(nick: &str) -> String {
    fold_case(nick).collect()
}

/// The characters of `nick` as compared for uniqueness: each lowercased on its own (so the hub can
/// hash and compare nicknames without building a key string; unlike `str::to_lowercase` this has
/// no word-final sigma rule, which does not matter for a uniqueness test).
pub fn fold_case(nick: &str) -> impl Iterator<Item = char> + '_ {
    nick.chars().flat_map(char::to_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClientCmd::*;

    #[test]
    fn parse_table() {
        let table: &[(&str, ClientCmd<'_>)] = &[
            ("hello", Say("hello")),
            ("hello /nick x", Say("hello /nick x")),
            (" /nick x", Say(" /nick x")),
            ("//text", Say("/text")),
            ("///x", Say("//x")),
            ("//", Say("/")),
            ("/", Unknown("")),
            ("/ nick", Unknown("")),
            ("/frob", Unknown("frob")),
            ("/frob a b", Unknown("frob")),
            ("/me waves", Me("waves")),
            ("/Me  waves  twice", Me("waves  twice")),
            ("/ME", Usage(USAGE_ME)),
            ("/me", Usage(USAGE_ME)),
            ("/meow", Unknown("meow")),
            ("/nick bob", Nick("bob")),
            ("/NICK   bob", Nick("bob")),
            ("/nick bob smith", Nick("bob smith")),
            ("/nick", Usage(USAGE_NICK)),
            ("/who", Who),
            ("/WHO is here", Who),
            (
                "/msg bob hello there",
                Msg {
                    to: "bob",
                    text: "hello there",
                },
            ),
            (
                "/Msg   bob    hi",
                Msg {
                    to: "bob",
                    text: "hi",
                },
            ),
            (
                "/msg\u{3000}\u{5c0f}\u{660e} \u{4f60}\u{597d}",
                Msg {
                    to: "\u{5c0f}\u{660e}",
                    text: "\u{4f60}\u{597d}",
                },
            ),
            ("/msg bob", Usage(USAGE_MSG)),
            ("/msg", Usage(USAGE_MSG)),
            ("/quit", Quit(None)),
            ("/QUIT  gone fishing", Quit(Some("gone fishing"))),
            ("/help", Help),
            ("/HeLp me", Help),
        ];
        for (line, expected) in table {
            assert_eq!(parse_line(line), *expected, "{line:?}");
        }
    }

    #[test]
    fn help_mentions_every_command() {
        for cmd in ["/me", "/nick", "/who", "/msg", "/quit", "/help", "//"] {
            assert!(HELP.iter().any(|l| l.starts_with(cmd)), "{cmd}");
        }
    }

    #[test]
    fn nick_table() {
        let e_acute_24 = "\u{e9}".repeat(24);
        let e_acute_25 = "\u{e9}".repeat(25);
        let a_25 = "a".repeat(25);
        let table: &[(&str, Result<(), NickError>)] = &[
            ("\u{5c0f}\u{660e}", Ok(())),
            ("bob_2", Ok(())),
            ("Zo\u{eb}", Ok(())),
            ("a-b", Ok(())),
            ("x", Ok(())),
            ("2fast", Ok(())),
            (&e_acute_24, Ok(())),
            ("rooted", Ok(())),
            ("", Err(NickError::Empty)),
            (&a_25, Err(NickError::TooLong)),
            (&e_acute_25, Err(NickError::TooLong)),
            ("bob smith", Err(NickError::InvalidChar(' '))),
            ("bob!", Err(NickError::InvalidChar('!'))),
            ("\u{1f44b}", Err(NickError::InvalidChar('\u{1f44b}'))),
            ("bo\u{200b}b", Err(NickError::InvalidChar('\u{200b}'))),
            ("123", Err(NickError::NoLetter)),
            ("_", Err(NickError::NoLetter)),
            ("-1", Err(NickError::NoLetter)),
            ("Server", Err(NickError::Reserved)),
            ("ROOT", Err(NickError::Reserved)),
            ("All", Err(NickError::Reserved)),
        ];
        for (nick, expected) in table {
            assert_eq!(validate_nick(nick), *expected, "{nick:?}");
        }
        assert_eq!(e_acute_24.len(), 48);
    }

    #[test]
    fn nick_keys() {
        let table = [
            ("Bob", "bob"),
            ("BOB", "bob"),
            ("Zo\u{cb}", "zo\u{eb}"),
            ("\u{5c0f}\u{660e}", "\u{5c0f}\u{660e}"),
            ("\u{394}elta", "\u{3b4}elta"),
        ];
        for (nick, key) in table {
            assert_eq!(nick_key(nick), key, "{nick:?}");
        }
        for reserved in RESERVED_NICKS {
            assert_eq!(nick_key(reserved), *reserved, "reserved names must be keys");
        }
    }

    #[test]
    fn nick_error_messages() {
        let table = [
            (NickError::Empty, "a nickname cannot be empty"),
            (NickError::TooLong, "nicknames are at most 24 characters"),
            (
                NickError::InvalidChar('!'),
                "'!' is not allowed in a nickname (use letters, digits, _ and -)",
            ),
            (
                NickError::InvalidChar(' '),
                "' ' is not allowed in a nickname (use letters, digits, _ and -)",
            ),
            (
                NickError::InvalidChar('\u{200b}'),
                "'\\u{200b}' is not allowed in a nickname (use letters, digits, _ and -)",
            ),
            (
                NickError::InvalidChar('\u{3000}'),
                "'\\u{3000}' is not allowed in a nickname (use letters, digits, _ and -)",
            ),
            (NickError::NoLetter, "a nickname needs at least one letter"),
            (NickError::Reserved, "that nickname is reserved"),
        ];
        for (err, text) in table {
            assert_eq!(err.to_string(), text);
        }
    }
}
