//! systemd integration: socket activation, readiness and status, and the watchdog.
//!
//! Everything here is inert without systemd: no `$LISTEN_FDS` means bind from the configuration, no
//! `$NOTIFY_SOCKET` means no notifications, no `$WATCHDOG_USEC` means no pings.
//! - Inherited sockets named `chat` become chat listeners and one named `admin` the admin socket (an
//!   unnamed one is placed by its address family). They are made non-blocking before tokio sees them.
//! - `STATUS=` carries live numbers, sent only when they changed and at most about once a second.
//! - `WATCHDOG=1` is sent at half the interval, each time only after taking the hub's lock and reading
//!   its counts: a wedged hub stops the pings and systemd restarts the daemon.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, SockaddrLike, SockaddrStorage, getsockname, getsockopt, sockopt,
};
use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::hub::Hub;

/// Sockets passed by systemd (`LISTEN_FDS`), sorted by role.
#[derive(Debug, Default)]
pub struct Inherited {
    /// TCP listeners for chat clients.
    pub chat: Vec<std::net::TcpListener>,
    /// The admin socket.
    pub admin: Option<std::os::unix::net::UnixListener>,
}

/// Takes the descriptors systemd passed to this process, if any.
pub fn inherited_sockets() -> io::Result<Inherited> {
    let mut out = Inherited::default();
    for (fd, name) in sd_notify::listen_fds_with_names()? {
        let family = getsockname::<SockaddrStorage>(fd)
            .map_err(io::Error::from)?
            .family()
            .ok_or_else(|| {
                io::Error::other(format!("inherited fd {fd} ({name}) has no address family"))
            })?;
        if !getsockopt(&borrow(fd), sockopt::AcceptConn).map_err(io::Error::from)? {
            return Err(io::Error::other(format!(
                "inherited fd {fd} ({name}) is not a listening socket"
            )));
        }
        let is_unix = family == AddressFamily::Unix;
        let role = match name.as_str() {
            "chat" if !is_unix => Role::Chat,
            "admin" if is_unix => Role::Admin,
            "chat" | "admin" => {
                return Err(io::Error::other(format!(
                    "inherited fd {fd} is named '{name}' but its address family is {family:?}"
                )));
            }
            _ if is_unix => Role::Admin,
            _ => Role::Chat,
        };
        match role {
            Role::Chat => {
                // SAFETY: systemd passed us `fd` (LISTEN_PID matched our pid) and we checked above
                // that it is a listening socket; nothing else in this process owns or closes it.
                let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
                listener.set_nonblocking(true)?;
                out.chat.push(listener);
            }
            Role::Admin => {
                if out.admin.is_some() {
                    return Err(io::Error::other("more than one inherited admin socket"));
                }
                // SAFETY: as above; a Unix listening socket owned by nobody else.
                let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
                listener.set_nonblocking(true)?;
                out.admin = Some(listener);
            }
        }
        info!(fd, name = %name, role = ?role, event = "socket_activation", "using a socket passed by systemd");
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Chat,
    Admin,
}

/// A borrowed view of a raw descriptor for `getsockopt`, which wants `AsFd`.
fn borrow(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: `fd` is one of systemd's listen descriptors, open for the whole life of the process
    // (they are adopted into listeners right after this check, never closed before).
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// One-line status for `systemctl status`.
pub fn status_text(hub: &Hub, listen: &str) -> String {
    let (clients, members, _) = hub.counts();
    let lines = hub
        .counters
        .lines_relayed
        .load(std::sync::atomic::Ordering::Relaxed);
    format!("listening on {listen}; {clients} clients ({members} joined); {lines} lines relayed")
}

/// Tells systemd we are ready, with the first status line.
pub fn notify_ready(hub: &Hub, listen: &str) {
    let status = status_text(hub, listen);
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// Passes the service to `pid` (an upgrade's new process): from now on systemd watches that
/// process and takes notifications from it. Sent by the main process, which `NotifyAccess=main`
/// allows.
pub fn notify_main_pid(pid: u32) {
    notify(&[NotifyState::MainPid(pid)]);
}

/// True when a service manager listens for notifications (`$NOTIFY_SOCKET`).
pub fn notifying() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Starts `cmd` as a child of the service manager rather than of this process: the forked
/// process forks again and exits at once, so the program is re-parented to the nearest subreaper
/// (systemd). An upgrade's new process must be systemd's own child when `MAINPID=` names it:
/// systemd 252 supervises a main process that is not its child as "alien" (it logs "Supervising
/// process N which is not our child") and then does not wait for it to exit on stop; in a
/// container on the legacy cgroup hierarchy it sends SIGKILL right after SIGTERM, before the
/// daemon has told its clients. Returns once the program runs (or failed to execute).
pub fn spawn_for_service_manager(cmd: &mut std::process::Command) -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs between fork and exec, so only async-signal-safe calls: fork(2) and _exit(2).
    unsafe {
        cmd.pre_exec(|| match nix::libc::fork() {
            -1 => Err(io::Error::last_os_error()),
            0 => Ok(()),
            _ => nix::libc::_exit(0),
        });
    }
    // spawn() returns when std's exec-status pipe closes: the middle process has exited and the
    // program was executed (or the error it failed with). Reaping the middle process therefore
    // does not wait, and once reaped its child has been re-parented.
    let mut middle = cmd.spawn()?;
    middle.wait()?;
    Ok(())
}

/// A process that is not this one's child, held by a pidfd, so that a signal cannot reach
/// another process that reused its PID.
#[derive(Debug)]
pub struct Pinned(std::os::fd::OwnedFd);

impl Pinned {
    /// Pins `pid`, which the caller knows to be alive.
    pub fn new(pid: u32) -> io::Result<Pinned> {
        // SAFETY: pidfd_open(2) takes two integers and returns a new descriptor or -1.
        let fd =
            unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as nix::libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor pidfd_open just returned, owned by nobody else.
        Ok(Pinned(unsafe {
            std::os::fd::OwnedFd::from_raw_fd(fd as RawFd)
        }))
    }

    /// Sends SIGKILL (nothing happens if it has exited).
    pub fn kill(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_send_signal(2) with our pidfd, a signal number and no siginfo.
        unsafe {
            nix::libc::syscall(
                nix::libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                nix::libc::SIGKILL,
                std::ptr::null::<nix::libc::siginfo_t>(),
                0,
            );
        }
    }
}

/// Tells systemd we are stopping.
pub fn notify_stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// Keeps `STATUS=` current until `stop`: checked once a second, sent only when it changed.
pub async fn status_loop(hub: Arc<Hub>, listen: String, stop: CancellationToken) {
    let mut last = status_text(&hub, &listen);
    let mut changes = hub.subscribe();
    loop {
        // Wake on a membership change (or after a second, for the line counter), but never send
        // more often than about once a second.
        tokio::select! {
            () = stop.cancelled() => return,
            _ = changes.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let text = status_text(&hub, &listen);
        if text != last {
            notify(&[NotifyState::Status(&text)]);
            last = text;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Pings the watchdog at half of `interval` while the hub answers, until `stop`.
pub async fn watchdog_loop(hub: Arc<Hub>, interval: Duration, stop: CancellationToken) {
    let period = (interval / 2).max(Duration::from_millis(10));
    info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog enabled"
    );
    loop {
        // The probe takes the hub's lock: if fan-out is wedged holding it, we block here and the
        // pings stop, which is the point.
        let _ = hub.counts();
        notify(&[NotifyState::Watchdog]);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}

/// The watchdog interval systemd asked for, if any.
pub fn watchdog_interval() -> Option<Duration> {
    let interval = sd_notify::watchdog_enabled()?;
    if interval.is_zero() {
        warn!("WATCHDOG_USEC=0; watchdog disabled");
        return None;
    }
    Some(interval)
}

/// `RELOADING=1` and `MONOTONIC_USEC=` in one datagram, as systemd's notify-reload protocol asks.
pub fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(e) => warn!(error = %e, "cannot read CLOCK_MONOTONIC for MONOTONIC_USEC"),
    }
}

/// Sends states to systemd when `$NOTIFY_SOCKET` is set; a failure is logged, never fatal.
pub fn notify(states: &[NotifyState<'_>]) {
    if !notifying() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify systemd");
    } else {
        debug!(states = ?states, "notified systemd");
    }
}
