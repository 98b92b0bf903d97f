//! Helpers for tests that run the real binaries: scratch directories, a daemon child process, chatctl.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::WAIT;

pub const DAEMON: &str = env!("CARGO_BIN_EXE_groupchatd");
pub const CHATCTL: &str = env!("CARGO_BIN_EXE_chatctl");

/// A scratch directory for one test, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        // Short: admin socket paths inside must stay under the 108-byte Unix socket limit.
        let dir = std::env::temp_dir().join(format!("gcd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `config` with `http_listen = []` first unless it sets `http_listen` (top-level keys come
/// before any `[[rooms]]` table, so first is always a valid place).
pub fn without_default_http(config: &str) -> String {
    if config.contains("http_listen") {
        config.to_owned()
    } else {
        format!("http_listen = []\n{config}")
    }
}

/// A daemon process started by a test; killed (by its own PID) if the test did not stop it.
pub struct Daemon {
    pub child: Child,
    log: mpsc::Receiver<String>,
    seen: std::cell::RefCell<Vec<String>>,
    pub addr: Option<SocketAddr>,
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts `groupchatd --config DIR/NAME.toml --listen 127.0.0.1:0 --admin-socket DIR/NAME.sock`
    /// with `config` as the file, and waits until it listens. Unless `config` sets `http_listen`,
    /// the file starts with `http_listen = []`: tests run side by side, and the default port
    /// (7080) is one for all of them.
    pub fn start(dir: &Scratch, name: &str, config: &str) -> Daemon {
        Self::start_with(dir, name, config, |_| {})
    }

    /// Spawns the daemon with exactly `args` (stderr captured), letting the test adjust the command
    /// (environment, fds).
    pub fn spawn_with<S: AsRef<std::ffi::OsStr>>(
        args: &[S],
        adjust: impl FnOnce(&mut Command),
    ) -> Daemon {
        Self::spawn_exe(Path::new(DAEMON), args, adjust)
    }

    /// Like [`Daemon::spawn_with`], running the daemon binary at `exe` (a copy of it).
    pub fn spawn_exe<S: AsRef<std::ffi::OsStr>>(
        exe: &Path,
        args: &[S],
        adjust: impl FnOnce(&mut Command),
    ) -> Daemon {
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("WATCHDOG_USEC")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        adjust(&mut cmd);
        Self::from_command(cmd)
    }

    /// Runs a prepared command (its stderr is captured here).
    pub fn from_command(mut cmd: Command) -> Daemon {
        let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child,
            log,
            seen: Default::default(),
            addr: None,
            socket: PathBuf::new(),
        }
    }

    /// The first log line (seen so far or arriving within the bound) containing `needle`.
    pub fn log_line(&self, needle: &str) -> String {
        if let Some(line) = self.seen.borrow().iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    self.seen.borrow_mut().push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line containing {needle:?}; got {:#?}",
                    self.seen.borrow()
                ),
            }
        }
    }

    /// The address of the first HTTP listener (from its log line).
    pub fn http_addr(&self) -> SocketAddr {
        let line = self.log_line("listening for HTTP connections");
        let start = line.find("addr=").expect("addr field") + 5;
        line[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    pub fn listening_addr(&self) -> SocketAddr {
        let line = self.log_line("listening for chat connections");
        let start = line.find("addr=").expect("addr field") + 5;
        line[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("started with Daemon::start")
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits (bounded) for the process to exit; returns its exit code. The event is the end of its
    /// stderr: the pipe closes when the daemon exits, which ends the log reader thread and so
    /// disconnects the log channel (lines still arriving are kept for `log_line`).
    pub fn wait_exit(&mut self, bound: Duration) -> i32 {
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => self.seen.borrow_mut().push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("daemon did not exit within {bound:?}")
                }
            }
        }
        // stderr closes as the process exits; reaping it is immediate.
        self.child.wait().unwrap().code().unwrap_or(-1)
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

/// Output of one chatctl run.
pub struct Ctl {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ctl {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", self.stdout))
    }
}

/// Runs `chatctl --socket SOCKET ARGS…` (blocking, bounded by chatctl's own --timeout).
pub fn chatctl(socket: &Path, args: &[&str]) -> Ctl {
    chatctl_with(Command::new(CHATCTL).arg("--socket").arg(socket).args(args))
}

pub fn chatctl_with(cmd: &mut Command) -> Ctl {
    let out = cmd
        .env_remove("GROUPCHATD_SOCKET")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Ctl {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ------------------------------------------------------------------------------------------------
// Resource probes, admin requests and log scanning for the reliability suites (hostile, load, soak).

/// Resident memory of process `pid` in bytes (`VmRSS` of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .expect("VmRSS in /proc/PID/status");
    kib.trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// Open file descriptors of process `pid` (entries of /proc/PID/fd).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Sends one request line to the admin socket at `socket` and returns the daemon's reply, parsed.
/// Blocking, each step bounded by [`WAIT`].
pub fn admin_request(socket: &Path, request: &str) -> serde_json::Value {
    use std::io::Write;
    let stream = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    (&stream)
        .write_all(format!("{request}\n").as_bytes())
        .unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

/// The `result` of the admin `stats` command (`clients`, `members`, counters…).
pub fn admin_stats(socket: &Path) -> serde_json::Value {
    let reply = admin_request(socket, r#"{"cmd":"stats"}"#);
    assert_eq!(reply["ok"], true, "stats refused: {reply}");
    reply["result"].clone()
}

impl Daemon {
    /// The daemon's process id, for /proc probes.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Like [`Daemon::start`], letting the test adjust the command (e.g. `RUST_LOG`).
    pub fn start_with(
        dir: &Scratch,
        name: &str,
        config: &str,
        adjust: impl FnOnce(&mut Command),
    ) -> Daemon {
        Self::start_exe(Path::new(DAEMON), dir, name, config, adjust)
    }

    /// Like [`Daemon::start_with`], running the daemon binary at `exe`.
    pub fn start_exe(
        exe: &Path,
        dir: &Scratch,
        name: &str,
        config: &str,
        adjust: impl FnOnce(&mut Command),
    ) -> Daemon {
        let cfg = dir.file(&format!("{name}.toml"), &without_default_http(config));
        let socket = dir.path(&format!("{name}.sock"));
        let args = [
            "--config".as_ref(),
            cfg.as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--admin-socket".as_ref(),
            socket.as_os_str(),
        ];
        let mut d = Daemon::spawn_exe(exe, &args, adjust);
        d.socket = socket;
        d.addr = Some(d.listening_addr());
        d.log_line("ready");
        d
    }

    /// Waits (bounded by `bound`) until at least `n` log lines containing `needle` were seen.
    pub fn log_count(&self, needle: &str, n: usize, bound: Duration) {
        let deadline = Instant::now() + bound;
        loop {
            let have = self
                .seen
                .borrow()
                .iter()
                .filter(|l| l.contains(needle))
                .count();
            if have >= n {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => self.seen.borrow_mut().push(line),
                Err(_) => panic!("{have} of {n} log lines containing {needle:?} within {bound:?}"),
            }
        }
    }

    /// Takes every log line that has arrived, without waiting and without keeping them (so a
    /// long run does not accumulate its log in memory). After the process exited this is its
    /// whole remaining log.
    pub fn take_log(&self) -> Vec<String> {
        let mut lines: Vec<String> = std::mem::take(&mut *self.seen.borrow_mut());
        lines.extend(self.log.try_iter());
        lines
    }
}

/// Sends raw bytes on one admin connection and returns the next `replies` reply lines, parsed.
pub fn admin_exchange(socket: &Path, payload: &[u8], replies: usize) -> Vec<serde_json::Value> {
    use std::io::Write;
    let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    (&stream).write_all(payload).unwrap();
    let mut reader = BufReader::new(&stream);
    (0..replies)
        .map(|_| {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
        })
        .collect()
}

/// The process serving a daemon's admin socket once an upgrade has handed the service on (a
/// descendant of the daemon the test started, so not the test's to reap): stopped with SIGTERM
/// by its PID, and killed if the test fails before that.
pub struct Serving(Option<u32>);

impl Serving {
    /// Whoever serves `socket` now.
    pub fn of(socket: &Path) -> Serving {
        let pid = admin_stats(socket)["pid"]
            .as_u64()
            .expect("stats has the pid");
        Serving(Some(pid as u32))
    }

    /// SIGTERM, then the exit code once the log pipe the line of processes shares has closed.
    pub fn stop(&mut self, d: &mut Daemon) -> i32 {
        let pid = self.0.take().expect("still serving");
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
        d.wait_exit(WAIT)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}
