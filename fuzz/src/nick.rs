//! Nickname rules and command parsing, on the raw text and on the sanitised line the session
//! actually hands them.
//!
//! Properties: `validate_nick` never panics; a valid nickname's display form is NFC, 1 to 24
//! chars, each a letter, digit, `_`, `-` or a combining mark on a letter (at most 2 in a row),
//! with a letter, no default-ignorable, whitespace or control char, and validates again to the
//! same display form and keys (stable under re-validation); its key is `nick_key` of the display
//! form, shared by its case-folded spelling, and none of its keys is a reserved name's; printable
//! ASCII input is checked against the README's ASCII rules exactly (kept as typed, or refused for
//! the first rule broken); a refusal's message is one line and echoes nothing a terminal would act
//! on and no invisible char; `parse_line` never panics, returns `Say` for lines that do not start
//! with `/` and `Say` of the line minus one slash for `//…`, and otherwise splits the command word
//! and its trimmed arguments as `/help` describes.
//!
//! Room names (what `/join` takes) by the same rules: `validate_room` never panics; a valid name is
//! `#` plus 1 to 32 chars of the nickname charset (no letter needed), NFC, and validates again to
//! itself with or without its `#`; its case-folded spelling has the same key; printable ASCII input
//! is checked against the README's ASCII rules exactly; a refusal's message is one inert line.

use groupchatd::protocol::ucd;
use groupchatd::protocol::{
    ClientCmd, NICK_MAX_MARKS, NickError, RESERVED_NICKS, RoomName, RoomNameError, fold_case,
    nick_key, parse_line, sanitise_str, validate_nick, validate_room,
};
use unicode_normalization::is_nfc;

use crate::is_unsafe_on_terminal;

/// Longest nickname in chars, as the README states it.
const NICK_MAX: usize = 24;

/// Longest room name in chars after its `#`, as the README states it.
const ROOM_MAX: usize = 32;

/// Checks the input (decoded lossily) as a nickname and as a chat line.
pub fn check_nick_and_command(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    // The session sanitises every line, trims a nickname line and parses a chat line as it is.
    let line = sanitise_str(&raw);
    check_nick(&raw);
    check_nick(line.trim());
    check_room(&raw);
    check_room(&line);
    check_command(&raw);
    check_command(&line);
}

fn check_nick(nick: &str) {
    let verdict = validate_nick(nick);
    if nick.bytes().all(|b| b.is_ascii_graphic()) {
        let expected = ascii_verdict(nick);
        let got = verdict
            .as_ref()
            .map(|n| n.as_str().to_owned())
            .map_err(|e| *e);
        match (&expected, &got) {
            // The reserved list is by look-alike keys, so an ASCII name the charset allows is
            // either kept exactly as typed or reserved.
            (Ok(()), Ok(shown)) => assert_eq!(shown, nick, "ASCII nick altered"),
            (Ok(()), Err(NickError::Reserved)) => {}
            (expected, got) => {
                assert_eq!(
                    got.clone().map(|_| ()),
                    *expected,
                    "validate_nick({nick:?})"
                )
            }
        }
    }
    match verdict {
        Ok(valid) => check_valid(nick, &valid),
        Err(e) => {
            let message = e.to_string();
            if let Some(c) = message
                .chars()
                .find(|&c| is_unsafe_on_terminal(c) || c == '\n' || ucd::is_default_ignorable(c))
            {
                panic!("refusal of {nick:?} echoes {c:?}: {message:?}");
            }
        }
    }
}

fn check_valid(typed: &str, valid: &groupchatd::protocol::Nick) {
    let shown = valid.as_str();
    let n = shown.chars().count();
    assert!(
        (1..=NICK_MAX).contains(&n),
        "{typed:?} -> {shown:?}: {n} chars"
    );
    assert!(is_nfc(shown), "{typed:?} -> {shown:?} is not NFC");
    assert!(
        shown.chars().any(char::is_alphabetic),
        "{shown:?} has no letter"
    );
    let mut marks = 0;
    for c in shown.chars() {
        assert!(
            !ucd::is_default_ignorable(c) && !c.is_whitespace() && !c.is_control(),
            "{typed:?} -> {shown:?} holds {c:?}"
        );
        if ucd::is_mark(c) {
            marks += 1;
            assert!(marks <= NICK_MAX_MARKS, "{shown:?}: too many marks");
        } else {
            assert!(
                c.is_alphanumeric() || c == '_' || c == '-',
                "{typed:?} -> {shown:?} holds {c:?}"
            );
            marks = 0;
        }
    }
    assert!(
        !shown.starts_with(ucd::is_mark),
        "{shown:?} starts with a mark"
    );
    let again = validate_nick(shown);
    assert_eq!(again.as_ref(), Ok(valid), "{shown:?} is not stable");
    assert_eq!(valid.key(), nick_key(shown), "key of {shown:?}");
    let folded: String = fold_case(shown).collect();
    if let Ok(lower) = validate_nick(&folded) {
        assert_eq!(
            lower.key(),
            valid.key(),
            "{shown:?} vs its folded {folded:?}"
        );
    }
    for reserved in RESERVED_NICKS {
        let reserved_key = nick_key(reserved);
        assert!(
            valid.keys().all(|k| k != reserved_key),
            "{shown:?} looks like reserved {reserved:?}"
        );
    }
}

fn check_room(raw: &str) {
    let verdict = validate_room(raw);
    if raw.bytes().all(|b| b.is_ascii_graphic()) {
        let got = verdict
            .as_ref()
            .map(|r| r.as_str().to_owned())
            .map_err(|e| *e);
        assert_eq!(got, ascii_room_verdict(raw), "validate_room({raw:?})");
    }
    match verdict {
        Ok(valid) => check_valid_room(raw, &valid),
        Err(e) => {
            let message = e.to_string();
            if let Some(c) = message
                .chars()
                .find(|&c| is_unsafe_on_terminal(c) || c == '\n' || ucd::is_default_ignorable(c))
            {
                panic!("refusal of room {raw:?} echoes {c:?}: {message:?}");
            }
        }
    }
}

fn check_valid_room(typed: &str, valid: &RoomName) {
    let shown = valid.as_str();
    let body = shown
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("{typed:?} -> {shown:?} has no #"));
    let n = body.chars().count();
    assert!(
        (1..=ROOM_MAX).contains(&n),
        "{typed:?} -> {shown:?}: {n} chars"
    );
    assert!(is_nfc(shown), "{typed:?} -> {shown:?} is not NFC");
    let mut marks = 0;
    let mut on_letter = false;
    for c in body.chars() {
        assert!(
            !ucd::is_default_ignorable(c) && !c.is_whitespace() && !c.is_control(),
            "{typed:?} -> {shown:?} holds {c:?}"
        );
        if ucd::is_mark(c) {
            marks += 1;
            assert!(
                on_letter && marks <= NICK_MAX_MARKS,
                "{shown:?}: a mark off a letter or too many"
            );
        } else {
            assert!(
                c.is_alphanumeric() || c == '_' || c == '-',
                "{typed:?} -> {shown:?} holds {c:?}"
            );
            marks = 0;
            on_letter = c.is_alphabetic();
        }
    }
    assert_eq!(
        validate_room(shown).as_ref(),
        Ok(valid),
        "{shown:?} is not stable"
    );
    assert_eq!(
        validate_room(body).as_ref(),
        Ok(valid),
        "{body:?} without its #"
    );
    assert_eq!(valid.keys().next(), Some(valid.key()));
    let folded: String = fold_case(shown).collect();
    if let Ok(lower) = validate_room(&folded) {
        assert_eq!(
            lower.key(),
            valid.key(),
            "{shown:?} vs its folded {folded:?}"
        );
    }
}

/// The room-name rules for printable ASCII (no whitespace to trim), in the order their errors are
/// reported.
fn ascii_room_verdict(raw: &str) -> Result<String, RoomNameError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let body = raw.strip_prefix('#').unwrap_or(raw);
    if body.is_empty() {
        Err(RoomNameError::Empty)
    } else if body.len() > ROOM_MAX {
        Err(RoomNameError::TooLong)
    } else if let Some(c) = body.chars().find(|&c| !allowed(c)) {
        Err(RoomNameError::InvalidChar(c))
    } else {
        Ok(format!("#{body}"))
    }
}

/// The rules for printable ASCII, checked in the order their errors are reported (the reserved
/// names aside: see `check_nick`).
fn ascii_verdict(nick: &str) -> Result<(), NickError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if nick.is_empty() {
        Err(NickError::Empty)
    } else if nick.len() > NICK_MAX {
        Err(NickError::TooLong)
    } else if let Some(c) = nick.chars().find(|&c| !allowed(c)) {
        Err(NickError::InvalidChar(c))
    } else if !nick.chars().any(|c| c.is_ascii_alphabetic()) {
        Err(NickError::NoLetter)
    } else {
        Ok(())
    }
}

fn check_command(line: &str) {
    let cmd = parse_line(line);
    let Some(rest) = line.strip_prefix('/') else {
        assert_eq!(cmd, ClientCmd::Say(line), "plain line {line:?}");
        return;
    };
    if rest.starts_with('/') {
        assert_eq!(cmd, ClientCmd::Say(rest), "escaped slash {line:?}");
        return;
    }
    let word = rest.split(char::is_whitespace).next().unwrap_or_default();
    let args = rest[word.len()..].trim();
    let target = args.split(char::is_whitespace).next().unwrap_or_default();
    let text = args[target.len()..].trim();
    let usage = |cmd: &str| format!("usage: /{cmd} ");
    let ok = match (word.to_ascii_lowercase().as_str(), cmd) {
        ("me", ClientCmd::Me(a)) | ("nick", ClientCmd::Nick(a)) => !args.is_empty() && a == args,
        ("msg", ClientCmd::Msg { to, text: t }) => {
            !target.is_empty() && !text.is_empty() && (to, t) == (target, text)
        }
        (name @ ("me" | "nick"), ClientCmd::Usage(u)) => {
            args.is_empty() && u.starts_with(&usage(name))
        }
        ("msg", ClientCmd::Usage(u)) => {
            (target.is_empty() || text.is_empty()) && u.starts_with(&usage("msg"))
        }
        ("who", ClientCmd::Who) | ("help", ClientCmd::Help) => true,
        ("quit", ClientCmd::Quit(reason)) => reason == (!args.is_empty()).then_some(args),
        ("me" | "nick" | "msg" | "who" | "help" | "quit", _) => false,
        (_, ClientCmd::Unknown(name)) => name == word,
        _ => false,
    };
    assert!(ok, "parse_line({line:?}) gave {cmd:?}");
}
