//! The daemon process around [`App`]: logging, file-descriptor limit, runtime, signals and reload.
//!
//! SIGTERM and SIGINT stop gracefully; SIGHUP reloads the configuration transactionally: the new file
//! is parsed and validated completely before anything changes, and on error the old configuration
//! stays in force. Keys that only take effect at start-up are reported as ignored until restart.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::app::App;
use crate::config::{Config, Overrides};
use crate::hub::Hub;
use crate::logging::{self, LogHandle};

/// Runs the daemon until SIGTERM/SIGINT. `path` is the configuration file in use, if any.
pub fn run(config: Config, path: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<()> {
    let (log, sink) = logging::init(&config.log_level)
        .map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))?;
    let nofile = raise_nofile_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("groupchatd")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        info!(
            version = env!("CARGO_PKG_VERSION"),
            config = %path.as_ref().map_or("built-in defaults".into(), |p| p.display().to_string()),
            log = ?sink, nofile, "starting"
        );
        serve(config, path, overrides, log).await
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

async fn serve(
    config: Config,
    path: Option<PathBuf>,
    overrides: Overrides,
    log: LogHandle,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let app = App::bind(config)?;
    let hub = app.hub().clone();
    let reloader = Reloader {
        path,
        overrides,
        log,
    };
    let stop = async move {
        loop {
            tokio::select! {
                _ = term.recv() => { info!(signal = "SIGTERM", "stop requested"); break }
                _ = int.recv() => { info!(signal = "SIGINT", "stop requested"); break }
                _ = hup.recv() => { let _ = reloader.reload(&hub); }
            }
        }
    };
    app.run(stop).await;
    Ok(())
}

/// Everything a reload needs to rebuild the configuration the way start-up did.
pub struct Reloader {
    /// The file read at start-up (None: built-in defaults, or the default path if it appears).
    pub path: Option<PathBuf>,
    /// Command-line flags, which keep beating the file after a reload.
    pub overrides: Overrides,
    /// To apply a new log level.
    pub log: LogHandle,
}

impl Reloader {
    /// Re-reads and applies the configuration. On error nothing changes and the error is returned.
    pub fn reload(&self, hub: &Hub) -> Result<(), String> {
        let loaded = Config::load_effective(self.path.as_deref()).and_then(|(mut c, _)| {
            c.apply_overrides(&self.overrides)?;
            Ok(c)
        });
        let new = match loaded {
            Ok(c) => c,
            Err(e) => {
                error!(event = "reload", result = "failed", error = %e, "reload failed; keeping the old configuration");
                return Err(e.to_string());
            }
        };
        let old = hub.config();
        if new.listen != old.listen {
            warn!(
                event = "reload",
                key = "listen",
                "listen addresses change only on restart; ignored"
            );
        }
        if new.admin_socket != old.admin_socket || new.admin_socket_mode != old.admin_socket_mode {
            warn!(
                event = "reload",
                key = "admin_socket",
                "admin socket changes only on restart; ignored"
            );
        }
        if let Err(e) = self.log.set_filter(&new.log_level) {
            warn!(event = "reload", key = "log_level", error = %e, "log level not applied");
        }
        let applied = Config {
            listen: old.listen.clone(),
            admin_socket: old.admin_socket.clone(),
            admin_socket_mode: old.admin_socket_mode,
            ..new
        };
        hub.set_config(Arc::new(applied));
        info!(event = "reload", result = "ok", "configuration reloaded");
        Ok(())
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: each client is a descriptor, and the default soft
/// limit (1024) would cap the room far below `max_clients`. Returns the limit now in force.
fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}
