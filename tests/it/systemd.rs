//! The systemd protocol against test-owned sockets: datagrams on `NOTIFY_SOCKET` (READY, STATUS,
//! RELOADING + MONOTONIC_USEC, WATCHDOG, STOPPING) and socket activation with real inherited fds.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Instant;

use nix::fcntl::{FcntlArg, fcntl};
use nix::sys::signal::Signal;

use crate::process::{DAEMON, Daemon, Scratch, chatctl};
use crate::support::{TestClient, WAIT};

/// A notify socket owned by the test.
struct Notify {
    sock: UnixDatagram,
}

impl Notify {
    fn bind(dir: &Scratch) -> (Notify, std::path::PathBuf) {
        let path = dir.path("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        (Notify { sock }, path)
    }

    /// The next datagram containing `needle`, skipping others; panics after the bound.
    fn expect(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no datagram containing {needle:?}");
            self.sock.set_read_timeout(Some(left)).unwrap();
            let n = match self.sock.recv(&mut buf) {
                Ok(n) => n,
                // A signal (e.g. SIGCHLD from another test's child) interrupted the wait: retry.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("waiting for {needle:?}: {e}"),
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.contains(needle) {
                return text;
            }
        }
    }
}

fn field<'a>(datagram: &'a str, key: &str) -> Option<&'a str> {
    datagram
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[tokio::test]
async fn notify_ready_status_reload_watchdog_stopping() {
    let dir = Scratch::new("sd-notify");
    let (notify, path) = Notify::bind(&dir);
    let cfg = dir.file("n.toml", "http_listen = []\nmotd = \"one\"\n");
    let sock = dir.path("n.sock");
    let mut d = Daemon::spawn_with(
        &[
            "--config".as_ref(),
            cfg.as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--admin-socket".as_ref(),
            sock.as_os_str(),
        ],
        |cmd| {
            cmd.env("NOTIFY_SOCKET", &path)
                .env("WATCHDOG_USEC", "200000");
        },
    );

    let ready = notify.expect("READY=1");
    let status = field(&ready, "STATUS").expect("READY carries a STATUS");
    assert!(status.starts_with("listening on 127.0.0.1:"), "{status}");
    let addr: SocketAddr = status["listening on ".len()..]
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // The admin socket is bound before READY=1.
    assert!(sock.exists());

    notify.expect("WATCHDOG=1");
    notify.expect("WATCHDOG=1");

    let mut c = TestClient::connect(addr).await;
    c.read_until_line("*** Choose a nickname:").await;
    c.send("alice").await;
    c.read_until_line("*** Type /help for commands.").await;
    // The status refresh may or may not have caught the connection before the join: wait for the
    // datagram that shows the member, whichever it is.
    let s = notify.expect("1 clients (1 joined)");
    assert!(
        s.contains("STATUS=listening on 127.0.0.1:") && !s.contains("READY=1"),
        "{s}"
    );

    dir.file("n.toml", "http_listen = []\nmotd = \"two\"\n");
    d.signal(Signal::SIGHUP);
    let reloading = notify.expect("RELOADING=1");
    let usec: u64 = field(&reloading, "MONOTONIC_USEC")
        .expect("MONOTONIC_USEC in the same datagram")
        .parse()
        .unwrap();
    assert!(usec > 0);
    notify.expect("READY=1");
    let mut newcomer = TestClient::connect(addr).await;
    newcomer.expect("*** two").await;

    // A broken file: RELOADING, then READY again, old config kept, nobody disconnected.
    dir.file("n.toml", "motd = 5\n");
    let out = chatctl(&sock, &["reload"]);
    assert_eq!(out.code, 1);
    notify.expect("RELOADING=1");
    notify.expect("READY=1");
    c.send("/who").await;
    c.expect("*** 1 online: alice").await;

    d.signal(Signal::SIGTERM);
    notify.expect("STOPPING=1");
    let code = tokio::task::spawn_blocking(move || d.wait_exit(WAIT))
        .await
        .unwrap();
    assert_eq!(code, 0);
}

#[tokio::test]
async fn socket_activation_uses_inherited_descriptors() {
    let dir = Scratch::new("sd-activate");
    let chat = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = chat.local_addr().unwrap();
    let admin_path = dir.path("act.sock");
    let admin = std::os::unix::net::UnixListener::bind(&admin_path).unwrap();
    let cfg = dir.file("a.toml", "http_listen = []\n");
    // Copies above fd 10, so moving them onto 3 and 4 in the child cannot clobber one another.
    let high = |fd: &dyn AsFd| fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(10)).unwrap();
    let (chat_high, admin_high) = (high(&chat), high(&admin));
    let (chat_fd, admin_fd) = (chat_high.as_raw_fd(), admin_high.as_raw_fd());

    let mut cmd = Command::new("sh");
    // LISTEN_PID must be the daemon's pid: the shell's $$ becomes it through exec.
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
        .arg(DAEMON)
        .arg("--config")
        .arg(&cfg)
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "chat:admin")
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    #[allow(unsafe_code)]
    // SAFETY: between fork and exec we only call dup2, which is async-signal-safe; the source fds
    // are open listeners owned by this test for the whole call.
    unsafe {
        cmd.pre_exec(move || {
            for (from, to) in [(chat_fd, 3), (admin_fd, 4)] {
                if nix::libc::dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut d = Daemon::from_command(cmd);
    d.log_line("ready");
    assert!(d.log_line("socket passed by systemd").contains("name=chat"));

    let mut c = TestClient::connect(addr).await;
    c.expect("*** Welcome to groupchatd.").await;
    c.expect("*** Choose a nickname:").await;
    c.send("alice").await;
    c.read_until_line("*** Type /help for commands.").await;
    let out = chatctl(&admin_path, &["--json", "list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["result"]["clients"][0]["nick"], "alice");
    let stats = chatctl(&admin_path, &["--json", "stats"]).json();
    assert_eq!(stats["result"]["listen"][0], addr.to_string());

    d.signal(Signal::SIGTERM);
    assert_eq!(c.expect_closed().await, vec!["*** server shutting down"]);
    let code = tokio::task::spawn_blocking(move || d.wait_exit(WAIT))
        .await
        .unwrap();
    assert_eq!(code, 0);
    // The socket file belongs to systemd's socket unit: the daemon must leave it in place.
    assert!(admin_path.exists());
    drop((chat, admin, chat_high, admin_high));
}
