//! The assembled daemon: bind, serve, stop. Everything a test or the binary needs goes through here.
//!
//! [`App::bind`] binds every listener before anything is served, so a caller (a test on port 0, the
//! systemd notifier) can read [`App::local_addrs`] and know the daemon is reachable. [`App::run`] takes
//! its shutdown trigger as a future and bounds the stop. This file holds the [`App`] itself, its
//! start-up errors and its settings; the phases of its life are submodules: `bind` (a start),
//! `adopt` (an upgrade's successor), `run` (serving and stopping), `reconfigure` (reloads).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{AdminError, AdminLimits, AdminSocket};
use crate::config::Config;
use crate::hub::Hub;
use crate::hub::handover::Resumed;
use crate::logging::LogHandle;
use crate::preflight::PreflightError;
use crate::reload::Reloader;
use crate::tls;
pub use crate::upgrade::Upgraded;
use crate::upgrade::{AcceptGate, Invocation, Upgrader};
use crate::ws;

mod adopt;
mod bind;
mod reconfigure;
mod run;
pub use reconfigure::Reconfigure;

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}")]
pub struct BindError {
    /// The address from the configuration.
    pub addr: SocketAddr,
    /// What the OS said.
    #[source]
    pub source: std::io::Error,
}

/// Why the daemon could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A chat listener.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// An HTTP or HTTPS listener.
    #[error("{key}: cannot listen on {addr}")]
    Http {
        /// `http_listen` or `https_listen`.
        key: &'static str,
        /// The address from the configuration.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The admin socket.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// A check `--check-config` also runs.
    #[error(transparent)]
    Preflight(#[from] PreflightError),
}

impl StartError {
    /// True when the configuration itself is wrong (exit 78, no restart), not the environment.
    pub fn is_config(&self) -> bool {
        match self {
            StartError::Admin(e) => e.is_config(),
            StartError::Preflight(_) => true,
            StartError::Bind(_) | StartError::Http { .. } => false,
        }
    }
}

/// TLS: the certificate (for TLS chat and HTTPS alike), the TLS chat listeners and the front end
/// their clients go through.
struct Tls {
    certificate: Arc<tls::Certificate>,
    /// The TLS chat listeners (`tls_listen`; none while only HTTPS is on).
    listeners: Vec<TcpListener>,
    front: Arc<tls::Front>,
}

/// A bound, not yet serving, daemon.
pub struct App {
    hub: Arc<Hub>,
    listeners: Vec<TcpListener>,
    /// None while `tls_listen` and `https_listen` are empty.
    tls: Option<Tls>,
    /// The HTTP listeners (`http_listen`).
    http: Vec<TcpListener>,
    /// The HTTPS listeners (`https_listen`); none unless `tls` is set.
    https: Vec<TcpListener>,
    admin: AdminSocket,
    admin_limits: AdminLimits,
    reconfigure: Option<Arc<Reconfigure>>,
    /// Set by [`enable_upgrade`](Self::enable_upgrade).
    upgrader: Option<Arc<Upgrader>>,
    /// Where a predecessor left the cluster link (an upgrade's).
    cluster_resume: Option<crate::cluster::Resume>,
    /// Connections taken over from a predecessor, whose sessions start with [`run`](Self::run).
    resumed: Vec<Resumed>,
    /// The WebSocket front end's relays that an upgrade waits for (the front end itself starts
    /// with `run`).
    ws_relays: TaskTracker,
    /// Every WebSocket relay, for the ones an upgrade moves.
    ws_registry: Arc<ws::Relays>,
    /// WebSocket relays taken over from a predecessor, started with [`run`](Self::run).
    moved: Vec<ws::Moved>,
    /// How often WebSocket clients are pinged.
    ws_ping: std::time::Duration,
    gate: AcceptGate,
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl App {
    /// Serves on sockets bound elsewhere (socket activation): chat listeners, HTTP listeners and
    /// the admin socket, without TLS.
    pub fn with_listeners(
        config: Config,
        listeners: Vec<TcpListener>,
        http: Vec<TcpListener>,
        admin: AdminSocket,
    ) -> App {
        Self::assemble(Hub::new(config), listeners, None, http, admin, Vec::new())
    }

    fn assemble(
        hub: Hub,
        listeners: Vec<TcpListener>,
        tls: Option<Tls>,
        http: Vec<TcpListener>,
        admin: AdminSocket,
        resumed: Vec<Resumed>,
    ) -> App {
        App {
            hub: Arc::new(hub),
            listeners,
            tls,
            http,
            https: Vec::new(),
            admin,
            admin_limits: AdminLimits::default(),
            reconfigure: None,
            upgrader: None,
            cluster_resume: None,
            resumed,
            ws_relays: TaskTracker::new(),
            ws_registry: Arc::default(),
            moved: Vec::new(),
            ws_ping: ws::PING_EVERY,
            gate: AcceptGate::default(),
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Enables `chatctl upgrade` (and returns the handle SIGUSR2 uses too): `invocation` is how
    /// this process was started.
    pub fn enable_upgrade(&mut self, invocation: Invocation) -> Arc<Upgrader> {
        use std::os::fd::AsRawFd;
        let tls = self.tls.iter().flat_map(|t| &t.listeners);
        let mut relays = vec![self.ws_relays.clone()];
        relays.extend(self.tls.as_ref().map(|t| t.front.relays().clone()));
        let relays = (relays, self.ws_registry.clone());
        let upgrader = Arc::new(Upgrader::new(
            self.hub.clone(),
            invocation,
            crate::upgrade::Sockets {
                listeners: self.listeners.iter().map(AsRawFd::as_raw_fd).collect(),
                tls: tls.map(AsRawFd::as_raw_fd).collect(),
                http: self.http.iter().map(AsRawFd::as_raw_fd).collect(),
                https: self.https.iter().map(AsRawFd::as_raw_fd).collect(),
                admin: Some((self.admin.raw_fd(), self.admin.owns_file())),
            },
            relays,
            self.gate.clone(),
            self.tracker.clone(),
        ));
        self.upgrader = Some(upgrader.clone());
        upgrader
    }

    /// Enables reloading (`chatctl reload`) from `reloader`; returns the handle SIGHUP uses too.
    pub fn enable_reload(
        &mut self,
        reloader: Reloader,
        log: Option<LogHandle>,
    ) -> Arc<Reconfigure> {
        let reconfigure = Arc::new(Reconfigure {
            reloader,
            hub: self.hub.clone(),
            log,
            admin_socket: self.admin.file(),
            tls: self.tls.as_ref().map(|t| t.certificate.clone()),
            serial: std::sync::Mutex::new(()),
        });
        self.reconfigure = Some(reconfigure.clone());
        reconfigure
    }

    /// Changes the admin socket's connection limits (tests shorten its timeouts).
    pub fn set_admin_limits(&mut self, limits: AdminLimits) {
        self.admin_limits = limits;
    }

    /// Changes how often idle WebSocket clients are pinged (30 s; one silent for two of these is
    /// closed). Tests shorten it.
    pub fn set_websocket_ping(&mut self, every: std::time::Duration) {
        self.ws_ping = every;
    }

    /// Where the admin socket is.
    pub fn admin_path(&self) -> &std::path::Path {
        self.admin.path()
    }

    /// The addresses actually bound (with the real port when the config said port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The TLS listeners' addresses (empty while `tls_listen` is).
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.tls
            .iter()
            .flat_map(|t| &t.listeners)
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The HTTP listeners' addresses (with the real port when the config said port 0).
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.http
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The HTTPS listeners' addresses (empty while `https_listen` is).
    pub fn https_addrs(&self) -> Vec<SocketAddr> {
        self.https
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The room, for the admin socket, the notifier and tests.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}
