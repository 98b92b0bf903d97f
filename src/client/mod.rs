//! One connection as the rest of the daemon sees it: identity, socket, counters and output.
//!
//! The socket lives here, not in the session, because output is written by whoever produced it
//! (see [`outbox`]): the publisher right after its read, the session only when the socket is
//! full. Input is read by the session alone.

mod congestion;
mod leave;
pub(crate) mod outbox;
mod socket;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

pub use congestion::Congestion;
pub use leave::{Close, LeaveReason};
pub use outbox::Outbox;
pub(crate) use outbox::{Flushed, Lag, Limits};
pub use socket::Stream;
pub(crate) use socket::socket_error_reason;

/// A connection's id: unique for the daemon's lifetime, never reused, never a socket address.
pub type ClientId = u64;

/// How a client reaches the daemon: fixed when it connects, counted by `/metrics`. Past the
/// front end (TLS, WebSocket) every client is the same, so nothing else looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP on a `listen` port: `nc HOST 7000`.
    Tcp,
    /// TLS on a `tls_listen` port, relayed as a [`Stream::Pipe`].
    Tls,
    /// WebSocket (`GET /ws` on an `http_listen` port), relayed as a [`Stream::Pipe`].
    WebSocket,
    /// WebSocket over TLS (`GET /ws` on an `https_listen` port: `wss://`), relayed as a
    /// [`Stream::Pipe`].
    SecureWebSocket,
}

impl Transport {
    /// Every transport, in the order `/metrics` lists them.
    pub const ALL: [Transport; 4] = [
        Transport::Tcp,
        Transport::Tls,
        Transport::WebSocket,
        Transport::SecureWebSocket,
    ];

    /// Its `transport` label in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::WebSocket => "websocket",
            Transport::SecureWebSocket => "wss",
        }
    }
}

/// Per-client traffic counters, read by the admin socket without taking any lock.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Lines received from the client (non-empty, after sanitising).
    pub lines_in: AtomicU64,
    /// Bytes received from the client, as read from the socket.
    pub bytes_in: AtomicU64,
    /// Lines taken for sending to the client.
    pub lines_out: AtomicU64,
    /// Bytes written to the client's socket.
    pub bytes_out: AtomicU64,
    /// When the client last sent a line, in milliseconds since it connected.
    pub last_active_ms: AtomicU64,
}

/// A connected client, shared between its session, the room and the admin socket.
#[derive(Debug)]
pub struct Client {
    /// The connection's id.
    pub id: ClientId,
    /// The remote address.
    pub peer: SocketAddr,
    /// How it connected.
    pub transport: Transport,
    /// Wall-clock connection time, for display.
    pub connected_at: SystemTime,
    /// Monotonic connection time, for durations.
    pub connected: Instant,
    /// The connection.
    pub(crate) stream: Stream,
    /// Everything owed to the client, and who writes it.
    pub outbox: Outbox,
    /// Traffic counters.
    pub stats: ClientStats,
}

impl Client {
    /// A client that has just connected on `stream`, by `transport`.
    pub fn new(id: ClientId, peer: SocketAddr, stream: Stream, transport: Transport) -> Self {
        Client {
            id,
            peer,
            transport,
            connected_at: SystemTime::now(),
            connected: Instant::now(),
            stream,
            outbox: Outbox::default(),
            stats: ClientStats::default(),
        }
    }

    /// A client taken over from another process (upgrade), connected since `connected`: a TCP
    /// client, or a WebSocket over plain HTTP (whose relay moved too).
    pub(crate) fn restored(
        id: ClientId,
        peer: SocketAddr,
        connected_at: SystemTime,
        connected: Instant,
        stream: Stream,
        transport: Transport,
    ) -> Self {
        Client {
            connected_at,
            connected,
            ..Client::new(id, peer, stream, transport)
        }
    }

    /// Writes pending output if nobody else is (see [`Outbox::flush`]).
    pub(crate) fn flush(&self, limits: Limits<'_>) {
        self.outbox
            .flush(self.id, &self.stream, &self.stats, limits);
    }

    /// Writes pending output as the session, taking over when the socket is full (see
    /// [`Outbox::flush_own`]).
    pub(crate) fn flush_own(&self, limits: Limits<'_>) -> Flushed {
        self.outbox
            .flush_own(self.id, &self.stream, &self.stats, limits)
    }

    /// Whether an upgrade can hand the connection to another process: a TCP client's socket, or
    /// a WebSocket over plain HTTP with its relay (see `ws::handover`). A TLS session (line
    /// clients, `wss://`) cannot leave the process that terminates it.
    pub fn moves(&self) -> bool {
        matches!(self.transport, Transport::Tcp | Transport::WebSocket)
    }

    /// Records activity (a line received) for the idle column of `chatctl list`.
    pub fn touch(&self) {
        let ms = self.connected.elapsed().as_millis() as u64;
        self.stats.last_active_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the client last sent a line (or connected).
    pub fn idle_for(&self) -> Duration {
        let last = self.stats.last_active_ms.load(Ordering::Relaxed);
        self.connected
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }
}
