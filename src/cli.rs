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
