//! The TOML config loader, on any file an operator could write.
//!
//! Properties: loading never panics and gives the same answer twice; an error names the file and
//! a line inside it, if any, and displays as one line (no LF or CR); an accepted file yields a
//! `Config` inside the documented ranges (see `config/groupchatd.toml`; `allowed_origins` are
//! normalised origins that print and parse back as themselves), and appending a comment
//! line changes nothing; its rooms are valid, distinct (no two share a key) and fit `max_rooms`,
//! with the default room first and once. For an accepted file, the daemon's arithmetic on its values (flood and
//! connection-rate buckets, session deadlines, socket timers) runs at its extremes without
//! panicking (a panic aborts the daemon) and gives waits within the documented bounds.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use groupchatd::config::{Config, IpNet, MAX_BURST, MAX_RATE, MIN_RATE, WebOrigin};
use groupchatd::fuzzing::limits_at_extremes;
use groupchatd::protocol::{sanitise_str, validate_room};

const ORIGIN: &str = "fuzz.toml";

/// Checks one config file (decoded lossily: the daemon reads files as UTF-8 and refuses others
/// before parsing).
pub fn check_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let origin = Path::new(ORIGIN);
    match Config::from_toml(&text, origin) {
        Ok(config) => {
            check_ranges(&config, &text);
            check_arithmetic(&config, &text);
            let commented = format!("{text}\n# a comment\n");
            match Config::from_toml(&commented, origin) {
                Ok(again) => assert_eq!(again, config, "a comment changed {text:?}"),
                Err(e) => panic!("a comment broke {text:?}: {e}"),
            }
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(
                !shown.contains(['\n', '\r']),
                "error is not one line: {shown:?}"
            );
            assert!(
                shown.starts_with(ORIGIN),
                "error does not name the file: {shown:?}"
            );
            assert_eq!(e.file.as_deref(), Some(origin), "{shown:?}");
            let lines = text.split('\n').count();
            assert!(
                e.line.is_none_or(|l| (1..=lines).contains(&l)),
                "line {:?} of {lines}: {shown:?}",
                e.line
            );
            match Config::from_toml(&text, origin) {
                Ok(_) => panic!("accepted on the second try: {text:?}"),
                Err(again) => assert_eq!(again.to_string(), shown),
            }
        }
    }
}

/// Every rule of `config/groupchatd.toml`, restated.
fn check_ranges(c: &Config, text: &str) {
    let secs =
        |d: Duration, lo: u64, hi: u64| d.subsec_nanos() == 0 && (lo..=hi).contains(&d.as_secs());
    let serves_tls = !c.tls_listen.is_empty() || !c.https_listen.is_empty();
    let rules = [
        ("listen", !c.listen.is_empty() && apart(&c.listen, &[])),
        ("tls_listen", apart(&c.tls_listen, &[&c.listen])),
        (
            "http_listen",
            apart(&c.http_listen, &[&c.listen, &c.tls_listen]),
        ),
        (
            "https_listen",
            apart(&c.https_listen, &[&c.listen, &c.tls_listen, &c.http_listen]),
        ),
        ("allowed_origins", origins_ok(c)),
        (
            "tls_cert_file",
            c.tls_cert_file.as_ref().is_none_or(|p| p.is_absolute())
                && (!serves_tls || c.tls_cert_file.is_some()),
        ),
        (
            "tls_key_file",
            c.tls_key_file.as_ref().is_none_or(|p| p.is_absolute())
                && (!serves_tls || c.tls_key_file.is_some()),
        ),
        (
            "admin_socket",
            c.admin_socket.as_ref().is_none_or(|p| p.is_absolute()),
        ),
        (
            "admin_socket_mode",
            c.admin_socket_mode <= 0o777 && c.admin_socket_mode & 0o600 == 0o600,
        ),
        (
            "admin_group",
            c.admin_group.as_ref().is_none_or(|g| !g.trim().is_empty()),
        ),
        ("log_level", !c.log_level.trim().is_empty()),
        (
            "motd",
            c.motd.len() <= 20
                && c.motd.iter().all(|l| l.len() <= 400 && !l.contains('\n'))
                && c.motd.last().is_none_or(|l| !l.is_empty()),
        ),
        ("per_ip_exempt", c.per_ip_exempt.iter().all(canonical)),
        ("per_ip_prefix_v4", (8..=32).contains(&c.per_ip_prefix_v4)),
        ("per_ip_prefix_v6", (32..=128).contains(&c.per_ip_prefix_v6)),
        (
            "connect_rate",
            c.connect_rate.is_none_or(|r| bucket_ok(r.burst, r.per_sec)),
        ),
        ("max_line_bytes", (64..=1 << 20).contains(&c.max_line_bytes)),
        (
            "max_queue_bytes",
            c.max_queue_bytes >= 4 * c.max_line_bytes && c.max_queue_bytes <= 1 << 30,
        ),
        ("write_timeout_secs", secs(c.write_timeout, 1, 3600)),
        (
            "handshake_timeout_secs",
            c.handshake_timeout.is_none_or(|d| secs(d, 1, 3600)),
        ),
        (
            "idle_timeout_secs",
            c.idle_timeout.is_none_or(|d| secs(d, 1, 365 * 24 * 3600)),
        ),
        (
            "flood",
            c.flood.is_none_or(|f| bucket_ok(f.burst, f.per_sec)),
        ),
        ("shutdown_grace_secs", secs(c.shutdown_grace, 1, 300)),
        (
            "tcp_keepalive_secs",
            c.tcp_keepalive.is_none_or(|d| secs(d, 1, 7200)),
        ),
        ("default_room", is_room_name(&c.default_room)),
        (
            "max_rooms",
            (1..=65000).contains(&c.max_rooms) && c.predefined_rooms().len() <= c.max_rooms,
        ),
        (
            "history_lines",
            c.history_lines <= 1000
                && c.rooms
                    .iter()
                    .all(|r| r.history_lines.is_none_or(|n| n <= 1000)),
        ),
        ("history_bytes", history_bytes_ok(c)),
        ("rooms", rooms_ok(c)),
    ];
    for (key, ok) in rules {
        assert!(ok, "{key} out of range in {c:?} from {text:?}");
    }
}

/// No two of `addrs` alike, and none that could not be bound beside another of them or of
/// `others`: the same family and port (not 0) with the same IP or the family's wildcard.
fn apart(addrs: &[SocketAddr], others: &[&Vec<SocketAddr>]) -> bool {
    let unique: HashSet<_> = addrs.iter().collect();
    let clash = |a: &SocketAddr, b: &SocketAddr| {
        a.port() != 0
            && a.port() == b.port()
            && a.is_ipv4() == b.is_ipv4()
            && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
    };
    unique.len() == addrs.len()
        && addrs.iter().enumerate().all(|(i, a)| {
            addrs[..i].iter().all(|b| !clash(a, b))
                && others.iter().all(|list| list.iter().all(|b| !clash(a, b)))
        })
}

/// No two alike; each `scheme://host[:port]` with nothing after (no path, query, fragment or user),
/// ASCII and lowercase, a port other than 0, and its text parsing back to the same origin.
fn origins_ok(c: &Config) -> bool {
    let unique: HashSet<_> = c.allowed_origins.iter().collect();
    unique.len() == c.allowed_origins.len()
        && c.allowed_origins.iter().all(|o| {
            let shown = o.to_string();
            let rest = shown
                .strip_prefix("http://")
                .or_else(|| shown.strip_prefix("https://"));
            rest.is_some_and(|r| {
                !r.is_empty()
                    && !r.contains(['/', '?', '#', '@'])
                    && r.is_ascii()
                    && r == r.to_ascii_lowercase()
            }) && o.port() > 0
                && shown.parse::<WebOrigin>().as_ref() == Ok(o)
        })
}

/// A room name in the display form `validate_room` gives it.
fn is_room_name(name: &str) -> bool {
    validate_room(name).is_ok_and(|r| r.as_str() == name)
}

/// At most 16 MiB; while any room keeps history, 1024 to half of `max_queue_bytes`.
fn history_bytes_ok(c: &Config) -> bool {
    let kept = c.history_lines > 0
        || c.rooms
            .iter()
            .any(|r| r.history_lines.is_some_and(|n| n > 0));
    c.history_bytes <= 16 << 20
        && (!kept || (1024..=c.max_queue_bytes / 2).contains(&c.history_bytes))
}

/// Every `[[rooms]]` name valid, no two the same room (sharing a key), topics sanitised and at
/// most 300 bytes; the default room first among the predefined ones, and there once.
fn rooms_ok(c: &Config) -> bool {
    let mut keys = HashSet::new();
    let unique = c.rooms.iter().all(|r| {
        validate_room(&r.name).is_ok_and(|name| name.keys().all(|k| keys.insert(k.to_owned())))
    });
    let predefined = c.predefined_rooms();
    let default = validate_room(&c.default_room).ok();
    let default_once = predefined
        .iter()
        .filter(|r| {
            let name = validate_room(&r.name).ok();
            match (&default, &name) {
                (Some(d), Some(n)) => n.keys().any(|k| d.keys().any(|l| k == l)),
                _ => false,
            }
        })
        .count()
        == 1;
    unique
        && default_once
        && predefined[0].name == c.default_room
        && c.rooms.iter().all(|r| {
            is_room_name(&r.name)
                && r.topic.len() <= 300
                && sanitise_str(&r.topic) == r.topic
                && !r.topic.contains('\n')
        })
}

/// A token bucket's shape within the documented bounds: 1..=100000, 0.01..=1000000 per second.
fn bucket_ok(burst: u32, per_sec: f64) -> bool {
    (1..=MAX_BURST).contains(&burst) && (MIN_RATE..=MAX_RATE).contains(&per_sec)
}

/// The daemon's arithmetic on `c`, at its extremes: must not panic (that is most of the check),
/// and its results must stay within the bounds the sample config documents.
fn check_arithmetic(c: &Config, text: &str) {
    let x = limits_at_extremes(c);
    if let (Some(flood), Some(wait)) = (c.flood, x.flood_wait) {
        // Never longer than an hour in one go (at 0.01 lines/s and the debt built up here, about
        // 20 minutes).
        assert!(
            wait <= Duration::from_secs(3600),
            "flood wait {wait:?} for {c:?} from {text:?}"
        );
        // Twelve lines past the burst a client waits, unless one 1 ms timer tick refills that
        // much (a line is only held back when the wait is worth a timer).
        assert!(
            wait > Duration::ZERO || flood.per_sec * 0.001 >= 12.0,
            "no flood wait for {flood:?} from {text:?}"
        );
    }
    assert_eq!(x.flood_wait.is_some(), c.flood.is_some());
    if let (Some(rate), Some((now, later))) = (c.connect_rate, x.connect_retry_secs) {
        // One token away at 0.01/s at the slowest: at most 100 s, at least 1.
        let most = (1.0 / rate.per_sec).ceil() as u32;
        for retry in [now, later] {
            assert!(
                (1..=100).contains(&retry) && retry <= most.max(1),
                "retry {retry} s at {rate:?} from {text:?}"
            );
        }
    }
    assert_eq!(x.connect_retry_secs.is_some(), c.connect_rate.is_some());
    match (c.tcp_keepalive, x.keepalive) {
        (None, None) => assert_eq!(
            u128::from(x.user_timeout_ms),
            c.write_timeout.as_millis(),
            "{text:?}"
        ),
        (Some(idle), Some((secs, interval))) => {
            assert_eq!(u64::from(secs), idle.as_secs(), "{text:?}");
            assert!((1..=10).contains(&interval), "{text:?}");
            assert!(
                u64::from(x.user_timeout_ms) > u64::from(secs) * 1000,
                "{text:?}"
            );
        }
        other => panic!("keepalive {other:?} from {text:?}"),
    }
}

/// A network is stored with its host bits cleared and a prefix that fits its family.
fn canonical(net: &IpNet) -> bool {
    let max = match net.addr() {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    net.prefix() <= max && IpNet::new(net.addr(), net.prefix()) == Some(*net)
}
