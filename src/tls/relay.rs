//! One TLS connection after admission: the handshake, then plaintext both ways between the TLS
//! stream and the session's end of a socket pair, until both sides are done.
//!
//! Back-pressure is kept: each direction has one bounded buffer (tokio's 8 KiB copy buffer) and is
//! not read while its write is pending, so a TLS client that stops reading stops the relay
//! reading the pair, the pair fills, and the session sees a full socket exactly as with a TCP
//! client (and the slow-consumer rule cuts the client off). Half-closes are kept too: when the
//! session has written its last line and shut its end, the relay sends what is left and then
//! `close_notify`; when the client finishes sending, the session reads end-of-file. Once the
//! session has ended, the relay gets [`LINGER`] more to deliver what it holds: nothing waits on a
//! client that does not read. The relay ends when everything the session wrote is delivered and
//! nothing more can come.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::debug;

use crate::client::ClientId;
use crate::hub::Hub;

/// How long a relay may go on delivering after its session ended (as a session lingers after its
/// last write), and how long a refused connection is read after its reason.
const LINGER: Duration = Duration::from_secs(2);

/// An admitted connection whose session runs already.
pub(super) struct Admitted {
    pub(super) id: ClientId,
    pub(super) peer: SocketAddr,
    pub(super) tcp: TcpStream,
    /// The relay's end of the pair; the session has the other.
    pub(super) pipe: UnixStream,
    /// When the handshake must be done (`handshake_timeout_secs` after accept); None: no limit.
    pub(super) deadline: Option<Instant>,
    /// Resolves (with an error) once the session has ended.
    pub(super) session_ended: oneshot::Receiver<()>,
}

/// Runs the handshake, then relays until both sides are done. `relay` counts this relay for an
/// upgrade's wait until everything the session wrote has been delivered.
pub(super) async fn serve(
    acceptor: TlsAcceptor,
    mut c: Admitted,
    hub: Arc<Hub>,
    stop: CancellationToken,
    relay: TaskTrackerToken,
) {
    let handshake = until(c.deadline, acceptor.accept(c.tcp));
    let tls = tokio::select! {
        done = handshake => match done {
            Some(Ok(tls)) => tls,
            Some(Err(e)) => return failed(&hub, c.id, c.peer, &e.to_string()),
            None => return failed(&hub, c.id, c.peer, "not done within handshake_timeout_secs"),
        },
        // The session ended first (its own handshake timeout, an upgrade): nothing to deliver.
        _ = &mut c.session_ended => return,
        // Stopping: a connection that never got as far as TLS is not waited for.
        () = stop.cancelled() => return,
    };
    let (_, conn) = tls.get_ref();
    debug!(
        client = c.id, peer = %c.peer, tls_version = ?conn.protocol_version(),
        cipher = ?conn.negotiated_cipher_suite().map(|s| s.suite()), event = "tls_handshake",
        "TLS handshake done"
    );
    // Each direction copies through tokio's 8 KiB buffer, reading nothing more while its write
    // waits, and then passes the end on: `close_notify` after the session's last line,
    // end-of-file to the session after the client's.
    let (mut tls_r, mut tls_w) = tokio::io::split(Lenient(tls));
    let (mut pipe_r, mut pipe_w) = c.pipe.split();
    let to_client = async {
        let n = tokio::io::copy(&mut pipe_r, &mut tls_w).await?;
        tls_w.shutdown().await?;
        io::Result::Ok(n)
    };
    let from_client = async {
        let n = tokio::io::copy(&mut tls_r, &mut pipe_w).await?;
        pipe_w.shutdown().await?;
        io::Result::Ok(n)
    };
    tokio::pin!(to_client, from_client);
    let mut relay = Some(relay);
    let (mut delivered, mut received, mut ended) = (None, None, false);
    let mut cut_off_at = Instant::now();
    // Bounded: each round ends one of three one-off waits, or the loop.
    let outcome = loop {
        // Done once everything owed was delivered and nothing more can come: the client has
        // finished sending, or the session (who would read it) has ended.
        if delivered.is_some() && (received.is_some() || ended) {
            break Ok(());
        }
        tokio::select! {
            done = &mut to_client, if delivered.is_none() => match done {
                Ok(n) => {
                    delivered = Some(n);
                    // An upgrade waiting for its notice to be delivered need not wait for more.
                    relay = None;
                }
                Err(e) => break Err(e),
            },
            done = &mut from_client, if received.is_none() => match done {
                Ok(n) => received = Some(n),
                // After the session's end its socket refuses input: not a failure of ours.
                Err(_) if ended => received = Some(0),
                Err(e) => break Err(e),
            },
            _ = &mut c.session_ended, if !ended => {
                ended = true;
                cut_off_at = Instant::now() + LINGER;
            }
            () = tokio::time::sleep_until(cut_off_at), if ended => {
                break Err(io::Error::new(io::ErrorKind::TimedOut, "client not reading; cut off"));
            }
        }
    };
    drop(relay);
    match outcome {
        Ok(()) => debug!(
            client = c.id,
            bytes_out = delivered,
            bytes_in = received,
            "TLS connection closed"
        ),
        Err(e) => debug!(client = c.id, error = %e, "TLS connection ended"),
    }
}

/// A failed handshake: counted, and the connection dropped (the session then reads end-of-file).
fn failed(hub: &Hub, id: ClientId, peer: SocketAddr, why: &str) {
    hub.counters
        .tls_handshake_failures
        .fetch_add(1, Ordering::Relaxed);
    debug!(
        client = id, peer = %peer, error = why, event = "tls_handshake_failed",
        "TLS handshake failed"
    );
}

/// Tells a refused connection why (`line`) over TLS, all by `deadline`, then reads whatever it
/// still sends for a moment, so that its unread input does not turn the close into a reset that
/// destroys the line.
pub(super) async fn refuse(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    line: Bytes,
    deadline: Instant,
    hub: Arc<Hub>,
    _permit: OwnedSemaphorePermit,
) {
    let peer = tcp.peer_addr().ok();
    let mut tls = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return refusal_failed(&hub, peer, &e.to_string()),
        Err(_) => return refusal_failed(&hub, peer, "not done in time"),
    };
    let told = tokio::time::timeout_at(deadline, async {
        tls.write_all(&line).await?;
        tls.shutdown().await
    })
    .await;
    if !matches!(told, Ok(Ok(()))) {
        return;
    }
    let mut buf = [0u8; 512];
    let linger = Instant::now() + LINGER;
    while let Ok(Ok(n)) = tokio::time::timeout_at(linger, tls.read(&mut buf)).await {
        if n == 0 {
            break;
        }
    }
}

/// A refused connection's failed handshake: counted like any other.
fn refusal_failed(hub: &Hub, peer: Option<SocketAddr>, why: &str) {
    hub.counters
        .tls_handshake_failures
        .fetch_add(1, Ordering::Relaxed);
    debug!(peer = ?peer, error = why, event = "tls_handshake_failed", "TLS handshake failed");
}

/// Runs `f` until `deadline`, if there is one; None if it passed first.
async fn until<F: Future>(deadline: Option<Instant>, f: F) -> Option<F::Output> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at, f).await.ok(),
        None => Some(f.await),
    }
}

/// The TLS stream as the relay reads it: a client that closes the connection without
/// `close_notify` has simply finished sending, as a TCP client that half-closes has. rustls
/// reports that as an error (a possible truncation attack), which would make the relay drop what
/// it still owes the client; for a line chat, where a partial last line is discarded anyway,
/// truncation gains an attacker nothing a reset would not.
struct Lenient<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for Lenient<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Lenient<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
