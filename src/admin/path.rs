//! Where the admin socket lives, decided the same way by the daemon and by `chatctl`.
//!
//! Order: an explicit path (`--admin-socket`, `admin_socket`, `chatctl --socket`); then
//! `$RUNTIME_DIRECTORY/admin.sock` (systemd's `RuntimeDirectory=`); then `/run/groupchatd/admin.sock`
//! for root; then `$XDG_RUNTIME_DIR/groupchatd/admin.sock`; then `/tmp/groupchatd-UID/admin.sock`.
//! So `cargo run --bin groupchatd` and `cargo run --bin chatctl list` find each other with no flags.

use std::path::{Path, PathBuf};

/// The system-wide location used by the packaged unit (`RuntimeDirectory=groupchatd`).
pub const SYSTEM_PATH: &str = "/run/groupchatd/admin.sock";

/// The socket path to use when none is configured, given this process's environment and uid.
pub fn default_path() -> PathBuf {
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let uid = nix::unistd::geteuid();
    // RUNTIME_DIRECTORY may list several directories separated by ':'; the first is ours.
    if let Some(dir) = env("RUNTIME_DIRECTORY").and_then(|d| {
        d.to_str()
            .and_then(|s| s.split(':').next())
            .map(PathBuf::from)
    }) {
        return dir.join("admin.sock");
    }
    if uid.is_root() {
        return PathBuf::from(SYSTEM_PATH);
    }
    if let Some(dir) = env("XDG_RUNTIME_DIR") {
        return dir.join("groupchatd").join("admin.sock");
    }
    std::env::temp_dir()
        .join(format!("groupchatd-{uid}"))
        .join("admin.sock")
}

/// `explicit` if given, else [`default_path`].
pub fn resolve(explicit: Option<&Path>) -> PathBuf {
    explicit.map_or_else(default_path, Path::to_path_buf)
}

/// For `chatctl`: like [`resolve`], but when the per-user default does not exist and the system
/// daemon's socket does, use that, so an admin-group member needs no `--socket` for the packaged daemon.
pub fn resolve_for_client(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    let mine = default_path();
    if !mine.exists() && Path::new(SYSTEM_PATH).exists() {
        return PathBuf::from(SYSTEM_PATH);
    }
    mine
}
