//! The HTTP listeners (`http_listen`, and `https_listen` over TLS): `/`, the browser client
//! ([`page`]), `/ws`, the WebSocket it chats over (the `ws` front end), `/healthz` for load
//! balancers and `/metrics` for Prometheus ([`routes`]). HTTPS serves exactly the same, after a
//! TLS handshake with the certificate the TLS chat listeners use (`tls::Certificate`, which a
//! reload renews for both); the handshake must finish within `handshake_timeout_secs` (or
//! [`HEADER_READ_TIMEOUT`] while that is off), and a failed one is counted in
//! `groupchatd_tls_handshake_failures_total` like a TLS chat client's. Handlers learn which
//! scheme a request came by from its [`Scheme`] extension.
//!
//! HTTP/1.1 only, served by hyper through our own accept loop, like the chat ports' (see
//! `server.rs`): it owns the limits, pauses at the upgrade's accept gate (newcomers wait in the
//! backlog while an upgrade hands the sockets over) and stops last. Limits: at most
//! [`MAX_CONNECTIONS`] connections at once (a slot is taken before `accept`, so more wait in the
//! kernel's backlog), a request's head must arrive within [`HEADER_READ_TIMEOUT`] (which also
//! closes idle keep-alive connections), a larger head than [`MAX_BUF`] gets 431, and a peer that
//! stops acknowledging what it is sent is dropped by the kernel after [`USER_TIMEOUT`]. Every
//! answer is small and whole, and no request body is ever read.
//!
//! A connection upgraded to a WebSocket leaves this listener's care: its HTTP connection task
//! ends, giving back its slot, and the hub's `max_clients` counts it from then on (see `ws`).
//!
//! Stopping: once the daemon is stopping `/healthz` answers 503, and HTTP keeps being served while
//! the chat clients are told and disconnected, so a load balancer sees the drain; then the
//! listeners close and open connections finish the request they are in (bounded by
//! [`CLOSE_LIMIT`]). Each request is logged at debug level, never above.

mod page;
mod routes;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use nix::sys::socket::{setsockopt, sockopt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use tracing::{debug, info};

pub(crate) use routes::Site;

pub(crate) use crate::config::Scheme;
use crate::hub::Hub;
use crate::server::{AcceptBackoff, Accepted};
use crate::upgrade::AcceptGate;

/// Most HTTP connections served at once, over every HTTP listener.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// How long a request's head (request line and headers) may take to arrive, counted from when
/// the connection is ready for it: idle keep-alive connections close after this too.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes buffered from one connection: the largest request head accepted. Browsers send
/// every cookie set for the host, which on a developer's `localhost` can be a few KiB.
pub(crate) const MAX_BUF: usize = 64 * 1024;
/// `TCP_USER_TIMEOUT`: how long sent data may stay unacknowledged (or the peer's window closed)
/// before the kernel drops the connection, so a client that stops reading cannot hold a slot.
pub(crate) const USER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stop waits for open connections to finish their request.
pub(crate) const CLOSE_LIMIT: Duration = Duration::from_secs(2);

/// What an HTTP listener speaks: plain HTTP, or HTTP inside TLS.
#[derive(Clone)]
pub(crate) enum Listening {
    /// `http_listen`.
    Http,
    /// `https_listen`: each connection's TLS handshake first.
    Https(TlsAcceptor),
}

/// The HTTP and HTTPS listeners being served.
pub(crate) struct Http {
    accept_loops: Vec<JoinHandle<()>>,
    connections: TaskTracker,
    stop: CancellationToken,
}

impl Http {
    /// Serves `site` on `listeners`, each as it says, until [`stop`](Self::stop).
    pub(crate) fn start(
        listeners: Vec<(TcpListener, Listening)>,
        site: Site,
        gate: AcceptGate,
    ) -> Http {
        let hub = site.hub.clone();
        let router = routes::router(Arc::new(site));
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let connections = TaskTracker::new();
        let stop = CancellationToken::new();
        let accept_loops = listeners
            .into_iter()
            .map(|(listener, listening)| {
                if let Ok(addr) = listener.local_addr() {
                    match listening {
                        Listening::Http => info!(
                            addr = %addr, event = "listening", "listening for HTTP connections"
                        ),
                        Listening::Https(_) => info!(
                            addr = %addr, event = "listening_https",
                            "listening for HTTPS connections"
                        ),
                    }
                }
                let accepting = Accepting {
                    router: router.clone(),
                    listening,
                    hub: hub.clone(),
                    slots: slots.clone(),
                    gate: gate.clone(),
                    connections: connections.clone(),
                    stop: stop.clone(),
                };
                tokio::spawn(accept_loop(listener, accepting))
            })
            .collect();
        Http {
            accept_loops,
            connections,
            stop,
        }
    }

    /// Closes the listeners, then lets open connections finish their request, for at most
    /// [`CLOSE_LIMIT`].
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        for accept_loop in self.accept_loops {
            let _ = accept_loop.await;
        }
        self.connections.close();
        if tokio::time::timeout(CLOSE_LIMIT, self.connections.wait())
            .await
            .is_err()
        {
            debug!(
                remaining = self.connections.len(),
                "HTTP connections still open at the stop; dropping them"
            );
        }
    }
}

/// What one listener's accept loop serves with and answers to.
struct Accepting {
    router: axum::Router,
    listening: Listening,
    /// For the settings in force (the handshake timeout) and the failed-handshake count.
    hub: Arc<Hub>,
    /// Shared by every HTTP listener: [`MAX_CONNECTIONS`].
    slots: Arc<Semaphore>,
    gate: AcceptGate,
    connections: TaskTracker,
    stop: CancellationToken,
}

/// Accepts HTTP connections on `listener` until `stop` is cancelled.
async fn accept_loop(listener: TcpListener, a: Accepting) {
    let Accepting {
        router,
        listening,
        hub,
        slots,
        gate,
        connections,
        stop,
    } = a;
    let mut backoff = AcceptBackoff::default();
    loop {
        // Closed while an upgrade hands the listeners over: newcomers wait in the backlog. (Not
        // counted as parked: the upgrade waits for the chat accept loops only.)
        if !gate.is_open() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = gate.opened() => {}
            }
        }
        // A slot before accepting: at the limit, newcomers wait in the kernel's backlog.
        let slot = tokio::select! {
            () = stop.cancelled() => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return, // never closed
            },
        };
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            () = gate.closed() => continue,
            accepted = listener.accept() => accepted,
        };
        match backoff.accepted(accepted, "http") {
            Accepted::Connection((stream, peer)) => {
                let connection = Connection {
                    peer,
                    router: router.clone(),
                    _slot: slot,
                    stop: stop.clone(),
                };
                connections.spawn(serve(stream, listening.clone(), hub.clone(), connection));
            }
            Accepted::Skip => {}
            Accepted::Retry(wait) => {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// One accepted connection, and what serving it needs.
struct Connection {
    peer: SocketAddr,
    router: axum::Router,
    /// Given back when the connection ends (or is upgraded to a WebSocket).
    _slot: OwnedSemaphorePermit,
    stop: CancellationToken,
}

/// Serves one connection: the TLS handshake first on an HTTPS listener, then HTTP until the peer
/// closes it, a limit ends it, or the stop (which lets the request in progress finish).
async fn serve(stream: TcpStream, listening: Listening, hub: Arc<Hub>, c: Connection) {
    let _ = stream.set_nodelay(true);
    let user_timeout = USER_TIMEOUT.as_millis() as u32;
    let _ = setsockopt(&stream, sockopt::TcpUserTimeout, &user_timeout);
    let acceptor = match listening {
        Listening::Http => return serve_http(stream, Scheme::Http, c).await,
        Listening::Https(acceptor) => acceptor,
    };
    let limit = hub
        .config()
        .handshake_timeout
        .unwrap_or(HEADER_READ_TIMEOUT);
    let handshake = tokio::select! {
        () = c.stop.cancelled() => return,
        handshake = tokio::time::timeout(limit, acceptor.accept(stream)) => handshake,
    };
    let why = match handshake {
        Ok(Ok(tls)) => return serve_http(tls, Scheme::Https, c).await,
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("not done within {} s", limit.as_secs()),
    };
    hub.counters
        .tls_handshake_failures
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    debug!(
        peer = %c.peer, error = %why, transport = "https", event = "tls_handshake_failed",
        "TLS handshake failed"
    );
}

/// Serves HTTP/1.1 on `io` (the TCP connection, or the TLS session over it).
async fn serve_http<I>(io: I, scheme: Scheme, c: Connection)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Connection {
        peer, router, stop, ..
    } = c;
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        // Where handlers (the WebSocket one) find the peer, as axum's own server puts it, and
        // whether it came over TLS.
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(scheme);
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        // A Router is always ready, so it is called without `poll_ready`.
        let answer = router.clone().call(request);
        async move {
            let response = answer.await?;
            debug!(
                peer = %peer, method = %method, path = %path, status = response.status().as_u16(),
                event = "http_request", "HTTP request"
            );
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_BUF)
        .max_buf_size(MAX_BUF);
    // With upgrades: a WebSocket request's connection is handed to its handler after the 101.
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        debug!(peer = %peer, error = %e, "HTTP connection ended with an error");
    }
}
