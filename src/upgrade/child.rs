//! The new process as the old one sees it until the commit: ending it (killed and reaped, or
//! through a pidfd under systemd) when the upgrade fails, and the blocking exchange over the link
//! that hands it the descriptors and the snapshot. Separate from the [`Upgrader`](super::Upgrader)'s
//! steps so those read as the protocol, not as process and socket bookkeeping.

use std::os::fd::RawFd;
use std::process::Child;
use std::time::{Duration, Instant};

use tracing::warn;

use super::channel::{self, Channel, Tag};

/// The child until the upgrade is decided: killed and reaped if it fails.
pub(super) struct Started {
    child: Option<Child>,
    /// A new process that is not our child (under systemd), once it said hello: killed through a
    /// pidfd. Before its hello it cannot be signalled; it exits when it finds the link closed.
    pinned: Option<crate::systemd::Pinned>,
}

impl Started {
    /// Before the hello: `child` is None when the service manager started it.
    pub(super) fn new(child: Option<Child>) -> Started {
        Started {
            child,
            pinned: None,
        }
    }

    /// Pins a new process that is not our child, by the PID it said hello with. It is alive
    /// while its end of the link is open (nothing else holds that end), so the PID is still its
    /// own if the link is open after the pidfd was taken.
    pub(super) fn pin(&mut self, pid: u32, channel: &Channel) {
        if self.child.is_none() {
            self.pinned = match crate::systemd::Pinned::new(pid) {
                Ok(pinned) => Some(pinned).filter(|_| channel.peer_open()),
                Err(e) => {
                    warn!(error = %e, pid, "upgrade: cannot pin the new process (it exits by itself if the upgrade is called off)");
                    None
                }
            };
        }
    }

    /// Ends a failed child (by its PID, which is ours to signal: it is our child and not yet
    /// reaped) and returns `why`, with its exit status if it had already exited.
    pub(super) fn gone(&mut self, why: String) -> String {
        if let Some(pinned) = self.pinned.take() {
            pinned.kill();
        }
        let Some(mut child) = self.child.take() else {
            return why;
        };
        let exited = child.try_wait().ok().flatten();
        if exited.is_none() {
            // Before the commit it has not touched any socket, so ending it loses nothing.
            let _ = child.kill();
        }
        let _ = child.wait();
        match exited {
            Some(status) => format!("{why} ({status})"),
            None => why,
        }
    }

    /// Describes a failed receive: the child exited, or did not answer in time.
    pub(super) fn failed(&mut self, e: &std::io::Error, timeout: Duration) -> String {
        let why = match e.kind() {
            std::io::ErrorKind::TimedOut => {
                format!(
                    "the new process was not ready within {} s",
                    timeout.as_secs_f64()
                )
            }
            std::io::ErrorKind::UnexpectedEof => {
                "the new process exited before it was ready".into()
            }
            _ => format!("upgrade link failed: {e}"),
        };
        self.gone(why)
    }

    /// The upgrade succeeded: the child is the service now, not ours to reap.
    pub(super) fn release(&mut self) {
        self.child = None;
        self.pinned = None;
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if self.child.is_some() || self.pinned.is_some() {
            self.gone(String::new());
        }
    }
}

/// Sends the descriptors and the snapshot, then waits for the verdict.
pub(super) fn send_and_wait(
    channel: &Channel,
    fds: &[RawFd],
    snapshot: &[u8],
    deadline: Instant,
) -> Result<(), String> {
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock => "the new process was not ready within the timeout".into(),
        _ => format!("upgrade link failed: {e}"),
    };
    channel.send_by(deadline).map_err(io)?;
    for batch in fds.chunks(channel::FDS_PER_MESSAGE) {
        channel
            .send(Tag::Fds, batch.len().to_string().as_bytes(), batch)
            .map_err(io)?;
    }
    channel.send_all(snapshot).map_err(io)?;
    match channel.recv(deadline) {
        Ok((Tag::Ready, _, _)) => Ok(()),
        Ok((Tag::Refused, why, _)) => Err(format!("the new process refused: {}", text(&why))),
        Ok((tag, _, _)) => Err(format!("unexpected {tag:?} from the new process")),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            Err("the new process was not ready within the timeout".into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err("the new process exited before it was ready".into())
        }
        Err(e) => Err(io(e)),
    }
}

pub(super) fn text(bytes: &[u8]) -> String {
    crate::protocol::sanitise_str(&String::from_utf8_lossy(bytes))
}

pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("upgrade link thread does not panic")
}
