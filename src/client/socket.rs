//! The write side's system calls: one `writev` of queued buffers, and what its errors mean.

use std::io::{self, IoSlice};

use bytes::{Buf, Bytes};
use tokio::net::TcpStream;

use super::LeaveReason;

/// Buffers handed to one `writev()` (well under IOV_MAX).
pub(super) const WRITE_SLICES: usize = 64;

/// Drops `n` written bytes from the front of `pending`.
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
/// [`TcpStream::try_io`], which retries once if tokio believes the socket writable and otherwise
/// clears that belief in step with the runtime's events, so the session's wait for writability
/// cannot miss the socket draining.
pub(super) fn writev(stream: &TcpStream, bufs: &[Bytes]) -> io::Result<usize> {
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

fn writev_slices(stream: &TcpStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    let raw = || nix::sys::uio::writev(stream, slices).map_err(io::Error::from);
    match raw() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            stream.try_io(tokio::io::Interest::WRITABLE, raw)
        }
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
