//! Who could replace the admin socket: the directory trust rule, checked before binding and by
//! `--check-config`.
//!
//! A socket is only as trustworthy as the directories above it: whoever can write to one of them can
//! rename a directory away and put their own in its place, with their own socket in it. So every
//! directory from `/` down to the socket's directory must be owned by root or by this process's
//! effective uid, and must not be writable by its group or by others, unless it is sticky
//! (`/tmp`, mode 1777). In a sticky directory others may create entries but cannot rename or remove
//! ours, so an entry below it is accepted only if it is a real directory owned by root or by us and
//! itself passes the rule; a symbolic link there is refused, whoever owns it. Elsewhere a symbolic
//! link is resolved (at most 40) and its target's directories are checked the same way, from `/`.
//! Every entry is examined with `lstat`, so nothing is followed before it is checked.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use nix::unistd::{Gid, Uid};

/// As many symbolic links as the kernel follows in one path lookup (ELOOP).
const MAX_SYMLINKS: usize = 40;

/// A directory on the socket's path fails the trust rule (or could not be examined).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {why}", path.display())]
pub struct Untrusted {
    /// The directory (or entry) that fails.
    pub path: PathBuf,
    /// Why, in words an operator can act on.
    pub why: String,
}

/// Whether missing directories are created, and with which group.
#[derive(Debug, Clone, Copy)]
pub enum Create {
    /// Only look (`--check-config`): stop at the first missing component.
    No,
    /// Create what is missing: mode 0700, or 0750 given to `group` so its members can reach the
    /// socket inside.
    Yes {
        /// The admin group, if any.
        group: Option<Gid>,
    },
}

/// The outcome of a walk that found nothing untrusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walked {
    /// The directory with every symbolic link resolved (the nearest existing one when `missing`).
    pub dir: PathBuf,
    /// The first component that does not exist yet (only with [`Create::No`]).
    pub missing: Option<PathBuf>,
}

/// Checks (and with [`Create::Yes`] creates) `dir` and every directory above it.
pub fn check_dir(dir: &Path, create: Create) -> Result<Walked, Untrusted> {
    let me = Uid::effective().as_raw();
    let absolute = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| untrusted(dir, format!("cannot resolve a relative path: {e}")))?
            .join(dir)
    };
    let mut todo: VecDeque<OsString> = names(&absolute).collect();
    let root = PathBuf::from("/");
    let root_shared = verify(&root, &lstat(&root)?, me)?;
    // Verified real directories from `/` down, each with whether it is sticky and shared.
    let mut stack: Vec<(PathBuf, bool)> = vec![(root, root_shared)];
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let Some((current, shared)) = stack.last().cloned() else {
            break;
        };
        let next = current.join(&name);
        let meta = match std::fs::symlink_metadata(&next) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => match create {
                Create::No => {
                    return Ok(Walked {
                        dir: current,
                        missing: Some(next),
                    });
                }
                Create::Yes { group } => make_dir(&next, group)?,
            },
            Err(e) => return Err(untrusted(&next, e.to_string())),
        };
        if meta.file_type().is_symlink() {
            if shared {
                return Err(untrusted(
                    &next,
                    format!(
                        "is a symbolic link inside {}, which others can write to: anyone could \
                         have planted it (use a real directory)",
                        current.display()
                    ),
                ));
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(untrusted(&next, "too many levels of symbolic links".into()));
            }
            let target = std::fs::read_link(&next).map_err(|e| untrusted(&next, e.to_string()))?;
            if target.is_absolute() {
                stack.truncate(1);
            }
            for name in names(&target).collect::<Vec<_>>().into_iter().rev() {
                todo.push_front(name);
            }
            continue;
        }
        if !meta.is_dir() {
            return Err(untrusted(&next, "is not a directory".into()));
        }
        let shared = verify(&next, &meta, me)?;
        stack.push((next, shared));
    }
    let dir = stack
        .pop()
        .map_or_else(|| PathBuf::from("/"), |(dir, _)| dir);
    Ok(Walked { dir, missing: None })
}

/// The normal components of `path`, `..` kept, `/` and `.` dropped.
fn names(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

fn lstat(path: &Path) -> Result<std::fs::Metadata, Untrusted> {
    std::fs::symlink_metadata(path).map_err(|e| untrusted(path, e.to_string()))
}

/// Applies the rule to one directory; returns true when it is sticky and others may add entries.
fn verify(path: &Path, meta: &std::fs::Metadata, me: u32) -> Result<bool, Untrusted> {
    let (owner, mode) = (meta.uid(), meta.mode() & 0o7777);
    if owner != 0 && owner != me {
        return Err(untrusted(
            path,
            format!(
                "is owned by uid {owner}, not by root or by uid {me} (this daemon's user), so its \
                 owner could replace the admin socket"
            ),
        ));
    }
    let writers = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (false, false) => return Ok(false),
        (true, false) => "its group",
        (false, true) => "everyone",
        (true, true) => "its group and everyone",
    };
    if mode & 0o1000 != 0 {
        return Ok(true);
    }
    Err(untrusted(
        path,
        format!(
            "is writable by {writers} (mode {mode:04o}) and not sticky, so they could replace the \
             admin socket (chmod go-w, or choose another admin_socket)"
        ),
    ))
}

/// Creates one missing directory: 0700, or 0750 and `group`. Another process of ours may create it
/// at the same moment; what is there afterwards is checked by the caller either way.
fn make_dir(path: &Path, group: Option<Gid>) -> Result<std::fs::Metadata, Untrusted> {
    let mode = if group.is_some() { 0o750 } else { 0o700 };
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {
            if let Some(gid) = group {
                nix::unistd::fchownat(
                    nix::fcntl::AT_FDCWD,
                    path,
                    None,
                    Some(gid),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| untrusted(path, format!("cannot give it to group {gid}: {e}")))?;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(untrusted(path, format!("cannot create it: {e}"))),
    }
    lstat(path)
}

fn untrusted(path: &Path, why: String) -> Untrusted {
    Untrusted {
        path: path.to_path_buf(),
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A scratch directory under the system temp dir (sticky, root-owned: trusted), removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("gcd-trust-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn private_directories_are_trusted_and_missing_ones_reported() {
        let s = Scratch::new("ok");
        let walked = check_dir(&s.0, Create::No).unwrap();
        assert_eq!(walked.missing, None);
        let sub = s.0.join("a/b");
        let walked = check_dir(&sub, Create::No).unwrap();
        assert_eq!(walked.missing, Some(s.0.join("a")));
        assert!(!sub.exists(), "looking creates nothing");
        let walked = check_dir(&sub, Create::Yes { group: None }).unwrap();
        assert_eq!((walked.dir, walked.missing), (sub.clone(), None));
        assert_eq!(std::fs::metadata(&sub).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_writable_ancestor_is_refused_even_for_root() {
        let s = Scratch::new("ww");
        let open = s.0.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::create_dir(open.join("inner")).unwrap();
        chmod(&open, 0o777);
        let err = check_dir(&open.join("inner"), Create::No).unwrap_err();
        assert_eq!(err.path, open);
        assert!(
            err.why
                .contains("writable by its group and everyone (mode 0777)"),
            "{err}"
        );
        chmod(&open, 0o775);
        let err = check_dir(&open.join("inner"), Create::No).unwrap_err();
        assert!(err.why.contains("writable by its group"), "{err}");
        // Sticky and owned by us: shared like /tmp, accepted; our own directory inside it too.
        chmod(&open, 0o1777);
        assert!(check_dir(&open.join("inner"), Create::No).is_ok());
    }

    #[test]
    fn symlinks_resolve_to_a_checked_target_but_not_inside_a_sticky_directory() {
        let s = Scratch::new("ln");
        let real = s.0.join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink("real", s.0.join("link")).unwrap();
        let walked = check_dir(&s.0.join("link"), Create::No).unwrap();
        assert_eq!(walked.dir, real);
        // The target is checked, not the link.
        chmod(&real, 0o777);
        let err = check_dir(&s.0.join("link"), Create::No).unwrap_err();
        assert_eq!(err.path, real);
        chmod(&real, 0o700);
        // A link inside a sticky shared directory is refused whoever made it.
        let shared = s.0.join("shared");
        std::fs::create_dir(&shared).unwrap();
        chmod(&shared, 0o1777);
        std::os::unix::fs::symlink(&real, shared.join("x")).unwrap();
        let err = check_dir(&shared.join("x"), Create::No).unwrap_err();
        assert!(err.why.contains("symbolic link"), "{err}");
        // A loop ends with an error, not a hang.
        std::os::unix::fs::symlink("loop", s.0.join("loop")).unwrap();
        let err = check_dir(&s.0.join("loop"), Create::No).unwrap_err();
        assert!(err.why.contains("too many levels"), "{err}");
    }

    #[test]
    fn foreign_owner_is_refused_when_we_can_make_one() {
        if !Uid::effective().is_root() {
            eprintln!("skipped: needs root to give a directory to another uid");
            return;
        }
        let s = Scratch::new("own");
        let theirs = s.0.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        chmod(&theirs, 0o1777);
        nix::unistd::chown(&theirs, Some(Uid::from_raw(65534)), None).unwrap();
        let err = check_dir(&theirs, Create::No).unwrap_err();
        assert!(err.why.contains("owned by uid 65534"), "{err}");
        // Inside a sticky directory of ours, a directory another uid planted is refused too.
        let shared = s.0.join("shared");
        std::fs::create_dir(&shared).unwrap();
        chmod(&shared, 0o1777);
        let planted = shared.join("groupchatd-0");
        std::fs::create_dir(&planted).unwrap();
        nix::unistd::chown(&planted, Some(Uid::from_raw(65534)), None).unwrap();
        let err = check_dir(&planted, Create::Yes { group: None }).unwrap_err();
        assert_eq!(err.path, planted);
    }
}
