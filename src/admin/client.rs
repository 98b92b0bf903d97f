//! A blocking admin-socket client for `chatctl`: one request, one reply, bounded by a timeout.
//! No async runtime: a CLI that sends one line and reads one line is lighter without one.
//!
//! Before anything is sent, the listening process's credentials (SO_PEERCRED, recorded by the kernel
//! when it called `listen`) must name one of the expected uids: a socket someone else planted or
//! swapped in would otherwise receive the operator's kicks and announcements.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt};

use super::proto::{self, Command, Response};

/// Why a request did not get a reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers at the path (missing, refused, or no reply in time).
    #[error(
        "cannot reach groupchatd at {path}: {reason} (is groupchatd running? try --socket PATH)"
    )]
    Unreachable {
        /// The socket path tried.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The socket exists but we may not connect to it.
    #[error(
        "permission denied on {path}: {reason} (run as root or as a member of the admin group)"
    )]
    PermissionDenied {
        /// The socket path tried.
        path: String,
        /// What the OS said.
        reason: String,
    },
    /// The process listening on the socket runs as a uid we do not expect; nothing was sent.
    #[error(
        "refusing to talk to {path}: it is served by uid {uid} (pid {pid}), which is not one of the \
         expected uids ({expected}); nothing was sent (if the daemon is meant to run as uid {uid}, \
         pass --expect-uid {uid})"
    )]
    UntrustedPeer {
        /// The socket path tried.
        path: String,
        /// The listener's uid.
        uid: u32,
        /// The listener's pid.
        pid: i32,
        /// The uids we accept, for the message.
        expected: String,
    },
    /// The daemon answered with something that is not a reply.
    #[error("{0}")]
    Protocol(String),
}

/// Sends `cmd` to the daemon at `path` and returns its reply, if the process listening there runs
/// as one of `expected_uids`.
pub fn request(
    path: &Path,
    cmd: &Command,
    timeout: Duration,
    expected_uids: &[u32],
) -> Result<Response, ClientError> {
    let shown = path.display().to_string();
    let unreachable = |e: &io::Error| ClientError::Unreachable {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
            path: shown.clone(),
            reason: e.to_string(),
        },
        _ => unreachable(&e),
    })?;
    let peer = getsockopt(&stream, sockopt::PeerCredentials).map_err(|e| unreachable(&e.into()))?;
    if !expected_uids.contains(&peer.uid()) {
        return Err(ClientError::UntrustedPeer {
            path: shown,
            uid: peer.uid(),
            pid: peer.pid(),
            expected: expected_uids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let timeout = timeout.max(Duration::from_millis(1));
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| unreachable(&e))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| unreachable(&e))?;
    // A daemon that refuses us may reply and close before reading: a failed write is not the end,
    // the reply may already be waiting.
    let written = (&stream).write_all(proto::encode_request(cmd).as_bytes());
    let mut line = String::new();
    // A reply is small; the cap only guards against a peer that is not groupchatd.
    let mut reader = BufReader::new((&stream).take(16 << 20));
    match reader.read_line(&mut line) {
        Ok(0) if written.is_err() => Err(unreachable(&written.unwrap_err())),
        Ok(0) => Err(ClientError::Protocol(format!(
            "groupchatd at {shown} closed the connection without replying"
        ))),
        Ok(_) => Response::decode(&line).map_err(ClientError::Protocol),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(ClientError::Unreachable {
                path: shown,
                reason: format!("no reply within {timeout:?}"),
            })
        }
        Err(e) => Err(unreachable(&e)),
    }
}
