//! The assembled daemon: bind, serve, stop. Everything a test or the binary needs goes through here.
//!
//! [`App::bind`] binds every listener before anything is served, so a caller (a test on port 0, the
//! systemd notifier) can read [`App::local_addrs`] and know the daemon is reachable. [`App::run`] takes
//! its shutdown trigger as a future, so tests and `main` choose what stops it, and the stop is bounded:
//! after `shutdown_grace` the remaining sessions are dropped. The HTTP listeners stop last, so
//! `/healthz` says 503 throughout the stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use nix::sys::socket::{setsockopt, sockopt};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::admin::{self, AdminCtx, AdminError, AdminLimits, AdminSocket};
use crate::client::Stream;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::http::{self, Http};
use crate::hub::Hub;
use crate::hub::handover::Resumed;
use crate::logging::LogHandle;
use crate::preflight::{self, PreflightError};
use crate::reload::Reloader;
use crate::server::{self, Transport};
use crate::systemd::{self, Inherited};
use crate::tls;
pub use crate::upgrade::Upgraded;
use crate::upgrade::takeover::Handed;
use crate::upgrade::{AcceptGate, Invocation, Takeover, Upgrader};
use crate::ws;

mod reconfigure;
pub use reconfigure::Reconfigure;

/// How long a stop waits for sessions to relay input their clients sent before it.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_millis(500);
/// Listen backlog: deep enough that a join storm waits in the kernel rather than being refused.
const BACKLOG: u32 = 4096;
/// Longest the sessions taken over in an upgrade wait for the cluster link to come up.
const CLUSTER_TAKEOVER: std::time::Duration = std::time::Duration::from_secs(3);
/// Longest a stopping node waits for its cluster link to publish the leaves and release the
/// nicknames of its members.
const CLUSTER_FINISH: std::time::Duration = std::time::Duration::from_secs(2);

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
    /// Binds every `listen`, `tls_listen`, `http_listen` and `https_listen` address of `config`,
    /// then the admin socket.
    pub fn bind(config: Config) -> Result<App, StartError> {
        Self::bind_with(config, Inherited::default())
    }

    /// Like [`bind`](Self::bind), but uses sockets systemd passed instead of binding where it did:
    /// inherited chat listeners replace `listen`, an inherited admin socket replaces `admin_socket`.
    /// First runs the [`preflight`] checks `--check-config` runs, for what is not inherited, and
    /// serves the TLS certificate they loaded. TLS and HTTP(S) listeners are always bound here.
    pub fn bind_with(config: Config, inherited: Inherited) -> Result<App, StartError> {
        let checked = preflight::check(
            &config,
            preflight::Inherited {
                chat: !inherited.chat.is_empty(),
                admin: inherited.admin.is_some(),
            },
        )?;
        let listeners = if inherited.chat.is_empty() {
            config
                .listen
                .iter()
                .map(|&addr| listen(addr).map_err(|source| BindError { addr, source }))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            let adopt = |l: std::net::TcpListener| {
                let addr = l
                    .local_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                TcpListener::from_std(l).map_err(|source| BindError { addr, source })
            };
            inherited
                .chat
                .into_iter()
                .map(adopt)
                .collect::<Result<Vec<_>, _>>()?
        };
        let tls = match checked.tls {
            Some(identity) => Some(bind_tls(&config.tls_listen, &identity)?),
            None => None,
        };
        let http = bind_http("http_listen", &config.http_listen)?;
        let https = bind_http("https_listen", &config.https_listen)?;
        let admin = match inherited.admin {
            Some(l) => {
                let path = admin::path::resolve(config.admin_socket.as_deref());
                AdminSocket::from_listener(
                    tokio::net::UnixListener::from_std(l).map_err(|e| AdminError::Io(path, e))?,
                )
            }
            None => bind_admin(&config)?,
        };
        let mut app = Self::with_listeners(config, listeners, http, admin);
        app.tls = tls;
        app.https = https;
        Ok(app)
    }

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

    /// Takes over what a predecessor handed over (an upgrade): its listeners, its admin socket,
    /// and its room with every connection, none of them read or written yet. `config` is this
    /// process's own; its `listen`, `tls_listen`, `http_listen`, `https_listen` and
    /// `admin_socket` give way to the sockets handed over. A predecessor that had none of a
    /// kind (no TLS, no HTTPS, or a release from before HTTP) hands none over: then this process
    /// binds that list itself, as at a start. The certificate is this configuration's.
    pub fn adopt(config: Config, takeover: &mut Takeover) -> Result<App, String> {
        let adopt = |listeners: Vec<std::net::TcpListener>| {
            listeners
                .into_iter()
                .map(|l| {
                    l.set_nonblocking(true)?;
                    TcpListener::from_std(l)
                })
                .collect::<std::io::Result<Vec<_>>>()
        };
        let listeners = adopt(std::mem::take(&mut takeover.listeners))
            .map_err(|e| format!("chat listener: {e}"))?;
        let tls_listeners = adopt(std::mem::take(&mut takeover.tls_listeners))
            .map_err(|e| format!("TLS listener: {e}"))?;
        let https = adopt(std::mem::take(&mut takeover.https_listeners))
            .map_err(|e| format!("HTTPS listener: {e}"))?;
        let tls = adopt_tls(
            &config,
            takeover.tls.take(),
            tls_listeners,
            !https.is_empty(),
        )?;
        let bind =
            |key, addrs| bind_http(key, addrs).map_err(|e| format!("{:#}", anyhow::Error::new(e)));
        let http = match takeover.http_listeners.take() {
            Some(handed) => adopt(handed).map_err(|e| format!("HTTP listener: {e}"))?,
            None => bind("http_listen", &config.http_listen)?,
        };
        let https = match https {
            handed if !handed.is_empty() => handed,
            _ => bind("https_listen", &config.https_listen)?,
        };
        let admin = match takeover.admin.take() {
            Some(l) => {
                l.set_nonblocking(true)
                    .map_err(|e| format!("admin socket: {e}"))?;
                let l = tokio::net::UnixListener::from_std(l)
                    .map_err(|e| format!("admin socket: {e}"))?;
                AdminSocket::adopt(l, takeover.snapshot.admin_owned).map_err(|e| e.to_string())?
            }
            None => bind_admin(&config).map_err(|e| e.to_string())?,
        };
        let mut streams = Vec::with_capacity(takeover.streams.len());
        let mut moved = Vec::new();
        let handed = std::mem::take(&mut takeover.streams);
        for (handed, c) in handed.into_iter().zip(&takeover.snapshot.room.clients) {
            let stream = match handed {
                Handed::Tcp(s) => Stream::Tcp(tcp(s)?),
                Handed::WebSocket {
                    session,
                    relay,
                    tcp: ws_tcp,
                } => {
                    moved.push(ws::Moved {
                        id: c.id,
                        peer: c.peer,
                        tcp: tcp(ws_tcp)?,
                        pipe: unix(relay)?,
                        state: c.websocket.clone().unwrap_or_default(),
                    });
                    Stream::Pipe(unix(session)?)
                }
            };
            streams.push(stream);
        }
        let mut hub = Hub::new(config);
        let resumed = hub.restore(takeover.snapshot.room.clone(), streams);
        let mut app = Self::assemble(hub, listeners, tls, http, admin, resumed);
        app.cluster_resume = takeover.snapshot.cluster.clone();
        app.https = https;
        app.moved = moved;
        Ok(app)
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

    /// Serves until `shutdown` resolves, then stops gracefully: no new connections, every client is
    /// told `*** server shutting down`, queues are flushed for at most `shutdown_grace`.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        // Rooms shared with a cluster: the link comes up in the background (members are told if
        // it is lost); a node with its broker down still serves, refusing lines it cannot order.
        let taking_over = self.cluster_resume.is_some();
        let cluster = self.hub.config().cluster.clone().map(|c| {
            let cluster = Cluster::new(c, self.cluster_resume.take());
            cluster.start(&self.hub);
            if let Some(upgrader) = &self.upgrader {
                upgrader.set_cluster(cluster.clone());
            }
            cluster
        });
        let tls_addrs = self.tls_addrs();
        let ctx = Arc::new(AdminCtx {
            hub: self.hub.clone(),
            listen: self.local_addrs(),
            tls_listen: tls_addrs.clone(),
            reload: self.reconfigure.clone().map(|r| {
                let reload: admin::ReloadFn = Arc::new(move || r.reload());
                reload
            }),
            upgrade: self.upgrader.clone(),
            cluster: cluster.clone(),
        });
        if let Some(cluster) = cluster.as_ref().filter(|_| taking_over) {
            // Members taken over from a predecessor in a cluster carry on once the link is up
            // (a few milliseconds): their next line would otherwise be refused as undeliverable.
            cluster.wait_up(CLUSTER_TAKEOVER).await;
        }
        let ws = Arc::new(ws::Front::new(
            self.hub.clone(),
            self.tracker.clone(),
            self.ws_relays.clone(),
            self.ws_registry.clone(),
            self.stop.clone(),
            self.gate.clone(),
            self.ws_ping,
        ));
        // Connections taken over from a predecessor carry on first: the WebSocket relays before
        // the sessions, so that each relay hears of its session's end.
        for moved in std::mem::take(&mut self.moved) {
            ws.resume(moved);
        }
        for r in std::mem::take(&mut self.resumed) {
            self.tracker.spawn(ws::resume_session(
                self.hub.clone(),
                r,
                self.ws_registry.clone(),
            ));
        }
        let admin_path = self.admin.path().display().to_string();
        let addrs = self.local_addrs();
        let http_addrs = self.http_addrs();
        let https_addrs = self.https_addrs();
        let admin = tokio::spawn(admin::serve(
            self.admin,
            ctx,
            self.admin_limits,
            self.gate.clone(),
            self.tracker.clone(),
            self.stop.clone(),
        ));
        for listener in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                info!(addr = %addr, event = "listening", "listening for chat connections");
            }
            self.tracker.spawn(server::accept_loop(
                listener,
                Transport::Plain,
                self.gate.clone(),
                self.hub.clone(),
                self.tracker.clone(),
                self.stop.clone(),
            ));
        }
        // HTTPS serves the certificate TLS chat serves, asked at each handshake.
        let https_acceptor = self
            .tls
            .as_ref()
            .map(|t| t.certificate.acceptor(&[b"http/1.1"]));
        for (listener, front) in self
            .tls
            .into_iter()
            .flat_map(|t| t.listeners.into_iter().map(move |l| (l, t.front.clone())))
        {
            if let Ok(addr) = listener.local_addr() {
                info!(addr = %addr, event = "listening_tls", "listening for TLS chat connections");
            }
            self.tracker.spawn(server::accept_loop(
                listener,
                Transport::Tls(front),
                self.gate.clone(),
                self.hub.clone(),
                self.tracker.clone(),
                self.stop.clone(),
            ));
        }
        let site = http::Site {
            metrics: crate::metrics::registry(self.hub.clone()),
            hub: self.hub.clone(),
            chat: addrs.clone(),
            stopping: self.stop.clone(),
            ws,
        };
        let mut web: Vec<_> = std::mem::take(&mut self.http)
            .into_iter()
            .map(|l| (l, http::Listening::Http))
            .collect();
        if let Some(acceptor) = https_acceptor {
            let https = std::mem::take(&mut self.https).into_iter();
            web.extend(https.map(|l| (l, http::Listening::Https(acceptor.clone()))));
        }
        let http = Http::start(web, site, self.gate.clone());
        let listen = addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        systemd::notify_ready(&self.hub, &listen);
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            tokio::spawn(systemd::status_loop(
                self.hub.clone(),
                listen.clone(),
                self.stop.clone(),
            ));
        }
        if let Some(interval) = systemd::watchdog_interval() {
            tokio::spawn(systemd::watchdog_loop(
                self.hub.clone(),
                interval,
                self.stop.clone(),
            ));
        }
        let joined = |addrs: &[SocketAddr]| {
            addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (tls_listen, http_listen) = (joined(&tls_addrs), joined(&http_addrs));
        let https_listen = joined(&https_addrs);
        info!(
            admin_socket = %admin_path, listen = %listen, tls_listen = %tls_listen,
            http_listen = %http_listen, https_listen = %https_listen, event = "ready", "ready"
        );
        shutdown.await;
        systemd::notify_stopping();
        let (connections, _, _) = self.hub.counts();
        info!(connections, event = "stopping", "shutting down");
        self.stop.cancel();
        // The admin task owns the socket file; once it returns the file is gone.
        let _ = admin.await;
        // Phase one: lines clients wrote before the stop (still in our sockets) reach the room
        // before the shutdown notice. Bounded: a session that cannot finish does not hold the stop.
        self.hub.begin_drain();
        let _ = tokio::time::timeout(DRAIN_LIMIT, self.hub.drained()).await;
        self.hub.shutdown();
        if let Some(cluster) = &cluster {
            // The other nodes hear who left, and the nicknames are free at once.
            cluster.finish(CLUSTER_FINISH).await;
        }
        self.tracker.close();
        let grace = self.hub.config().shutdown_grace;
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                remaining = self.tracker.len(),
                grace_secs = grace.as_secs(),
                "grace period over; dropping connections still flushing"
            );
        }
        // Last, so that /healthz said 503 all through the stop.
        http.stop().await;
        info!(event = "stopped", "stopped");
    }
}

/// Binds one listening socket. IPv6 sockets are IPv6-only so `0.0.0.0:P` and `[::]:P` can both be listed.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    if addr.is_ipv6() {
        setsockopt(&socket, sockopt::Ipv6V6Only, &true)?;
    }
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Binds every `tls_listen` address, serving `identity` (to HTTPS too).
fn bind_tls(addrs: &[SocketAddr], identity: &tls::Identity) -> Result<Tls, BindError> {
    let listeners = addrs
        .iter()
        .map(|&addr| listen(addr).map_err(|source| BindError { addr, source }))
        .collect::<Result<Vec<_>, _>>()?;
    let certificate = tls::Certificate::new(identity);
    Ok(Tls {
        front: Arc::new(tls::Front::new(&certificate)),
        certificate,
        listeners,
    })
}

/// TLS for a process taking over: the TLS chat listeners handed over if there are any, else this
/// configuration's `tls_listen`; the certificate is this configuration's either way (`identity`,
/// loaded before the hello). `https`: HTTPS listeners were handed over, which need it too.
fn adopt_tls(
    config: &Config,
    identity: Option<tls::Identity>,
    handed: Vec<TcpListener>,
    https: bool,
) -> Result<Option<Tls>, String> {
    if handed.is_empty() && !https && config.tls_listen.is_empty() && config.https_listen.is_empty()
    {
        return Ok(None);
    }
    // The predecessor checks the hello for this; validation guarantees it for the lists.
    let Some(identity) = identity else {
        return Err(
            "the old process listens for TLS or HTTPS clients, but this configuration names no \
             tls_cert_file and tls_key_file"
                .into(),
        );
    };
    if handed.is_empty() {
        return bind_tls(&config.tls_listen, &identity)
            .map(Some)
            .map_err(|e| format!("{e}: {}", e.source));
    }
    let certificate = tls::Certificate::new(&identity);
    Ok(Some(Tls {
        front: Arc::new(tls::Front::new(&certificate)),
        certificate,
        listeners: handed,
    }))
}

/// Binds every address of `addrs`, the value of `key` (`http_listen` or `https_listen`).
fn bind_http(key: &'static str, addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, StartError> {
    addrs
        .iter()
        .map(|&addr| listen(addr).map_err(|source| StartError::Http { key, addr, source }))
        .collect()
}

/// A client's TCP socket handed over, ready for tokio.
fn tcp(s: std::net::TcpStream) -> Result<tokio::net::TcpStream, String> {
    s.set_nonblocking(true)
        .and_then(|()| tokio::net::TcpStream::from_std(s))
        .map_err(|e| format!("client socket: {e}"))
}

/// A WebSocket client's socket-pair end handed over, ready for tokio.
fn unix(s: std::os::unix::net::UnixStream) -> Result<tokio::net::UnixStream, String> {
    s.set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(s))
        .map_err(|e| format!("WebSocket socket pair: {e}"))
}

/// Binds the admin socket where the configuration (or the default resolution) says.
fn bind_admin(config: &Config) -> Result<AdminSocket, AdminError> {
    let path = admin::path::resolve(config.admin_socket.as_deref());
    AdminSocket::bind(
        &path,
        config.admin_socket_mode,
        config.admin_group.as_deref(),
    )
}
