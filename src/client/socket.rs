//! A client's socket ([`Stream`]), the write side's system calls (one `writev` of queued buffers),
//! and what their errors mean.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

use super::LeaveReason;

/// What a client's bytes travel over, as the daemon reads and writes them: the TCP connection
/// itself, or the daemon's end of a socket pair whose other end a front end (TLS, WebSocket)
/// relays to the real connection. Both are non-blocking sockets read with `recv` and written with
/// `writev`, so everything past the front end (framing, limits, the outbox) is the same for both.
#[derive(Debug)]
pub enum Stream {
    /// A plain TCP client.
    Tcp(TcpStream),
    /// Relayed by a front end in this process.
    Pipe(UnixStream),
}

impl Stream {
    /// The TCP connection, unless relayed.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::Pipe(_) => None,
        }
    }

    /// Runs `f` (a system call on the raw socket) and clears tokio's readiness if it would block.
    #[inline]
    pub(crate) fn try_io<R>(
        &self,
        interest: Interest,
        f: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        match self {
            Stream::Tcp(s) => s.try_io(interest, f),
            Stream::Pipe(s) => s.try_io(interest, f),
        }
    }

    #[inline]
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            Stream::Pipe(s) => s.poll_read_ready(cx),
        }
    }

    #[inline]
    pub(crate) fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_write_ready(cx),
            Stream::Pipe(s) => s.poll_write_ready(cx),
        }
    }

    pub(crate) async fn readable(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.readable().await,
            Stream::Pipe(s) => s.readable().await,
        }
    }
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Stream {
        Stream::Tcp(s)
    }
}

impl AsRawFd for Stream {
    #[inline]
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Pipe(s) => s.as_raw_fd(),
        }
    }
}

impl AsFd for Stream {
    #[inline]
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Pipe(s) => s.as_fd(),
        }
    }
}

/// Buffers handed to one `writev()` (well under IOV_MAX).
pub(super) const WRITE_SLICES: usize = 64;

/// Drops `n` written bytes from the front of `pending`.
// Inlined into the write loop (its only caller), as `writev` is: out of line, the three cost the
// per-line path 5 % more instructions (benches/callgrind.sh).
#[inline(always)]
pub(super) fn advance(pending: &mut Vec<Bytes>, mut n: usize) {
    let mut done = 0;
    for buf in pending.iter_mut() {
        if n < buf.len() {
            buf.advance(n);
            break;
        }
        n -= buf.len();
        done += 1;
    }
    if done == pending.len() {
        pending.clear(); // the usual case: everything went out
    } else {
        pending.drain(..done);
    }
}

/// One `writev()` of up to [`WRITE_SLICES`] buffers; the slice array lives on the stack.
///
/// The first attempt goes straight to the socket, whatever tokio's readiness cache says (a new
/// connection's cache is cold until the runtime next polls, and a publisher must not hand a
/// writable socket to the session for that). Only on EAGAIN does it go through
/// [`Stream::try_io`], which retries once if tokio believes the socket writable and otherwise
/// clears that belief in step with the runtime's events, so the session's wait for writability
/// cannot miss the socket draining.
#[inline(always)]
pub(super) fn writev(stream: &Stream, bufs: &[Bytes]) -> io::Result<usize> {
    // A small array for the usual case (one or a few buffers): filling all WRITE_SLICES slots
    // for every recipient was a tenth of the daemon's instructions.
    if bufs.len() <= SMALL {
        let mut slices = [IoSlice::new(&[]); SMALL];
        fill(&mut slices, bufs);
        return writev_slices(stream, &slices[..bufs.len()]);
    }
    let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
    fill(&mut slices, bufs);
    writev_slices(stream, &slices[..bufs.len().min(WRITE_SLICES)])
}

/// Buffers that fit the small slice array.
const SMALL: usize = 4;

fn fill<'a>(slices: &mut [IoSlice<'a>], bufs: &'a [Bytes]) {
    for (slot, buf) in slices.iter_mut().zip(bufs) {
        *slot = IoSlice::new(buf);
    }
}

#[inline(always)]
fn writev_slices(stream: &Stream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    let raw = || nix::sys::uio::writev(stream, slices).map_err(io::Error::from);
    match raw() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.try_io(Interest::WRITABLE, raw),
        other => other,
    }
}

/// Why a client leaves when its socket fails: the kernel's user timeout (unacknowledged data, or a
/// zero window, for too long) is a write timeout; anything else is the connection closing.
pub(crate) fn socket_error_reason(e: &io::Error) -> LeaveReason {
    if e.kind() == io::ErrorKind::TimedOut {
        LeaveReason::WriteTimeout
    } else {
        LeaveReason::Closed
    }
}
