//! Transactional configuration reload, shared by SIGHUP and `chatctl reload`.
//!
//! The file is parsed and validated completely before anything changes; on error the old
//! configuration stays and the exact error is returned (and logged). On success every reloadable key
//! applies to new and existing clients at once and nobody is disconnected; `listen` and the admin
//! socket path/mode only change on restart and are reported as ignored. systemd is told
//! `RELOADING=1` (with `MONOTONIC_USEC=`, as `Type=notify-reload` requires) before and `READY=1` after,
//! in both outcomes. Reloads are serialised: a SIGHUP during a `chatctl reload` waits its turn.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sd_notify::NotifyState;
use tracing::{debug, error, info, warn};

use crate::config::{Config, Overrides};
use crate::hub::Hub;
use crate::logging::LogHandle;

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// The file read (None: built-in defaults).
    pub config: Option<PathBuf>,
    /// Keys whose new values wait for a restart.
    pub ignored: Vec<&'static str>,
}

/// Rebuilds the configuration the way start-up did and applies it.
pub struct Reloader {
    path: Option<PathBuf>,
    overrides: Overrides,
    log: Option<LogHandle>,
    /// The admin socket, re-owned when `admin_group` changes.
    admin_socket: Mutex<Option<PathBuf>>,
    serial: Mutex<()>,
}

impl Reloader {
    /// `path` is the file given at start-up (None: the default path if it exists, else defaults);
    /// `overrides` are the command-line flags, which keep beating the file.
    pub fn new(path: Option<PathBuf>, overrides: Overrides, log: Option<LogHandle>) -> Self {
        Reloader {
            path,
            overrides,
            log,
            admin_socket: Mutex::new(None),
            serial: Mutex::new(()),
        }
    }

    /// Tells the reloader where the admin socket is (for `admin_group` changes).
    pub fn set_admin_socket(&self, path: &Path) {
        *self.admin_socket.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.to_path_buf());
    }

    /// Re-reads and applies the configuration; on error nothing changes and the error is returned.
    pub fn reload(&self, hub: &Hub) -> Result<ReloadOutcome, String> {
        let _one_at_a_time = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        notify_reloading();
        let result = self.apply(hub);
        notify(&[NotifyState::Ready]);
        result
    }

    fn apply(&self, hub: &Hub) -> Result<ReloadOutcome, String> {
        let loaded = Config::load_effective(self.path.as_deref()).and_then(|(mut c, path)| {
            c.apply_overrides(&self.overrides)?;
            Ok((c, path))
        });
        let (new, path) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                error!(event = "reload", result = "failed", error = %e, "reload failed; keeping the old configuration");
                return Err(e.to_string());
            }
        };
        let old = hub.config();
        let mut ignored = Vec::new();
        if new.listen != old.listen {
            ignored.push("listen");
        }
        if new.admin_socket != old.admin_socket {
            ignored.push("admin_socket");
        }
        if new.admin_socket_mode != old.admin_socket_mode {
            ignored.push("admin_socket_mode");
        }
        for key in &ignored {
            warn!(
                event = "reload",
                key, "this key only changes on restart; new value ignored for now"
            );
        }
        if let Some(log) = &self.log
            && let Err(e) = log.set_filter(&new.log_level)
        {
            warn!(event = "reload", key = "log_level", error = %e, "log level not applied");
        }
        if new.admin_group != old.admin_group {
            self.regroup_admin_socket(new.admin_group.as_deref());
        }
        hub.set_config(Config {
            listen: old.listen.clone(),
            admin_socket: old.admin_socket.clone(),
            admin_socket_mode: old.admin_socket_mode,
            ..new
        });
        let file = path
            .as_ref()
            .map_or("built-in defaults".to_owned(), |p| p.display().to_string());
        info!(event = "reload", result = "ok", config = %file, "configuration reloaded");
        Ok(ReloadOutcome {
            config: path,
            ignored,
        })
    }

    fn regroup_admin_socket(&self, group: Option<&str>) {
        let Some(path) = self
            .admin_socket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return;
        };
        if let Err(e) = crate::admin::set_group(&path, group) {
            warn!(event = "reload", key = "admin_group", error = %e, "admin socket group not changed");
        }
    }
}

/// `RELOADING=1` and `MONOTONIC_USEC=` in one datagram, as systemd's notify-reload protocol asks.
fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(e) => warn!(error = %e, "cannot read CLOCK_MONOTONIC for MONOTONIC_USEC"),
    }
}

/// Sends states to systemd when `$NOTIFY_SOCKET` is set; a failure is logged, never fatal.
pub fn notify(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify systemd");
    } else {
        debug!(states = ?states, "notified systemd");
    }
}
