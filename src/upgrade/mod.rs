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

pub(crate) mod channel;
pub(crate) mod snapshot;

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::hub::Hub;
use crate::hub::handover::Frozen;
use channel::{Channel, Tag};
use snapshot::{Origin, Snapshot};

/// What a client that cannot be handed over (TLS, `wss://`) is told before it is closed.
pub(crate) const RECONNECT: &str = "server upgrading; please reconnect";

/// How long sessions get to stop between reads. They stop at their next turn, so this is only
/// reached by a runtime that is not running tasks at all.
const FREEZE_LIMIT: Duration = Duration::from_secs(2);

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

/// Whether the accept loops take new connections: closed while a hand-over is under way, so
/// newcomers wait in the kernel's listen backlog for whichever process serves next.
#[derive(Debug, Clone)]
pub struct AcceptGate {
    open: watch::Sender<bool>,
    /// Chat accept loops waiting at the closed gate: once all are, no connection is between
    /// `accept` and its session (one accepted as the gate closed is registered first).
    parked: watch::Sender<usize>,
}

impl Default for AcceptGate {
    fn default() -> Self {
        AcceptGate {
            open: watch::Sender::new(true),
            parked: watch::Sender::new(0),
        }
    }
}

/// Counts one accept loop as parked while it lives.
struct Parked<'a>(&'a watch::Sender<usize>);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl AcceptGate {
    fn set(&self, open: bool) {
        self.open.send_replace(open);
    }

    /// For a chat accept loop: waits while the gate is closed, counted as parked.
    pub async fn park_until_open(&self) {
        self.parked.send_modify(|n| *n += 1);
        let _parked = Parked(&self.parked);
        self.opened().await;
    }

    /// Closes the gate and waits (at most `limit`) until `loops` chat accept loops are parked.
    async fn close_and_settle(&self, loops: usize, limit: Duration) -> bool {
        self.set(false);
        let mut parked = self.parked.subscribe();
        tokio::time::timeout(limit, parked.wait_for(|n| *n >= loops))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Resolves at once while open, else when opened again.
    pub async fn opened(&self) {
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }

    /// Resolves once closed.
    pub async fn closed(&self) {
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|open| !*open).await;
    }

    /// True while accepting.
    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }
}

/// The old side of an upgrade. One at a time.
pub struct Upgrader {
    hub: Arc<Hub>,
    /// The binary this process was started from, and its arguments.
    exe: PathBuf,
    args: Vec<OsString>,
    listeners: Vec<RawFd>,
    /// The TLS listeners.
    tls: Vec<RawFd>,
    /// The HTTP listeners.
    http: Vec<RawFd>,
    /// The HTTPS listeners.
    https: Vec<RawFd>,
    /// The admin socket, and whether this process made its file (the new one then owns it).
    admin: Option<(RawFd, bool)>,
    /// The relays of every front end (TLS, WebSocket), for the wait until the clients that
    /// cannot move have been told to reconnect.
    relays: Vec<TaskTracker>,
    /// The WebSocket relays that can move with their clients.
    ws: Arc<crate::ws::Relays>,
    gate: AcceptGate,
    tracker: TaskTracker,
    busy: AtomicBool,
    /// The cluster link, when rooms are shared with other nodes (set once it exists).
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
}

/// Clears the busy flag however the upgrade ends.
struct Busy<'a>(&'a AtomicBool);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
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

impl Upgrader {
    /// An upgrader for this process's room and sockets; `relays` are the front ends' relays
    /// (TLS, WebSocket) that an upgrade waits for when their clients cannot move, `ws` the
    /// WebSocket relays that move.
    pub(crate) fn new(
        hub: Arc<Hub>,
        invocation: Invocation,
        sockets: Sockets,
        relays: (Vec<TaskTracker>, Arc<crate::ws::Relays>),
        gate: AcceptGate,
        tracker: TaskTracker,
    ) -> Upgrader {
        let (relays, ws) = relays;
        let Sockets {
            listeners,
            tls,
            http,
            https,
            admin,
        } = sockets;
        Upgrader {
            hub,
            exe: invocation.exe,
            args: invocation.args,
            listeners,
            tls,
            http,
            https,
            admin,
            relays,
            ws,
            gate,
            tracker,
            busy: AtomicBool::new(false),
            cluster: std::sync::OnceLock::new(),
        }
    }

    /// Hands the cluster link over too: the stream position and the claims.
    pub(crate) fn set_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// Hands everything to `binary` (default: the one this process was started from). On
    /// success the caller must exit at once without closing anything: the sockets belong to the
    /// new process now. On failure everything runs on as before and the error says why.
    pub async fn upgrade(
        &self,
        binary: Option<PathBuf>,
        timeout: Duration,
    ) -> Result<Upgraded, String> {
        if self.busy.swap(true, Ordering::SeqCst) {
            return Err("an upgrade is already in progress".into());
        }
        let _busy = Busy(&self.busy);
        let result = self.attempt(binary, timeout).await;
        if let Err(why) = &result {
            warn!(reason = %why, event = "upgrade_rollback", "upgrade failed; still serving");
        }
        result
    }

    async fn attempt(
        &self,
        binary: Option<PathBuf>,
        timeout: Duration,
    ) -> Result<Upgraded, String> {
        let binary = binary.unwrap_or_else(|| self.exe.clone());
        let deadline = Instant::now() + timeout;
        info!(binary = %binary.display(), event = "upgrade_start", "upgrade: starting the new binary");
        let (channel, child) = self.spawn(&binary)?;
        let mut child = Started {
            child,
            pinned: None,
        };
        let channel = Arc::new(channel);
        let hello = {
            let channel = channel.clone();
            blocking(move || channel.recv(deadline)).await
        };
        let hello: Hello = match hello {
            Ok((Tag::Hello, payload, _)) => serde_json::from_slice(&payload)
                .map_err(|e| format!("the new process said something unexpected: {e}"))?,
            Ok((Tag::Refused, why, _)) => {
                return Err(child.gone(format!("the new process refused: {}", text(&why))));
            }
            Ok((tag, _, _)) => {
                return Err(child.gone(format!("unexpected {tag:?} from the new process")));
            }
            Err(e) => return Err(child.failed(&e, timeout)),
        };
        child.pin(hello.pid, &channel);
        if !hello.reads.contains(&snapshot::VERSION) {
            let _ = channel.send(Tag::Abort, &[], &[]);
            return Err(child.gone(format!(
                "{} {} reads snapshot versions {:?}, not {} (this release's)",
                binary.display(),
                hello.version,
                hello.reads,
                snapshot::VERSION
            )));
        }
        let tls_listeners = &self.tls[..];
        // Found out before TLS clients are told to reconnect, not when the snapshot is refused.
        let needs_tls = match (tls_listeners.is_empty(), self.https.is_empty()) {
            (true, true) => None,
            (false, true) => Some("TLS"),
            (true, false) => Some("HTTPS"),
            (false, false) => Some("TLS and HTTPS"),
        };
        if let Some(which) = needs_tls.filter(|_| !hello.tls) {
            let _ = channel.send(Tag::Abort, &[], &[]);
            return Err(child.gone(format!(
                "{} {} cannot take over the {which} listeners: its configuration names no \
                 tls_cert_file and tls_key_file (or it predates TLS)",
                binary.display(),
                hello.version
            )));
        }
        let accept_loops = self.listeners.len() + tls_listeners.len();
        if !self.gate.close_and_settle(accept_loops, FREEZE_LIMIT).await {
            self.gate.set(true);
            let _ = channel.send(Tag::Abort, &[], &[]);
            return Err(child.gone("the accept loops did not pause".into()));
        }
        // WebSocket relays over plain HTTP stop where they are and give up their state; one
        // that cannot (a fragmented message in progress) is told to reconnect, as are TLS and
        // wss:// clients, which cannot move at all. All of those are gone before the freeze.
        // Until the commit, dropping `relays` lets the frozen ones go on.
        let relays = self.ws.freeze(FREEZE_LIMIT).await;
        for &id in &relays.cannot {
            self.hub.close(
                id,
                crate::client::LeaveReason::Upgrading,
                Some(crate::protocol::format::notice(RECONNECT)),
            );
        }
        part_relayed(&self.hub, &self.relays, relays.cannot.len(), FREEZE_LIMIT).await;
        // From here on nothing is read or written until commit or rollback.
        let paused_at_ns = monotonic_ns();
        let paused = Instant::now();
        let mut frozen = match self.hub.freeze(FREEZE_LIMIT).await {
            Ok(frozen) => frozen,
            Err(why) => {
                self.gate.set(true);
                let _ = channel.send(Tag::Abort, &[], &[]);
                return Err(child.gone(why));
            }
        };
        // Until the commit, however this ends (a failure, or the daemon stopping and dropping this
        // future), the child is ended first and then every session resumes.
        let mut handover = Handover {
            upgrader: self,
            child,
            frozen: None,
            relays: Some(relays),
        };
        // The rooms stop where the stream stops being applied, with everything they queued
        // published: the new process continues right after.
        let cluster = match self.cluster.get() {
            Some(c) => {
                if !c.quiesce(FREEZE_LIMIT).await {
                    let _ = channel.send(Tag::Abort, &[], &[]);
                    let why = handover.child.gone(
                        "the cluster link did not publish what the rooms queued in time".into(),
                    );
                    // Dropping the hand-over thaws every session (and the link).
                    handover.frozen = Some(frozen);
                    return Err(why);
                }
                Some(c.resume_state())
            }
            None => None,
        };
        let upgrades = self.hub.counters.upgrades.load(Ordering::Relaxed);
        let given = handover.relays.as_ref().map(|r| &r.given);
        let (mut room, client_fds) = self.hub.export(
            &mut frozen,
            upgrades + 1,
            given.unwrap_or(&Default::default()),
        );
        let version = test_version().unwrap_or(snapshot::VERSION);
        if version == 1 {
            room = room.without_chat_rooms();
        }
        handover.frozen = Some(frozen);
        let clients = room.clients.len();
        let mut fds: Vec<RawFd> = self.listeners.clone();
        fds.extend_from_slice(tls_listeners);
        fds.extend(self.admin.map(|(fd, _)| fd));
        fds.extend(&self.http);
        fds.extend(&self.https);
        fds.extend(client_fds);
        let snap = Snapshot {
            version,
            from: Origin {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            paused_at_ns,
            listeners: self.listeners.len(),
            tls_listeners: tls_listeners.len(),
            admin: self.admin.is_some(),
            http_listeners: Some(self.http.len()),
            https_listeners: self.https.len(),
            admin_owned: self.admin.is_some_and(|(_, owned)| owned),
            room,
            cluster,
        };
        let outcome = {
            let channel = channel.clone();
            blocking(move || send_and_wait(&channel, &fds, &snap.encode(), deadline)).await
        };
        match outcome {
            Ok(()) => {
                crate::systemd::notify_main_pid(hello.pid);
                if let Err(e) = channel.send(Tag::Commit, &[], &[]) {
                    // It said it was ready, so it holds everything; if it is gone now, the
                    // service manager sees the main process die and restarts the service.
                    warn!(error = %e, "upgrade: could not send the commit");
                }
                handover.frozen = None;
                if let Some(relays) = handover.relays.take() {
                    relays.commit();
                }
                handover.child.release();
                info!(
                    new_pid = hello.pid,
                    new_version = %hello.version,
                    clients,
                    handover_ms = paused.elapsed().as_millis() as u64,
                    "upgrade: handed over; exiting"
                );
                Ok(Upgraded {
                    pid: hello.pid,
                    version: hello.version,
                    clients,
                })
            }
            Err(why) => {
                let _ = channel.send(Tag::Abort, &[], &[]);
                let why = handover.child.gone(why);
                drop(handover);
                Err(why)
            }
        }
    }

    /// Lets every frozen session run again and reopens the gate (a rollback).
    fn resume(&self, frozen: Frozen) {
        if let Some(c) = self.cluster.get() {
            c.resume_applying();
        }
        for r in self.hub.thaw(frozen) {
            self.tracker.spawn(crate::ws::resume_session(
                self.hub.clone(),
                r,
                self.ws.clone(),
            ));
        }
        self.gate.set(true);
    }

    /// Starts the new process: our child, or under systemd the service manager's (see
    /// [`crate::systemd::spawn_for_service_manager`]), then None.
    fn spawn(&self, binary: &std::path::Path) -> Result<(Channel, Option<Child>), String> {
        let (ours, theirs) =
            Channel::pair().map_err(|e| format!("cannot make the upgrade link: {e}"))?;
        let mut command = Command::new(binary);
        command
            .args(&self.args)
            .env(channel::ENV, theirs.as_raw_fd().to_string())
            // The sockets come over the link now, not from systemd.
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES")
            // systemd named this process as the one to ping the watchdog; the new process is to
            // ping it from now on, so it must not find another PID there.
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null());
        let child = if crate::systemd::notifying() {
            crate::systemd::spawn_for_service_manager(&mut command).map(|()| None)
        } else {
            command.spawn().map(Some)
        }
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        drop::<OwnedFd>(theirs);
        Ok((ours, child))
    }
}

/// For an upgrade, which cannot hand a TLS session to another process (rustls cannot export one
/// and this kernel has no kTLS): tells every TLS client (line and `wss://`)
/// `*** server upgrading; please reconnect` and closes it, then waits at most `limit` for the
/// `relays` to deliver that and close, and for those of the `told` WebSocket clients whose relay
/// could not move (told already). Returns how many were told in all. Called with the accept loops
/// parked and the HTTP gate closed, so nobody is admitted meanwhile.
async fn part_relayed(hub: &Hub, relays: &[TaskTracker], told: usize, limit: Duration) -> usize {
    let told = told + hub.close_unmovable(crate::protocol::format::notice(RECONNECT));
    for relays in relays {
        relays.close();
    }
    let deadline = tokio::time::Instant::now() + limit;
    let mut finished = true;
    for relays in relays {
        finished &= tokio::time::timeout_at(deadline, relays.wait())
            .await
            .is_ok();
    }
    for relays in relays {
        relays.reopen();
    }
    if finished {
        info!(
            clients = told,
            event = "upgrade_relayed",
            "upgrade: TLS and WebSocket clients told to reconnect"
        );
    } else {
        let still_open: usize = relays.iter().map(TaskTracker::len).sum();
        warn!(
            clients = told,
            still_open,
            event = "upgrade_relayed",
            "upgrade: TLS and WebSocket clients told to reconnect; some did not close in time and are cut off"
        );
    }
    told
}

/// A hand-over under way, from the freeze to the commit.
struct Handover<'a> {
    upgrader: &'a Upgrader,
    child: Started,
    /// Taken at the commit; otherwise the sessions resume when this is dropped.
    frozen: Option<Frozen>,
    /// The frozen WebSocket relays: committed with the rest, or thawed when dropped.
    relays: Option<crate::ws::handover::Frozen>,
}

impl Drop for Handover<'_> {
    fn drop(&mut self) {
        if let Some(frozen) = self.frozen.take() {
            // The child first: after the link closes it would serve the sockets itself.
            self.child.gone(String::new());
            self.upgrader.resume(frozen);
        }
    }
}

/// The child until the upgrade is decided: killed and reaped if it fails.
struct Started {
    child: Option<Child>,
    /// A new process that is not our child (under systemd), once it said hello: killed through a
    /// pidfd. Before its hello it cannot be signalled; it exits when it finds the link closed.
    pinned: Option<crate::systemd::Pinned>,
}

impl Started {
    /// Pins a new process that is not our child, by the PID it said hello with. It is alive
    /// while its end of the link is open (nothing else holds that end), so the PID is still its
    /// own if the link is open after the pidfd was taken.
    fn pin(&mut self, pid: u32, channel: &Channel) {
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
    fn gone(&mut self, why: String) -> String {
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
    fn failed(&mut self, e: &std::io::Error, timeout: Duration) -> String {
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
    fn release(&mut self) {
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
fn send_and_wait(
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

fn text(bytes: &[u8]) -> String {
    crate::protocol::sanitise_str(&String::from_utf8_lossy(bytes))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("upgrade link thread does not panic")
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

pub use takeover::{Takeover, refuse_if_upgrading};
pub(crate) mod takeover;
