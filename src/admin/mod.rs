//! The admin control socket: a Unix stream socket at a filesystem path that `chatctl` talks to.
//!
//! Safety rules: a stale socket left by a crash is replaced, but a path that is not a socket, or a
//! socket another live daemon answers on, is refused (no second daemon silently steals it). The file
//! gets a configured mode and group and is removed on clean exit. Every connection's SO_PEERCRED is
//! checked (root, the daemon's own uid, or a member of `admin_group`); refusals and every mutating
//! command are logged with the caller's uid and pid. Requests are size-capped, connections time out
//! when idle, and only a few are served at once: a garbage request gets an error reply, never a crash.

pub mod client;
pub mod path;
pub mod proto;

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::unistd::{Gid, Group, Uid, User};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::hub::Hub;
use crate::protocol::sanitise_str;
use crate::reload::ReloadOutcome;

/// How the admin socket asks for a reload (blocking; provided by the app, which owns reloading).
pub type ReloadFn = Arc<dyn Fn() -> Result<ReloadOutcome, String> + Send + Sync>;
use proto::{
    AnnounceReply, ClientEntry, Command, ErrorCode, KickReply, ListReply, MAX_REQUEST_BYTES,
    ReloadReply, Response, StatsReply,
};

/// Admin connections served at once; more are told `busy` and closed.
const MAX_CONNECTIONS: usize = 8;
/// A connection that sends no complete request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the admin socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The parent directory could not be created or is unsafe.
    #[error("admin socket directory {0}: {1}")]
    Directory(PathBuf, String),
    /// Something other than a socket is at the path.
    #[error(
        "{0} exists and is not a socket; refusing to replace it (remove it or choose another admin_socket)"
    )]
    NotASocket(PathBuf),
    /// A live daemon answers on the path.
    #[error(
        "another groupchatd is already serving {0}; stop it first or choose another admin_socket"
    )]
    InUse(PathBuf),
    /// `admin_group` names no group.
    #[error("admin group '{0}' does not exist")]
    NoSuchGroup(String),
    /// Binding or setting ownership/mode failed.
    #[error("admin socket {0}: {1}")]
    Io(PathBuf, io::Error),
}

/// A bound admin socket whose file is removed when dropped (if it is still ours).
#[derive(Debug)]
pub struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Inode of our socket file, so we never remove a file another process put there since.
    inode: Option<u64>,
}

impl AdminSocket {
    /// Binds at `path` with `mode` and optional `group`, replacing only a stale socket.
    pub fn bind(path: &Path, mode: u32, group: Option<&str>) -> Result<AdminSocket, AdminError> {
        prepare_directory(path)?;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(AdminError::NotASocket(path.to_path_buf()));
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(AdminError::InUse(path.to_path_buf())),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path)
                        .map_err(|e| AdminError::Io(path.to_path_buf(), e))?;
                    info!(path = %path.display(), "removed stale admin socket");
                }
                Err(e) => return Err(AdminError::Io(path.to_path_buf(), e)),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(AdminError::Io(path.to_path_buf(), e)),
        }
        let listener =
            UnixListener::bind(path).map_err(|e| AdminError::Io(path.to_path_buf(), e))?;
        let socket = AdminSocket {
            listener,
            path: path.to_path_buf(),
            inode: std::fs::metadata(path).ok().map(|m| m.ino()),
        };
        // Connections racing this chmod are still subject to the SO_PEERCRED check.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| AdminError::Io(path.to_path_buf(), e))?;
        set_group(path, group)?;
        Ok(socket)
    }

    /// Adopts an inherited listener (socket activation); its file belongs to systemd, not us.
    pub fn from_listener(listener: UnixListener) -> AdminSocket {
        let path = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_path_buf))
            .unwrap_or_default();
        AdminSocket {
            listener,
            path,
            inode: None,
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let ours = self.inode.is_some()
            && std::fs::symlink_metadata(&self.path).ok().map(|m| m.ino()) == self.inode;
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Creates a missing parent directory (0750). A directory under the shared temp dir must be ours and
/// not writable by others, or anyone could plant a socket there.
fn prepare_directory(path: &Path) -> Result<(), AdminError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let fail = |why: String| AdminError::Directory(dir.to_path_buf(), why);
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(|e| fail(e.to_string()))?;
    }
    if dir.starts_with(std::env::temp_dir()) && dir != std::env::temp_dir() {
        let meta = std::fs::symlink_metadata(dir).map_err(|e| fail(e.to_string()))?;
        if !meta.is_dir() || meta.uid() != Uid::effective().as_raw() || meta.mode() & 0o022 != 0 {
            return Err(fail(
                "must be a directory owned by this user and writable only by it".into(),
            ));
        }
    }
    Ok(())
}

/// Gives the socket file to `group` (or leaves its group alone when None).
pub fn set_group(path: &Path, group: Option<&str>) -> Result<(), AdminError> {
    let Some(name) = group else { return Ok(()) };
    let gid = Group::from_name(name)
        .ok()
        .flatten()
        .ok_or_else(|| AdminError::NoSuchGroup(name.to_owned()))?
        .gid;
    nix::unistd::chown(path, None, Some(gid))
        .map_err(|e| AdminError::Io(path.to_path_buf(), e.into()))
}

/// What admin requests act on.
pub struct AdminCtx {
    /// The room.
    pub hub: Arc<Hub>,
    /// Chat listen addresses, for `stats`.
    pub listen: Vec<SocketAddr>,
    /// For `reload`; None where the daemon has no reloadable configuration.
    pub reload: Option<ReloadFn>,
}

/// Serves admin connections until `stop` is cancelled; the socket file is removed when this returns.
pub async fn serve(
    socket: AdminSocket,
    ctx: Arc<AdminCtx>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = socket.listener.accept() => accepted,
        };
        let mut stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let busy = Response::error(ErrorCode::Busy, "too many admin connections; try again");
            let _ = stream.try_write(busy.encode().as_bytes());
            continue;
        };
        let ctx = ctx.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let _slot = slot;
            tokio::select! {
                () = stop.cancelled() => {}
                () = handle(&mut stream, &ctx) => {}
            }
        });
    }
}

/// One admin connection: check the caller, then answer requests until EOF, idle timeout or error.
async fn handle(stream: &mut UnixStream, ctx: &AdminCtx) {
    let Ok(cred) = stream.peer_cred() else { return };
    let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid().unwrap_or(0));
    let group = ctx.hub.config().admin_group.clone();
    let allowed = uid == 0
        || uid == Uid::effective().as_raw()
        || match group {
            // Group lookups read /etc/group (or NSS): keep them off the async workers.
            Some(name) => tokio::task::spawn_blocking(move || in_group(uid, gid, &name))
                .await
                .unwrap_or(false),
            None => false,
        };
    let (read, mut write) = stream.split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    let limit = MAX_REQUEST_BYTES as u64 + 1;
    if !allowed {
        warn!(
            uid,
            pid,
            event = "admin_refused",
            "admin connection refused: caller not allowed"
        );
        // Read (bounded) the request first, so the caller gets the refusal as a reply instead of a
        // broken pipe or a reset caused by a request still in flight.
        let mut first = (&mut reader).take(limit);
        let _ =
            tokio::time::timeout(Duration::from_secs(1), first.read_until(b'\n', &mut line)).await;
        let reply = Response::error(
            ErrorCode::PermissionDenied,
            format!("uid {uid} may not use the admin socket"),
        );
        let _ = write.write_all(reply.encode().as_bytes()).await;
        return;
    }
    loop {
        line.clear();
        let got = tokio::time::timeout(
            IDLE_TIMEOUT,
            (&mut reader).take(limit).read_until(b'\n', &mut line),
        )
        .await;
        let reply = match got {
            Err(_) | Ok(Err(_)) | Ok(Ok(0)) => return,
            // `take` stops at MAX + 1 bytes, so a longer line shows up as exactly that many.
            Ok(Ok(_)) if line.len() > MAX_REQUEST_BYTES => {
                let r = Response::error(
                    ErrorCode::TooLarge,
                    format!("request longer than {MAX_REQUEST_BYTES} bytes"),
                );
                let _ = write.write_all(r.encode().as_bytes()).await;
                return;
            }
            Ok(Ok(_)) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Ok(_)) => match proto::decode_request(&line) {
                Ok(cmd) => execute(ctx, &cmd, uid, pid).await,
                Err(reply) => {
                    debug!(uid, pid, "bad admin request");
                    reply
                }
            },
        };
        if write.write_all(reply.encode().as_bytes()).await.is_err() {
            return;
        }
    }
}

/// True if the caller belongs to the admin group, as its effective gid, its user's primary group,
/// or a listed member.
fn in_group(uid: u32, gid: u32, name: &str) -> bool {
    let Ok(Some(group)) = Group::from_name(name) else {
        return false;
    };
    if group.gid == Gid::from_raw(gid) {
        return true;
    }
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return false;
    };
    user.gid == group.gid || group.mem.contains(&user.name)
}

async fn execute(ctx: &AdminCtx, cmd: &Command, uid: u32, pid: i32) -> Response {
    let hub = &ctx.hub;
    match cmd {
        Command::List => Response::ok(&ListReply { clients: list(hub) }),
        Command::Stats => Response::ok(&stats(ctx)),
        Command::Kick { target, reason } => {
            let reason = reason
                .as_deref()
                .map(sanitise_str)
                .filter(|r| !r.is_empty());
            match hub.kick(target.trim(), reason.as_deref()) {
                Some((id, nick)) => {
                    info!(
                        event = "kick",
                        uid,
                        pid,
                        client = id,
                        nick = nick.as_deref().unwrap_or(""),
                        reason = reason.as_deref().unwrap_or(""),
                        "admin kicked a client"
                    );
                    Response::ok(&KickReply {
                        id,
                        nick: nick.map(|n| n.to_string()),
                    })
                }
                None => Response::error(
                    ErrorCode::NotFound,
                    format!("no client with id or nickname '{target}'"),
                ),
            }
        }
        Command::Announce { text } => {
            let text = sanitise_str(text);
            if text.is_empty() {
                return Response::error(ErrorCode::BadRequest, "the announcement is empty");
            }
            let reached = hub.announce(&text) as u64;
            info!(event = "announce", uid, pid, reached, text = %text, "admin announcement");
            Response::ok(&AnnounceReply { reached })
        }
        Command::Reload => {
            let Some(reload) = ctx.reload.clone() else {
                return Response::error(
                    ErrorCode::ReloadFailed,
                    "this daemon has no reloadable configuration",
                );
            };
            info!(
                event = "reload_requested",
                uid, pid, "admin requested a reload"
            );
            // Reading the file is blocking IO.
            match tokio::task::spawn_blocking(move || reload()).await {
                Ok(Ok(outcome)) => Response::ok(&ReloadReply {
                    config: outcome.config.map(|p| p.display().to_string()),
                    ignored_until_restart: outcome.ignored.iter().map(|k| k.to_string()).collect(),
                }),
                Ok(Err(e)) => Response::error(ErrorCode::ReloadFailed, e),
                Err(e) => Response::error(ErrorCode::ReloadFailed, e.to_string()),
            }
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn list(hub: &Hub) -> Vec<ClientEntry> {
    use std::sync::atomic::Ordering::Relaxed;
    hub.list()
        .into_iter()
        .map(|info| {
            let c = &info.client;
            ClientEntry {
                id: c.id,
                nick: info.nick.map(|n| n.to_string()),
                peer: c.peer.to_string(),
                connected_at: rfc3339(c.connected_at),
                connected_secs: c.connected.elapsed().as_secs_f64(),
                idle_secs: c.idle_for().as_secs_f64(),
                lines_in: c.stats.lines_in.load(Relaxed),
                bytes_in: c.stats.bytes_in.load(Relaxed),
                lines_out: c.stats.lines_out.load(Relaxed),
                bytes_out: c.stats.bytes_out.load(Relaxed),
                queued_bytes: info.unsent,
            }
        })
        .collect()
}

fn stats(ctx: &AdminCtx) -> StatsReply {
    use std::sync::atomic::Ordering::Relaxed;
    let hub = &ctx.hub;
    let (clients, members, peak) = hub.counts();
    let n = &hub.counters;
    StatsReply {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: rfc3339(hub.started_at),
        uptime_secs: hub.started.elapsed().as_secs_f64(),
        listen: ctx.listen.iter().map(ToString::to_string).collect(),
        clients: clients as u64,
        members: members as u64,
        peak_clients: peak as u64,
        connections_total: n.connections.load(Relaxed),
        lines_relayed: n.lines_relayed.load(Relaxed),
        bytes_relayed: n.bytes_relayed.load(Relaxed),
        kicks: n.kicks.load(Relaxed),
        slow_consumer_drops: n.slow_drops.load(Relaxed),
        throttled_senders: n.throttled.load(Relaxed),
        rejected_connections: n.rejected.load(Relaxed),
        congested_clients: hub.congested_count() as u64,
    }
}
