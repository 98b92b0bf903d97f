//! The private link between an old process and its successor: a `SOCK_SEQPACKET` socket pair, so
//! every message keeps its boundaries and the descriptors passed with it (`SCM_RIGHTS`) arrive
//! with exactly that message.
//!
//! Blocking, with a deadline on every receive: the hand-over is rare, short, and runs on a
//! blocking thread (old process) or before the runtime starts (new process). Each message is a tag
//! byte and a payload of at most [`CHUNK`] bytes; descriptors go [`FDS_PER_MESSAGE`] at a time.

#![allow(unsafe_code)]

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

/// The environment variable that tells a new process which descriptor is its end of the link.
pub const ENV: &str = "GROUPCHATD_UPGRADE_FD";

/// Most payload bytes in one message.
pub const CHUNK: usize = 60 * 1024;

/// Descriptors per message: below the kernel's `SCM_MAX_FD` (253).
pub const FDS_PER_MESSAGE: usize = 240;

/// What a message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// New → old: alive, with its pid, version and the snapshot versions it reads (JSON).
    Hello,
    /// Old → new: a batch of descriptors (payload: how many, as text).
    Fds,
    /// Old → new: a piece of the snapshot.
    Chunk,
    /// Old → new: the snapshot is complete.
    End,
    /// New → old: everything taken over and checked; waiting for the commit (JSON: pid, version).
    Ready,
    /// New → old: cannot take over (payload: why, one line).
    Refused,
    /// Old → new: serve; the old process is leaving.
    Commit,
    /// Old → new: the upgrade is off; exit without touching anything.
    Abort,
}

impl Tag {
    const ALL: [Tag; 8] = [
        Tag::Hello,
        Tag::Fds,
        Tag::Chunk,
        Tag::End,
        Tag::Ready,
        Tag::Refused,
        Tag::Commit,
        Tag::Abort,
    ];

    fn byte(self) -> u8 {
        b"HFCERXGA"[self as usize]
    }

    fn of(b: u8) -> Option<Tag> {
        Tag::ALL.into_iter().find(|t| t.byte() == b)
    }
}

/// One end of the link.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A new link: this process's end (closed on exec) and the end to give the new process (kept
    /// across exec; close it here once the child has started).
    pub fn pair() -> io::Result<(Channel, OwnedFd)> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::empty(),
        )?;
        fcntl(&ours, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        Ok((Channel { fd: ours }, theirs))
    }

    /// The link a predecessor passed in [`ENV`], if this process was started by an upgrade.
    pub fn from_env() -> Option<io::Result<Channel>> {
        let value = std::env::var(ENV).ok()?;
        // (The variable stays in our environment; a later upgrade sets it anew for its child.)
        let fd: RawFd = match value.parse() {
            Ok(fd) if fd > 2 => fd,
            _ => {
                return Some(Err(io::Error::other(format!(
                    "{ENV}={value} is not a descriptor"
                ))));
            }
        };
        // The descriptor must be a socket we were given, not something else that happens to be
        // open under that number.
        let borrowed = match nix::sys::socket::getsockopt(
            // SAFETY: only borrowed for this one call; an fd that is not open makes it fail.
            &unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::sys::socket::sockopt::SockType,
        ) {
            Ok(SockType::SeqPacket) => fd,
            _ => {
                return Some(Err(io::Error::other(format!(
                    "{ENV}={fd} is not the upgrade link"
                ))));
            }
        };
        // SAFETY: the predecessor passed this descriptor for us alone (checked above to be a
        // seqpacket socket), and nothing else in this process has taken ownership of it.
        let fd = unsafe { OwnedFd::from_raw_fd(borrowed) };
        if let Err(e) = fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)) {
            return Some(Err(e.into()));
        }
        Some(Ok(Channel { fd }))
    }

    /// Sends one message with `fds` attached.
    pub fn send(&self, tag: Tag, payload: &[u8], fds: &[RawFd]) -> io::Result<()> {
        debug_assert!(payload.len() <= CHUNK && fds.len() <= FDS_PER_MESSAGE);
        let head = [tag.byte()];
        let iov = [IoSlice::new(&head), IoSlice::new(payload)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Makes every send from now on fail (`WouldBlock`) rather than wait past `deadline` for a
    /// peer that does not read: a successor that says hello and then hangs must not keep the
    /// room frozen.
    pub fn send_by(&self, deadline: Instant) -> io::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        // Zero would mean "no timeout".
        let left = left.max(std::time::Duration::from_millis(1));
        let tv = nix::sys::time::TimeVal::new(
            left.as_secs().try_into().unwrap_or(i64::MAX),
            left.subsec_micros().into(),
        );
        nix::sys::socket::setsockopt(&self.fd, nix::sys::socket::sockopt::SendTimeout, &tv)?;
        Ok(())
    }

    /// Sends a long payload as [`Tag::Chunk`] messages followed by [`Tag::End`].
    pub fn send_all(&self, payload: &[u8]) -> io::Result<()> {
        for piece in payload.chunks(CHUNK) {
            self.send(Tag::Chunk, piece, &[])?;
        }
        self.send(Tag::End, &[], &[])
    }

    /// Receives one message, waiting until `deadline`. EOF (the other process is gone) and a
    /// passed deadline are errors (`UnexpectedEof`, `TimedOut`).
    pub fn recv(&self, deadline: Instant) -> io::Result<(Tag, Vec<u8>, Vec<OwnedFd>)> {
        self.wait_readable(deadline)?;
        let mut buf = vec![0u8; CHUNK + 1];
        let mut space = nix::cmsg_space!([RawFd; FDS_PER_MESSAGE]);
        let (n, fds) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = loop {
                match recvmsg::<()>(
                    self.fd.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Ok(msg) => break msg,
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
            };
            let mut fds = Vec::new();
            for cmsg in msg.cmsgs()? {
                if let ControlMessageOwned::ScmRights(raw) = cmsg {
                    // SAFETY: SCM_RIGHTS installed these descriptors in this process for this
                    // message alone; nothing else refers to them yet.
                    fds.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                return Err(io::Error::other("descriptors were truncated in transit"));
            }
            (msg.bytes, fds)
        };
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let tag = Tag::of(buf[0])
            .ok_or_else(|| io::Error::other(format!("unknown message tag {:#04x}", buf[0])))?;
        buf.truncate(n);
        buf.remove(0);
        Ok((tag, buf, fds))
    }

    /// False once the other end is closed (its process exited).
    pub fn peer_open(&self) -> bool {
        // POLLHUP is reported whatever was asked for: once the peer's end is closed.
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => true,
            Ok(_) => !fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLHUP)),
            Err(_) => false,
        }
    }

    fn wait_readable(&self, deadline: Instant) -> io::Result<()> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) => {}
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn peer_open_until_the_other_end_is_closed() {
        let (a, b) = Channel::pair().unwrap();
        a.send(Tag::Hello, b"{}", &[]).unwrap();
        // Unread data is not a hang-up.
        assert!(a.peer_open());
        drop(b);
        assert!(!a.peer_open());
    }

    #[test]
    fn messages_keep_their_boundaries_and_descriptors() {
        let (a, b) = Channel::pair().unwrap();
        let b = Channel { fd: b };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        a.send(Tag::Fds, b"1", &[listener.as_raw_fd()]).unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        // Sent while the other end reads: more than the socket's buffer may hold at once.
        let sender = {
            let (a, big) = (
                Channel {
                    fd: a.fd.try_clone().unwrap(),
                },
                big.clone(),
            );
            std::thread::spawn(move || a.send_all(&big))
        };
        let (tag, payload, fds) = b.recv(soon()).unwrap();
        assert_eq!((tag, &payload[..], fds.len()), (Tag::Fds, &b"1"[..], 1));
        let got = std::net::TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(got.local_addr().unwrap(), addr);
        let mut got = Vec::new();
        loop {
            match b.recv(soon()).unwrap() {
                (Tag::Chunk, piece, _) => got.extend_from_slice(&piece),
                (Tag::End, _, _) => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, big);
        sender.join().unwrap().unwrap();
        // A deadline and EOF are errors.
        assert_eq!(
            b.recv(Instant::now() + Duration::from_millis(20))
                .unwrap_err()
                .kind(),
            io::ErrorKind::TimedOut
        );
        drop(a);
        assert_eq!(
            b.recv(soon()).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
