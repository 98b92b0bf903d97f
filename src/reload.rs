//! Configuration reload as data: re-read the file, validate it completely, and say what would
//! change ([`ReloadPlan`]). Nothing here touches the running daemon; [`App`](crate::app::App)
//! applies a plan (settings, log filter, admin socket group) and owns the reload protocol around
//! it (one at a time, `RELOADING=1` … `READY=1`).
//!
//! On error nothing changes and the exact error is returned. `listen`, `http_listen` and the
//! admin socket's path and mode only change on restart: a plan keeps the running values and names those keys as
//! ignored.

use std::path::PathBuf;

use tracing::{error, warn};

use crate::config::{Config, Overrides};

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// The file read (None: built-in defaults).
    pub config: Option<PathBuf>,
    /// Keys whose new values wait for a restart.
    pub ignored: Vec<&'static str>,
}

/// What a reload will change, computed before anything changes.
#[derive(Debug)]
pub struct ReloadPlan {
    /// The configuration to put in force (with the restart-only keys kept as they run now).
    pub config: Config,
    /// The new log filter, if it changed.
    pub log_level: Option<String>,
    /// The admin socket's new group (None inside: no group), if it changed.
    pub admin_group: Option<Option<String>>,
    /// What to report.
    pub outcome: ReloadOutcome,
}

/// Where the configuration comes from: the file given at start-up (None: the default path if it
/// exists, else defaults) and the command-line flags, which keep beating the file.
#[derive(Debug, Clone)]
pub struct Reloader {
    path: Option<PathBuf>,
    overrides: Overrides,
}

impl Reloader {
    /// A source reading `path` with `overrides` on top.
    pub fn new(path: Option<PathBuf>, overrides: Overrides) -> Self {
        Reloader { path, overrides }
    }

    /// Reads and validates the configuration and compares it with `current`.
    pub fn plan(&self, current: &Config) -> Result<ReloadPlan, String> {
        let loaded = Config::load_effective(self.path.as_deref()).and_then(|(mut c, path)| {
            c.apply_overrides(&self.overrides)?;
            Ok((c, path))
        });
        let (new, path) = loaded.map_err(|e| {
            error!(event = "reload", result = "failed", error = %e, "reload failed; keeping the old configuration");
            e.to_string()
        })?;
        let mut ignored = Vec::new();
        if new.listen != current.listen {
            ignored.push("listen");
        }
        if new.http_listen != current.http_listen {
            ignored.push("http_listen");
        }
        if new.admin_socket != current.admin_socket {
            ignored.push("admin_socket");
        }
        if new.admin_socket_mode != current.admin_socket_mode {
            ignored.push("admin_socket_mode");
        }
        if new.worker_threads != current.worker_threads {
            ignored.push("worker_threads");
        }
        for key in &ignored {
            warn!(
                event = "reload",
                key, "this key only changes on restart; new value ignored for now"
            );
        }
        let log_level = (new.log_level != current.log_level).then(|| new.log_level.clone());
        let admin_group = (new.admin_group != current.admin_group).then(|| new.admin_group.clone());
        Ok(ReloadPlan {
            config: Config {
                listen: current.listen.clone(),
                http_listen: current.http_listen.clone(),
                admin_socket: current.admin_socket.clone(),
                admin_socket_mode: current.admin_socket_mode,
                worker_threads: current.worker_threads,
                ..new
            },
            log_level,
            admin_group,
            outcome: ReloadOutcome {
                config: path,
                ignored,
            },
        })
    }
}
