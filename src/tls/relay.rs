//! One TLS connection after admission: the handshake, then plaintext both ways between the TLS
//! stream and the session's end of a socket pair, until both sides are done.
//!
//! Back-pressure is kept: each direction has one bounded buffer and is not read while its write
//! is pending, so a TLS client that stops reading stops the relay reading the pair, the pair
//! fills, and the session sees a full socket exactly as with a TCP client (and the slow-consumer
//! rule cuts the client off). Half-closes are kept too: when the session has written its last
//! line and shut its end, the relay sends what is left and then `close_notify`; when the client
//! finishes sending, the session reads end-of-file. Once the session has ended, the relay gets
//! [`LINGER`] more to deliver what it holds: nothing waits on a client that does not read.

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

/// Each direction's buffer: lines are short, and the kernel buffers on both sides do the rest.
const RELAY_BUF: usize = 8 * 1024;
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

/// Runs the handshake, then relays until both sides are done. `_relay` counts this relay for an
/// upgrade's wait.
pub(super) async fn serve(
    acceptor: TlsAcceptor,
    mut c: Admitted,
    hub: Arc<Hub>,
    stop: CancellationToken,
    _relay: TaskTrackerToken,
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
    let mut tls = Lenient(tls);
    let copy =
        tokio::io::copy_bidirectional_with_sizes(&mut tls, &mut c.pipe, RELAY_BUF, RELAY_BUF);
    tokio::pin!(copy);
    let outcome = tokio::select! {
        done = &mut copy => done,
        _ = &mut c.session_ended => match tokio::time::timeout(LINGER, &mut copy).await {
            Ok(done) => done,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "client not reading; cut off")),
        },
    };
    match outcome {
        Ok((bytes_in, bytes_out)) => {
            debug!(client = c.id, bytes_in, bytes_out, "TLS connection closed");
        }
        Err(e) => debug!(client = c.id, error = %e, "TLS connection ended"),
    }
}

/// A failed handshake: counted, and the connection dropped (the session then reads end-of-file).
fn failed(hub: &Hub, id: ClientId, peer: SocketAddr, why: &str) {
    hub.counters
        .tls_handshake_failures
        .fetch_add(1, Ordering::Relaxed);
    debug!(client = id, peer = %peer, error = why, event = "tls_handshake_failed", "TLS handshake failed");
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
        Ok(Err(e)) => {
            hub.counters
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            debug!(peer = ?peer, error = %e, event = "tls_handshake_failed", "TLS handshake failed");
            return;
        }
        Err(_) => {
            hub.counters
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
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
