//! The real `groupchatd` binary: configuration errors, `--check-config`, and a graceful SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{TestClient, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_groupchatd");

/// A scratch directory for one test, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check_config(path: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--check-config")
        .arg("--config")
        .arg(path)
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(out.stdout),
        text(out.stderr),
    )
}

#[test]
fn shipped_example_config_is_valid() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/groupchatd.toml");
    let (code, stdout, stderr) = check_config(&path);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
}

#[test]
fn bad_config_exits_78_and_names_file_and_key() {
    let dir = Scratch::new("bad-config");
    let cases = [
        ("range.toml", "max_line_bytes = 10\n", "max_line_bytes"),
        (
            "unknown.toml",
            "listen = [\"127.0.0.1:0\"]\nfrobnicate = 1\n",
            "frobnicate",
        ),
        ("type.toml", "max_clients = \"lots\"\n", "max_clients"),
        ("addr.toml", "listen = [\"not-an-address\"]\n", "listen"),
    ];
    for (file, text, key) in cases {
        let path = dir.file(file, text);
        let (code, _, stderr) = check_config(&path);
        assert_eq!(code, 78, "{file}: {stderr}");
        assert!(
            stderr.contains(file) && stderr.contains(key),
            "{file}: {stderr}"
        );
        // Starting (not just checking) fails the same way, before binding anything.
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{file}");
    }
    let missing = dir.0.join("missing.toml");
    let (code, _, stderr) = check_config(&missing);
    assert_eq!(code, 78);
    assert!(stderr.contains("missing.toml"), "{stderr}");
    let out = Command::new(BIN)
        .args(["--check-config", "--listen", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}

/// A daemon process started by a test; killed (by its own PID) if the test did not stop it.
struct Daemon {
    child: Child,
    log: mpsc::Receiver<String>,
}

impl Daemon {
    fn start(args: &[&str]) -> Daemon {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon { child, log }
    }

    /// Waits for a log line containing `needle`.
    fn log_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line containing {needle:?}"),
            }
        }
    }

    fn listening_addr(&self) -> SocketAddr {
        let line = self.log_line("listening for chat connections");
        let start = line.find("addr=").expect("addr field") + 5;
        line[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    fn wait_exit(&mut self, bound: Duration) -> i32 {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit within {bound:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test]
async fn sigterm_tells_clients_and_exits_0() {
    let dir = Scratch::new("sigterm");
    let cfg = dir.file(
        "g.toml",
        "motd = \"hello from the binary\"\nshutdown_grace_secs = 3\n",
    );
    let sock = dir.0.join("admin.sock");
    let mut d = Daemon::start(&[
        "--config",
        cfg.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin-socket",
        sock.to_str().unwrap(),
    ]);
    let addr = d.listening_addr();
    let mut c = TestClient::connect(addr).await;
    c.expect("*** hello from the binary").await;
    c.expect("*** Choose a nickname:").await;
    c.send("alice").await;
    c.read_until_line("*** Type /help for commands.").await;
    d.log_line("joined");
    d.signal(Signal::SIGTERM);
    assert_eq!(c.expect_closed().await, vec!["*** server shutting down"]);
    let code = tokio::task::spawn_blocking(move || {
        let code = d.wait_exit(Duration::from_secs(4) + WAIT);
        d.log_line("stopped");
        code
    })
    .await
    .unwrap();
    assert_eq!(code, 0);
}
