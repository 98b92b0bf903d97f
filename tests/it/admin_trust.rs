//! Admin socket trust and lock-out (issue 11): directory trust at start and in `--check-config`, the
//! other start-up checks, chatctl's check of who listens, and slots that strangers and slow callers
//! cannot hold. The real binaries where the operator would see the outcome; an in-process daemon with
//! shortened admin timeouts where time matters.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use groupchatd::admin::AdminLimits;
use groupchatd::app::App;
use nix::unistd::{Gid, Group, Uid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::process::{
    CHATCTL, DAEMON, Daemon, Scratch, chatctl, chatctl_with, without_default_http,
};
use crate::support::{TestClient, WAIT, test_config, unique_socket_path};

/// `groupchatd --check-config` with `config` as the file and the extra flags; (exit code, stderr).
fn check_config(dir: &Scratch, config: &str, flags: &[&str]) -> (i32, String) {
    check_config_with(Command::new(DAEMON), dir, config, flags)
}

fn check_config_with(
    mut cmd: Command,
    dir: &Scratch,
    config: &str,
    flags: &[&str],
) -> (i32, String) {
    let cfg = dir.file("check.toml", config);
    let out = cmd
        .arg("--config")
        .arg(&cfg)
        .arg("--check-config")
        .args(flags)
        .env_remove("LISTEN_FDS")
        .env_remove("RUNTIME_DIRECTORY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(path: &Path, mode: u32) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    chmod(path, mode);
    path.to_path_buf()
}

fn root() -> bool {
    Uid::effective().is_root()
}

#[test]
fn check_config_refuses_a_socket_path_longer_than_sun_path() {
    let dir = Scratch::new("tr-long");
    let long = dir.path(&format!("{}/admin.sock", "d".repeat(110)));
    let (code, err) = check_config(&dir, "", &["--admin-socket", long.to_str().unwrap()]);
    assert_eq!(code, 78, "{err}");
    let len = long.as_os_str().len();
    assert!(
        err.contains(&format!("the path is {len} bytes")) && err.contains("at most 107"),
        "{err}"
    );
    // The same configuration is refused at start with the same words, before anything is bound.
    let out = Command::new(DAEMON)
        .arg("--config")
        .arg(dir.file("empty.toml", "http_listen = []\n"))
        .args(["--listen", "127.0.0.1:0", "--admin-socket"])
        .arg(&long)
        .env_remove("LISTEN_FDS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("the path is {len} bytes")));
}

#[test]
fn a_writable_ancestor_is_refused_at_check_and_at_start_even_for_root() {
    let dir = Scratch::new("tr-ww");
    chmod(&dir.0, 0o755);
    let open = mkdir(&dir.path("open"), 0o777);
    let socket = open.join("sub/admin.sock");
    let flags = ["--admin-socket", socket.to_str().unwrap()];
    let (code, err) = check_config(&dir, "", &flags);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains(open.to_str().unwrap())
            && err.contains("mode 0777")
            && err.contains("not sticky"),
        "{err}"
    );
    assert!(!open.join("sub").exists(), "the check creates nothing");
    let out = Command::new(DAEMON)
        .arg("--config")
        .arg(dir.file("empty.toml", "http_listen = []\n"))
        .args(["--listen", "127.0.0.1:0"])
        .args(flags)
        .env_remove("LISTEN_FDS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mode 0777"));
    assert!(!socket.exists());

    // Group-writable is no better; sticky and ours is (like /tmp).
    chmod(&open, 0o770);
    assert_eq!(check_config(&dir, "", &flags).0, 78);
    chmod(&open, 0o1777);
    let (code, err) = check_config(&dir, "", &flags);
    assert_eq!(code, 0, "{err}");

    // Sticky but owned by someone else: its owner can replace anything in it.
    if root() {
        nix::unistd::chown(&open, Some(Uid::from_raw(65534)), None).unwrap();
        let (code, err) = check_config(&dir, "", &flags);
        assert_eq!(code, 78, "{err}");
        assert!(err.contains("owned by uid 65534"), "{err}");
    } else {
        eprintln!("skipped the foreign-owner case: needs root to chown");
    }
}

#[test]
fn a_symlinked_ancestor_is_checked_at_its_target() {
    let dir = Scratch::new("tr-ln");
    chmod(&dir.0, 0o755);
    let target = mkdir(&dir.path("target"), 0o777);
    std::os::unix::fs::symlink(&target, dir.path("link")).unwrap();
    let socket = dir.path("link/admin.sock");
    let (code, err) = check_config(&dir, "", &["--admin-socket", socket.to_str().unwrap()]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains(target.to_str().unwrap()), "{err}");
    chmod(&target, 0o700);
    let (code, err) = check_config(&dir, "", &["--admin-socket", socket.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn check_config_refuses_a_directory_it_could_not_create() {
    if !root() {
        eprintln!("skipped: needs root to run the check as a second uid");
        return;
    }
    let dir = Scratch::new("tr-mk");
    chmod(&dir.0, 0o755);
    let socket = dir.path("missing/admin.sock");
    let mut cmd = Command::new(DAEMON);
    cmd.uid(65534).gid(65534);
    let (code, err) =
        check_config_with(cmd, &dir, "", &["--admin-socket", socket.to_str().unwrap()]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("does not exist and uid 65534 cannot create it"),
        "{err}"
    );
    // Root may create it, so the check passes (and creates nothing).
    assert_eq!(
        check_config(&dir, "", &["--admin-socket", socket.to_str().unwrap()]).0,
        0
    );
    assert!(!dir.path("missing").exists());
}

#[test]
fn check_config_refuses_a_missing_group() {
    let dir = Scratch::new("tr-grp");
    let socket = dir.path("a.sock");
    let (code, err) = check_config(
        &dir,
        "admin_group = \"gcd-no-such-group\"\n",
        &["--admin-socket", socket.to_str().unwrap()],
    );
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("admin_group") && err.contains("gcd-no-such-group"),
        "{err}"
    );
}

/// Whether this process may bind ports below 1024 (`CapEff` bit 10).
fn has_net_bind_service() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 10) != 0)
}

#[test]
fn a_privileged_port_needs_the_capability() {
    let dir = Scratch::new("tr-port");
    let socket = dir.path("a.sock");
    let flags = [
        "--listen",
        "127.0.0.1:80",
        "--admin-socket",
        socket.to_str().unwrap(),
    ];
    let start: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    if start <= 80 {
        eprintln!("skipped: ip_unprivileged_port_start is {start}, so port 80 is not privileged");
        return;
    }
    let refused = |(code, err): (i32, String)| {
        assert_eq!(code, 78, "{err}");
        assert!(
            err.contains("listen 127.0.0.1:80")
                && err.contains("port 80")
                && err.contains("CAP_NET_BIND_SERVICE"),
            "{err}"
        );
    };
    // The HTTP listener too, named by its own key (the chat port being a free one).
    let http = "http_listen = [\"127.0.0.1:81\"]\n";
    let http_flags = [
        "--listen",
        "127.0.0.1:0",
        "--admin-socket",
        socket.to_str().unwrap(),
    ];
    let http_refused = |(code, err): (i32, String)| {
        assert_eq!(code, 78, "{err}");
        assert!(
            err.contains("http_listen 127.0.0.1:81") && err.contains("CAP_NET_BIND_SERVICE"),
            "{err}"
        );
    };
    if !has_net_bind_service() {
        refused(check_config(&dir, "", &flags));
        http_refused(check_config(&dir, http, &http_flags));
        return;
    }
    // Root (CI): the capability is there, so port 80 passes...
    let (code, err) = check_config(&dir, "", &flags);
    assert_eq!(code, 0, "{err}");
    // ...and without it (dropped from the bounding set for the child) it is refused.
    let setpriv = Path::new("/usr/bin/setpriv");
    if !setpriv.exists() {
        eprintln!("skipped the refusal as root: util-linux setpriv is not installed");
        return;
    }
    let mut cmd = Command::new(setpriv);
    cmd.args([
        "--inh-caps=-all",
        "--bounding-set=-net_bind_service",
        "--",
        DAEMON,
    ]);
    refused(check_config_with(cmd, &dir, "", &flags));
    let mut cmd = Command::new(setpriv);
    cmd.args([
        "--inh-caps=-all",
        "--bounding-set=-net_bind_service",
        "--",
        DAEMON,
    ]);
    http_refused(check_config_with(cmd, &dir, http, &http_flags));
}

#[test]
fn socket_mode_and_group_are_set_and_created_directories_are_private() {
    let dir = Scratch::new("tr-mode");
    chmod(&dir.0, 0o755);
    // A group we may give files to: nogroup as root, our own otherwise.
    let group = Group::from_gid(Gid::from_raw(65534))
        .ok()
        .flatten()
        .filter(|_| root())
        .or_else(|| Group::from_gid(Gid::effective()).ok().flatten())
        .expect("a group to test with");
    let socket = dir.path("new/inner/admin.sock");
    let config = format!(
        "admin_socket = \"{}\"\nadmin_socket_mode = \"0640\"\nadmin_group = \"{}\"\n",
        socket.display(),
        group.name
    );
    let cfg = dir.file("m.toml", &without_default_http(&config));
    let d = Daemon::spawn_with(
        &[
            "--config".as_ref(),
            cfg.as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
        ],
        |_| {},
    );
    d.log_line("ready");
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(meta.gid(), group.gid.as_raw());
    assert_eq!(meta.uid(), Uid::effective().as_raw());
    for created in [dir.path("new"), dir.path("new/inner")] {
        let meta = std::fs::metadata(&created).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o750, "{}", created.display());
        assert_eq!(meta.gid(), group.gid.as_raw(), "{}", created.display());
    }
    assert_eq!(chatctl(&socket, &["stats"]).code, 0);
}

#[tokio::test]
async fn chatctl_sends_nothing_to_a_socket_served_by_an_unexpected_uid() {
    if !root() {
        eprintln!("skipped: needs root to run the daemon as a second uid");
        return;
    }
    let dir = Scratch::new("tr-peer");
    chmod(&dir.0, 0o755);
    let theirs = mkdir(&dir.path("nobody"), 0o700);
    nix::unistd::chown(
        &theirs,
        Some(Uid::from_raw(65534)),
        Some(Gid::from_raw(65534)),
    )
    .unwrap();
    let socket = theirs.join("a.sock");
    let cfg = dir.file("n.toml", "http_listen = []\n");
    let mut d = Daemon::spawn_with(
        &[
            "--config".as_ref(),
            cfg.as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--admin-socket".as_ref(),
            socket.as_os_str(),
        ],
        |cmd| {
            cmd.uid(65534).gid(65534);
        },
    );
    d.addr = Some(d.listening_addr());
    d.log_line("ready");
    let mut alice = TestClient::connect(d.addr()).await;
    alice.read_until_line("*** Choose a nickname:").await;
    alice.send("alice").await;
    alice.read_until_line("*** Type /help for commands.").await;

    let out = chatctl(&socket, &["kick", "alice"]);
    assert_eq!(out.code, 77, "stdout {} stderr {}", out.stdout, out.stderr);
    let pid = d.pid();
    assert!(
        out.stderr.contains("uid 65534")
            && out.stderr.contains(&format!("pid {pid}"))
            && out.stderr.contains("nothing was sent"),
        "{}",
        out.stderr
    );
    // Nothing was sent: alice is still there. With the uid named, chatctl talks to it.
    let out = chatctl(&socket, &["--expect-uid", "65534", "--json", "list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["result"]["clients"][0]["nick"], "alice");
}

/// An in-process daemon with the given admin limits; stopped when dropped.
struct AdminServer {
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
}

impl AdminServer {
    fn start(limits: AdminLimits, mode: &str) -> AdminServer {
        let mut config = test_config();
        config.admin_socket_mode = u32::from_str_radix(mode, 8).unwrap();
        let socket = config
            .admin_socket
            .clone()
            .unwrap_or_else(unique_socket_path);
        let mut app = App::bind(config).expect("bind");
        app.set_admin_limits(limits);
        let (tx, rx) = oneshot::channel();
        tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        AdminServer {
            socket,
            stop: Some(tx),
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs the real chatctl off the async workers; returns its outcome and how long it took.
async fn timed_chatctl(socket: &Path, args: &[&str]) -> (crate::process::Ctl, Duration) {
    let (socket, args): (PathBuf, Vec<String>) = (
        socket.to_path_buf(),
        args.iter().map(|a| a.to_string()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = chatctl(&socket, &args);
        (out, started.elapsed())
    })
    .await
    .unwrap()
}

const STATS: &[u8] = b"{\"cmd\":\"stats\"}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_never_read_cannot_lock_out_chatctl() {
    let limits = AdminLimits {
        write_timeout: Duration::from_millis(300),
        ..AdminLimits::default()
    };
    let server = AdminServer::start(limits, "600");
    // Twelve connections (more than the eight slots), each sending far more requests than the
    // replies a socket buffer holds, and none ever reading.
    let batch = STATS.repeat(20_000);
    let hogs: Vec<_> = (0..12)
        .map(|_| {
            let stream = StdUnixStream::connect(&server.socket).unwrap();
            stream.set_write_timeout(Some(WAIT)).unwrap();
            let writer = stream.try_clone().unwrap();
            let batch = batch.clone();
            // Ends when the daemon closes the connection (or after WAIT at most).
            let t = std::thread::spawn(move || (&writer).write_all(&batch).is_err());
            (stream, t)
        })
        .collect();
    let (out, took) = timed_chatctl(&server.socket, &["stats"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(took < Duration::from_secs(3), "chatctl took {took:?}");
    // Every hog is closed, by eviction or by the write timeout: its writer sees the end, and reading
    // what was sent before reaches EOF, fewer replies than requests.
    for (stream, writer) in hogs {
        assert!(
            writer.join().unwrap(),
            "the daemon closed the connection mid-batch"
        );
        stream.set_read_timeout(Some(WAIT)).unwrap();
        assert_closed(&stream);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_never_reads_is_dropped_after_the_write_timeout() {
    let limits = AdminLimits {
        write_timeout: Duration::from_millis(200),
        ..AdminLimits::default()
    };
    let server = AdminServer::start(limits, "600");
    let stream = StdUnixStream::connect(&server.socket).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    let writer = stream.try_clone().unwrap();
    let sent = tokio::task::spawn_blocking(move || (&writer).write_all(&STATS.repeat(20_000)))
        .await
        .unwrap();
    // Alone on the socket, nothing evicts it: only the write timeout can have closed it. Our own
    // write timeout (WAIT) would show up as WouldBlock or TimedOut instead.
    let kind = sent.expect_err("the daemon closed the connection").kind();
    assert!(
        matches!(kind, ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
        "{kind:?}"
    );
    assert_closed(&stream);
}

/// Reading what the daemon sent before it closed ends in EOF or a reset (it closed with our
/// requests unread), not in our read timeout.
fn assert_closed(stream: &StdUnixStream) {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut replies = Vec::new();
    match stream.take(64 << 20).read_to_end(&mut replies) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
}

/// Sends `bytes` one at a time every `every` until the daemon closes the connection; returns how
/// long that took, or None if it was still open after `WAIT`.
async fn trickle_until_closed(socket: &Path, bytes: &[u8], every: Duration) -> Option<Duration> {
    // Before connecting: the daemon's idle clock cannot have started earlier than ours.
    let started = Instant::now();
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let mut tick = tokio::time::interval(every);
    let mut buf = [0u8; 1024];
    let mut i = 0;
    let outcome = tokio::time::timeout(WAIT, async {
        loop {
            tokio::select! {
                n = stream.read(&mut buf) => {
                    if matches!(n, Ok(0) | Err(_)) {
                        return;
                    }
                }
                _ = tick.tick() => {
                    if stream.write_all(&bytes[i % bytes.len()..][..1]).await.is_err() {
                        return;
                    }
                    i += 1;
                }
            }
        }
    })
    .await;
    outcome.ok().map(|()| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blank_lines_and_trickled_bytes_do_not_keep_a_slot() {
    let idle = Duration::from_millis(500);
    let limits = AdminLimits {
        idle_timeout: idle,
        ..AdminLimits::default()
    };
    let server = AdminServer::start(limits, "600");
    let every = Duration::from_millis(50);
    let (newlines, partial) = tokio::join!(
        trickle_until_closed(&server.socket, b"\n", every),
        trickle_until_closed(&server.socket, b"{\"cmd\":\"sta", every),
    );
    for (what, closed) in [("bare newlines", newlines), ("a partial request", partial)] {
        let took = closed.unwrap_or_else(|| panic!("{what} kept the connection open"));
        assert!(
            took >= idle,
            "{what}: closed after {took:?}, before the idle timeout"
        );
    }

    // Complete requests do keep it: one every 100 ms for four idle timeouts.
    let mut stream = tokio::net::UnixStream::connect(&server.socket)
        .await
        .unwrap();
    let (read, mut write) = stream.split();
    let mut lines = tokio::io::BufReader::new(read);
    let until = Instant::now() + idle * 4;
    let mut line = String::new();
    while Instant::now() < until {
        write.write_all(STATS).await.unwrap();
        line.clear();
        let n = tokio::time::timeout(
            WAIT,
            tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line),
        )
        .await
        .expect("a reply in time")
        .unwrap();
        assert!(n > 0 && line.contains("\"ok\":true"), "{line:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A process running as uid 65534 that connects to `socket` and holds the connection until its
/// stdin closes (at most 20 s). perl is in every Debian base system; the test is skipped without it.
struct Stranger(std::process::Child);

impl Stranger {
    fn connect(socket: &Path) -> Option<Stranger> {
        const SCRIPT: &str = "use Socket; socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die \"socket: $!\"; \
             connect($s, pack_sockaddr_un($ARGV[0])) or die \"connect: $!\"; $| = 1; \
             print \"connected\\n\"; alarm 20; <STDIN>;";
        let mut child = Command::new("perl")
            .args(["-e", SCRIPT])
            .arg(socket)
            .uid(65534)
            .gid(65534)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let stdout = child.stdout.take()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(WAIT).unwrap_or_default();
        assert_eq!(line, "connected\n", "the stranger connected");
        Some(Stranger(child))
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_never_hold_a_slot() {
    if !root() {
        eprintln!("skipped: needs root to connect as a second uid");
        return;
    }
    if Command::new("perl").arg("-v").output().is_err() {
        eprintln!("skipped: perl is not installed (used to connect as uid 65534)");
        return;
    }
    // World-connectable, so the refusal comes from the SO_PEERCRED check before admission.
    let server = AdminServer::start(AdminLimits::default(), "666");
    let strangers: Vec<Stranger> = (0..12)
        .map(|_| Stranger::connect(&server.socket).expect("perl runs"))
        .collect();
    let (out, took) = timed_chatctl(&server.socket, &["stats"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(took < Duration::from_secs(3), "chatctl took {took:?}");
    // And a stranger's own request is refused with a reply, not served.
    let mut cmd = Command::new(CHATCTL);
    cmd.arg("--socket")
        .arg(&server.socket)
        .arg("stats")
        .uid(65534)
        .gid(65534);
    let out = tokio::task::spawn_blocking(move || chatctl_with(&mut cmd))
        .await
        .unwrap();
    assert_eq!(out.code, 77, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("uid 65534 may not use the admin socket"),
        "{}",
        out.stderr
    );
    drop(strangers);
}
