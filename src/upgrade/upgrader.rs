//! The old side of an upgrade: the [`Upgrader`] starts the new binary, pauses accepting, parts
//! the clients that cannot move, freezes the sessions, sends everything and commits, or rolls all
//! of it back. The steps are one long function on purpose: each failure must undo exactly what
//! came before it, in order. Kept apart from the types the rest of the daemon shares (`mod.rs`)
//! and from the child's bookkeeping (`child`), which this drives.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::channel::{self, Channel, Tag};
use super::child::{Started, blocking, send_and_wait, text};
use super::snapshot::{self, Origin, Snapshot};
use super::{
    AcceptGate, Hello, Invocation, RECONNECT, Sockets, Upgraded, monotonic_ns, test_version,
};
use crate::hub::Hub;
use crate::hub::handover::Frozen;

/// How long sessions get to stop between reads. They stop at their next turn, so this is only
/// reached by a runtime that is not running tasks at all.
const FREEZE_LIMIT: Duration = Duration::from_secs(2);

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
        let mut child = Started::new(child);
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
