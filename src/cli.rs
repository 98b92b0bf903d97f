//! Command-line definitions of the daemon, kept in the library so man pages and completions can be
//! generated from the same clap definitions the binary parses.

use std::path::PathBuf;

use clap::Parser;

use crate::config::Overrides;

/// groupchatd: a group-chat relay daemon. People join with `nc HOST 7000` and chat in plain text.
#[derive(Debug, Parser)]
#[command(name = "groupchatd", version, about, long_about = None)]
pub struct DaemonArgs {
    /// Configuration file. Without it, /etc/groupchatd/groupchatd.toml is read if it exists,
    /// otherwise built-in defaults are used (listen on 127.0.0.1:7000).
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

/// chatctl: manage a running groupchatd over its admin socket (list, kick, announce, stats, reload).
///
/// Exit status: 0 success; 1 the daemon refused the request or the target does not exist;
/// 69 the daemon is not reachable; 77 permission denied; 2 usage error.
#[derive(Debug, Parser)]
#[command(name = "chatctl", version, about, long_about)]
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
    /// List connected clients: id, nickname, address, connected since and for how long, idle time,
    /// lines and bytes in and out, bytes queued.
    List,
    /// Disconnect a client. It receives `*** you were kicked: REASON`; everyone else sees it leave
    /// with the reason.
    Kick {
        /// Client id (as shown by `chatctl list`) or nickname (case-insensitive).
        target: String,
        /// Reason shown to the client and the room.
        #[arg(short, long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Send `*** TEXT` to every joined client (sanitised like any chat line).
    Announce {
        /// The announcement; several words are joined with single spaces.
        #[arg(required = true, value_name = "TEXT")]
        text: Vec<String>,
    },
    /// Show uptime, version, listen addresses, clients now and at peak, and totals (connections,
    /// lines relayed, bytes, kicks, slow-consumer drops, throttled senders, rejected connections).
    Stats,
    /// Re-read the configuration file, like SIGHUP, and wait for the outcome. Exits 1 (and the
    /// daemon keeps its old configuration) when the new file is invalid. Suitable for ExecReload=.
    Reload,
}
