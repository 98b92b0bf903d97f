//! Configuration: the TOML file, command-line overrides and their validation.
//!
//! Precedence is flag > file > default, and defaults live only in
//! `impl Default for Config`. A [`Config`] that exists has passed every rule, so
//! the rest of the daemon never re-checks a limit. Every failure is a
//! [`ConfigError`] naming file, line and key; the daemon exits with [`EX_CONFIG`]
//! so systemd (`RestartPreventExitStatus=78`) does not restart-loop on a typo.

mod cluster;
mod document;
mod error;
mod file;
mod ipnet;
mod origin;
mod rooms;
mod rules;
#[cfg(test)]
mod tests;

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::ConfigError;
pub use ipnet::{IpNet, ParseIpNetError};
pub use origin::{ParseOriginError, Scheme, WebOrigin};

/// Where the daemon looks for its config file when no path is given.
pub const DEFAULT_PATH: &str = "/etc/groupchatd/groupchatd.toml";

/// Exit status for a bad configuration (`EX_CONFIG` from sysexits.h).
pub const EX_CONFIG: i32 = 78;

/// The validated configuration. Each field is documented, with its key's
/// units and default, in the shipped `config/groupchatd.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// TCP addresses to accept chat clients on; never empty, no duplicates.
    pub listen: Vec<SocketAddr>,
    /// TCP addresses to accept TLS chat clients on; empty (the default) turns TLS off. No
    /// duplicates, and none that `listen` also has (port 0 aside). Only changes on restart.
    pub tls_listen: Vec<SocketAddr>,
    /// PEM file with the server's certificate first and then its chain; an absolute path. Set
    /// whenever `tls_listen` or `https_listen` is not empty. Re-read on every reload.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file with the certificate's private key (PKCS #8, PKCS #1 or SEC 1); an absolute path.
    /// Set whenever `tls_listen` or `https_listen` is not empty. Re-read on every reload.
    pub tls_key_file: Option<PathBuf>,
    /// TCP addresses to serve HTTP on (`/healthz`, `/metrics`); empty turns HTTP off. No
    /// duplicates, none also in `listen`.
    pub http_listen: Vec<SocketAddr>,
    /// TCP addresses to serve the same HTTP service on over TLS, with the certificate of
    /// `tls_cert_file`; empty (the default) turns HTTPS off. No duplicates, none also in `listen`,
    /// `tls_listen` or `http_listen`. Only changes on restart.
    pub https_listen: Vec<SocketAddr>,
    /// Web origins whose pages may open `GET /ws`; empty (the default): only the page's own
    /// origin (the request's `Host`). No duplicates. Applies to new connections from a reload on.
    pub allowed_origins: Vec<WebOrigin>,
    /// Admin socket path; `None` lets the daemon pick one in its runtime directory.
    pub admin_socket: Option<PathBuf>,
    /// Permission bits for the admin socket, at most `0o777`.
    pub admin_socket_mode: u32,
    /// Group to give the admin socket; `None` keeps the daemon's own group.
    pub admin_group: Option<String>,
    /// A `tracing_subscriber::EnvFilter` directive string, known to parse.
    pub log_level: String,
    /// Lines sent to each client after joining; empty means no MOTD.
    pub motd: Vec<String>,
    /// Most simultaneous clients; 0 = unlimited.
    pub max_clients: usize,
    /// Most simultaneous clients from one network (see the prefixes below); 0 = unlimited.
    pub max_clients_per_ip: usize,
    /// Peers in these networks are not subject to `max_clients_per_ip` nor to `connect_rate`.
    pub per_ip_exempt: Vec<IpNet>,
    /// IPv4 peers are counted per network of this prefix length, 8..=32.
    pub per_ip_prefix_v4: u8,
    /// IPv6 peers are counted per network of this prefix length, 32..=128.
    pub per_ip_prefix_v6: u8,
    /// New connections per network (same prefixes) and second; `None` = no limit.
    pub connect_rate: Option<Rate>,
    /// Longest accepted input line in bytes, 64..=1 MiB.
    pub max_line_bytes: usize,
    /// Most unsent output bytes per client before it is dropped as too slow;
    /// at least 4 × `max_line_bytes`, at most 1 GiB.
    pub max_queue_bytes: usize,
    /// How long one write to a client may block before it is dropped.
    pub write_timeout: Duration,
    /// Time allowed to choose a nick; `None` = no limit.
    pub handshake_timeout: Option<Duration>,
    /// Disconnect clients silent for this long; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// Per-client line rate limit; `None` = no flood control.
    pub flood: Option<Flood>,
    /// Send join/leave notices only while the room has at most this many members; 0 = always.
    pub presence_max_members: usize,
    /// Columns at which lines carrying someone's text are broken, continuation rows indented; 0 = off.
    pub wrap_width: usize,
    /// The room every client is in after choosing a nickname: a valid room name in its display
    /// form, with its `#` (`"#lobby"`). If `rooms` lists it (in any spelling that shares a key
    /// with it), this is that entry's spelling.
    pub default_room: String,
    /// Whether clients may create rooms with `/join`; if not, only `predefined_rooms` exist.
    pub allow_user_rooms: bool,
    /// Most rooms at once, predefined ones included, 1..=65000; never fewer than
    /// `predefined_rooms().len()`.
    pub max_rooms: usize,
    /// Lines of a room's recent talk replayed to whoever joins it, 0..=1000; 0 = no history.
    /// A room's own `history_lines` beats it.
    pub history_lines: usize,
    /// Most bytes of history kept per room, at most 16 MiB. While any room keeps history, at
    /// least 1024 and at most `max_queue_bytes / 2`, so a joiner's replay cannot make it look
    /// slow. A file without the key gets 64 KiB or half its `max_queue_bytes`, whichever is less.
    pub history_bytes: usize,
    /// The `[[rooms]]` tables, in file order; no two share a room-name key.
    pub rooms: Vec<RoomConfig>,
    /// How long shutdown waits for clients to be told and disconnected.
    pub shutdown_grace: Duration,
    /// Idle time before TCP keepalive probes; `None` = keepalive off.
    pub tcp_keepalive: Option<Duration>,
    /// Runtime worker threads (0: one per CPU core). Only changes on restart.
    pub worker_threads: usize,
    /// `[cluster]`: share rooms with other nodes through NATS JetStream; `None` (the default)
    /// runs alone. Only changes on restart.
    pub cluster: Option<ClusterConfig>,
}

/// The `[cluster]` table, checked (see `cluster.rs` for the rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// NATS servers to connect to (any one will do; the client fails over between them).
    pub nats_urls: Vec<String>,
    /// This node's name in the cluster; default: the host name.
    pub node_name: String,
    /// Prefix of every subject, stream and bucket, so several clusters can share one NATS.
    pub name: String,
    /// How long a silent node (or an unrefreshed nickname) lives; heartbeats every third of it.
    pub presence_ttl: Duration,
    /// JetStream replicas of the stream and buckets.
    pub replicas: usize,
    /// A NATS credentials file (JWT and NKey seed).
    pub creds_file: Option<PathBuf>,
    /// User and password for NATS.
    pub user: Option<String>,
    /// Password for `user`.
    pub password: Option<String>,
    /// A NATS token.
    pub token: Option<String>,
    /// A CA bundle to verify NATS servers' TLS certificates with.
    pub ca_file: Option<PathBuf>,
}

impl ClusterConfig {
    /// The defaults, for a node called `node_name`, with no server yet.
    pub fn new(node_name: String) -> ClusterConfig {
        ClusterConfig {
            nats_urls: Vec::new(),
            node_name,
            name: "groupchat".to_owned(),
            presence_ttl: Duration::from_secs(15),
            replicas: 1,
            creds_file: None,
            user: None,
            password: None,
            token: None,
            ca_file: None,
        }
    }
}

/// Token-bucket flood control: a client may send `burst` lines at once, then
/// `per_sec` lines per second. Excess lines are delayed, not dropped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flood {
    /// Bucket size in lines, 1..=[`MAX_BURST`].
    pub burst: u32,
    /// Refill rate in lines per second, [`MIN_RATE`]..=[`MAX_RATE`].
    pub per_sec: f64,
}

/// A token bucket's shape for `connect_rate`: `burst` connections at once, then `per_sec` per
/// second on average. Same bounds as [`Flood`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Bucket size, 1..=[`MAX_BURST`].
    pub burst: u32,
    /// Refill rate per second, [`MIN_RATE`]..=[`MAX_RATE`].
    pub per_sec: f64,
}

/// A room that exists from start-up, from a `[[rooms]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomConfig {
    /// Its name in display form, with its `#` (`"#rust"`); valid by `validate_room`.
    pub name: String,
    /// Its topic, sanitised, one line of at most 300 bytes; empty = none.
    pub topic: String,
    /// Its own `history_lines` (0..=1000), beating the global one; `None` = the global one.
    pub history_lines: Option<usize>,
}

/// Slowest accepted rate (`flood_rate`, `connect_rate`) other than 0 (off): one per 100 s. Also
/// what keeps every wait computed from a rate short (one token is at most 100 s away) and finite.
pub const MIN_RATE: f64 = 0.01;
/// Fastest accepted rate: "no practical limit, but the limiter still runs" (what the benchmarks
/// configure); the ceiling only turns away nonsense such as 1e308. Use 0 for off.
pub const MAX_RATE: f64 = 1_000_000.0;
/// Largest accepted burst (`flood_burst`, `connect_burst`); as large as the benchmarks use.
pub const MAX_BURST: u32 = 100_000;

/// Values given on the command line; each set field beats the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen` (repeatable); if non-empty it replaces the file's whole list.
    pub listen: Vec<String>,
    /// `--admin-socket`.
    pub admin_socket: Option<PathBuf>,
    /// `--log-level`.
    pub log_level: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7000)],
            tls_listen: Vec::new(),
            tls_cert_file: None,
            tls_key_file: None,
            http_listen: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7080)],
            https_listen: Vec::new(),
            allowed_origins: Vec::new(),
            admin_socket: None,
            admin_socket_mode: 0o660,
            admin_group: None,
            log_level: "info".to_owned(),
            motd: vec!["Welcome to groupchatd.".to_owned()],
            max_clients: 10_000,
            max_clients_per_ip: 16,
            per_ip_exempt: [
                (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
                (IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
            ]
            .into_iter()
            .filter_map(|(addr, prefix)| IpNet::new(addr, prefix))
            .collect(),
            per_ip_prefix_v4: 32,
            per_ip_prefix_v6: 64,
            connect_rate: Some(Rate {
                burst: 20,
                per_sec: 2.0,
            }),
            max_line_bytes: 4096,
            max_queue_bytes: 256 * 1024,
            write_timeout: Duration::from_secs(30),
            handshake_timeout: Some(Duration::from_secs(30)),
            idle_timeout: None,
            flood: Some(Flood {
                burst: 10,
                per_sec: 2.0,
            }),
            presence_max_members: 500,
            wrap_width: 80,
            default_room: "#lobby".to_owned(),
            allow_user_rooms: true,
            max_rooms: 1000,
            history_lines: 20,
            history_bytes: 64 * 1024,
            rooms: Vec::new(),
            shutdown_grace: Duration::from_secs(5),
            tcp_keepalive: Some(Duration::from_secs(60)),
            worker_threads: 1,
            cluster: None,
        }
    }
}

impl Config {
    /// Parse and validate TOML text; `origin` is the file name used in error messages.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let doc = document::Document::parse(text, origin)?;
        let raw: file::FileConfig = doc.deserialize()?;
        raw.validate(&doc)
    }

    /// Read, parse and validate a file. A missing or unreadable file is an
    /// error naming the file and the OS reason.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| read_error(path, &e))?;
        Config::from_toml(&text, path)
    }

    /// Apply command-line overrides (flags beat the file). All flags are
    /// checked before any is applied, so on error `self` is unchanged.
    /// Errors name the flag, e.g. key `--listen`.
    pub fn apply_overrides(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        let listen = match o.listen.as_slice() {
            [] => None,
            items => Some(rules::listen(items).map_err(|r| ConfigError::flag("--listen", r))?),
        };
        let admin_socket = o
            .admin_socket
            .as_deref()
            .map(rules::admin_socket)
            .transpose()
            .map_err(|r| ConfigError::flag("--admin-socket", r))?;
        let log_level = o
            .log_level
            .as_deref()
            .map(rules::log_level)
            .transpose()
            .map_err(|r| ConfigError::flag("--log-level", r))?;
        for (key, other) in [
            ("tls_listen", &self.tls_listen),
            ("http_listen", &self.http_listen),
            ("https_listen", &self.https_listen),
        ] {
            if let Some(listen) = &listen
                && let Some(clash) = rules::clash(listen, other, key)
            {
                let reason = format!("{clash}; one port cannot serve both");
                return Err(ConfigError::flag("--listen", reason));
            }
        }
        if let Some(listen) = listen {
            self.listen = listen;
        }
        if admin_socket.is_some() {
            self.admin_socket = admin_socket;
        }
        if let Some(log_level) = log_level {
            self.log_level = log_level;
        }
        Ok(())
    }

    /// The network `ip` is counted under for `max_clients_per_ip` and `connect_rate`: its
    /// `per_ip_prefix_v4`/`_v6` network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, how a
    /// dual-stack listener sees IPv4 peers) counts as the IPv4 address it carries.
    pub fn network_of(&self, ip: IpAddr) -> IpNet {
        let (ip, prefix) = match ip.to_canonical() {
            IpAddr::V4(v4) => (IpAddr::V4(v4), self.per_ip_prefix_v4.min(32)),
            IpAddr::V6(v6) => (IpAddr::V6(v6), self.per_ip_prefix_v6.min(128)),
        };
        // The prefix is clamped to the family's length above, so `new` cannot refuse it; the
        // fallback (the host itself) only keeps this total.
        IpNet::new(ip, prefix).unwrap_or_else(|| IpNet::host(ip))
    }

    /// The rooms that exist from start-up: `default_room` first (its `[[rooms]]` entry if one has
    /// exactly its name, as validation makes sure one does when they are the same room; else with
    /// no topic and the global history), then the other `[[rooms]]` in file order.
    pub fn predefined_rooms(&self) -> Vec<RoomConfig> {
        let is_default = |room: &&RoomConfig| room.name == self.default_room;
        let default = self.rooms.iter().find(is_default).cloned();
        let default = default.unwrap_or_else(|| RoomConfig {
            name: self.default_room.clone(),
            topic: String::new(),
            history_lines: None,
        });
        std::iter::once(default)
            .chain(self.rooms.iter().filter(|r| !is_default(r)).cloned())
            .collect()
    }

    /// Whether `ip` is in `per_ip_exempt` (and so outside the per-network limits).
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        self.per_ip_exempt.iter().any(|net| net.contains(ip))
    }

    /// The configuration the daemon should run with. An explicit path must
    /// exist; without one, [`DEFAULT_PATH`] is used if it exists, else the
    /// defaults. Also returns the file that was read, if any, for logging.
    pub fn load_effective(
        explicit: Option<&Path>,
    ) -> Result<(Config, Option<PathBuf>), ConfigError> {
        load_effective_from(explicit, Path::new(DEFAULT_PATH))
    }
}

/// [`Config::load_effective`] with the default path as a parameter, for tests.
fn load_effective_from(
    explicit: Option<&Path>,
    default_path: &Path,
) -> Result<(Config, Option<PathBuf>), ConfigError> {
    if let Some(path) = explicit {
        return Config::load(path).map(|c| (c, Some(path.to_path_buf())));
    }
    // Read rather than test exists() first, so the file cannot appear or vanish in between.
    match std::fs::read_to_string(default_path) {
        Ok(text) => {
            Config::from_toml(&text, default_path).map(|c| (c, Some(default_path.to_path_buf())))
        }
        // A dangling symlink also reads as NotFound, but it means someone meant a
        // file to be there; report it instead of silently running on defaults.
        Err(e) if e.kind() == ErrorKind::NotFound && default_path.symlink_metadata().is_err() => {
            Ok((Config::default(), None))
        }
        Err(e) => Err(read_error(default_path, &e)),
    }
}

fn read_error(path: &Path, e: &std::io::Error) -> ConfigError {
    ConfigError {
        file: Some(path.to_path_buf()),
        line: None,
        key: None,
        reason: format!("cannot read: {e}"),
    }
}
