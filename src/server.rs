//! Accepting chat connections: admission limits, socket options, and one session task per client.
//!
//! Admission runs in order of cost: the per-network connection rate first (a hash lookup, before
//! the socket is even configured), then the hub's slot limits (`max_clients`, per network). The
//! same for TLS listeners, whose admitted connections then go to the TLS front end ([`Transport`]).
//! The accept loop never waits on a client. A refused newcomer gets its one-line reason from a short
//! lingering task (bounded in number) so the line is not lost to a reset, and nobody else notices.
//! Accept errors are sorted ([`AcceptBackoff`], which the HTTP listeners use too): per-connection
//! failures are skipped, resource exhaustion backs off and retries (the kernel backlog holds
//! newcomers meanwhile), and nothing here stops the daemon.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, warn};

use crate::client::Stream;
use crate::hub::{Hub, Refusal};
use crate::protocol::format::notice;
use crate::session;
use crate::tls;
use crate::upgrade::AcceptGate;

/// Refused connections being closed gracefully at once; beyond this they are closed abruptly, so a
/// connection flood cannot make refusals hold file descriptors.
const MAX_LINGERING_REFUSALS: usize = 64;
/// How long a refused connection is given to read its reason.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// What a listener's clients speak.
#[derive(Clone)]
pub(crate) enum Transport {
    /// Plain text: the TCP connection is the client's stream.
    Plain,
    /// TLS, terminated by the front end, which relays the plaintext to the session.
    Tls(Arc<tls::Front>),
}

/// Accepts connections on `listener` until `stop` is cancelled.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    transport: Transport,
    gate: AcceptGate,
    hub: Arc<Hub>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let refusals = Arc::new(Semaphore::new(MAX_LINGERING_REFUSALS));
    let mut backoff = AcceptBackoff::default();
    loop {
        // Closed while an upgrade hands the listeners over: newcomers wait in the backlog.
        if !gate.is_open() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = gate.park_until_open() => {}
            }
        }
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            () = gate.closed() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match backoff.accepted(accepted, "chat") {
            Accepted::Connection(pair) => pair,
            Accepted::Skip => continue,
            Accepted::Retry(wait) => {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                continue;
            }
        };
        if let Err(why) = hub.check_connect_rate(peer.ip()) {
            match transport {
                Transport::Plain => refuse(stream.into(), peer, why, &refusals, &tracker),
                // No handshake for a network over its rate: that is the flood the limit is for.
                Transport::Tls(_) => {
                    debug!(
                        peer = %peer, reason = %why, transport = "tls", event = "refused",
                        "connection refused"
                    );
                }
            }
            continue;
        }
        configure(&stream, &hub);
        match &transport {
            Transport::Plain => admit_plain(stream, peer, &hub, &refusals, &tracker),
            Transport::Tls(front) => front.admit(stream, peer, &hub, &tracker, &stop),
        }
    }
}

/// Registers a plain client and starts its session, or tells it why not.
fn admit_plain(
    stream: TcpStream,
    peer: SocketAddr,
    hub: &Arc<Hub>,
    refusals: &Arc<Semaphore>,
    tracker: &TaskTracker,
) {
    match hub.register(peer, stream) {
        Ok(client) => {
            debug!(client = client.id, peer = %peer, event = "connect", "connected");
            // No per-session span: it would cost every idle connection a few hundred bytes;
            // session events carry the client id as a field instead.
            tracker.spawn(session::run(hub.clone(), client));
        }
        Err((why, stream)) => refuse(stream, peer, why, refusals, tracker),
    }
}

/// Tells a refused newcomer why, then closes it without it ever joining.
fn refuse(
    stream: Stream,
    peer: SocketAddr,
    why: Refusal,
    refusals: &Arc<Semaphore>,
    tracker: &TaskTracker,
) {
    debug!(peer = %peer, reason = %why, event = "refused", "connection refused");
    // A fresh socket's send buffer is empty, so this one short write does not block.
    let line = notice(&why.to_string());
    let _ = stream.try_io(tokio::io::Interest::WRITABLE, || {
        nix::unistd::write(&stream, &line).map_err(io::Error::from)
    });
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    tracker.spawn(async move {
        let _permit = permit;
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            nix::sys::socket::Shutdown::Write,
        );
        let mut buf = [0u8; 512];
        let deadline = tokio::time::Instant::now() + REFUSAL_LINGER;
        while let Ok(Ok(())) = tokio::time::timeout_at(deadline, stream.readable()).await {
            let read = stream.try_io(tokio::io::Interest::READABLE, || {
                nix::unistd::read(&stream, &mut buf).map_err(io::Error::from)
            });
            match read {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
    });
}

/// Keepalive probes before a silent peer is declared dead.
const KEEPALIVE_PROBES: u32 = 6;

/// No Nagle delay (we coalesce writes ourselves); TCP keepalive, so peers that vanished without a
/// FIN are reaped even when the room is quiet; and a user timeout, so they are reaped when it is busy.
fn configure(stream: &TcpStream, hub: &Hub) {
    let _ = stream.set_nodelay(true);
    let cfg = hub.config();
    let times = socket_times(cfg.tcp_keepalive, cfg.write_timeout);
    if let Some((idle, interval)) = times.keepalive {
        let _ = setsockopt(stream, sockopt::KeepAlive, &true);
        let _ = setsockopt(stream, sockopt::TcpKeepIdle, &idle);
        let _ = setsockopt(stream, sockopt::TcpKeepInterval, &interval);
        let _ = setsockopt(stream, sockopt::TcpKeepCount, &KEEPALIVE_PROBES);
    }
    let _ = setsockopt(stream, sockopt::TcpUserTimeout, &times.user_timeout_ms);
}

/// The timer values [`configure`] sets on each client socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketTimes {
    /// Keepalive idle time and probe interval in seconds; `None` = keepalive off.
    pub(crate) keepalive: Option<(u32, u32)>,
    /// `TCP_USER_TIMEOUT` in milliseconds.
    pub(crate) user_timeout_ms: u32,
}

/// Derives the socket timers from the configuration: pure, so the config fuzz target can run it
/// for every accepted configuration. Total for any input (clamped and saturating), although
/// validation already keeps the idle time within 7200 s.
pub(crate) fn socket_times(keepalive: Option<Duration>, write_timeout: Duration) -> SocketTimes {
    // Without keepalive, the write timeout bounds how long unacknowledged data may wait.
    let mut give_up = write_timeout;
    let keepalive = keepalive.map(|idle| {
        let secs = idle.as_secs().clamp(1, i32::MAX as u64) as u32;
        let interval = (secs / 6).clamp(1, 10);
        let total = secs.saturating_add(KEEPALIVE_PROBES.saturating_mul(interval));
        give_up = Duration::from_secs(u64::from(total));
        (secs, interval)
    });
    // Keepalive never probes while sent data is unacknowledged, so a peer that vanished in a busy
    // room would be retransmitted to for ~15 minutes (tcp_retries2). The user timeout makes the
    // kernel give up after the keepalive deadline in that case too (and it replaces the probe
    // count, so it must be that deadline, not less).
    let user_timeout_ms = give_up.as_millis().min(u128::from(u32::MAX)) as u32;
    SocketTimes {
        keepalive,
        user_timeout_ms,
    }
}

/// First wait after an accept error that is not the connection's own.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
/// Longest wait between retries: the kernel's backlog holds newcomers meanwhile.
const BACKOFF_MOST: Duration = Duration::from_secs(1);

/// What to do after an `accept`.
pub(crate) enum Accepted<T> {
    /// Serve it.
    Connection(T),
    /// It failed on its own (a reset before it was accepted): take the next.
    Skip,
    /// The listener failed (out of descriptors, memory): wait this long, then try again.
    Retry(Duration),
}

/// The accept loops' reaction to errors, shared by the chat (and TLS) loops and the HTTP ones:
/// per-connection failures are skipped, anything else (resource exhaustion, or an error nobody
/// expects) is logged and retried after a wait that doubles from [`BACKOFF_FIRST`] up to
/// [`BACKOFF_MOST`], back to the first after a success. Nothing here stops a listener.
pub(crate) struct AcceptBackoff {
    next: Duration,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff {
            next: BACKOFF_FIRST,
        }
    }
}

impl AcceptBackoff {
    /// Sorts one `accept` result of a `kind` (`chat`, `http`) listener, logging failures.
    pub(crate) fn accepted<T>(
        &mut self,
        accepted: io::Result<T>,
        kind: &'static str,
    ) -> Accepted<T> {
        let e = match accepted {
            Ok(connection) => {
                self.next = BACKOFF_FIRST;
                return Accepted::Connection(connection);
            }
            Err(e) => e,
        };
        if is_per_connection(&e) {
            debug!(listener = kind, error = %e, "accept: connection failed before it was accepted");
            return Accepted::Skip;
        }
        let wait = self.next;
        let retry_ms = wait.as_millis() as u64;
        if is_resource_exhaustion(&e) {
            warn!(listener = kind, error = %e, retry_ms, "accept: out of resources");
        } else {
            error!(listener = kind, error = %e, retry_ms, "accept failed");
        }
        self.next = (wait * 2).min(BACKOFF_MOST);
        Accepted::Retry(wait)
    }
}

/// Errors that concern only the connection being accepted.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || matches!(
        e.raw_os_error(),
        Some(libc_errno::EPROTO | libc_errno::EPERM)
    )
}

/// Errors that say the process or the system is out of something; retried after a wait.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_errno::EMFILE | libc_errno::ENFILE | libc_errno::ENOBUFS | libc_errno::ENOMEM)
    )
}

/// The errno values we sort on, via nix so no libc dependency is needed.
mod libc_errno {
    use nix::errno::Errno;
    pub const EPROTO: i32 = Errno::EPROTO as i32;
    pub const EPERM: i32 = Errno::EPERM as i32;
    pub const EMFILE: i32 = Errno::EMFILE as i32;
    pub const ENFILE: i32 = Errno::ENFILE as i32;
    pub const ENOBUFS: i32 = Errno::ENOBUFS as i32;
    pub const ENOMEM: i32 = Errno::ENOMEM as i32;
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    fn err(errno: nix::errno::Errno) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(errno as i32))
    }

    #[test]
    fn waits_double_up_to_a_second_and_reset_after_a_success() {
        let mut b = AcceptBackoff::default();
        let mut waits = Vec::new();
        for _ in 0..9 {
            match b.accepted(err(nix::errno::Errno::EMFILE), "chat") {
                Accepted::Retry(wait) => waits.push(wait.as_millis()),
                _ => panic!("EMFILE is retried"),
            }
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert!(matches!(
            b.accepted(Ok(()), "chat"),
            Accepted::Connection(())
        ));
        assert!(matches!(
            b.accepted(err(nix::errno::Errno::ENOBUFS), "http"),
            Accepted::Retry(w) if w == BACKOFF_FIRST
        ));
        // A connection reset before it was accepted is its own problem: no wait.
        assert!(matches!(
            b.accepted(err(nix::errno::Errno::ECONNABORTED), "chat"),
            Accepted::Skip
        ));
    }
}
