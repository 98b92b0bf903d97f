//! WebSocket clients (`GET /ws` on an HTTP or HTTPS listener): a front end that relays each
//! browser's chat over a socket pair to an ordinary session, as `tls` does for TLS clients, so a
//! WebSocket client is a chat client like any other: same greeting, nickname rules, sanitising,
//! flood control, rooms, queue limit and slow-consumer rule. One chat line travels per text
//! message, each way ([`relay`]).
//!
//! Before the upgrade, the request is checked: that it is a WebSocket request at all (426
//! otherwise), its `Origin` ([`origin_allowed`]: another site's page must not chat in its
//! visitors' names; 403), the daemon not stopping or handing over (503), and the network's
//! `connect_rate` (429, with no WebSocket handshake: that is the flood the limit is for). The
//! handshake is answered here and the upgraded connection taken from hyper whole (its TCP
//! connection over plain HTTP, with any bytes hyper read past the request), so that a relay can
//! be moved by an upgrade ([`handover`]). After it, the client is admitted at the door like a TCP
//! client, with the real peer address (`max_clients`, the per-network limit); a refused one is
//! told why in a text message and closed with 1013 ("try again later"), a bounded number at a
//! time.
//!
//! Across `chatctl upgrade`, a WebSocket over plain HTTP moves to the new process with its
//! session; one over HTTPS (`wss://`) cannot (rustls cannot hand a TLS session to another
//! process), so it is told `*** server upgrading; please reconnect` and closed, like a TLS client.
//!
//! The HTTP connection gives back its HTTP slot once upgraded: from then on it is one of the
//! hub's clients and counts against `max_clients`. Its socket keeps the HTTP listener's
//! `TCP_USER_TIMEOUT`; idle peers that vanished are found by the relay's pings instead of TCP
//! keepalive.

mod frames;
pub(crate) mod handover;
mod relay;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

pub(crate) use handover::{Relays, WsState};

use crate::client::{ClientId, LeaveReason, Stream, Transport};
use crate::config::{Scheme, WebOrigin};
use crate::hub::handover::Resumed;
use crate::hub::{Hub, Refusal};
use crate::protocol::format::notice;
use crate::session::{self, Exit};
use crate::upgrade::{AcceptGate, RECONNECT};
use relay::Io;

/// How often an idle connection is pinged; one that has sent nothing (not even a pong) for two
/// of these is taken for gone.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(30);
/// Refused WebSocket clients being told why at once; beyond this they are closed without a word.
const MAX_TOLD_REFUSALS: usize = 64;
/// Longest a refused client's reason and close may take.
const REFUSAL_LIMIT: Duration = Duration::from_secs(5);

/// The largest message (and frame) a WebSocket client may send when lines may be `max_line_bytes`
/// long. Messages up to this size reach the session whole, whose framer tells the sender
/// `*** Line too long (limit N bytes); it was not sent.` for one over `max_line_bytes`, exactly as
/// for a TCP client, and the connection goes on; a larger one is not read at all (the memory a
/// connection can make the daemon hold is this much), and the client is told so and closed with
/// 1009. Four times the line limit: as much as the smallest allowed output queue, and room for a
/// paste well past the limit to get the ordinary answer.
pub(crate) fn message_limit(max_line_bytes: usize) -> usize {
    max_line_bytes.saturating_mul(4)
}

/// Whether a WebSocket request may go on, by its `Origin` header: any request without one (it is
/// not from a browser, and `Origin` exists to protect browsers); else, while `allowed` is empty,
/// a request from the page's own origin (the `Origin` names the `Host` the request was sent to);
/// else one from an origin `allowed` lists. An `Origin` that is not a plain http(s) origin
/// (`null`, from a sandboxed or local page) is refused.
pub(crate) fn origin_allowed(
    origin: Option<&HeaderValue>,
    host: Option<&HeaderValue>,
    allowed: &[WebOrigin],
) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let Some(origin) = origin
        .to_str()
        .ok()
        .and_then(|o| o.parse::<WebOrigin>().ok())
    else {
        return false;
    };
    if allowed.is_empty() {
        host.and_then(|h| h.to_str().ok())
            .is_some_and(|h| origin.is_host(h))
    } else {
        allowed.contains(&origin)
    }
}

/// The WebSocket front end, shared by every HTTP listener of the process.
pub(crate) struct Front {
    hub: Arc<Hub>,
    /// Where sessions and relays run: the daemon's own tracker, which a stop waits on.
    tracker: TaskTracker,
    /// Counts the relays of clients that cannot move (`wss://`), so that an upgrade can wait
    /// until they have delivered its notice.
    relays: TaskTracker,
    /// Every relay, for its session's end and an upgrade's freeze.
    registry: Arc<Relays>,
    stop: CancellationToken,
    gate: AcceptGate,
    ping_every: Duration,
    /// Refused clients being told why.
    refusals: Arc<Semaphore>,
}

/// A WebSocket taken over from a predecessor: its TCP connection, the relay's end of its socket
/// pair (the session's end is the client's stream in the hub), and the relay's state.
pub(crate) struct Moved {
    pub(crate) id: ClientId,
    pub(crate) peer: SocketAddr,
    pub(crate) tcp: TcpStream,
    pub(crate) pipe: UnixStream,
    pub(crate) state: WsState,
}

/// The parts of a WebSocket request that decide its answer.
struct Asked {
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

/// Whether `request` is a WebSocket opening handshake (RFC 6455 §4.2.1, over HTTP/1.1), and if
/// so its key and its connection, to be had once answered; else what is missing.
fn asked(request: &mut Request) -> Result<Asked, &'static str> {
    let headers = request.headers();
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if request.method() != Method::GET {
        return Err("not a GET");
    }
    if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return Err("no Connection: upgrade and Upgrade: websocket");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err("Sec-WebSocket-Version is not 13");
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .cloned()
        .ok_or("no Sec-WebSocket-Key")?;
    let on_upgrade = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or("the connection cannot be upgraded")?;
    Ok(Asked { key, on_upgrade })
}

impl Front {
    /// A front end whose sessions and relays run on `tracker`; the relays of clients that cannot
    /// move are counted in `relays` too, and every relay is in `registry`. Idle clients are
    /// pinged every `ping_every`.
    pub(crate) fn new(
        hub: Arc<Hub>,
        tracker: TaskTracker,
        relays: TaskTracker,
        registry: Arc<Relays>,
        stop: CancellationToken,
        gate: AcceptGate,
        ping_every: Duration,
    ) -> Front {
        Front {
            hub,
            tracker,
            relays,
            registry,
            stop,
            gate,
            ping_every,
            refusals: Arc::new(Semaphore::new(MAX_TOLD_REFUSALS)),
        }
    }

    /// Answers `GET /ws` (which came from `peer` by `scheme`): refuses the request, or upgrades
    /// it and admits the client.
    pub(crate) fn open(
        self: &Arc<Self>,
        mut request: Request,
        peer: SocketAddr,
        scheme: Scheme,
    ) -> Response {
        let asked = match asked(&mut request) {
            Ok(asked) => asked,
            Err(why) => {
                let mut answer = plain(
                    StatusCode::UPGRADE_REQUIRED,
                    &format!(
                        "This is groupchatd's WebSocket endpoint ({why}): one chat line per text \
                         message each way. Open / for the chat page.\n"
                    ),
                );
                answer
                    .headers_mut()
                    .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                return answer;
            }
        };
        let headers = request.headers();
        let cfg = self.hub.config();
        let origin = headers.get(header::ORIGIN);
        if !origin_allowed(origin, headers.get(header::HOST), &cfg.allowed_origins) {
            debug!(
                peer = %peer, origin = ?origin, transport = "websocket", event = "refused",
                reason = "origin", "WebSocket refused: origin not allowed"
            );
            return plain(StatusCode::FORBIDDEN, "origin not allowed\n");
        }
        if self.stop.is_cancelled() || !self.gate.is_open() {
            // Stopping, or an upgrade is handing the service over: the page retries shortly.
            let mut answer = plain(StatusCode::SERVICE_UNAVAILABLE, "not accepting now\n");
            answer
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return answer;
        }
        if let Err(why) = self.hub.check_connect_rate(peer.ip()) {
            debug!(
                peer = %peer, reason = %why, transport = "websocket", event = "refused",
                "connection refused"
            );
            let mut answer = plain(StatusCode::TOO_MANY_REQUESTS, &format!("{why}\n"));
            if let Refusal::ConnectRate { retry_secs } = why {
                answer
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_secs));
            }
            return answer;
        }
        let limit = message_limit(cfg.max_line_bytes);
        let transport = match scheme {
            Scheme::Http => Transport::WebSocket,
            Scheme::Https => Transport::SecureWebSocket,
        };
        let front = self.clone();
        let on_upgrade = asked.on_upgrade;
        self.tracker.spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    debug!(peer = %peer, error = %e, "WebSocket upgrade failed");
                    return;
                }
            };
            // Over plain HTTP the TCP connection itself, and what hyper read past the request.
            let (io, leftover) = match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => (Io::Tcp(parts.io.into_inner()), parts.read_buf),
                Err(upgraded) => (Io::Upgraded(TokioIo::new(upgraded)), bytes::Bytes::new()),
            };
            front.admit(io, &leftover, peer, limit, transport);
        });
        let accept = tungstenite::handshake::derive_accept_key(asked.key.as_bytes());
        let mut answer = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let h = answer.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        answer
    }

    /// Takes an upgraded connection: admits it (or tells it why not), starts its session and
    /// its relay.
    fn admit(&self, io: Io, leftover: &[u8], peer: SocketAddr, limit: usize, transport: Transport) {
        let (ours, theirs) = match UnixStream::pair() {
            Ok(pair) => pair,
            Err(e) => {
                warn!(peer = %peer, error = %e, "cannot relay a WebSocket client: no socket pair");
                return;
            }
        };
        let client = match self.hub.register_via(peer, Stream::Pipe(ours), transport) {
            Ok(client) => client,
            Err((why, _)) => return self.refuse(io, peer, why),
        };
        let id = client.id;
        debug!(client = id, peer = %peer, transport = transport.label(), event = "connect", "connected");
        let registered = self.registry.register(id);
        let hub = self.hub.clone();
        let registry = self.registry.clone();
        self.tracker.spawn(async move {
            if session::run(hub, client).await == Exit::Left {
                registry.session_left(id);
            }
        });
        // An upgrade that closed the gate after `open` looked may already have told the relayed
        // clients to reconnect or frozen the movable ones: this one would then be left behind
        // in a process that is about to exit, so it is told to reconnect.
        if !self.gate.is_open() {
            self.hub
                .close(id, LeaveReason::Upgrading, Some(notice(RECONNECT)));
        }
        let state = WsState {
            inbound: leftover.to_vec(),
            ..WsState::default()
        };
        self.relay(id, peer, io, theirs, state, limit, registered);
    }

    /// Starts the relay of a WebSocket taken over from a predecessor (its session is the hub's
    /// already). Called before the resumed sessions start, so that the relay hears of its
    /// session's end.
    pub(crate) fn resume(&self, moved: Moved) {
        let registered = self.registry.register(moved.id);
        let limit = message_limit(self.hub.config().max_line_bytes);
        let io = Io::Tcp(moved.tcp);
        self.relay(
            moved.id,
            moved.peer,
            io,
            moved.pipe,
            moved.state,
            limit,
            registered,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn relay(
        &self,
        id: ClientId,
        peer: SocketAddr,
        io: Io,
        pipe: UnixStream,
        state: WsState,
        limit: usize,
        registered: handover::Registered,
    ) {
        // Only a relay that cannot move is waited for by an upgrade from the start; one that
        // can takes a token only if it finds it cannot when asked.
        let token = matches!(io, Io::Upgraded(_)).then(|| self.relays.token());
        let admitted = relay::Admitted {
            id,
            peer,
            io,
            pipe,
            state,
            message_limit: limit,
            ping_every: self.ping_every,
            registered,
        };
        self.tracker.spawn(relay::serve(
            admitted,
            self.hub.clone(),
            token,
            self.relays.clone(),
        ));
    }

    /// Tells a refused client why in a text message and closes it, if a slot is free; else
    /// drops it at once.
    fn refuse(&self, io: Io, peer: SocketAddr, why: Refusal) {
        debug!(
            peer = %peer, reason = %why, transport = "websocket", event = "refused",
            "connection refused"
        );
        let Ok(permit) = self.refusals.clone().try_acquire_owned() else {
            return;
        };
        self.tracker.spawn(relay::refuse(
            io,
            format!("*** {why}"),
            Instant::now() + REFUSAL_LIMIT,
            permit,
        ));
    }
}

/// Runs a resumed session (after a roll-back, or taken over from a predecessor), telling its
/// relay, if it has one, when it leaves.
pub(crate) async fn resume_session(hub: Arc<Hub>, r: Resumed, registry: Arc<Relays>) {
    let id = r.client.id;
    if session::resume(hub, r.client, r.nick, Box::new(r.input)).await == Exit::Left {
        registry.session_left(id);
    }
}

/// A short plain-text answer.
fn plain(status: StatusCode, body: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_owned(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    fn allowed(origin: Option<&str>, host: Option<&str>, list: &[&str]) -> bool {
        let list: Vec<WebOrigin> = list.iter().map(|o| o.parse().unwrap()).collect();
        origin_allowed(origin.map(value).as_ref(), host.map(value).as_ref(), &list)
    }

    #[test]
    fn by_default_only_the_pages_own_origin_may_connect() {
        let host = Some("127.0.0.1:7080");
        assert!(allowed(Some("http://127.0.0.1:7080"), host, &[]));
        assert!(allowed(
            Some("https://chat.example.org"),
            Some("chat.example.org"),
            &[]
        ));
        assert!(!allowed(Some("http://evil.example"), host, &[]));
        assert!(!allowed(Some("http://127.0.0.1:7081"), host, &[]));
        assert!(!allowed(Some("null"), host, &[]));
        assert!(!allowed(Some("http://127.0.0.1:7080"), None, &[]));
        // Not from a browser.
        assert!(allowed(None, host, &[]));
        assert!(allowed(None, None, &[]));
    }

    #[test]
    fn a_list_replaces_the_default() {
        let list = ["https://chat.example.org"];
        let host = Some("127.0.0.1:7080");
        assert!(allowed(Some("https://chat.example.org"), host, &list));
        assert!(allowed(Some("https://CHAT.example.org:443"), host, &list));
        assert!(!allowed(Some("http://chat.example.org"), host, &list));
        assert!(!allowed(Some("http://127.0.0.1:7080"), host, &list));
        assert!(allowed(None, host, &list));
    }

    #[test]
    fn the_message_limit_is_four_lines() {
        assert_eq!(message_limit(4096), 16384);
        assert_eq!(message_limit(usize::MAX), usize::MAX);
    }
}
