//! `ConfigError`: the one error type of the config module.
//!
//! Every failure (unreadable file, TOML syntax, wrong type, unknown key, a value
//! outside its range, a bad command-line flag) is reported as one line naming
//! where it came from, the key and the reason, so an operator reading the
//! journal after a failed start knows what to edit without reading code.

use std::fmt;
use std::path::PathBuf;

/// A configuration problem, rendered as one line such as
/// `/etc/groupchatd/groupchatd.toml:7: key 'max_line_bytes': must be between 64 and 1048576 (got 10)`.
///
/// Only the first problem found is reported; fixing it and retrying reveals the next.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The config file the problem is in; `None` means it came from a
    /// command-line flag, shown as `command line`.
    pub file: Option<PathBuf>,
    /// 1-based line in `file` (for a validation error, the line of the key), if known.
    pub line: Option<usize>,
    /// The offending key (`max_clients`) or flag (`--listen`), if the problem belongs to one.
    pub key: Option<String>,
    /// What is wrong, in plain words. It may quote a value from the file; `Display` escapes any
    /// control characters in it, so the rendered error is always one line.
    pub reason: String,
}

impl ConfigError {
    /// An error about a command-line flag; `flag` is spelled as the user typed it (`--listen`).
    pub(super) fn flag(flag: &str, reason: String) -> Self {
        ConfigError {
            file: None,
            line: None,
            key: Some(flag.to_owned()),
            reason,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write_inert(f, &file.display().to_string())?,
            None => f.write_str("command line")?,
        }
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            f.write_str("key '")?;
            write_inert(f, key)?;
            f.write_str("': ")?;
        }
        write_inert(f, &self.reason)
    }
}

/// Writes `s` with every character a terminal could act on (controls, ESC, bidi overrides) escaped
/// as `\n`, `\u{1b}`…: reasons quote values from the file, and the message must stay one inert line
/// on the operator's terminal and in the journal. (Found by the config fuzz target.)
fn write_inert(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    for c in s.chars() {
        if crate::protocol::is_forbidden(c) {
            write!(f, "{}", c.escape_default())?;
        } else {
            fmt::Write::write_char(f, c)?;
        }
    }
    Ok(())
}
