//! The file format: `FileConfig` mirrors the TOML keys one to one, and
//! `validate` turns it into a typed [`Config`].
//!
//! Every field is optional; an absent key keeps the value from
//! `Config::default()`, so defaults are written in exactly one place.
//! Integers are read as `i64` (TOML's own integer type) so that a negative or
//! oversized number reaches the range check and gets a range message, not a
//! serde type error.

use serde::Deserialize;
use toml::Spanned;

use super::cluster::{self, FileCluster};
use super::document::Document;
use super::rooms::{self, FileRoom};
use super::rules::{self, RawMode};
use super::{Config, ConfigError, Flood, Rate};

/// Every key with the type it takes, as said in "expected …" messages.
/// Must list exactly the fields of `FileConfig` (a test checks this).
pub(super) const KEYS: &[(&str, &str)] = &[
    (
        "listen",
        "an array of socket addresses like [\"127.0.0.1:7000\"]",
    ),
    (
        "tls_listen",
        "an array of socket addresses like [\"0.0.0.0:7443\"]",
    ),
    ("tls_cert_file", "a path string"),
    ("tls_key_file", "a path string"),
    (
        "http_listen",
        "an array of socket addresses like [\"127.0.0.1:7080\"], or [] for no HTTP",
    ),
    (
        "https_listen",
        "an array of socket addresses like [\"0.0.0.0:8443\"]",
    ),
    (
        "allowed_origins",
        "an array of origins like [\"https://chat.example.org\"]",
    ),
    ("admin_socket", "a path string"),
    (
        "admin_socket_mode",
        "an octal mode string like \"0660\" or an integer like 0o660",
    ),
    ("admin_group", "a group name string"),
    ("log_level", "a log filter string like \"info\""),
    ("motd", "a string"),
    ("max_clients", "an integer"),
    ("max_clients_per_ip", "an integer"),
    (
        "per_ip_exempt",
        "an array of networks like [\"10.0.0.0/8\"]",
    ),
    ("per_ip_prefix_v4", "an integer"),
    ("per_ip_prefix_v6", "an integer"),
    ("connect_burst", "an integer"),
    ("connect_rate", "a number"),
    ("max_line_bytes", "an integer"),
    ("max_queue_bytes", "an integer"),
    ("write_timeout_secs", "an integer"),
    ("handshake_timeout_secs", "an integer"),
    ("idle_timeout_secs", "an integer"),
    ("flood_burst", "an integer"),
    ("flood_rate", "a number"),
    ("presence_max_members", "an integer"),
    ("wrap_width", "an integer"),
    ("default_room", "a room name string like \"lobby\""),
    ("allow_user_rooms", "true or false"),
    ("max_rooms", "an integer"),
    ("history_lines", "an integer"),
    ("history_bytes", "an integer"),
    ("rooms", "[[rooms]] tables (note the double brackets)"),
    ("cluster", "a [cluster] table"),
    ("shutdown_grace_secs", "an integer"),
    ("tcp_keepalive_secs", "an integer"),
    ("worker_threads", "an integer"),
];

/// The raw file, exactly as written; see `config/groupchatd.toml` for each key's meaning.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    listen: Option<Vec<String>>,
    tls_listen: Option<Vec<String>>,
    tls_cert_file: Option<String>,
    tls_key_file: Option<String>,
    http_listen: Option<Vec<String>>,
    https_listen: Option<Vec<String>>,
    allowed_origins: Option<Vec<String>>,
    admin_socket: Option<String>,
    admin_socket_mode: Option<RawMode>,
    admin_group: Option<String>,
    log_level: Option<String>,
    motd: Option<String>,
    max_clients: Option<i64>,
    max_clients_per_ip: Option<i64>,
    per_ip_exempt: Option<Vec<String>>,
    per_ip_prefix_v4: Option<i64>,
    per_ip_prefix_v6: Option<i64>,
    connect_burst: Option<i64>,
    connect_rate: Option<f64>,
    max_line_bytes: Option<i64>,
    max_queue_bytes: Option<i64>,
    write_timeout_secs: Option<i64>,
    handshake_timeout_secs: Option<i64>,
    idle_timeout_secs: Option<i64>,
    flood_burst: Option<i64>,
    flood_rate: Option<f64>,
    presence_max_members: Option<i64>,
    wrap_width: Option<i64>,
    default_room: Option<String>,
    allow_user_rooms: Option<bool>,
    max_rooms: Option<i64>,
    history_lines: Option<i64>,
    history_bytes: Option<i64>,
    rooms: Option<Vec<Spanned<FileRoom>>>,
    cluster: Option<Spanned<FileCluster>>,
    shutdown_grace_secs: Option<i64>,
    tcp_keepalive_secs: Option<i64>,
    worker_threads: Option<i64>,
}

impl FileConfig {
    /// Check every present key and lay it over the defaults. Stops at the first problem.
    pub(super) fn validate(self, doc: &Document<'_>) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(v) = self.listen {
            c.listen = doc.check("listen", rules::listen(&v))?;
        }
        if let Some(v) = self.tls_listen {
            c.tls_listen = doc.check("tls_listen", rules::addresses(&v, 7443))?;
        }
        if let Some(v) = self.tls_cert_file {
            c.tls_cert_file = Some(doc.check("tls_cert_file", rules::pem_file(v.as_ref()))?);
        }
        if let Some(v) = self.tls_key_file {
            c.tls_key_file = Some(doc.check("tls_key_file", rules::pem_file(v.as_ref()))?);
        }
        if let Some(v) = self.http_listen {
            c.http_listen = doc.check("http_listen", rules::addresses(&v, 7080))?;
        }
        if let Some(v) = self.https_listen {
            c.https_listen = doc.check("https_listen", rules::addresses(&v, 8443))?;
        }
        check_listeners_apart(&c, doc)?;
        check_tls_files_given(&c, doc)?;
        if let Some(v) = self.allowed_origins {
            c.allowed_origins = doc.check("allowed_origins", rules::origins(&v))?;
        }
        if let Some(v) = self.admin_socket {
            c.admin_socket = Some(doc.check("admin_socket", rules::admin_socket(v.as_ref()))?);
        }
        if let Some(v) = self.admin_socket_mode {
            c.admin_socket_mode = doc.check("admin_socket_mode", rules::admin_socket_mode(&v))?;
        }
        if let Some(v) = self.admin_group {
            c.admin_group = Some(doc.check("admin_group", rules::admin_group(&v))?);
        }
        if let Some(v) = self.log_level {
            c.log_level = doc.check("log_level", rules::log_level(&v))?;
        }
        if let Some(v) = self.motd {
            c.motd = doc.check("motd", rules::motd(&v))?;
        }
        if let Some(v) = self.max_clients {
            c.max_clients = doc.check("max_clients", rules::count(v))?;
        }
        if let Some(v) = self.max_clients_per_ip {
            c.max_clients_per_ip = doc.check("max_clients_per_ip", rules::count(v))?;
        }
        if let Some(v) = self.per_ip_exempt {
            c.per_ip_exempt = doc.check("per_ip_exempt", rules::networks(&v))?;
        }
        if let Some(v) = self.per_ip_prefix_v4 {
            // /8 is the largest block ever allocated; shorter would make one limit server-wide.
            c.per_ip_prefix_v4 = doc.check("per_ip_prefix_v4", rules::prefix(v, 8, 32))?;
        }
        if let Some(v) = self.per_ip_prefix_v6 {
            // /32 is a typical ISP's whole allocation; /128 counts single addresses.
            c.per_ip_prefix_v6 = doc.check("per_ip_prefix_v6", rules::prefix(v, 32, 128))?;
        }
        let (mut burst, mut per_sec) = c.connect_rate.map_or((0, 0.0), |r| (r.burst, r.per_sec));
        if let Some(v) = self.connect_burst {
            burst = doc.check("connect_burst", rules::burst(v))?;
        }
        if let Some(v) = self.connect_rate {
            per_sec = doc.check("connect_rate", rules::rate(v, "connections"))?;
        }
        c.connect_rate = (burst > 0 && per_sec > 0.0).then_some(Rate { burst, per_sec });
        if let Some(v) = self.max_line_bytes {
            let v = rules::bytes(v, 64, rules::MAX_LINE_BYTES);
            c.max_line_bytes = doc.check("max_line_bytes", v)?;
        }
        if let Some(v) = self.max_queue_bytes {
            let v = rules::bytes(v, 0, rules::MAX_QUEUE_BYTES);
            c.max_queue_bytes = doc.check("max_queue_bytes", v)?;
        }
        check_queue_fits_lines(&c, doc)?;
        if let Some(v) = self.write_timeout_secs {
            c.write_timeout = doc.check("write_timeout_secs", rules::secs(v, 1, 3600))?;
        }
        if let Some(v) = self.handshake_timeout_secs {
            let v = rules::optional_secs(v, 3600);
            c.handshake_timeout = doc.check("handshake_timeout_secs", v)?;
        }
        if let Some(v) = self.idle_timeout_secs {
            c.idle_timeout = doc.check("idle_timeout_secs", rules::idle_secs(v))?;
        }
        // Either knob at 0 disables flood control; a key left out keeps its default.
        let (mut burst, mut per_sec) = c.flood.map_or((0, 0.0), |f| (f.burst, f.per_sec));
        if let Some(v) = self.flood_burst {
            burst = doc.check("flood_burst", rules::burst(v))?;
        }
        if let Some(v) = self.flood_rate {
            per_sec = doc.check("flood_rate", rules::rate(v, "lines"))?;
        }
        c.flood = (burst > 0 && per_sec > 0.0).then_some(Flood { burst, per_sec });
        if let Some(v) = self.presence_max_members {
            c.presence_max_members = doc.check("presence_max_members", rules::count(v))?;
        }
        if let Some(v) = self.wrap_width {
            c.wrap_width = doc.check("wrap_width", rules::wrap_width(v))?;
        }
        if let Some(v) = self.default_room {
            let name = doc.check("default_room", rules::room_name(&v))?;
            c.default_room = name.as_str().to_owned();
        }
        if let Some(v) = self.allow_user_rooms {
            c.allow_user_rooms = v;
        }
        if let Some(v) = self.max_rooms {
            let n = rules::between(v, 1, rules::MAX_ROOMS).and_then(rules::count);
            c.max_rooms = doc.check("max_rooms", n)?;
        }
        if let Some(v) = self.history_lines {
            c.history_lines = doc.check("history_lines", rules::history_lines(v))?;
        }
        if let Some(v) = self.history_bytes {
            let v = rules::bytes(v, 0, rules::MAX_HISTORY_BYTES);
            c.history_bytes = doc.check("history_bytes", v)?;
        }
        if let Some(tables) = self.rooms {
            rooms::rooms(tables, &mut c, doc)?;
        }
        if let Some(table) = self.cluster {
            c.cluster = Some(cluster::cluster(table, doc)?);
        }
        rooms::check_room_count(&c, doc)?;
        rooms::fit_history_to_queue(&mut c, doc)?;
        if let Some(v) = self.shutdown_grace_secs {
            c.shutdown_grace = doc.check("shutdown_grace_secs", rules::secs(v, 1, 300))?;
        }
        if let Some(v) = self.tcp_keepalive_secs {
            let v = rules::optional_secs(v, 7200);
            c.tcp_keepalive = doc.check("tcp_keepalive_secs", v)?;
        }
        if let Some(v) = self.worker_threads {
            let n = doc.check("worker_threads", rules::between(v, 0, 64))?;
            c.worker_threads = usize::try_from(n).unwrap_or(1);
        }
        Ok(c)
    }
}

/// TLS (for line clients or HTTPS) needs a certificate and its key; the files themselves are
/// read by the start-up checks (`preflight`) and by each reload, not here, so that parsing a
/// configuration stays free of IO. The message names the list that needs them.
fn check_tls_files_given(c: &Config, doc: &Document<'_>) -> Result<(), ConfigError> {
    let needs = if !c.tls_listen.is_empty() {
        "tls_listen"
    } else if !c.https_listen.is_empty() {
        "https_listen"
    } else {
        return Ok(());
    };
    for (key, file, what) in [
        (
            "tls_cert_file",
            &c.tls_cert_file,
            "the certificate and its chain",
        ),
        (
            "tls_key_file",
            &c.tls_key_file,
            "the certificate's private key",
        ),
    ] {
        if file.is_none() {
            let reason = format!(
                "must be set while {needs} is not empty: a PEM file with {what} (e.g. \
                 /etc/letsencrypt/live/chat.example.org/{})",
                if key == "tls_cert_file" {
                    "fullchain.pem"
                } else {
                    "privkey.pem"
                }
            );
            return doc.check(key, Err(reason));
        }
    }
    Ok(())
}

/// No two listeners across `listen`, `tls_listen`, `http_listen` and `https_listen`, defaults
/// included, that could not both bind: the daemon would fail at start, long after
/// `--check-config` said yes. Blamed on the later list, or, when that one is at its default
/// (only `http_listen`'s is not empty), on the list that names the default's address, since
/// that is the line the operator wrote.
fn check_listeners_apart(c: &Config, doc: &Document<'_>) -> Result<(), ConfigError> {
    let lists = [
        ("listen", &c.listen),
        ("tls_listen", &c.tls_listen),
        ("http_listen", &c.http_listen),
        ("https_listen", &c.https_listen),
    ];
    for (i, &(key, addrs)) in lists.iter().enumerate() {
        for &(earlier, taken) in &lists[..i] {
            if doc.has_key(key) {
                if let Some(clash) = rules::clash(addrs, taken, earlier) {
                    let reason = format!("{clash}; one port cannot serve both");
                    return doc.check(key, Err(reason));
                }
            } else if let Some(clash) = rules::clash(taken, addrs, &format!("{key}'s default")) {
                let reason = format!(
                    "{clash}; one port cannot serve both: set {key} to another address, or to [] \
                     for none"
                );
                return doc.check(earlier, Err(reason));
            }
        }
    }
    Ok(())
}

/// `max_queue_bytes` ≥ 4 × `max_line_bytes`, so a client's queue always has room
/// for a full line. Blamed on `max_queue_bytes` if the file sets it; otherwise the
/// operator raised `max_line_bytes` past what the default queue allows, so say that.
fn check_queue_fits_lines(c: &Config, doc: &Document<'_>) -> Result<(), ConfigError> {
    let needed = c.max_line_bytes.saturating_mul(rules::QUEUE_LINES);
    if c.max_queue_bytes >= needed {
        return Ok(());
    }
    if doc.has_key("max_queue_bytes") {
        let reason = format!(
            "must be at least {} times max_line_bytes = {needed} so a full line always fits (got {})",
            rules::QUEUE_LINES,
            c.max_queue_bytes
        );
        doc.check("max_queue_bytes", Err(reason))
    } else {
        let reason = format!(
            "{} needs max_queue_bytes of at least {} times that = {needed}, but max_queue_bytes is {} (the default); set max_queue_bytes too",
            c.max_line_bytes,
            rules::QUEUE_LINES,
            c.max_queue_bytes
        );
        doc.check("max_line_bytes", Err(reason))
    }
}
