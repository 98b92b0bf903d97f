//! Binding the admin socket file: in a directory only root or we can write, with its group and mode
//! set before anyone is meant to use it, and removed on exit only if it is still ours.
//!
//! Linux decides who may connect to a Unix socket by the mode and group of its *file*, and a
//! socket's descriptor cannot change them (fchmod on a socket changes the socket, not the file).
//! So the file is made safe through its directory instead: [`trust::check_dir`] proves that only root
//! or this process can add, rename or remove entries there, the directory is then held open, and
//! every later step names the socket relative to that descriptor, never by a path another process
//! could redirect. After `bind` the entry is `lstat`ed (it must be a socket owned by us), the group is
//! set with `fchownat(AT_SYMLINK_NOFOLLOW)` and then the mode with `fchmodat`: group first, so that
//! for a moment the socket is at most as open as `bind` made it (0777 minus the umask, which gives
//! write, and so connect, to nobody but us under the usual 022). No process-wide umask is changed:
//! tests bind sockets in-process while other threads create files. Connections in that moment are
//! still subject to the SO_PEERCRED check.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, FileStat, Mode, SFlag};
use nix::unistd::{Gid, Group, Uid};
use tokio::net::UnixListener;
use tracing::info;

use super::trust::{self, Create, Untrusted};

/// Why the admin socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A directory on the socket's path could be changed by someone other than root or us.
    #[error("admin socket {0}: refusing an untrusted directory: {1}")]
    Untrusted(PathBuf, Untrusted),
    /// Something other than a socket is at the path.
    #[error(
        "{0} exists and is not a socket; refusing to replace it (remove it or choose another admin_socket)"
    )]
    NotASocket(PathBuf),
    /// A stale socket there belongs to another user.
    #[error(
        "{0} is a socket owned by uid {1}, not by root or by this daemon's user; refusing to replace it"
    )]
    ForeignSocket(PathBuf, u32),
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

impl AdminError {
    /// True when the configuration is wrong (exit 78: restarting cannot help), not the environment.
    pub fn is_config(&self) -> bool {
        matches!(self, AdminError::Untrusted(..) | AdminError::NoSuchGroup(_))
    }
}

/// The socket file we created: its directory held open, its name and inode.
#[derive(Debug)]
pub struct SocketFile {
    dir: OwnedFd,
    name: PathBuf,
    inode: u64,
    path: PathBuf,
}

impl SocketFile {
    /// Gives the socket file to `group` (None: leave it), if the entry is still our socket.
    pub fn set_group(&self, group: Option<&str>) -> Result<(), AdminError> {
        let Some(name) = group else { return Ok(()) };
        let gid = group_id(name)?;
        let io = |e: nix::Error| AdminError::Io(self.path.clone(), e.into());
        if self.current_inode() != Some(self.inode) {
            return Err(AdminError::Io(
                self.path.clone(),
                io::Error::other("the socket file was replaced; not changing its group"),
            ));
        }
        nix::unistd::fchownat(
            &self.dir,
            &self.name,
            None,
            Some(gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(io)
    }

    fn current_inode(&self) -> Option<u64> {
        nix::sys::stat::fstatat(&self.dir, &self.name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .ok()
            .filter(is_socket)
            .map(|st| st.st_ino)
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // Only our own inode: a daemon started since may have put its socket here.
        if self.current_inode() == Some(self.inode) {
            let _ = nix::unistd::unlinkat(
                &self.dir,
                &self.name,
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

/// A bound admin socket whose file is removed when the last handle to it is dropped.
#[derive(Debug)]
pub struct AdminSocket {
    pub(super) listener: UnixListener,
    path: PathBuf,
    /// None for a socket systemd passed us: its file is systemd's.
    file: Option<std::sync::Arc<SocketFile>>,
}

impl AdminSocket {
    /// Binds at `path` with `mode` and optional `group`, replacing only a stale socket of ours.
    pub fn bind(path: &Path, mode: u32, group: Option<&str>) -> Result<AdminSocket, AdminError> {
        let io = |e: io::Error| AdminError::Io(path.to_path_buf(), e);
        let gid = group.map(group_id).transpose()?;
        let (dir, name) = split(path)?;
        let walked = trust::check_dir(&dir, Create::Yes { group: gid })
            .map_err(|e| AdminError::Untrusted(path.to_path_buf(), e))?;
        let dirfd = nix::fcntl::open(
            &walked.dir,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io(e.into()))?;
        replace_stale(path, &dirfd, &name)?;
        let listener = UnixListener::bind(path).map_err(io)?;
        // The entry must be the socket we just made; in a trusted directory nothing else could be.
        let st = nix::sys::stat::fstatat(&dirfd, &name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| io(e.into()))?;
        if !is_socket(&st) || st.st_uid != Uid::effective().as_raw() {
            return Err(io(io::Error::other(
                "the entry after bind is not our socket",
            )));
        }
        let file = SocketFile {
            dir: dirfd,
            name,
            inode: st.st_ino,
            path: path.to_path_buf(),
        };
        if let Some(gid) = gid {
            nix::unistd::fchownat(
                &file.dir,
                &file.name,
                None,
                Some(gid),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io(e.into()))?;
        }
        // Followed, but the entry was just seen to be a socket (not a link) in a directory only
        // root or we can change.
        nix::sys::stat::fchmodat(
            &file.dir,
            &file.name,
            Mode::from_bits_truncate(mode & 0o777),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| io(e.into()))?;
        Ok(AdminSocket {
            listener,
            path: path.to_path_buf(),
            file: Some(std::sync::Arc::new(file)),
        })
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
            file: None,
        }
    }

    /// Takes over a listener from the process this one upgrades. If that process had created the
    /// file (`owned`), this one now owns it: it checks that the entry at the listener's path is
    /// still that socket, and removes it when done, as [`bind`](Self::bind) would have.
    pub fn adopt(listener: UnixListener, owned: bool) -> Result<AdminSocket, AdminError> {
        let mut socket = AdminSocket::from_listener(listener);
        if !owned {
            return Ok(socket);
        }
        let path = socket.path.clone();
        let io = |e: io::Error| AdminError::Io(path.clone(), e);
        let (dir, name) = split(&path)?;
        let dirfd = nix::fcntl::open(
            &dir,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io(e.into()))?;
        let st = nix::sys::stat::fstatat(&dirfd, &name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| io(e.into()))?;
        if !is_socket(&st) || st.st_uid != Uid::effective().as_raw() {
            return Err(io(io::Error::other("the admin socket file is not ours")));
        }
        socket.file = Some(std::sync::Arc::new(SocketFile {
            dir: dirfd,
            name,
            inode: st.st_ino,
            path: path.clone(),
        }));
        Ok(socket)
    }

    /// True if this process created the socket's file (and removes it at the end).
    pub fn owns_file(&self) -> bool {
        self.file.is_some()
    }

    /// The listening descriptor, for handing it to a new process.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.listener.as_raw_fd()
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file we created (None when systemd passed the socket), for re-grouping on reload. Weak:
    /// the file is removed when the socket is dropped, whoever still holds this.
    pub fn file(&self) -> Option<std::sync::Weak<SocketFile>> {
        self.file.as_ref().map(std::sync::Arc::downgrade)
    }
}

/// Removes a socket nobody answers on, if root or we own it; refuses anything else.
fn replace_stale(path: &Path, dirfd: &OwnedFd, name: &Path) -> Result<(), AdminError> {
    let st = match nix::sys::stat::fstatat(dirfd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(nix::Error::ENOENT) => return Ok(()),
        Err(e) => return Err(AdminError::Io(path.to_path_buf(), e.into())),
    };
    if !is_socket(&st) {
        return Err(AdminError::NotASocket(path.to_path_buf()));
    }
    if st.st_uid != 0 && st.st_uid != Uid::effective().as_raw() {
        return Err(AdminError::ForeignSocket(path.to_path_buf(), st.st_uid));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(AdminError::InUse(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            nix::unistd::unlinkat(dirfd, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
                .map_err(|e| AdminError::Io(path.to_path_buf(), e.into()))?;
            info!(path = %path.display(), "removed stale admin socket");
            Ok(())
        }
        Err(e) => Err(AdminError::Io(path.to_path_buf(), e)),
    }
}

/// The socket's directory and file name.
fn split(path: &Path) -> Result<(PathBuf, PathBuf), AdminError> {
    let name = path.file_name().ok_or_else(|| {
        AdminError::Io(
            path.to_path_buf(),
            io::Error::other("the path does not end in a file name"),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, PathBuf::from(name)))
}

/// `admin_group`'s gid. A lookup failure (NSS down) counts as missing: we cannot use the group.
pub fn group_id(name: &str) -> Result<Gid, AdminError> {
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid),
        _ => Err(AdminError::NoSuchGroup(name.to_owned())),
    }
}

fn is_socket(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFSOCK
}
