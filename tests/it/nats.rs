//! NATS servers for the cluster tests (issue 14): Debian's `nats-server` with JetStream, alone or
//! as a three-server JetStream cluster, on loopback ports chosen at run time, each stopped by its
//! own PID when its guard drops.
//!
//! Readiness is an event, never a pause: the server's own log line ("Server is ready", "... new
//! metadata leader"), then its INFO line (`"jetstream":true` and the name this harness gave it, so a
//! port taken over by someone else's server is noticed). Only the meta group's peers being current
//! has no log line; that one is read from the monitoring endpoint (`/jsz`), within a bound.
//!
//! A small raw-protocol client ([`NatsServer::request`]) lets tests ask JetStream's API what the
//! daemons built (`$JS.API.STREAM.INFO.…`) without a NATS client library.
//!
//! Where `nats-server` is missing the tests print a note and pass, unless `GROUPCHATD_REQUIRE_NATS=1`
//! (`.ci/run` sets it as root, where it installs the package): then its absence fails them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::WAIT;

/// Longest a server may take to stop after SIGTERM before it gets SIGKILL.
const STOP_BOUND: Duration = Duration::from_secs(5);
/// Attempts at starting with freshly chosen route ports when one was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// The `nats-server` executable: `$GROUPCHATD_NATS_SERVER`, else the first on `PATH`, in
/// `/usr/sbin` (where Debian puts it) or `/usr/bin`.
pub fn exe() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GROUPCHATD_NATS_SERVER") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// Whether a test that needs `nats-server` can run: `false` (after a note on stderr) when it is
/// missing, a failure when it is missing and `GROUPCHATD_REQUIRE_NATS=1`.
pub fn available(test: &str) -> bool {
    if exe().is_some() {
        return true;
    }
    let required = std::env::var_os("GROUPCHATD_REQUIRE_NATS").is_some_and(|v| v == "1");
    assert!(
        !required,
        "{test}: nats-server is not installed (nor $GROUPCHATD_NATS_SERVER), and GROUPCHATD_REQUIRE_NATS=1"
    );
    eprintln!(
        "skipping {test}: nats-server is not installed (`apt-get install nats-server`; .ci/run \
         installs it, and GROUPCHATD_REQUIRE_NATS=1 makes its absence a failure)"
    );
    false
}

/// A name no other server of this test run has (servers, and clusters, check it on each other).
fn unique(kind: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "gc{}{kind}{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// One `nats-server -js` process (or the place for one, between a stop and a restart).
pub struct NatsServer {
    /// Its `server_name`, unique in this test run.
    pub name: String,
    exe: PathBuf,
    /// The JetStream store directory, kept across restarts.
    store: PathBuf,
    /// Arguments after the common ones (the cluster's).
    extra: Vec<String>,
    /// The client port: chosen by the server at the first start (`-p -1`), the same ever after.
    port: u16,
    /// The monitoring port of the current process (`-m -1`, new at every start).
    monitor: u16,
    child: Option<Child>,
    log: Option<mpsc::Receiver<String>>,
    seen: Vec<String>,
}

/// Why a start failed: the server's own words.
struct StartError {
    log: Vec<String>,
}

impl StartError {
    fn port_taken(&self) -> bool {
        self.log
            .iter()
            .any(|l| l.contains("address already in use"))
    }
}

impl NatsServer {
    /// Starts a lone JetStream server storing under `DIR/js`, on a client port it chooses.
    pub fn start(dir: &crate::process::Scratch) -> NatsServer {
        let mut s = NatsServer::new(&dir.path("js"), Vec::new());
        if let Err(e) = s.launch() {
            panic!("nats-server {} did not start: {:#?}", s.name, e.log);
        }
        s.wait_jetstream();
        s
    }

    fn new(store: &Path, extra: Vec<String>) -> NatsServer {
        NatsServer {
            name: unique("n"),
            exe: exe().expect("nats-server (checked with nats::available)"),
            store: store.to_owned(),
            extra,
            port: 0,
            monitor: 0,
            child: None,
            log: None,
            seen: Vec::new(),
        }
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Spawns the process and waits (bounded) for "Server is ready", learning its ports from the
    /// log on the way. On failure the process is gone and its log is returned.
    /// The log lines of the current (or last) process so far.
    pub fn take_log(&mut self) -> Vec<String> {
        let mut out = std::mem::take(&mut self.seen);
        if let Some(log) = &self.log {
            out.extend(log.try_iter());
        }
        out
    }

    fn launch(&mut self) -> Result<(), StartError> {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let port = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        let mut cmd = Command::new(&self.exe);
        cmd.args([
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &port,
            "-m",
            "-1",
            "-n",
            &self.name,
        ])
        .arg("-sd")
        .arg(&self.store)
        .args(&self.extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.exe.display()));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.child = Some(child);
        self.log = Some(rx);
        self.seen.clear();
        let ready = self.try_log_line("Server is ready", WAIT);
        if ready.is_none() {
            self.kill();
            return Err(StartError {
                log: std::mem::take(&mut self.seen),
            });
        }
        let client = self.log_line("Listening for client connections on 127.0.0.1:");
        let monitor = self.log_line("Starting http monitor on 127.0.0.1:");
        let port_of =
            |line: &str| -> u16 { line.rsplit(':').next().unwrap().trim().parse().unwrap() };
        let got = port_of(&client);
        assert!(
            self.port == 0 || self.port == got,
            "restarted on another port"
        );
        self.port = got;
        self.monitor = port_of(&monitor);
        Ok(())
    }

    /// The first log line of the current process containing `needle`, waiting at most `bound`;
    /// `None` if it did not come (or the process exited first).
    pub fn try_log_line(&mut self, needle: &str, bound: Duration) -> Option<String> {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return Some(l.clone());
        }
        let log = self.log.as_ref()?;
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = log.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if line.contains(needle) {
                return Some(line);
            }
        }
    }

    /// Like [`try_log_line`](Self::try_log_line) within [`WAIT`], panicking with the log if absent.
    pub fn log_line(&mut self, needle: &str) -> String {
        match self.try_log_line(needle, WAIT) {
            Some(l) => l,
            None => panic!(
                "nats-server {}: no log line containing {needle:?}; got {:#?}",
                self.name, self.seen
            ),
        }
    }

    /// Checks the INFO line: this server (by name), JetStream on.
    fn wait_jetstream(&self) {
        let info = self.info();
        assert_eq!(
            info["server_name"], self.name,
            "port {} is someone else's server: {info}",
            self.port
        );
        assert_eq!(info["jetstream"], true, "JetStream is not on: {info}");
    }

    /// The server's INFO line (the first thing it says to a client), parsed.
    pub fn info(&self) -> serde_json::Value {
        let stream = connect(self.port);
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        let json = line
            .strip_prefix("INFO ")
            .unwrap_or_else(|| panic!("not an INFO line: {line:?}"));
        serde_json::from_str(json.trim_end()).unwrap()
    }

    /// `GET /jsz` on the monitoring port, parsed.
    pub fn jsz(&self) -> serde_json::Value {
        let mut stream = connect(self.monitor);
        stream
            .write_all(b"GET /jsz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        let (head, body) = reply
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("not an HTTP reply: {reply:?}"));
        assert!(
            head.starts_with("HTTP/1.") && head.contains(" 200 "),
            "{head}"
        );
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
    }

    /// One request over the raw NATS protocol (`PUB subject inbox payload`), returning the reply's
    /// payload: enough to ask the JetStream API (`$JS.API.…`) what exists.
    pub fn request(&self, subject: &str, payload: &str) -> String {
        request(self.port, subject, payload)
    }

    /// SIGTERM, then (after [`STOP_BOUND`]) SIGKILL; waits until it has exited.
    pub fn stop(&mut self) {
        let Some(pid) = self.pid() else { return };
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        if !self.wait_exit(STOP_BOUND) {
            self.kill();
        } else {
            self.reap();
        }
    }

    /// SIGKILL; waits until it has exited.
    pub fn kill(&mut self) {
        let Some(pid) = self.pid() else { return };
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        assert!(self.wait_exit(WAIT), "{} survived SIGKILL", self.name);
        self.reap();
    }

    /// Starts it again on the same client port (and route port, in a cluster) with the same
    /// store, stopping it first if it runs; waits until JetStream is on.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.launch() {
            panic!(
                "nats-server {} did not restart on port {}: {:#?}",
                self.name, self.port, e.log
            );
        }
        self.wait_jetstream();
    }

    /// Waits (at most `bound`) for the end of its stderr, which closes as the process exits.
    fn wait_exit(&mut self, bound: Duration) -> bool {
        let Some(log) = &self.log else { return true };
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match log.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return true,
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        self.log = None;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// A TCP connection to a loopback port, every step bounded by [`WAIT`].
fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), WAIT)
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream
}

/// See [`NatsServer::request`].
pub fn request(port: u16, subject: &str, payload: &str) -> String {
    try_request(port, subject, payload, WAIT)
        .unwrap_or_else(|| panic!("no reply to {subject} within {WAIT:?}"))
}

/// Like [`request`], `None` when no reply came within `bound` (a JetStream subject whose stream
/// has no leader at the moment, say).
pub fn try_request(port: u16, subject: &str, payload: &str, bound: Duration) -> Option<String> {
    let deadline = Instant::now() + bound;
    let stream = connect(port);
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("INFO "), "{line:?}");
    let inbox = "_INBOX.gcdtest";
    write!(
        &stream,
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":false}}\r\n\
         SUB {inbox} 1\r\nPUB {subject} {inbox} {}\r\n{payload}\r\n",
        payload.len()
    )
    .unwrap();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let l = line.trim_end();
        if l == "PING" {
            (&stream).write_all(b"PONG\r\n").unwrap();
        } else if let Some(msg) = l.strip_prefix("MSG ") {
            let len: usize = msg.rsplit(' ').next().unwrap().parse().unwrap();
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body).ok()?;
            body.truncate(len);
            return Some(String::from_utf8(body).unwrap());
        } else {
            assert!(!l.starts_with("-ERR"), "{subject}: {l}");
        }
    }
}

/// Like [`request`], the reply parsed as JSON.
pub fn request_json(port: u16, subject: &str, payload: &str) -> serde_json::Value {
    let reply = request(port, subject, payload);
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{e}: {reply:?}"))
}

/// Three (or `n`) `nats-server -js` routed to each other as one JetStream cluster.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` servers storing under `DIR/js1…`, each with every other's route port, and waits
    /// until the JetStream meta group has a leader that sees all the others as current.
    pub fn start(dir: &crate::process::Scratch, n: usize) -> NatsCluster {
        let cluster = unique("c");
        for attempt in 1..=PORT_ATTEMPTS {
            // Route ports must be known before any server starts (each lists all of them), so
            // they are chosen here: held together so they differ, then released for the servers.
            // Another process may take one in between: then every server stops and all start
            // again on new ports.
            let holds: Vec<TcpListener> = (0..n)
                .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
                .collect();
            let ports: Vec<u16> = holds
                .iter()
                .map(|l| l.local_addr().unwrap().port())
                .collect();
            drop(holds);
            let routes = ports
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(",");
            let mut servers = Vec::new();
            let mut taken = false;
            for (i, port) in ports.iter().enumerate() {
                let extra = vec![
                    "--cluster".to_owned(),
                    format!("nats://127.0.0.1:{port}"),
                    "--cluster_name".to_owned(),
                    cluster.clone(),
                    "--routes".to_owned(),
                    routes.clone(),
                ];
                let store = dir.path(&format!("js{}-{attempt}", i + 1));
                let mut s = NatsServer::new(&store, extra);
                match s.launch() {
                    Ok(()) => servers.push(s),
                    Err(e) if e.port_taken() => {
                        eprintln!("route port taken meanwhile (attempt {attempt}); choosing again");
                        taken = true;
                        break;
                    }
                    Err(e) => panic!("nats-server {} did not start: {:#?}", s.name, e.log),
                }
            }
            if taken {
                continue; // `servers` dropped: each killed by its PID
            }
            let mut c = NatsCluster { servers };
            for s in &c.servers {
                s.wait_jetstream();
            }
            // nats-server 2.9 on a loaded machine now and then forms no first metadata leader
            // at all (seen once in dozens of runs): that cluster is stopped and another started.
            match c.try_wait_meta_leader() {
                Ok(()) => return c,
                Err(why) => eprintln!("JetStream cluster did not form (attempt {attempt}): {why}"),
            }
        }
        panic!("no JetStream cluster formed in {PORT_ATTEMPTS} attempts");
    }

    /// Every server's log so far (for a failing test to print).
    pub fn take_logs(&mut self) -> Vec<(String, Vec<String>)> {
        self.servers
            .iter_mut()
            .map(|s| (s.name.clone(), s.take_log()))
            .collect()
    }

    /// Every server's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// The server called `name`.
    pub fn by_name(&mut self, name: &str) -> &mut NatsServer {
        self.servers
            .iter_mut()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no server called {name}"))
    }

    /// Some running server.
    pub fn any_running(&self) -> &NatsServer {
        self.servers
            .iter()
            .find(|s| s.running())
            .expect("a running server")
    }

    /// Waits until every running server has logged a meta leader, and the leader's `/jsz` shows
    /// each other running server as a current peer (only then can it place an R3 stream).
    pub fn wait_meta_leader(&mut self) {
        if let Err(why) = self.try_wait_meta_leader() {
            panic!("{why}");
        }
    }

    fn try_wait_meta_leader(&mut self) -> Result<(), String> {
        for s in self.servers.iter_mut().filter(|s| s.running()) {
            // Either "Self is new JetStream cluster metadata leader" or "… new metadata leader: n/c".
            if s.try_log_line("metadata leader", WAIT).is_none() {
                return Err(format!(
                    "nats-server {}: no metadata leader within {WAIT:?}; log: {:#?}",
                    s.name, s.seen
                ));
            }
        }
        let running: Vec<&NatsServer> = self.servers.iter().filter(|s| s.running()).collect();
        // No log line says "the leader sees its peers"; /jsz does. Asked a bounded number of
        // times, a short interval apart.
        let deadline = Instant::now() + WAIT;
        let mut last = serde_json::Value::Null;
        while Instant::now() < deadline {
            for s in &running {
                let meta = s.jsz()["meta_cluster"].clone();
                if meta["leader"] != s.name.as_str() {
                    continue;
                }
                let current = meta["replicas"].as_array().map_or(0, |r| {
                    r.iter()
                        .filter(|p| p["current"] == true && p["offline"] != true)
                        .count()
                });
                if current + 1 >= running.len() {
                    return Ok(());
                }
                last = meta;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "no meta leader with every running peer current within {WAIT:?}; last: {last}"
        ))
    }
}

/// Bounded retry of a TCP connect, for a server that was just told to start (its log said it
/// listens, so this normally succeeds at once).
pub fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), WAIT).is_ok()
}

// ------------------------------------------------------------------------------------------------
// The harness's own tests: what the cluster tests rely on, checked against the real nats-server.

/// A JetStream API reply that is not an error, or a panic naming it.
fn ok(reply: serde_json::Value, what: &str) -> serde_json::Value {
    assert!(reply.get("error").is_none(), "{what}: {reply}");
    reply
}

#[test]
fn one_server_has_jetstream_keeps_its_stream_over_a_restart_and_dies_by_sigkill() {
    if !available("nats harness (one server)") {
        return;
    }
    let dir = crate::process::Scratch::new("nats-one");
    let mut s = NatsServer::start(&dir);
    let port = s.port();
    assert_ne!(port, 0);
    assert!(s.url().starts_with("nats://127.0.0.1:"));
    let info = s.info();
    assert_eq!(info["jetstream"], true);
    assert_eq!(info["version"], s.info()["version"]);
    let account = ok(request_json(port, "$JS.API.INFO", ""), "account info");
    assert_eq!(account["streams"], 0, "{account}");

    // A stream with one message, stored under the scratch dir.
    ok(
        request_json(
            port,
            "$JS.API.STREAM.CREATE.h",
            r#"{"name":"h","subjects":["h.>"],"storage":"file","num_replicas":1}"#,
        ),
        "stream create",
    );
    let ack = ok(
        serde_json::from_str(&s.request("h.x", "hello")).unwrap(),
        "publish",
    );
    assert_eq!(ack["seq"], 1, "{ack}");
    assert!(dir.path("js").join("jetstream").is_dir());

    // SIGTERM and a restart: the same port, the same store, so the message is still there.
    let pid = s.pid().unwrap();
    s.restart();
    assert_ne!(s.pid().unwrap(), pid, "a new process");
    assert_eq!(s.port(), port);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "old one gone"
    );
    let info = ok(
        request_json(port, "$JS.API.STREAM.INFO.h", ""),
        "stream info",
    );
    assert_eq!(info["state"]["messages"], 1, "{info}");

    // SIGKILL: nothing listens any more; a restart after it works too.
    s.kill();
    assert!(!s.running());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    s.restart();
    assert!(accepts(port));
    let info = ok(
        request_json(port, "$JS.API.STREAM.INFO.h", ""),
        "stream info",
    );
    assert_eq!(info["state"]["messages"], 1, "{info}");

    // The guard kills by PID.
    let pid = s.pid().unwrap();
    drop(s);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

/// Publishes `payload` to `subject` until JetStream acknowledges it, within `bound`: until a
/// stream has a leader the API answers with an error or not at all, so each attempt waits 2 s.
fn stored(port: u16, subject: &str, payload: &str, bound: Duration) -> serde_json::Value {
    let deadline = Instant::now() + bound;
    loop {
        let reply = try_request(port, subject, payload, Duration::from_secs(2));
        match reply.map(|r| serde_json::from_str::<serde_json::Value>(&r)) {
            Some(Ok(v)) if v.get("error").is_none() && v.get("seq").is_some() => return v,
            _ if Instant::now() < deadline => continue,
            other => panic!("no acknowledgement from {subject} within {bound:?}: {other:?}"),
        }
    }
}

#[test]
fn three_servers_form_a_jetstream_cluster_that_keeps_an_r3_stream_without_one_of_them() {
    if !available("nats harness (cluster)") {
        return;
    }
    let dir = crate::process::Scratch::new("nats-three");
    let mut c = NatsCluster::start(&dir, 3);
    let names: Vec<String> = c.servers.iter().map(|s| s.name.clone()).collect();
    for s in &c.servers {
        let meta = s.jsz()["meta_cluster"].clone();
        assert_eq!(meta["cluster_size"], 3, "{meta}");
        assert!(
            names.iter().any(|n| meta["leader"] == n.as_str()),
            "leader is one of ours: {meta}"
        );
    }
    let urls = c.urls();
    assert_eq!(urls.len(), 3);

    // An R3 stream: one replica on each server.
    let port = c.servers[0].port();
    let created = ok(
        request_json(
            port,
            "$JS.API.STREAM.CREATE.r",
            r#"{"name":"r","subjects":["r.>"],"storage":"file","num_replicas":3}"#,
        ),
        "R3 stream create",
    );
    assert_eq!(created["config"]["num_replicas"], 3, "{created}");
    // A stream just created may take a moment to elect its first leader on a loaded machine.
    let ack = stored(c.servers[1].port(), "r.x", "one", WAIT * 2);
    assert!(ack["seq"].as_u64() >= Some(1), "{ack}");

    // Kill the stream's leader: the other two elect one and take the next message.
    let info = ok(
        request_json(port, "$JS.API.STREAM.INFO.r", ""),
        "stream info",
    );
    let leader = info["cluster"]["leader"].as_str().unwrap().to_owned();
    assert!(names.contains(&leader), "{info}");
    c.by_name(&leader).kill();
    let survivor = c.any_running().port();
    let ack = stored(survivor, "r.x", "two", WAIT * 2);
    // (An attempt that timed out may still have been stored: then this one is the third.)
    let seq = ack["seq"].as_u64().unwrap();
    assert!(seq >= 2, "{ack}");
    let info = ok(
        request_json(survivor, "$JS.API.STREAM.INFO.r", ""),
        "stream info",
    );
    assert_eq!(info["state"]["messages"], seq, "{info}");
    assert_ne!(info["cluster"]["leader"], leader.as_str(), "{info}");

    // The killed server comes back on its ports and catches up.
    c.by_name(&leader).restart();
    c.wait_meta_leader();
    let pid = c.by_name(&leader).pid().unwrap();
    drop(c);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}
