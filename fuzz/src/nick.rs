//! Nickname rules and command parsing, on the raw text and on the sanitised line the session
//! actually hands them.
//!
//! Properties: `validate_nick` gives the verdict the README states (1 to 24 chars, each a letter,
//! digit, `_` or `-`, at least one letter, not reserved whatever its case), reporting the first
//! rule broken in that order; a refusal's message is one line and echoes nothing a terminal would
//! act on; `nick_key` is idempotent; `parse_line` never panics, returns `Say` for lines that do not
//! start with `/` and `Say` of the line minus one slash for `//…`, and otherwise splits the command
//! word and its trimmed arguments as `/help` describes.

use groupchatd::protocol::{
    ClientCmd, NickError, RESERVED_NICKS, nick_key, parse_line, sanitise_str, validate_nick,
};

use crate::is_unsafe_on_terminal;

/// Longest nickname in chars, as the README states it.
const NICK_MAX: usize = 24;

/// Checks the input (decoded lossily) as a nickname and as a chat line.
pub fn check_nick_and_command(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    // The session sanitises every line, trims a nickname line and parses a chat line as it is.
    let line = sanitise_str(&raw);
    check_nick(&raw);
    check_nick(line.trim());
    check_command(&raw);
    check_command(&line);
}

fn check_nick(nick: &str) {
    let verdict = validate_nick(nick);
    assert_eq!(verdict, expected_verdict(nick), "validate_nick({nick:?})");
    if let Err(e) = verdict {
        let message = e.to_string();
        if let Some(c) = message
            .chars()
            .find(|&c| is_unsafe_on_terminal(c) || c == '\n')
        {
            panic!("refusal of {nick:?} echoes {c:?}: {message:?}");
        }
    }
    let key = nick_key(nick);
    assert_eq!(
        nick_key(&key),
        key,
        "nick_key is not idempotent on {nick:?}"
    );
}

/// The rules, checked in the order their errors are reported.
fn expected_verdict(nick: &str) -> Result<(), NickError> {
    let allowed = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    if nick.is_empty() {
        Err(NickError::Empty)
    } else if nick.chars().count() > NICK_MAX {
        Err(NickError::TooLong)
    } else if let Some(c) = nick.chars().find(|&c| !allowed(c)) {
        Err(NickError::InvalidChar(c))
    } else if !nick.chars().any(char::is_alphabetic) {
        Err(NickError::NoLetter)
    } else if RESERVED_NICKS.contains(&nick.to_lowercase().as_str()) {
        Err(NickError::Reserved)
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
