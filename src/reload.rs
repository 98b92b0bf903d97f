//! Configuration reload as data: re-read the file, validate it completely, and say what would
//! change ([`ReloadPlan`]). Nothing here touches the running daemon; [`App`](crate::app::App)
//! applies a plan (settings, log filter, admin socket group, certificate) and owns the reload
//! protocol around it (one at a time, `RELOADING=1` … `READY=1`).
//!
//! On error nothing changes and the exact error is returned. `listen`, `tls_listen`,
//! `http_listen`, `https_listen` and the admin socket's path and mode only change on restart: a
//! plan keeps the running values and names those keys as ignored. While TLS is served (for line
//! clients or HTTPS, or the file turns either on), the certificate and key files are read and
//! checked as at start; a file that fails fails the whole reload, naming its key, and the
//! certificate in use stays.

use std::path::PathBuf;

use tracing::{error, warn};

use crate::config::{Config, Overrides};
use crate::tls::Identity;

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
    /// The TLS certificate and key, read again; None while TLS and HTTPS are off (or about to be
    /// turned off by a restart: then the certificate in use stays until then).
    pub tls: Option<Identity>,
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
        let failed = |e: String| {
            error!(
                event = "reload", result = "failed", error = %e,
                "reload failed; keeping the old configuration"
            );
            e
        };
        let (new, path) = loaded.map_err(|e| failed(e.to_string()))?;
        // Checked also when the file only turns TLS on (for the next restart): better to hear of
        // a bad file now than when the daemon restarts.
        let serves_tls = |c: &Config| !c.tls_listen.is_empty() || !c.https_listen.is_empty();
        let serving = serves_tls(current);
        let tls = match (&new.tls_cert_file, &new.tls_key_file) {
            (Some(cert), Some(key)) if serving || serves_tls(&new) => {
                let stays = if serving {
                    "; the certificate in use stays"
                } else {
                    ""
                };
                let identity =
                    Identity::load(cert, key).map_err(|e| failed(format!("{e}{stays}")))?;
                Some(identity)
            }
            _ => None,
        };
        let mut ignored = Vec::new();
        if new.listen != current.listen {
            ignored.push("listen");
        }
        if new.tls_listen != current.tls_listen {
            ignored.push("tls_listen");
        }
        if new.http_listen != current.http_listen {
            ignored.push("http_listen");
        }
        if new.https_listen != current.https_listen {
            ignored.push("https_listen");
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
        if new.cluster != current.cluster {
            ignored.push("cluster");
        }
        for key in &ignored {
            warn!(
                event = "reload",
                key, "this key only changes on restart; new value ignored for now"
            );
        }
        let log_level = (new.log_level != current.log_level).then(|| new.log_level.clone());
        let admin_group = (new.admin_group != current.admin_group).then(|| new.admin_group.clone());
        // While TLS runs it keeps files to read at the next reload, even if this file (turning
        // TLS off at the next restart) names none.
        let keep_files = tls.is_none() && serving;
        let (tls_cert_file, tls_key_file) = if keep_files {
            (current.tls_cert_file.clone(), current.tls_key_file.clone())
        } else {
            (new.tls_cert_file.clone(), new.tls_key_file.clone())
        };
        Ok(ReloadPlan {
            config: Config {
                listen: current.listen.clone(),
                tls_listen: current.tls_listen.clone(),
                tls_cert_file,
                tls_key_file,
                http_listen: current.http_listen.clone(),
                https_listen: current.https_listen.clone(),
                admin_socket: current.admin_socket.clone(),
                admin_socket_mode: current.admin_socket_mode,
                worker_threads: current.worker_threads,
                cluster: current.cluster.clone(),
                ..new
            },
            log_level,
            admin_group,
            tls,
            outcome: ReloadOutcome {
                config: path,
                ignored,
            },
        })
    }
}
