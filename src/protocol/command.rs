//! Client commands (`/nick`, `/msg`, …).
//!
//! [`parse_line`] only splits an already sanitised line into a [`ClientCmd`]; it never fails, so
//! every line gets either an action or a usage/unknown reply. Nicknames are validated separately,
//! by [`super::nick`].

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
    /// `/join ROOM`: the room as typed (with or without `#`), not yet validated.
    Join(&'a str),
    /// `/part` (arguments ignored): back to the default room.
    Part,
    /// `/rooms` (arguments ignored).
    Rooms,
    /// `/topic` (show) or `/topic TEXT` (set).
    Topic(Option<&'a str>),
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
const USAGE_JOIN: &str = "usage: /join ROOM";

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
    } else if is("join") {
        match split_word(args) {
            (room, "") if !room.is_empty() => ClientCmd::Join(room),
            _ => ClientCmd::Usage(USAGE_JOIN),
        }
    } else if is("part") {
        ClientCmd::Part
    } else if is("rooms") {
        ClientCmd::Rooms
    } else if is("topic") {
        ClientCmd::Topic(non_empty(args))
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
    "TEXT             send TEXT to everyone in this room",
    "/me ACTION       describe what you are doing",
    "/nick NEWNICK    change your nickname",
    "/who             list who is in this room",
    "/join ROOM       go to ROOM (made if new)",
    "/part            go back to the default room",
    "/rooms           list the rooms",
    "/topic [TEXT]    show or set this room's topic",
    "/msg NICK TEXT   send TEXT to NICK only",
    "/quit [REASON]   leave the chat",
    "/help            show this help",
    "//TEXT           send a message that starts with /",
];

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
            ("/join rust", Join("rust")),
            ("/JOIN  #rust ", Join("#rust")),
            ("/join", Usage(USAGE_JOIN)),
            ("/join a b", Usage(USAGE_JOIN)),
            ("/part", Part),
            ("/part now", Part),
            ("/rooms", Rooms),
            ("/topic", Topic(None)),
            ("/topic  Rust talk ", Topic(Some("Rust talk"))),
            ("/topics", Unknown("topics")),
        ];
        for (line, expected) in table {
            assert_eq!(parse_line(line), *expected, "{line:?}");
        }
    }

    #[test]
    fn help_mentions_every_command() {
        for cmd in [
            "/me", "/nick", "/who", "/join", "/part", "/rooms", "/topic", "/msg", "/quit", "/help",
            "//",
        ] {
            assert!(HELP.iter().any(|l| l.starts_with(cmd)), "{cmd}");
        }
    }
}
