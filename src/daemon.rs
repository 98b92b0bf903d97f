//! The daemon process around [`App`]: logging, file-descriptor limit, runtime, signals and reload.
//!
//! SIGTERM and SIGINT stop gracefully; SIGHUP reloads the configuration transactionally: the new file
//! is parsed and validated completely before anything changes, and on error the old configuration
//! stays in force. Keys that only take effect at start-up are reported as ignored until restart.

use std::path::PathBuf;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use crate::app::App;
use crate::config::{Config, Overrides};
use crate::logging::{self, LogHandle};
use crate::reload::Reloader;
use crate::systemd;

/// Runs the daemon until SIGTERM/SIGINT. `path` is the configuration file in use, if any.
pub fn run(config: Config, path: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<()> {
    let (log, sink) = logging::init(&config.log_level)
        .map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))?;
    let nofile = raise_nofile_limit();
    // Publishes wait for the end of the worker's batch of ready tasks, so lines that arrive
    // together leave together (see hub/deliver.rs).
    crate::hub::enable_deferred_delivery();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        builder.worker_threads(config.worker_threads);
    }
    let runtime = builder
        .on_thread_park(crate::hub::deliver_deferred)
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
    let inherited = systemd::inherited_sockets().context("taking sockets passed by systemd")?;
    let mut app = App::bind_with(config, inherited)?;
    let reconfigure = app.enable_reload(Reloader::new(path, overrides), Some(log));
    let stop = async move {
        loop {
            tokio::select! {
                _ = term.recv() => { info!(signal = "SIGTERM", "stop requested"); break }
                _ = int.recv() => { info!(signal = "SIGINT", "stop requested"); break }
                _ = hup.recv() => {
                    info!(signal = "SIGHUP", "reload requested");
                    let reconfigure = reconfigure.clone();
                    // File IO: off the async workers. Errors are logged by the reloader.
                    let _ = tokio::task::spawn_blocking(move || reconfigure.reload()).await;
                }
            }
        }
    };
    app.run(stop).await;
    Ok(())
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
