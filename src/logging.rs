//! Logging setup: the journal when systemd connected stderr to it, readable text on stderr otherwise.
//!
//! journald is detected as systemd documents it: `$JOURNAL_STREAM` holds the device and inode of the
//! stream, and must match stderr (a child that inherited the variable but not the stream must not log
//! into the void). Journal fields carry no prefix, so events can be filtered as
//! `journalctl -u groupchatd EVENT=kick`. The filter can be swapped at run time (config reload).

use std::io::IsTerminal;
use std::os::fd::AsFd;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The identifier journal entries carry (`SYSLOG_IDENTIFIER=`).
pub const SYSLOG_IDENTIFIER: &str = "groupchatd";

/// A filter directive in the form `EnvFilter` parses safely: comma-separated pieces, each trimmed.
///
/// tracing-subscriber 0.3 parses each piece by walking its trimmed text but slicing the untrimmed
/// one, so leading whitespace before a multi-byte character panics (found by the config fuzz
/// target). Every directive goes through here before it reaches `EnvFilter`.
pub fn normalize_directive(directive: &str) -> String {
    directive
        .split(',')
        .map(str::trim)
        .filter(|piece| !piece.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

/// Changes the log filter of the running daemon.
#[derive(Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
}

impl LogHandle {
    /// Applies a new filter directive (already validated by the config loader).
    pub fn set_filter(&self, directive: &str) -> Result<(), String> {
        let filter =
            EnvFilter::try_new(normalize_directive(directive)).map_err(|e| e.to_string())?;
        self.filter.reload(filter).map_err(|e| e.to_string())
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// The systemd journal, with structured fields.
    Journal,
    /// Human-readable lines on stderr.
    Stderr,
}

/// True when stderr is the stream `$JOURNAL_STREAM` describes.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}

/// Installs the global subscriber with `directive` as the filter. Call once.
pub fn init(directive: &str) -> Result<(LogHandle, Sink), String> {
    let filter = EnvFilter::try_new(normalize_directive(directive)).map_err(|e| e.to_string())?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let journal = if stderr_is_journal() {
        tracing_journald::layer().ok().map(|layer| {
            layer
                .with_field_prefix(None)
                .with_syslog_identifier(SYSLOG_IDENTIFIER.to_owned())
        })
    } else {
        None
    };
    let sink = match journal {
        Some(layer) => {
            registry.with(layer).try_init().map_err(|e| e.to_string())?;
            Sink::Journal
        }
        None => {
            let fmt = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false);
            registry.with(fmt).try_init().map_err(|e| e.to_string())?;
            Sink::Stderr
        }
    };
    Ok((LogHandle { filter: handle }, sink))
}
