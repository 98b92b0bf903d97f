//! `chatctl upgrade`: hand every live connection to a new binary, or roll back.
//!
//! The [`Upgrader`] owns the protocol on the old side, [`Takeover`] on the new side; they talk
//! over a private link ([`channel`]) and the new process is this one's child:
//!
//! 1. The old process starts the new binary (by default the path it was started from, so after
//!    `dpkg -i` that is the new version) with the same arguments and the link's end in
//!    `GROUPCHATD_UPGRADE_FD`. The new process loads and checks its configuration and says hello.
//! 2. The old process stops accepting (newcomers wait in the listen backlog), stops every
//!    WebSocket relay over plain HTTP between two of its steps (`ws::handover`), tells each
//!    client whose TLS session cannot leave this process (TLS line clients and `wss://` pages,
//!    and the rare WebSocket caught in a fragmented message) `*** server upgrading; please
//!    reconnect` and closes it, freezes every other session between two reads, stops all
//!    writing, and sends the chat and TLS listeners, the admin socket, the HTTP and HTTPS
//!    listeners, every client's socket (a WebSocket's with its relay's end of the socket pair
//!    and its TCP connection) and the [`snapshot`]. HTTP requests in progress at the commit are
//!    cut off (they are short; a client retries on a new connection, which the new process
//!    accepts).
//! 3. The new process checks the snapshot, rebuilds the room around the sockets without reading
//!    or writing any of them, and says it is ready.
//! 4. The old process passes the service to it (`MAINPID=` to systemd), commits, answers
//!    `chatctl` and exits 0; the new process starts serving. Bytes that arrived meanwhile are in
//!    the kernel's buffers, and simply read by the new process.
//!
//! Any failure before the commit (the binary missing or not executable, the child crashing,
//! refusing the configuration or the snapshot, or not ready within the timeout) rolls back: the
//! child is told to go (and killed if it does not), writing and the sessions resume where they
//! stopped (the WebSocket relays too), accepting resumes, and the caller gets the reason. Nothing
//! is lost either way, except that TLS and `wss://` clients told to reconnect have been
//! disconnected.
//!
//! The pieces: [`AcceptGate`] (`gate`) pauses the accept loops; the [`Upgrader`] (`upgrader`)
//! runs the old side's steps and the rollback; `child` looks after the new process until the
//! commit and speaks to it over the link; [`Takeover`] (`takeover`) is the new side. This file
//! keeps what both sides and the rest of the daemon share.

pub(crate) mod channel;
mod child;
mod gate;
pub(crate) mod snapshot;
pub(crate) mod takeover;
mod upgrader;

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::info;

pub use gate::AcceptGate;
pub use takeover::{Takeover, refuse_if_upgrading};
pub use upgrader::Upgrader;

/// What a client that cannot be handed over (TLS, `wss://`) is told before it is closed.
pub(crate) const RECONNECT: &str = "server upgrading; please reconnect";

/// Default for `chatctl upgrade --timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a new process says when it starts.
#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    pid: u32,
    version: String,
    /// Snapshot versions it reads.
    reads: Vec<u32>,
    /// Whether it has a TLS certificate to serve TLS and HTTPS listeners with (false from a
    /// release before TLS, which could not take them over either).
    #[serde(default)]
    tls: bool,
}

/// What an upgrade achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgraded {
    /// The new process.
    pub pid: u32,
    /// Its package version.
    pub version: String,
    /// Connections handed over.
    pub clients: usize,
}

/// The program and arguments this process was started with, recorded at start-up (after a
/// package upgrade `/proc/self/exe` names a deleted file; the path still names the new one).
#[derive(Debug, Clone)]
pub struct Invocation {
    exe: PathBuf,
    args: Vec<OsString>,
}

impl Invocation {
    /// This process's.
    pub fn current() -> Invocation {
        let mut args = std::env::args_os();
        let argv0 = args.next().map(PathBuf::from).unwrap_or_default();
        // The path as invoked, not where it pointed then: a link that a deployment switches to
        // the new version (alternatives, a `current` link) must lead to the new version. A bare
        // name (found on PATH) or a path that names nothing falls back to the running file.
        let invoked = if argv0.is_absolute() {
            Some(argv0.clone())
        } else if argv0.components().count() > 1 {
            std::env::current_dir().ok().map(|cwd| cwd.join(&argv0))
        } else {
            None
        };
        let exe = match invoked.filter(|p| p.is_file()) {
            Some(path) => path,
            None => std::env::current_exe().unwrap_or(argv0),
        };
        Invocation {
            exe,
            args: args.collect(),
        }
    }
}

/// The sockets an upgrade hands over besides the clients', in the snapshot's order.
pub(crate) struct Sockets {
    /// The chat listeners.
    pub(crate) listeners: Vec<RawFd>,
    /// The TLS listeners.
    pub(crate) tls: Vec<RawFd>,
    /// The HTTP listeners.
    pub(crate) http: Vec<RawFd>,
    /// The HTTPS listeners.
    pub(crate) https: Vec<RawFd>,
    /// The admin socket, and whether this process created its file.
    pub(crate) admin: Option<(RawFd, bool)>,
}

/// Ends this process after a successful upgrade, at once and without running any destructor:
/// the sockets, the admin socket's file and the clients are the new process's now, and closing
/// or removing anything here would take it from under it.
pub fn exit_handed_over() -> ! {
    info!(event = "handed_over", "exiting: the new process serves");
    std::process::exit(0)
}

/// CLOCK_MONOTONIC now, in nanoseconds: comparable between processes on one machine.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Debug builds only: `GROUPCHATD_TEST_SNAPSHOT_VERSION` makes this process write another
/// snapshot version, so the tests can show a new process refusing one it does not read.
fn test_version() -> Option<u32> {
    if cfg!(debug_assertions) {
        std::env::var("GROUPCHATD_TEST_SNAPSHOT_VERSION")
            .ok()?
            .parse()
            .ok()
    } else {
        None
    }
}

/// Debug builds only: `GROUPCHATD_TEST_READY_DELAY_MS` makes a new process wait that long before
/// it says ready, so tests can act while an upgrade is under way.
fn test_ready_delay() -> Option<Duration> {
    if cfg!(debug_assertions) {
        let ms = std::env::var("GROUPCHATD_TEST_READY_DELAY_MS").ok()?;
        ms.parse().ok().map(Duration::from_millis)
    } else {
        None
    }
}
