//! Start-up checks of the configuration against this machine, run by `groupchatd --check-config` and
//! again by [`App::bind_with`](crate::app::App::bind_with) before anything is bound, so that a
//! configuration that passes the check fails at start only for environmental reasons (a port in use,
//! a full disk), never for one the check could have named.
//!
//! Checked: the admin socket path fits in `sun_path` (108 bytes with the terminating NUL); its
//! directory, or the nearest existing ancestor when it is yet to be created, passes the trust rule of
//! [`admin::trust`] (and we may create the rest there); `admin_group` exists; every `listen`,
//! `tls_listen`, `http_listen` and `https_listen` port below `net.ipv4.ip_unprivileged_port_start`
//! comes with `CAP_NET_BIND_SERVICE` in the effective set; and with `tls_listen` or `https_listen`
//! set, the certificate and key
//! files load and pass every check of [`tls::Identity::load`] (a start-up that passes it serves
//! exactly what was checked: the loaded identity is returned). Sockets systemd passes are not ours
//! to check: an inherited admin socket skips the admin checks and inherited chat listeners skip the
//! port check for `listen` (TLS and HTTP listeners are always bound by the daemon).
//! `--check-config` cannot know what systemd will pass (`ExecStartPre=` gets no descriptors), so it
//! checks as if nothing were inherited.

use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::admin::{self, AdminError, trust};
use crate::config::Config;
use crate::tls;

/// The longest socket path `bind` takes: `sun_path` is 108 bytes including the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;
/// `CAP_NET_BIND_SERVICE`, bit 10 of the capability sets (linux/capability.h).
const CAP_NET_BIND_SERVICE: u32 = 10;

/// Which sockets systemd passed, so their checks are skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inherited {
    /// Chat listeners were passed: `listen` is not bound by us.
    pub chat: bool,
    /// The admin socket was passed: its path is systemd's.
    pub admin: bool,
}

/// A configuration that cannot work on this machine; all are configuration errors (exit 78).
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The admin socket path does not fit in `sun_path`.
    #[error(
        "admin_socket {}: the path is {len} bytes but a Unix socket path can be at most \
         {MAX_SOCKET_PATH} (108 with the terminating NUL); choose a shorter path",
        path.display()
    )]
    SocketPathTooLong {
        /// The resolved path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// The admin socket's directory fails the trust rule.
    #[error("admin_socket {}: refusing an untrusted directory: {why}", path.display())]
    Untrusted {
        /// The resolved socket path.
        path: PathBuf,
        /// Which directory and why.
        why: trust::Untrusted,
    },
    /// The socket's directory is missing and this user cannot create it.
    #[error(
        "admin_socket {}: {} does not exist and uid {uid} cannot create it; create it (owned by \
         this user, not writable by others) or choose another admin_socket",
        path.display(),
        missing.display()
    )]
    CannotCreate {
        /// The resolved socket path.
        path: PathBuf,
        /// The first missing directory.
        missing: PathBuf,
        /// This process's effective uid.
        uid: u32,
    },
    /// `admin_group` names no group.
    #[error("admin_group: group '{0}' does not exist")]
    NoSuchGroup(String),
    /// A privileged port without the capability to bind it.
    #[error(
        "{key} {addr}: port {} is below {start} (net.ipv4.ip_unprivileged_port_start) and this \
         process lacks CAP_NET_BIND_SERVICE; use a port of at least {start}, grant the capability \
         (AmbientCapabilities=CAP_NET_BIND_SERVICE) or let systemd bind it (groupchatd.socket)",
        addr.port()
    )]
    PrivilegedPort {
        /// `listen`, `tls_listen`, `http_listen` or `https_listen`.
        key: &'static str,
        /// The entry.
        addr: SocketAddr,
        /// The first unprivileged port.
        start: u16,
    },
    /// `tls_listen` or `https_listen` without the files.
    #[error(
        "tls_cert_file and tls_key_file: both must be set while tls_listen or https_listen is not \
         empty"
    )]
    TlsFilesMissing,
    /// `tls_cert_file` or `tls_key_file` cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsFileError),
}

/// What the checks loaded, for start-up to use as checked.
#[derive(Debug, Default)]
pub struct Checked {
    /// The TLS certificate and key, when `tls_listen` or `https_listen` is set.
    pub tls: Option<tls::Identity>,
}

/// Runs every check; the first failure is returned.
pub fn check(config: &Config, inherited: Inherited) -> Result<Checked, PreflightError> {
    if !inherited.admin {
        let path = admin::path::resolve(config.admin_socket.as_deref());
        let len = path.as_os_str().as_bytes().len();
        if len > MAX_SOCKET_PATH {
            return Err(PreflightError::SocketPathTooLong { path, len });
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        match trust::check_dir(dir, trust::Create::No) {
            Err(why) => return Err(PreflightError::Untrusted { path, why }),
            // Start-up creates what is missing inside the nearest existing directory.
            Ok(trust::Walked {
                dir: existing,
                missing: Some(missing),
            }) if !may_create_in(&existing) => {
                return Err(PreflightError::CannotCreate {
                    path,
                    missing,
                    uid: nix::unistd::geteuid().as_raw(),
                });
            }
            Ok(_) => {}
        }
        if let Some(name) = &config.admin_group
            && let Err(AdminError::NoSuchGroup(name)) = admin::group_id(name)
        {
            return Err(PreflightError::NoSuchGroup(name));
        }
    }
    let ours: &[SocketAddr] = if inherited.chat { &[] } else { &config.listen };
    let capable = can_bind_privileged().unwrap_or(true);
    let start = unprivileged_port_start();
    let keys = [
        ("listen", ours),
        ("tls_listen", &config.tls_listen[..]),
        ("http_listen", &config.http_listen[..]),
        ("https_listen", &config.https_listen[..]),
    ];
    for (key, listen) in keys {
        if let Some(&addr) = privileged_without_capability(listen, start, capable) {
            return Err(PreflightError::PrivilegedPort { key, addr, start });
        }
    }
    let serves_tls = !config.tls_listen.is_empty() || !config.https_listen.is_empty();
    let tls = match (serves_tls, &config.tls_cert_file, &config.tls_key_file) {
        (false, _, _) => None,
        (true, Some(cert), Some(key)) => Some(tls::Identity::load(cert, key)?),
        // A configuration read from a file always has both (validation sees to it); one built
        // in code may not.
        _ => return Err(PreflightError::TlsFilesMissing),
    };
    Ok(Checked { tls })
}

/// Whether this process (by its effective ids) may add entries to `dir`.
fn may_create_in(dir: &std::path::Path) -> bool {
    use nix::unistd::AccessFlags;
    nix::unistd::faccessat(
        nix::fcntl::AT_FDCWD,
        dir,
        AccessFlags::W_OK | AccessFlags::X_OK,
        nix::fcntl::AtFlags::AT_EACCESS,
    )
    .is_ok()
}

/// The first address whose port needs a capability we lack. Port 0 (any free port) never does.
fn privileged_without_capability(
    listen: &[SocketAddr],
    start: u16,
    capable: bool,
) -> Option<&SocketAddr> {
    if capable {
        return None;
    }
    listen.iter().find(|a| a.port() != 0 && a.port() < start)
}

/// `net.ipv4.ip_unprivileged_port_start` (it covers IPv6 too); 1024 where it cannot be read.
fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map_or(1024, |p| p.min(u32::from(u16::MAX)) as u16)
}

/// Whether `CAP_NET_BIND_SERVICE` is in the effective set; None when /proc cannot tell (then the
/// bind itself decides, and its failure is environmental).
fn can_bind_privileged() -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    effective_caps(&status).map(|caps| caps >> CAP_NET_BIND_SERVICE & 1 == 1)
}

/// The `CapEff:` mask of a /proc/PID/status text.
fn effective_caps(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_mask_is_read_from_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000000400\n";
        assert_eq!(effective_caps(status), Some(0x400));
        assert_eq!(effective_caps("CapEff:\tzz\n"), None);
        assert_eq!(effective_caps("Name:\tx\n"), None);
    }

    #[test]
    fn only_ports_below_the_start_need_the_capability() {
        let listen: Vec<SocketAddr> = ["127.0.0.1:0", "127.0.0.1:7000", "[::1]:80"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(
            privileged_without_capability(&listen, 1024, false),
            Some(&listen[2])
        );
        assert_eq!(privileged_without_capability(&listen, 1024, true), None);
        assert_eq!(privileged_without_capability(&listen, 80, false), None);
        assert_eq!(
            privileged_without_capability(&listen, 7001, false),
            Some(&listen[1])
        );
    }

    #[test]
    fn long_socket_paths_are_refused_with_their_length() {
        let long = format!("/tmp/{}/admin.sock", "x".repeat(100));
        let config = Config {
            admin_socket: Some(PathBuf::from(&long)),
            listen: vec![],
            ..Config::default()
        };
        let err = check(&config, Inherited::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("the path is {} bytes", long.len())),
            "{err}"
        );
        // Systemd's socket is not ours to check.
        let inherited = Inherited {
            admin: true,
            chat: false,
        };
        assert!(check(&config, inherited).is_ok());
    }
}
