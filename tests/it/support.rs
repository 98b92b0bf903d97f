//! Shared helpers: an in-process server on 127.0.0.1:0 and a netcat-like test client.
//!
//! Every wait is bounded by [`WAIT`]; nothing sleeps to synchronise. "Nothing else arrived" is proven
//! with a barrier: another client sends a marker and the next line received must be that marker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use groupchatd::app::App;
use groupchatd::config::Config;
use groupchatd::hub::Hub;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound on any single expected event.
pub const WAIT: Duration = Duration::from_secs(10);

/// A unique admin socket path for one test daemon (short: Unix socket paths are limited to 108 bytes).
pub fn unique_socket_path() -> std::path::PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("gcd-it-{}-{n}.sock", std::process::id()))
}

/// A config for tests: loopback, port 0, no HTTP (tests that want it ask for port 0), its own admin
/// socket, flood control off unless a test turns it on.
pub fn test_config() -> Config {
    Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        http_listen: vec![],
        admin_socket: Some(unique_socket_path()),
        flood: None,
        ..Config::default()
    }
}

/// A running in-process daemon.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The first HTTP listener, if the config has one.
    pub http: Option<SocketAddr>,
    pub hub: Arc<Hub>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(config: Config) -> TestServer {
        Self::serve(App::bind(config).expect("bind 127.0.0.1:0"))
    }

    /// Serves an app bound (and adjusted) by the test.
    pub fn serve(app: App) -> TestServer {
        let addr = app.local_addrs()[0];
        let http = app.http_addrs().first().copied();
        let hub = app.hub().clone();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            http,
            hub,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Triggers the graceful stop without waiting for it.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Triggers the graceful stop (unless [`begin_stop`](Self::begin_stop) did) and waits
    /// (bounded) for `run` to return.
    pub async fn stop(mut self) {
        self.begin_stop();
        tokio::time::timeout(WAIT, self.task.take().unwrap())
            .await
            .expect("server stopped within the bound")
            .unwrap();
    }

    pub async fn client(&self) -> TestClient {
        TestClient::connect(self.addr).await
    }

    /// Connects and joins as `nick`, consuming the greeting and welcome.
    pub async fn join(&self, nick: &str) -> TestClient {
        let mut c = self.client().await;
        c.read_until_line("*** Choose a nickname:").await;
        c.send(nick).await;
        let welcome = c.line().await;
        assert!(
            welcome.starts_with(&format!("*** Welcome, {nick}!")),
            "welcome: {welcome:?}"
        );
        c.read_until_line("*** Type /help for commands.").await;
        c
    }

    /// Waits until the hub has exactly `n` connections.
    pub async fn wait_connections(&self, n: usize) {
        wait_for(
            &self.hub,
            || self.hub.counts().0 == n,
            &format!("{n} connections"),
        )
        .await;
    }
}

/// Waits until `cond` holds, re-checking each time the hub's membership changes, for at most [`WAIT`].
pub async fn wait_for(hub: &Hub, mut cond: impl FnMut() -> bool, what: &str) {
    let mut changes = hub.subscribe();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        tokio::time::timeout_at(deadline, changes.changed())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap();
    }
}

/// A raw line client, like `nc`.
pub struct TestClient {
    pub reader: BufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
}

impl TestClient {
    pub async fn connect(addr: SocketAddr) -> TestClient {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        Self::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> TestClient {
        let (r, w) = stream.into_split();
        TestClient {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    /// Sends `text` followed by LF.
    pub async fn send(&mut self, text: &str) {
        self.send_raw(format!("{text}\n").as_bytes()).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
        self.writer.flush().await.unwrap();
    }

    /// The next raw line including its terminator, or None at EOF.
    pub async fn raw_line(&mut self) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(WAIT, self.reader.read_until(b'\n', &mut buf))
            .await
            .expect("a line within the bound")
            .unwrap_or(0);
        (n > 0).then_some(buf)
    }

    /// The next line, checked to end in CRLF, without it. Panics at EOF or timeout.
    pub async fn line(&mut self) -> String {
        let raw = self.raw_line().await.expect("a line, not EOF");
        assert!(raw.ends_with(b"\r\n"), "server lines end in CRLF: {raw:?}");
        String::from_utf8(raw[..raw.len() - 2].to_vec()).expect("server sends UTF-8")
    }

    pub async fn expect(&mut self, expected: &str) {
        assert_eq!(self.line().await, expected);
    }

    /// Skips lines until one equals `expected`; returns the skipped ones.
    pub async fn read_until_line(&mut self, expected: &str) -> Vec<String> {
        let mut skipped = Vec::new();
        loop {
            let l = self.line().await;
            if l == expected {
                return skipped;
            }
            skipped.push(l);
        }
    }

    /// Asserts the server closes the connection (EOF or reset) within the bound, returning any lines
    /// that arrived first.
    pub async fn expect_closed(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut buf = Vec::new();
            match tokio::time::timeout(WAIT, self.reader.read_until(b'\n', &mut buf)).await {
                Err(_) => panic!("connection not closed within the bound; got {lines:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return lines,
                Ok(Ok(_)) => lines.push(String::from_utf8_lossy(&buf).trim_end().to_owned()),
            }
        }
    }
}

/// Proves `quiet` received nothing before a marker: `from` sends a unique marker, and the next line
/// `quiet` receives must be that marker.
pub async fn barrier(from: &mut TestClient, from_nick: &str, quiet: &mut TestClient, tag: &str) {
    let marker = format!("barrier-{tag}");
    from.send(&marker).await;
    quiet.expect(&format!("<{from_nick}> {marker}")).await;
}

/// Held by the tests that load the machine the most (many daemons under load, the soak, a real
/// browser), so no two of them run at once. The stop tests assert that every line a client wrote
/// before SIGTERM is relayed; with chromium or another load test beside them on 2 cores, the
/// kernel sometimes had not yet moved a loopback write into the daemon's socket by the time the
/// stop's drain read it, and a test failed for the machine's sake rather than the daemon's.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Raises this process's soft limit on open files to the hard limit: tests with hundreds of
/// clients hold one descriptor per connection (the daemon raises its own limit itself).
pub fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

// ------------------------------------------------------------------------------------------------

/// Well-behaved clients that chat through a hostile test and check what they got.
pub mod audience;
pub mod http;
