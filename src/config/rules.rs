//! The rule for each value, as pure functions from raw input to typed value.
//!
//! A rule returns `Err(reason)` without knowing where the value came from; the
//! caller attaches the file, line and key (or the command-line flag). That keeps
//! the file and `--flag` paths checking values identically.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use super::{IpNet, MAX_BURST, MAX_RATE, MIN_RATE, ParseIpNetError, WebOrigin};
use crate::protocol::{RoomName, sanitise_str, validate_room};

/// Outcome of a rule: the typed value, or why the raw value is unacceptable.
pub(super) type Rule<T> = Result<T, String>;

/// Upper bound of `max_line_bytes`.
pub(super) const MAX_LINE_BYTES: i64 = 1 << 20;
/// Upper bound of `max_queue_bytes`: one stalled client must not pin more than this.
pub(super) const MAX_QUEUE_BYTES: i64 = 1 << 30;
/// The output queue must hold this many maximal lines, so one line always fits.
pub(super) const QUEUE_LINES: usize = 4;
/// At most this many MOTD lines…
const MOTD_MAX_LINES: usize = 20;
/// …each at most this many bytes, to keep the greeting a greeting.
const MOTD_MAX_LINE_BYTES: usize = 400;
/// Upper bound of `history_lines`, global and per room.
const MAX_HISTORY_LINES: i64 = 1000;
/// Upper bound of `history_bytes`: a room's history is held in memory for every room.
pub(super) const MAX_HISTORY_BYTES: i64 = 16 << 20;
/// Least `history_bytes` while any room keeps history: room for a few full-width lines.
pub(super) const MIN_HISTORY_BYTES: usize = 1024;
/// Upper bound of `max_rooms`.
pub(super) const MAX_ROOMS: i64 = 65_000;
/// Longest room topic in bytes, after sanitising: one line on anyone's screen, give or take.
const TOPIC_MAX_BYTES: usize = 300;
/// Upper bound of `idle_timeout_secs` (a year): far beyond any real use, and it keeps
/// `Instant::now() + timeout` in the session code from ever overflowing.
const MAX_IDLE_SECS: i64 = 365 * 24 * 3600;

/// `listen`: socket addresses, at least one, none repeated.
pub(super) fn listen(items: &[String]) -> Rule<Vec<SocketAddr>> {
    if items.is_empty() {
        return Err("must list at least one address (e.g. [\"127.0.0.1:7000\"])".into());
    }
    addresses(items, 7000)
}

/// Socket addresses (`tls_listen`, `http_listen`, `https_listen`: empty turns that service off),
/// none repeated and none overlapping another (see [`overlap`]); `port` is the one the examples
/// in messages use. Clashes between lists are the caller's to check, with [`clash`].
pub(super) fn addresses(items: &[String], port: u16) -> Rule<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(items.len());
    for item in items {
        let addr: SocketAddr = item.trim().parse().map_err(|_| {
            format!("'{item}' is not a socket address (e.g. 127.0.0.1:{port} or [::]:{port})")
        })?;
        if addrs.contains(&addr) {
            return Err(format!("'{item}' is listed more than once"));
        }
        if let Some(other) = addrs.iter().find(|a| overlap(a, &addr)) {
            return Err(format!(
                "'{item}' overlaps {other} in the same list: {WILDCARD}; list one or the other"
            ));
        }
        addrs.push(addr);
    }
    Ok(addrs)
}

/// Why a wildcard address clashes with a specific one, for messages.
const WILDCARD: &str = "0.0.0.0 and [::] take their port on every address of their family";

/// Whether two listening addresses cannot both be bound: the same port and family, and the
/// same IP or either one the family's wildcard. Port 0 never clashes (each socket gets a fresh
/// port), and IPv4 never clashes with IPv6 (IPv6 sockets are IPv6-only here, see `app::bind`).
fn overlap(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// The first of `addrs` that overlaps one of `taken` (the addresses of `keys`), as the start of
/// a message: "A is also in KEYS" or "A overlaps B in KEYS (why)".
pub(super) fn clash(addrs: &[SocketAddr], taken: &[SocketAddr], keys: &str) -> Option<String> {
    addrs.iter().find_map(|a| {
        let b = taken.iter().find(|b| overlap(a, b))?;
        Some(if a == b {
            format!("{a} is also in {keys}")
        } else {
            format!("{a} overlaps {b} in {keys} ({WILDCARD})")
        })
    })
}

/// `tls_cert_file`, `tls_key_file`: an absolute path (the daemon's working directory is not
/// something an operator should have to think about). The file is read at start and reload.
pub(super) fn pem_file(path: &Path) -> Rule<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Err(format!(
            "'{}' is not an absolute path (e.g. /etc/letsencrypt/live/chat.example.org/fullchain.pem)",
            path.display()
        ))
    }
}

/// `allowed_origins`: web origins (`https://chat.example.org`), none listed twice (after
/// normalising: `HTTPS://Chat.example.org:443` is `https://chat.example.org`).
pub(super) fn origins(items: &[String]) -> Rule<Vec<WebOrigin>> {
    let mut origins: Vec<WebOrigin> = Vec::with_capacity(items.len());
    for item in items {
        let origin: WebOrigin = item.trim().parse().map_err(|e| format!("{e}"))?;
        if let Some(same) = origins.iter().find(|o| **o == origin) {
            return Err(format!("'{item}' is listed more than once (as {same})"));
        }
        origins.push(origin);
    }
    Ok(origins)
}

/// `admin_socket`: an absolute path, because the daemon's working directory is not
/// something an operator should have to think about.
pub(super) fn admin_socket(path: &Path) -> Rule<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Err(format!(
            "'{}' is not an absolute path (e.g. /run/groupchatd/admin.sock)",
            path.display()
        ))
    }
}

/// Permission bits every admin socket mode must include: owner read and write.
const OWNER_RW: u32 = 0o600;

/// Raw `admin_socket_mode`: TOML has no octal strings, so both spellings are taken.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub(super) enum RawMode {
    /// `"0660"` or `"660"`: always read as octal, which is what operators mean.
    Octal(String),
    /// `0o660`; a decimal `660` is caught by the range check with a hint.
    Integer(i64),
}

/// `admin_socket_mode`: permission bits, at most 0777 (no setuid/setgid/sticky).
pub(super) fn admin_socket_mode(raw: &RawMode) -> Rule<u32> {
    let mode = match raw {
        RawMode::Octal(s) => {
            if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                return Err(format!(
                    "'{s}' is not an octal file mode (e.g. \"0660\" or \"0600\")"
                ));
            }
            u32::from_str_radix(s, 8).map_err(|e| e.to_string())?
        }
        RawMode::Integer(n) => match u32::try_from(*n) {
            Ok(n) if n <= 0o777 => n,
            _ => {
                return Err(format!(
                    "must be at most 0o777 (got {n}; TOML integers are decimal, write 0o660 or \"0660\")"
                ));
            }
        },
    };
    if mode > 0o777 {
        return Err(format!("must be at most 0777 (got {mode:04o})"));
    }
    // Connecting to a Unix socket needs write permission on it. Without owner read and write the
    // daemon's own user (chatctl run as the service account) is locked out, and a mode like "0"
    // leaves a socket only root can use: certainly not what was meant.
    if mode & OWNER_RW != OWNER_RW {
        return Err(format!(
            "{mode:04o} does not give the owner read and write, so the daemon's own user could not use the socket; include 0600 (e.g. \"0600\" or \"0660\")"
        ));
    }
    Ok(mode)
}

/// `admin_group`: a group name; an empty one is a mistake, not "no group".
pub(super) fn admin_group(name: &str) -> Rule<String> {
    if name.trim().is_empty() {
        return Err("must be a group name (remove the key to keep the daemon's group)".into());
    }
    Ok(name.to_owned())
}

/// `log_level`: anything `tracing_subscriber::EnvFilter` accepts, except the
/// empty string, which would silently log nothing useful.
pub(super) fn log_level(raw: &str) -> Rule<String> {
    let filter = crate::logging::normalize_directive(raw);
    if filter.is_empty() {
        return Err("must not be empty (e.g. \"info\" or \"groupchatd=debug,warn\")".into());
    }
    EnvFilter::try_new(&filter).map_err(|e| {
        format!("'{raw}' is not a log filter: {e} (e.g. \"info\" or \"groupchatd=debug,warn\")")
    })?;
    Ok(filter)
}

/// `motd`: split into lines (CRLF tolerated, trailing blank lines dropped) and size-checked.
pub(super) fn motd(text: &str) -> Rule<Vec<String>> {
    let mut lines: Vec<String> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_owned())
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    if lines.len() > MOTD_MAX_LINES {
        return Err(format!(
            "has {} lines; at most {MOTD_MAX_LINES} are allowed",
            lines.len()
        ));
    }
    if let Some((n, l)) = lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.len() > MOTD_MAX_LINE_BYTES)
    {
        return Err(format!(
            "line {} is {} bytes long; at most {MOTD_MAX_LINE_BYTES} are allowed",
            n + 1,
            l.len()
        ));
    }
    Ok(lines)
}

/// `per_ip_exempt`: CIDR networks (no host bits set) or bare addresses; the parse errors
/// quote the entry and say what was expected.
pub(super) fn networks(items: &[String]) -> Rule<Vec<IpNet>> {
    items
        .iter()
        .map(|s| s.trim().parse().map_err(|e: ParseIpNetError| e.to_string()))
        .collect()
}

/// `per_ip_prefix_v4`/`_v6`: a prefix length within `lo..=hi`.
pub(super) fn prefix(n: i64, lo: u8, hi: u8) -> Rule<u8> {
    count(between(n, i64::from(lo), i64::from(hi))?)
}

/// `flood_burst`/`connect_burst`: 0 (off) up to [`MAX_BURST`].
pub(super) fn burst(n: i64) -> Rule<u32> {
    count(between(n, 0, i64::from(MAX_BURST))?)
}

/// An integer in `lo..=hi`.
pub(super) fn between(n: i64, lo: i64, hi: i64) -> Rule<i64> {
    if (lo..=hi).contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be between {lo} and {hi} (got {n})"))
    }
}

/// `wrap_width`: 0 (off) or a terminal width in columns, from the narrowest that leaves room for
/// text after the continuation indent up to far beyond any screen.
pub(super) fn wrap_width(n: i64) -> Rule<usize> {
    let lo = crate::protocol::format::Wrap::MIN as i64;
    match n {
        0 => Ok(0),
        n if (lo..=1000).contains(&n) => Ok(n as usize),
        n => Err(format!(
            "must be 0 (off) or between {lo} and 1000 (got {n})"
        )),
    }
}

/// A count or size with no upper bound of its own (`0` meaning is the caller's).
pub(super) fn count<T: TryFrom<i64>>(n: i64) -> Rule<T> {
    if n < 0 {
        return Err(format!("must not be negative (got {n})"));
    }
    T::try_from(n).map_err(|_| format!("is too large (got {n})"))
}

/// A size in bytes within `lo..=hi`.
pub(super) fn bytes(n: i64, lo: i64, hi: i64) -> Rule<usize> {
    count(between(n, lo, hi)?)
}

/// A duration in whole seconds within `lo..=hi` (`lo` ≥ 1: the value must be on).
pub(super) fn secs(n: i64, lo: i64, hi: i64) -> Rule<Duration> {
    Ok(Duration::from_secs(count(between(n, lo, hi)?)?))
}

/// A duration in whole seconds up to `hi`, where 0 means "off".
pub(super) fn optional_secs(n: i64, hi: i64) -> Rule<Option<Duration>> {
    let secs: u64 = count(between(n, 0, hi)?)?;
    Ok((secs > 0).then(|| Duration::from_secs(secs)))
}

/// `idle_timeout_secs`: 0 turns it off.
pub(super) fn idle_secs(n: i64) -> Rule<Option<Duration>> {
    optional_secs(n, MAX_IDLE_SECS)
}

/// `flood_rate`/`connect_rate`: 0 (off) or [`MIN_RATE`]..=[`MAX_RATE`] per second. The floor
/// keeps every wait computed from the rate short and finite (a rate of 1e-19 once made the wait
/// overflow `Instant + Duration` and abort the daemon); the ceiling is beyond any real use.
/// `what` names the unit ("lines", "connections").
pub(super) fn rate(r: f64, what: &str) -> Rule<f64> {
    if r == 0.0 || (MIN_RATE..=MAX_RATE).contains(&r) {
        Ok(r.abs())
    } else {
        // {:?} writes 1e-19 and NaN legibly where {} would write twenty zeros.
        Err(format!(
            "must be 0 (off) or between {MIN_RATE} and {MAX_RATE} {what} per second (got {r:?})"
        ))
    }
}

/// `history_lines`, global or a room's: 0 (no history) up to [`MAX_HISTORY_LINES`].
pub(super) fn history_lines(n: i64) -> Rule<usize> {
    count(between(n, 0, MAX_HISTORY_LINES)?)
}

/// `default_room` and a `[[rooms]]` table's `name`: a valid room name, with or without its `#`.
pub(super) fn room_name(raw: &str) -> Rule<RoomName> {
    validate_room(raw).map_err(|e| format!("'{raw}' is not a valid room name: {e}"))
}

/// A `[[rooms]]` table's `topic`: one line, sanitised like chat text (escape sequences, controls
/// and invisible characters removed), at most [`TOPIC_MAX_BYTES`] bytes of what remains.
pub(super) fn topic(raw: &str) -> Rule<String> {
    // Sanitising would remove a line break and glue the lines together; say so instead.
    if raw.contains(['\n', '\r']) {
        return Err("must be one line".into());
    }
    let topic = sanitise_str(raw);
    if topic.len() > TOPIC_MAX_BYTES {
        return Err(format!(
            "is {} bytes long (after removing control and invisible characters); at most {TOPIC_MAX_BYTES} are allowed",
            topic.len()
        ));
    }
    Ok(topic)
}
