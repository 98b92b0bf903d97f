//! The daemon process around [`App`]: logging, file-descriptor limit, runtime, signals, reload and
//! upgrade.
//!
//! SIGTERM and SIGINT stop gracefully; SIGHUP reloads the configuration transactionally: the new file
//! is parsed and validated completely before anything changes, and on error the old configuration
//! stays in force. Keys that only take effect at start-up are reported as ignored until restart.
//! SIGUSR2 upgrades like `chatctl upgrade` (see [`crate::upgrade`]); a process started by an
//! upgrade takes its predecessor's sockets and room instead of binding.

use std::path::PathBuf;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::app::App;
use crate::config::{Config, Overrides};
use crate::logging::{self, LogHandle};
use crate::reload::Reloader;
use crate::systemd;
use crate::upgrade::{self, Invocation, Takeover};

/// Runs the daemon until SIGTERM/SIGINT. `path` is the configuration file in use, if any.
pub fn run(config: Config, path: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<()> {
    let (log, sink) = logging::init(&config.log_level)
        .map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))?;
    let nofile = raise_nofile_limit();
    crate::tls::install_provider();
    // Started by an upgrade: take everything over before anything else (the predecessor waits).
    let takeover = match Takeover::receive(&config) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(why)) => return Err(anyhow::anyhow!("upgrade: {why}")),
    };
    // Publishes wait for the end of the worker's batch of ready tasks, so lines that arrive
    // together leave together (see hub/deliver.rs).
    crate::hub::enable_deferred_delivery();
    // One worker writes a lone line to a big room one member at a time; a second core, if
    // there is one, writes half of such rounds (see hub/assist.rs). More workers share rounds
    // among themselves instead.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let fanout_thread =
        config.worker_threads == 1 && cores > 1 && crate::hub::enable_fanout_assistant();
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
            log = ?sink, nofile, fanout_thread, "starting"
        );
        serve(config, path, overrides, log, takeover).await
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

async fn serve(
    config: Config,
    path: Option<PathBuf>,
    overrides: Overrides,
    log: LogHandle,
    takeover: Option<Takeover>,
) -> anyhow::Result<()> {
    let invocation = Invocation::current();
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut usr2 = signal(SignalKind::user_defined2()).context("installing SIGUSR2 handler")?;
    let mut app = match takeover {
        Some(takeover) => take_over(config, takeover).await,
        None => {
            let inherited =
                systemd::inherited_sockets().context("taking sockets passed by systemd")?;
            App::bind_with(config, inherited)?
        }
    };
    let reconfigure = app.enable_reload(Reloader::new(path, overrides), Some(log));
    let upgrader = app.enable_upgrade(invocation);
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
                _ = usr2.recv() => {
                    info!(signal = "SIGUSR2", "upgrade requested");
                    // A failure is logged by the upgrader, and everything runs on. A stop
                    // requested meanwhile calls the upgrade off (it rolls back) and stops.
                    tokio::select! {
                        done = upgrader.upgrade(None, upgrade::DEFAULT_TIMEOUT) => {
                            if done.is_ok() {
                                upgrade::exit_handed_over();
                            }
                        }
                        _ = term.recv() => { info!(signal = "SIGTERM", "stop requested; upgrade called off"); break }
                        _ = int.recv() => { info!(signal = "SIGINT", "stop requested; upgrade called off"); break }
                    }
                }
            }
        }
    };
    app.run(stop).await;
    Ok(())
}

/// Rebuilds the predecessor's room around the sockets it handed over, says ready, and waits for
/// its commit. Any failure ends this process without touching a socket (the predecessor then
/// carries on serving), hence the exits rather than errors.
async fn take_over(config: Config, mut takeover: Takeover) -> App {
    let app = match App::adopt(config, &mut takeover) {
        Ok(app) => app,
        Err(why) => {
            warn!(reason = %why, "upgrade: cannot take over; the old process keeps serving");
            takeover.reject(&why);
            std::process::exit(1);
        }
    };
    let from = takeover.snapshot.from.clone();
    let paused_at = takeover.snapshot.paused_at_ns;
    let clients = takeover.snapshot.room.clients.len();
    let upgrades = takeover.snapshot.room.upgrades;
    match tokio::task::spawn_blocking(move || takeover.ready_and_wait()).await {
        Ok(Ok(_)) => {}
        Ok(Err(why)) => {
            warn!(reason = %why, "upgrade called off; exiting without serving");
            std::process::exit(1);
        }
        Err(e) => {
            warn!(error = %e, "upgrade: waiting for the commit failed; exiting without serving");
            std::process::exit(1);
        }
    }
    let pause_ms = upgrade::monotonic_ns().saturating_sub(paused_at) as f64 / 1e6;
    info!(
        event = "upgrade",
        old_pid = from.pid,
        old_version = %from.version,
        new_pid = std::process::id(),
        new_version = env!("CARGO_PKG_VERSION"),
        pause_ms,
        clients,
        upgrades,
        "upgraded: took over every connection"
    );
    app
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
