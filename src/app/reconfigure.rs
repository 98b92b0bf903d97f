//! The reload protocol, shared by SIGHUP and `chatctl reload`: one reload at a time, systemd told
//! `RELOADING=1` (with `MONOTONIC_USEC=`, as `Type=notify-reload` requires) before and `READY=1`
//! after in both outcomes, and a [`ReloadPlan`] applied in full or not at all. The file is read
//! and validated completely ([`Reloader::plan`]) before anything changes; on success every
//! reloadable key applies to new and existing clients at once and nobody is disconnected. The TLS
//! certificate and key are re-read too (certbot renewals): new handshakes (TLS chat and HTTPS) get
//! the new certificate, connections already made keep theirs.

use std::sync::{Arc, Mutex, Weak};

use sd_notify::NotifyState;
use tracing::{info, warn};

use crate::admin;
use crate::hub::Hub;
use crate::logging::LogHandle;
use crate::reload::{ReloadOutcome, ReloadPlan, Reloader};
use crate::systemd;

/// Everything a reload changes, and the lock that keeps reloads apart.
pub struct Reconfigure {
    pub(super) reloader: Reloader,
    pub(super) hub: Arc<Hub>,
    pub(super) log: Option<LogHandle>,
    /// The admin socket file, re-grouped when `admin_group` changes; None when it is systemd's.
    pub(super) admin_socket: Option<Weak<admin::SocketFile>>,
    /// The certificate of the TLS chat listeners and HTTPS, replaced by the one each reload
    /// reads; None while both are off.
    pub(super) tls: Option<Arc<crate::tls::Certificate>>,
    pub(super) serial: Mutex<()>,
}

impl Reconfigure {
    /// Re-reads and applies the configuration; on error nothing changes and the error is returned.
    /// Blocking (file IO): call it off the async workers.
    pub fn reload(&self) -> Result<ReloadOutcome, String> {
        let _one_at_a_time = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        systemd::notify_reloading();
        let result = self
            .reloader
            .plan(&self.hub.config())
            .map(|plan| self.apply(plan));
        systemd::notify(&[NotifyState::Ready]);
        result
    }

    fn apply(&self, plan: ReloadPlan) -> ReloadOutcome {
        if let (Some(log), Some(level)) = (&self.log, &plan.log_level)
            && let Err(e) = log.set_filter(level)
        {
            warn!(event = "reload", key = "log_level", error = %e, "log level not applied");
        }
        if let (Some(group), Some(socket)) = (
            &plan.admin_group,
            self.admin_socket.as_ref().and_then(Weak::upgrade),
        ) && let Err(e) = socket.set_group(group.as_deref())
        {
            warn!(event = "reload", key = "admin_group", error = %e, "admin socket group not changed");
        }
        if let (Some(certificate), Some(identity)) = (&self.tls, &plan.tls) {
            certificate.set(identity);
        }
        self.hub.set_config(plan.config);
        let file = plan
            .outcome
            .config
            .as_ref()
            .map_or("built-in defaults".to_owned(), |p| p.display().to_string());
        info!(event = "reload", result = "ok", config = %file, "configuration reloaded");
        plan.outcome
    }
}
