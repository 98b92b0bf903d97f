//! The admin control socket: a Unix stream socket at a filesystem path that `chatctl` talks to.
//!
//! Safety rules: the socket is only made in a directory no one but root or the daemon can change
//! ([`trust`]); a stale socket left by a crash is replaced, but a path that is not a socket, or a
//! socket another live daemon answers on, is refused (no second daemon silently steals it). The file
//! gets a configured mode and group and is removed on clean exit ([`AdminSocket`]). Every
//! connection's SO_PEERCRED is checked (root, the daemon's own uid, or a member of `admin_group`)
//! before it may take one of the few admission slots; refusals and every mutating command are logged
//! with the caller's uid and pid. Requests are size-capped; a connection is closed when it sends no
//! complete request for the idle timeout or does not read a reply within the write timeout, and the
//! longest-idle one makes way when all slots are taken. A garbage request gets an error reply, never
//! a crash.

pub mod client;
pub mod path;
pub mod proto;
mod report;
mod rooms;
mod slots;
mod socket;
pub mod trust;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nix::unistd::{Gid, Group, Uid, User};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, field, info, warn};

use crate::hub::Hub;
use crate::protocol::sanitise_str;
use crate::reload::ReloadOutcome;
use crate::upgrade::{AcceptGate, Upgrader};
use rooms::Outcome;
use slots::{Slot, Slots};
pub use socket::{AdminError, AdminSocket, SocketFile, group_id};

/// How the admin socket asks for a reload (blocking; provided by the app, which owns reloading).
pub type ReloadFn = Arc<dyn Fn() -> Result<ReloadOutcome, String> + Send + Sync>;
use proto::{
    Command, ErrorCode, KickReply, ListReply, MAX_REQUEST_BYTES, NodesReply, ReloadReply, Response,
    UpgradeReply,
};
use report::{list, stats};

/// What admin requests act on.
pub struct AdminCtx {
    /// The clients and rooms.
    pub hub: Arc<Hub>,
    /// Chat listen addresses, for `stats`.
    pub listen: Vec<SocketAddr>,
    /// TLS chat listen addresses, for `stats`.
    pub tls_listen: Vec<SocketAddr>,
    /// For `reload`; None where the daemon has no reloadable configuration.
    pub reload: Option<ReloadFn>,
    /// For `upgrade`; None where the daemon cannot start a successor (in-process tests).
    pub upgrade: Option<Arc<Upgrader>>,
    /// The cluster link, when rooms are shared with other nodes.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// The admin socket's limits. Tests shorten the timeouts; the daemon uses [`AdminLimits::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    /// Allowed connections served at once; a new one closes the longest-idle one when all are taken.
    pub max_connections: usize,
    /// A connection with no complete request for this long is closed (blank lines and partial
    /// requests do not count).
    pub idle_timeout: Duration,
    /// A reply that cannot be written within this long closes the connection (a caller that sends
    /// requests and never reads).
    pub write_timeout: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            max_connections: 8,
            idle_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(5),
        }
    }
}

/// How long a refused caller gets to send its request, so that it reads the refusal as a reply.
const REFUSAL_READ: Duration = Duration::from_secs(1);

/// Serves admin connections until `stop` is cancelled; the socket file is removed when this returns.
pub async fn serve(
    socket: AdminSocket,
    ctx: Arc<AdminCtx>,
    limits: AdminLimits,
    gate: AcceptGate,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let slots = Slots::new(limits.max_connections);
    // Refusals are answered by their own few tasks, so strangers never hold an admission slot and
    // cannot pile up work either: beyond this many at once they are closed without a reply.
    let refusals = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut next_id: u64 = 0;
    loop {
        // Closed while an upgrade hands the socket over: callers wait for the next process.
        if !gate.is_open() {
            tokio::select! {
                () = stop.cancelled() => break,
                () = gate.opened() => {}
            }
        }
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            () = gate.closed() => continue,
            accepted = socket.listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        next_id = next_id.wrapping_add(1);
        let (id, ctx, stop) = (next_id, ctx.clone(), stop.clone());
        let (slots, refusals, gate) = (slots.clone(), refusals.clone(), gate.clone());
        tracker.spawn(async move {
            let mut stream = stream;
            let Some((uid, pid)) = credentials(&stream, &ctx).await else {
                let Ok(_refusing) = refusals.try_acquire_owned() else {
                    // Too many refusals at once: reply without waiting for the request.
                    let _ = stream.try_write(refusal(&stream).as_bytes());
                    return;
                };
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = refuse(&mut stream) => {}
                }
                return;
            };
            let slot = slots.admit(id, uid, pid);
            tokio::select! {
                () = stop.cancelled() => {}
                () = slot.evicted() => {}
                () = handle(&mut stream, &ctx, &limits, &gate, &slot, uid, pid) => {}
            }
        });
    }
    drop(socket);
}

/// The caller's uid and pid if it may use the admin socket: root, the daemon's own uid, or a member
/// of `admin_group`. Refusals are logged here.
async fn credentials(stream: &UnixStream, ctx: &AdminCtx) -> Option<(u32, i32)> {
    let cred = stream.peer_cred().ok()?;
    let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid().unwrap_or(0));
    let allowed = uid == 0
        || uid == Uid::effective().as_raw()
        || match ctx.hub.config().admin_group.clone() {
            // Group lookups read /etc/group (or NSS): keep them off the async workers.
            Some(name) => tokio::task::spawn_blocking(move || in_group(uid, gid, &name))
                .await
                .unwrap_or(false),
            None => false,
        };
    if !allowed {
        warn!(
            uid,
            pid,
            event = "admin_refused",
            "admin connection refused: caller not allowed"
        );
        return None;
    }
    Some((uid, pid))
}

/// Tells a refused caller why. Its request is read first (bounded in size and time), so that it gets
/// the refusal as a reply instead of a reset caused by a request still in flight.
async fn refuse(stream: &mut UnixStream) {
    let reply = refusal(stream);
    let (read, mut write) = stream.split();
    let mut line = Vec::new();
    let mut first = BufReader::new(read).take(MAX_REQUEST_BYTES as u64 + 1);
    let _ = tokio::time::timeout(REFUSAL_READ, first.read_until(b'\n', &mut line)).await;
    let _ = tokio::time::timeout(REFUSAL_READ, write.write_all(reply.as_bytes())).await;
}

/// The reply a caller that may not use the admin socket gets.
fn refusal(stream: &UnixStream) -> String {
    let uid = stream.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
    Response::error(
        ErrorCode::PermissionDenied,
        format!("uid {uid} may not use the admin socket"),
    )
    .encode()
}

/// One admitted connection: answer requests until EOF, error, idle timeout or a reply that cannot
/// be written in time. The idle deadline moves only when a complete, non-blank request arrives.
async fn handle(
    stream: &mut UnixStream,
    ctx: &AdminCtx,
    limits: &AdminLimits,
    gate: &AcceptGate,
    slot: &Slot,
    uid: u32,
    pid: i32,
) {
    let (read, mut write) = stream.split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    let limit = MAX_REQUEST_BYTES as u64 + 1;
    let mut deadline = Instant::now() + limits.idle_timeout;
    loop {
        // Set once an upgrade succeeded: answer, then leave (everything is the new process's).
        let mut handed_over = false;
        line.clear();
        let got = tokio::time::timeout_at(
            deadline,
            (&mut reader).take(limit).read_until(b'\n', &mut line),
        )
        .await;
        let reply = match got {
            Err(_) => {
                debug!(
                    uid,
                    pid,
                    event = "admin_idle",
                    "admin connection idle; closed"
                );
                return;
            }
            Ok(Err(_)) | Ok(Ok(0)) => return,
            // `take` stops at MAX + 1 bytes, so a longer line shows up as exactly that many.
            Ok(Ok(_)) if line.len() > MAX_REQUEST_BYTES => Response::error(
                ErrorCode::TooLarge,
                format!("request longer than {MAX_REQUEST_BYTES} bytes"),
            ),
            // Blank lines are not requests: they neither get a reply nor keep the connection.
            Ok(Ok(_)) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Ok(_)) => {
                slot.touch();
                match proto::decode_request(&line) {
                    Ok(cmd) => {
                        // An upgrade is handing the room over: a request on a connection
                        // accepted before it waits for the outcome. If the new process serves,
                        // this one exits without acting on it (the caller gets no reply, not an
                        // "ok" for a kick or announcement that the new process never saw).
                        gate.opened().await;
                        if caller_gone(reader.get_ref().as_ref()) {
                            // It waited in the backlog (an upgrade) or behind a slow request
                            // and gave up: it was told it failed, so nothing is done.
                            debug!(uid, pid, "admin caller gone before its request ran");
                            return;
                        }
                        let reply = execute(ctx, &cmd, uid, pid).await;
                        handed_over = reply.ok && matches!(cmd, Command::Upgrade { .. });
                        reply
                    }
                    Err(reply) => {
                        debug!(uid, pid, "bad admin request");
                        reply
                    }
                }
            }
        };
        let too_large = reply
            .error
            .as_ref()
            .is_some_and(|e| e.code == ErrorCode::TooLarge);
        let written = tokio::time::timeout(
            limits.write_timeout,
            write.write_all(reply.encode().as_bytes()),
        )
        .await;
        if handed_over {
            crate::upgrade::exit_handed_over();
        }
        match written {
            Ok(Ok(())) if !too_large => {}
            Ok(_) => return,
            Err(_) => {
                warn!(
                    uid,
                    pid,
                    event = "admin_write_timeout",
                    "admin caller does not read its replies; closed"
                );
                return;
            }
        }
        deadline = Instant::now() + limits.idle_timeout;
    }
}

/// True if the caller has closed its end entirely (`POLLHUP`; a caller that only shut down its
/// writing still reads the reply).
fn caller_gone(stream: &UnixStream) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
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

fn not_clustered() -> Response {
    Response::error(
        ErrorCode::BadRequest,
        "this daemon is not in a cluster (no [cluster] in its configuration)",
    )
}

async fn execute(ctx: &AdminCtx, cmd: &Command, uid: u32, pid: i32) -> Response {
    let hub = &ctx.hub;
    match cmd {
        Command::List { room: None } => Response::ok(&ListReply {
            clients: list(hub),
            room: None,
        }),
        Command::List { room: Some(room) } => reply(rooms::list_room(hub, list(hub), room)),
        Command::Stats => Response::ok(&stats(ctx)),
        Command::Nodes => match &ctx.cluster {
            Some(c) => Response::ok(&NodesReply { nodes: c.nodes() }),
            None => not_clustered(),
        },
        Command::ListCluster => match &ctx.cluster {
            Some(c) => Response::ok(&ListReply {
                clients: report::list_cluster(hub, c).await,
                room: None,
            }),
            None => not_clustered(),
        },
        Command::Rooms => rooms::rooms(hub),
        Command::Announce { text, room } => {
            reply(rooms::announce(hub, text, room.as_deref(), uid, pid))
        }
        Command::Topic { room, text } => reply(rooms::topic(hub, room, text, uid, pid)),
        Command::Move { target, room } => reply(rooms::move_member(hub, target, room, uid, pid)),
        Command::Kick { target, reason } => {
            let reason = reason
                .as_deref()
                .map(sanitise_str)
                .filter(|r| !r.is_empty());
            // For the log only: where the member was (the hub logs its leave there too).
            let room = hub
                .resolve(target.trim())
                .and_then(|id| hub.room_of(id))
                .map(|room| room.name.clone());
            match hub.kick(target.trim(), reason.as_deref()) {
                Some((id, nick)) => {
                    info!(
                        event = "kick",
                        uid,
                        pid,
                        client = id,
                        nick = nick.as_deref().unwrap_or(""),
                        room = room.as_deref().map(field::display),
                        reason = reason.as_deref().unwrap_or(""),
                        "admin kicked a client"
                    );
                    Response::ok(&KickReply {
                        id,
                        nick: nick.map(|n| n.to_string()),
                    })
                }
                None => match &ctx.cluster {
                    // Perhaps a member of another node.
                    Some(c) => match c.kick_remote(target.trim(), reason.as_deref()).await {
                        Some(nick) => {
                            info!(
                                event = "kick", uid, pid, nick = %nick,
                                reason = reason.as_deref().unwrap_or(""),
                                "admin kicked a member of another node"
                            );
                            Response::ok(&KickReply {
                                id: 0,
                                nick: Some(nick),
                            })
                        }
                        None => Response::error(
                            ErrorCode::NotFound,
                            format!("no client with id or nickname '{target}' on any node"),
                        ),
                    },
                    None => Response::error(
                        ErrorCode::NotFound,
                        format!("no client with id or nickname '{target}'"),
                    ),
                },
            }
        }
        Command::Upgrade {
            binary,
            timeout_secs,
        } => {
            let Some(upgrader) = ctx.upgrade.clone() else {
                return Response::error(
                    ErrorCode::UpgradeFailed,
                    "this daemon cannot start a successor",
                );
            };
            // Choosing the program the daemon runs is running code as the daemon's user: only
            // root and that user may. Members of admin_group upgrade to the installed binary.
            if binary.is_some() && uid != 0 && uid != Uid::effective().as_raw() {
                return Response::error(
                    ErrorCode::PermissionDenied,
                    "only root or the daemon's own user may choose the binary (--binary)",
                );
            }
            if let Some(path) = binary
                && !std::path::Path::new(path).is_absolute()
            {
                return Response::error(
                    ErrorCode::BadRequest,
                    format!("the binary must be an absolute path (got '{path}')"),
                );
            }
            let timeout = match timeout_secs {
                None => crate::upgrade::DEFAULT_TIMEOUT,
                Some(s) if s.is_finite() && *s > 0.0 && *s <= 3600.0 => Duration::from_secs_f64(*s),
                Some(s) => {
                    return Response::error(
                        ErrorCode::BadRequest,
                        format!("timeout must be above 0 and at most 3600 s (got {s})"),
                    );
                }
            };
            info!(
                event = "upgrade_requested",
                uid, pid, "admin requested an upgrade"
            );
            match upgrader
                .upgrade(binary.as_ref().map(std::path::PathBuf::from), timeout)
                .await
            {
                Ok(done) => Response::ok(&UpgradeReply {
                    pid: done.pid,
                    version: done.version,
                    clients: done.clients as u64,
                }),
                Err(why) => Response::error(ErrorCode::UpgradeFailed, why),
            }
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

/// The reply, whether the command went through or was refused.
fn reply(outcome: Outcome) -> Response {
    outcome.unwrap_or_else(|refusal| refusal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::upgrade::{AcceptGate, Invocation};

    #[tokio::test]
    async fn only_root_or_the_daemon_user_may_choose_the_binary() {
        let hub = Arc::new(Hub::new(Config::default()));
        let upgrader = Upgrader::new(
            hub.clone(),
            Invocation::current(),
            crate::upgrade::Sockets {
                listeners: Vec::new(),
                tls: Vec::new(),
                http: Vec::new(),
                https: Vec::new(),
                admin: None,
            },
            (Vec::new(), Default::default()),
            AcceptGate::default(),
            TaskTracker::new(),
        );
        let ctx = AdminCtx {
            hub,
            listen: Vec::new(),
            tls_listen: Vec::new(),
            reload: None,
            upgrade: Some(Arc::new(upgrader)),
            cluster: None,
        };
        let cmd = |binary: &str| Command::Upgrade {
            binary: Some(binary.into()),
            timeout_secs: Some(1.0),
        };
        // An admin-group member (any other uid) would make the daemon run a program of its choice.
        let stranger = Uid::effective().as_raw().wrapping_add(4242).max(1);
        let reply = execute(&ctx, &cmd("/bin/true"), stranger, 1).await;
        let error = reply.error.expect("refused");
        assert_eq!(error.code, ErrorCode::PermissionDenied, "{}", error.message);
        // The daemon's own user may, but only with an absolute path (the daemon's working
        // directory is not the caller's).
        let me = Uid::effective().as_raw();
        let reply = execute(&ctx, &cmd("groupchatd"), me, 1).await;
        assert_eq!(reply.error.expect("refused").code, ErrorCode::BadRequest);
        // A missing binary is the upgrade's own failure: rolled back, nothing touched.
        let reply = execute(&ctx, &cmd("/nonexistent/groupchatd"), me, 1).await;
        let error = reply.error.expect("failed");
        assert_eq!(error.code, ErrorCode::UpgradeFailed);
        assert!(error.message.contains("cannot start"), "{}", error.message);
    }
}
