//! Command-line definitions of both binaries, kept in the library so that the man pages and shell
//! completions are generated from the same clap definitions the binaries parse (`--generate`, a
//! hidden flag, as ripgrep does it: no build script, and packaging runs the built binary).

mod generate;

use std::path::PathBuf;

use clap::Parser;

pub use generate::{
    Generate, Invocation, generate, parse_or_generate, parse_or_generate_from, print_generated,
};

use crate::config::Overrides;

/// Man page section of `groupchatd` (system administration commands).
pub const DAEMON_MAN_SECTION: &str = "8";
/// Man page section of `chatctl` (user commands).
pub const CTL_MAN_SECTION: &str = "1";

const DAEMON_AFTER_HELP: &str = "\
Files:
  /etc/groupchatd/groupchatd.toml  The configuration file, read when --config is not given (built-in
                                   defaults are used when it does not exist). Every key is optional
                                   and unknown keys are errors.
  /run/groupchatd/admin.sock       The admin socket chatctl(1) talks to when the daemon runs as root
                                   or under systemd with RuntimeDirectory=groupchatd.

Signals:
  SIGHUP           Re-read the configuration file. Limits, timeouts, flood settings, the MOTD and the
                   log level change without disconnecting anyone, and the TLS certificate and key are
                   read again (new TLS and HTTPS handshakes get the new certificate); listen,
                   tls_listen, http_listen and https_listen addresses and the admin socket change
                   only on restart. An invalid file changes nothing and is logged.
  SIGTERM, SIGINT  Stop gracefully: refuse new connections, tell every client the server is shutting
                   down, flush queues for at most shutdown_grace_secs (5), then exit 0.

Exit status:
  0   Stopped by SIGTERM or SIGINT, or --check-config found the configuration valid.
  1   The daemon could not run, e.g. a listen, http_listen or https_listen address could not
      be bound.
  78  Configuration error (EX_CONFIG): the file, line, key and reason are printed on stderr.
      Also when the configuration cannot work on this machine, which --check-config checks
      too: an admin socket path longer than 107 bytes, a directory on its path that someone
      other than root or the daemon's user could change, a missing admin_group, a listen,
      tls_listen, http_listen or https_listen port below net.ipv4.ip_unprivileged_port_start
      without CAP_NET_BIND_SERVICE, tls_listen or https_listen without tls_cert_file and
      tls_key_file, a TLS certificate or key that cannot be read, do not belong together, or a
      certificate outside its validity period (the message names tls_cert_file or tls_key_file).
      The systemd unit sets RestartPreventExitStatus=78, so a bad file is not retried in a loop.

Environment:
  RUST_LOG           Log filter, used when --log-level is not given.
  RUNTIME_DIRECTORY  Set by systemd; the default admin socket is admin.sock in this directory.
  NOTIFY_SOCKET      Set by systemd for Type=notify: readiness, status and watchdog pings.
  LISTEN_FDS         Set by systemd socket activation: descriptors named chat are chat listeners,
                     the one named admin is the admin socket.

See also:
  chatctl(1), systemctl(1), journalctl(1)
";

const CTL_AFTER_HELP: &str = "\
Exit status:
  0   Success.
  1   The daemon refused the request or the target does not exist (a reload with an invalid
      configuration file also exits 1, and the daemon keeps its old configuration).
  2   Usage error.
  69  The daemon is not reachable (EX_UNAVAILABLE); the message names the socket path.
  77  Permission denied (EX_NOPERM): only root, the daemon's user and members of its
      admin_group may use the admin socket. Also when the socket is served by a process whose
      uid is not root, chatctl's own, the groupchatd user's or one given with --expect-uid:
      then nothing is sent.

Environment:
  GROUPCHATD_SOCKET  Admin socket path, used when --socket is not given.

Files:
  /run/groupchatd/admin.sock  The admin socket of a daemon run by systemd or as root.

See also:
  groupchatd(8)
";

/// A group-chat relay daemon: people join with `nc HOST 7000` and chat in plain text.
///
/// Clients connect over TCP (netcat or telnet is enough), choose a nickname and chat in plain
/// UTF-8 lines. Each client has a bounded send queue, floods are slowed down rather than relayed,
/// and control characters and terminal escape sequences are removed before anything is relayed.
/// The operator manages the running daemon with chatctl(1) over a Unix admin socket.
///
/// Flags override the configuration file, which overrides the built-in defaults. Under systemd the
/// daemon reports readiness with sd_notify and logs to the journal.
#[derive(Debug, Parser)]
#[command(name = "groupchatd", version, after_long_help = DAEMON_AFTER_HELP)]
pub struct DaemonArgs {
    /// Configuration file. Without it, /etc/groupchatd/groupchatd.toml is read if it exists,
    /// otherwise built-in defaults are used (chat on 127.0.0.1:7000, HTTP health check and
    /// metrics on 127.0.0.1:7080).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on for chat clients, e.g. 0.0.0.0:7000 or [::]:7000. Repeat for several;
    /// replaces the file's `listen` list.
    #[arg(short, long = "listen", value_name = "ADDR")]
    pub listen: Vec<String>,

    /// Path of the admin control socket (overrides `admin_socket`).
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,

    /// Log filter, e.g. `info`, `debug` or `groupchatd=debug,warn` (overrides RUST_LOG and `log_level`).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Validate the configuration, print the result and exit: 0 if valid, 78 if not.
    #[arg(long)]
    pub check_config: bool,
}

impl DaemonArgs {
    /// The flags that override configuration keys. `RUST_LOG` counts as a flag when set.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            admin_socket: self.admin_socket.clone(),
            log_level: self
                .log_level
                .clone()
                .or_else(|| std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty())),
        }
    }
}

/// Manage a running groupchatd over its admin socket: clients, rooms, announcements, stats, reload.
///
/// chatctl sends one request to the daemon's Unix admin socket, waits for the reply and prints it
/// as an aligned table or message, or with --json as the daemon's reply, one line of JSON. The
/// daemon serves root, its own user and members of its admin_group, and logs every kick,
/// announcement, topic, move and reload with the caller's uid and pid.
///
/// Rooms are named with or without their # and in any case (#Rust, rust and RUST are one room).
/// Quote a name that starts with #: a shell takes an unquoted word starting with # for a comment.
#[derive(Debug, Parser)]
#[command(name = "chatctl", version, after_long_help = CTL_AFTER_HELP)]
pub struct CtlArgs {
    /// Admin socket of the daemon. Default, as the daemon resolves it: $RUNTIME_DIRECTORY/admin.sock,
    /// else /run/groupchatd/admin.sock for root, else $XDG_RUNTIME_DIR/groupchatd/admin.sock, else
    /// /tmp/groupchatd-UID/admin.sock (falling back to /run/groupchatd/admin.sock when that exists).
    #[arg(
        short,
        long,
        global = true,
        value_name = "PATH",
        env = "GROUPCHATD_SOCKET"
    )]
    pub socket: Option<PathBuf>,

    /// Print the daemon's reply as one line of JSON, for scripts.
    #[arg(long, global = true)]
    pub json: bool,

    /// Also accept a daemon running as this uid (repeatable). Without it, chatctl talks only to a
    /// socket served by root, by its own uid or by the `groupchatd` system user, and sends nothing
    /// (exit 77) when someone else listens there.
    #[arg(long, global = true, value_name = "UID")]
    pub expect_uid: Vec<u32>,

    /// Seconds to wait for the daemon's reply.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 5.0)]
    pub timeout: f64,

    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// chatctl's subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// List connected clients: id, nickname, room, address, connected since and for how long, idle
    /// time, lines and bytes in and out, bytes queued.
    List {
        /// Only the members of this room. Exits 1 if there is no such room.
        #[arg(long, value_name = "NAME", conflicts_with = "cluster")]
        room: Option<String>,
        /// Every member on every node of the cluster, with a NODE column (id, nickname, room and
        /// address for members of other nodes). Exits 1 if the daemon is not in a cluster.
        #[arg(long)]
        cluster: bool,
    },
    /// The cluster's nodes: name, clients, time since the last heartbeat, and link state (`up`,
    /// `down` for this node's own link, `lost` for a node that stopped beating). Exits 1 if the
    /// daemon is not in a cluster.
    Nodes,
    /// Disconnect a client. It receives `*** you were kicked: REASON`; everyone else sees it leave
    /// with the reason.
    Kick {
        /// Client id (as shown by `chatctl list`) or nickname (case-insensitive).
        target: String,
        /// Reason shown to the client and the room.
        #[arg(short, long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Send `*** TEXT` to every member of every room, or with --room of one room (sanitised like
    /// any chat line).
    Announce {
        /// Only to the members of this room. Exits 1 if there is no such room.
        #[arg(long, value_name = "NAME")]
        room: Option<String>,
        /// The announcement; several words are joined with single spaces.
        #[arg(required = true, value_name = "TEXT")]
        text: Vec<String>,
    },
    /// List the rooms: name, members, topic and the lines of history each keeps for newcomers.
    Rooms,
    /// Set or clear a room's topic.
    ///
    /// The topic is sanitised like any chat line, and the room sees `*** the operator set the
    /// topic: TEXT`. An empty TEXT ('') clears it, and the room sees `*** the operator cleared the
    /// topic`. Exits 1 if there is no such room or the topic is longer than 300 characters.
    Topic {
        /// The room.
        #[arg(value_name = "NAME")]
        room: String,
        /// The topic; several words are joined with single spaces.
        #[arg(required = true, value_name = "TEXT")]
        text: Vec<String>,
    },
    /// Move a member to another room, which is made if it does not exist.
    ///
    /// The member is told `*** The operator moved you to ROOM.`, then gets the room's topic, who
    /// is there and its history; the old room sees it leave for ROOM, the new one sees it join.
    /// Exits 1 if there is no such member (or it has not chosen a nickname yet), it is in ROOM
    /// already, or ROOM would pass max_rooms.
    Move {
        /// Client id (as shown by `chatctl list`) or nickname (case-insensitive).
        target: String,
        /// The room to move it to.
        #[arg(value_name = "ROOM")]
        room: String,
    },
    /// Show uptime, version, listen addresses, clients now and at peak, rooms, and totals
    /// (connections, lines relayed, bytes, kicks, slow-consumer drops, throttled senders, rejected
    /// connections).
    Stats,
    /// Re-read the configuration file, like SIGHUP, and wait for the outcome. Exits 1 (and the
    /// daemon keeps its old configuration) when the new file is invalid. Suitable for ExecReload=.
    Reload,
    /// Hand every connection, the listeners and the admin socket to a new process running BINARY
    /// (default: the path the daemon was started from, so after a package upgrade, the new
    /// version), without disconnecting anyone. Prints the new PID and version. Exits 1 with the
    /// reason, the old process still serving, if the new one is missing, crashes, refuses the
    /// configuration or the hand-over, or is not ready in time.
    Upgrade {
        /// The new binary.
        #[arg(long, value_name = "PATH")]
        binary: Option<std::path::PathBuf>,
        /// Seconds the new process has to be ready.
        #[arg(long = "ready-timeout", value_name = "SECS", default_value_t = 10.0)]
        ready_timeout: f64,
    },
}
