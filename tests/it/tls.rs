//! TLS for line clients (issue 15): TLS and plain clients in one room, certificate rotation under
//! a connected client, bad certificate files at start and at reload, the handshake timeout, a TLS
//! reader that stops reading, `/quit`, refusals, `chatctl upgrade`, and a real `openssl s_client`.
//!
//! Certificates are made here with rcgen: a test CA, and leaves it signs for `localhost` and
//! 127.0.0.1. The Rust client verifies the server against that CA like any client would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use groupchatd::app::App;
use groupchatd::config::Config;
use groupchatd::hub::Hub;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, date_time_ymd};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::process::{DAEMON, Daemon, Scratch, admin_stats, chatctl};
use crate::support::{TestClient, WAIT, test_config, wait_for};

// ------------------------------------------------------------------------------------------------
// Certificates

/// A test CA, trusted by the test clients (also used by tests/it/https.rs).
pub(crate) struct Pki {
    pub(crate) ca: CertifiedIssuer<'static, KeyPair>,
    pub(crate) roots: Arc<RootCertStore>,
}

/// A leaf certificate the CA signed: its PEM chain (leaf, then CA), its key, and its DER.
pub(crate) struct Leaf {
    chain: String,
    key: String,
    pub(crate) der: CertificateDer<'static>,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "groupchatd test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        Pki {
            ca,
            roots: Arc::new(roots),
        }
    }

    /// A certificate for localhost and 127.0.0.1 named `cn`, valid from `from` to `until` (years).
    pub(crate) fn leaf(&self, cn: &str, from: i32, until: i32) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.not_before = date_time_ymd(from, 1, 1);
        params.not_after = date_time_ymd(until, 1, 1);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            chain: format!("{}{}", cert.pem(), self.ca.pem()),
            key: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A certificate valid now.
    pub(crate) fn valid(&self, cn: &str) -> Leaf {
        self.leaf(cn, 2020, 4000)
    }
}

impl Leaf {
    /// Writes the chain and key as `cert.pem` and `key.pem` in `dir` (replacing what is there,
    /// as certbot does), returning their paths.
    pub(crate) fn install(&self, dir: &Scratch) -> (PathBuf, PathBuf) {
        (
            dir.file("cert.pem", &self.chain),
            dir.file("key.pem", &self.key),
        )
    }
}

/// Config lines for TLS on 127.0.0.1 (any port) with `dir`'s cert.pem and key.pem.
fn tls_lines(dir: &Scratch) -> String {
    format!(
        "tls_listen = [\"127.0.0.1:0\"]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        dir.path("cert.pem").display(),
        dir.path("key.pem").display()
    )
}

// ------------------------------------------------------------------------------------------------
// A TLS line client

type Tls = TlsStream<TcpStream>;

/// A line client over TLS, like `openssl s_client -quiet`.
struct TlsClient {
    reader: BufReader<ReadHalf<Tls>>,
    writer: WriteHalf<Tls>,
    /// The certificate the server presented.
    cert: CertificateDer<'static>,
    version: ProtocolVersion,
    /// Its own address, as the server sees it.
    local: SocketAddr,
}

const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

impl TlsClient {
    async fn connect(addr: SocketAddr, pki: &Pki) -> TlsClient {
        let tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        Self::over(tcp, pki, BOTH).await
    }

    /// Runs the handshake over `tcp`, offering `versions`.
    async fn over(
        tcp: TcpStream,
        pki: &Pki,
        versions: &[&'static SupportedProtocolVersion],
    ) -> TlsClient {
        let config = ClientConfig::builder_with_provider(Arc::new(groupchatd::tls::provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(pki.roots.clone())
            .with_no_client_auth();
        let local = tcp.local_addr().unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = tokio::time::timeout(
            WAIT,
            TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .expect("handshake within the bound")
        .expect("handshake");
        let (_, conn) = tls.get_ref();
        let cert = conn.peer_certificates().unwrap()[0].clone().into_owned();
        let version = conn.protocol_version().unwrap();
        let (r, w) = tokio::io::split(tls);
        TlsClient {
            reader: BufReader::new(r),
            writer: w,
            cert,
            version,
            local,
        }
    }

    /// Connects and joins as `nick`, consuming the greeting and the welcome.
    async fn join(addr: SocketAddr, pki: &Pki, nick: &str) -> TlsClient {
        let mut c = Self::connect(addr, pki).await;
        c.read_until_line("*** Choose a nickname:").await;
        c.send(nick).await;
        let welcome = c.line().await;
        assert!(
            welcome.starts_with(&format!("*** Welcome, {nick}!")),
            "{welcome:?}"
        );
        c.read_until_line("*** Type /help for commands.").await;
        c
    }

    async fn send(&mut self, text: &str) {
        self.writer
            .write_all(format!("{text}\n").as_bytes())
            .await
            .unwrap();
        self.writer.flush().await.unwrap();
    }

    /// The next line without its CRLF (which it must have).
    async fn line(&mut self) -> String {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(WAIT, self.reader.read_until(b'\n', &mut buf))
            .await
            .expect("a line within the bound")
            .expect("a line, not an error");
        assert!(n > 0, "a line, not end of file");
        assert!(buf.ends_with(b"\r\n"), "server lines end in CRLF: {buf:?}");
        String::from_utf8(buf[..buf.len() - 2].to_vec()).unwrap()
    }

    async fn expect(&mut self, expected: &str) {
        assert_eq!(self.line().await, expected);
    }

    async fn read_until_line(&mut self, expected: &str) {
        // Bounded: each round reads a line within the bound or fails.
        while self.line().await != expected {}
    }

    /// Asserts that the server ends the session cleanly: `close_notify` (rustls reports a close
    /// without it as an error), after exactly `last` as the final lines.
    async fn expect_clean_close(&mut self, last: &[&str]) {
        for line in last {
            self.expect(line).await;
        }
        let mut rest = Vec::new();
        let read = tokio::time::timeout(WAIT, self.reader.read_to_end(&mut rest))
            .await
            .expect("closed within the bound");
        assert!(read.is_ok(), "closed with close_notify, not cut: {read:?}");
        assert_eq!(
            String::from_utf8_lossy(&rest),
            "",
            "nothing after the last line"
        );
    }
}

/// Reads `r` to its end (end of file or an error) within the bound; returns the bytes read.
async fn drain_to_end(r: &mut (impl AsyncRead + Unpin)) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, r.read(&mut buf)).await {
            Err(_) => panic!("not closed within the bound ({total} bytes read)"),
            Ok(Ok(0)) | Ok(Err(_)) => return total,
            Ok(Ok(n)) => total += n,
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Daemons: in process, and the real binary

/// An in-process daemon with TLS on 127.0.0.1.
struct Served {
    addr: SocketAddr,
    tls: SocketAddr,
    hub: Arc<Hub>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    dir: Scratch,
}

impl Served {
    /// Starts with `leaf` installed in a scratch directory named `name`; `tune` adjusts the config.
    fn start(name: &str, leaf: &Leaf, tune: impl FnOnce(&mut Config)) -> Served {
        let dir = Scratch::new(name);
        let (cert, key) = leaf.install(&dir);
        let mut config = Config {
            tls_listen: vec!["127.0.0.1:0".parse().unwrap()],
            tls_cert_file: Some(cert),
            tls_key_file: Some(key),
            ..test_config()
        };
        tune(&mut config);
        let app = App::bind(config).expect("bind");
        let (addr, tls) = (app.local_addrs()[0], app.tls_addrs()[0]);
        let hub = app.hub().clone();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        Served {
            addr,
            tls,
            hub,
            stop: Some(tx),
            task: Some(task),
            dir,
        }
    }

    async fn join(&self, nick: &str) -> TestClient {
        let mut c = TestClient::connect(self.addr).await;
        c.read_until_line("*** Choose a nickname:").await;
        c.send(nick).await;
        c.read_until_line("*** Type /help for commands.").await;
        c
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task.take().unwrap())
            .await
            .expect("stopped within the bound")
            .unwrap();
    }
}

fn count(n: &std::sync::atomic::AtomicU64) -> u64 {
    n.load(std::sync::atomic::Ordering::Relaxed)
}

/// The TLS address a daemon process logged.
fn tls_addr(d: &Daemon) -> SocketAddr {
    let line = d.log_line("listening for TLS chat connections");
    let start = line.find("addr=").expect("addr field") + 5;
    line[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Runs the daemon binary on `config` alone and returns its exit code and stderr.
pub(crate) fn start_fails(dir: &Scratch, config: &str, extra: &[&str]) -> (i32, String) {
    let cfg = dir.file("bad.toml", config);
    let sock = dir.path("bad.sock");
    let out = std::process::Command::new(DAEMON)
        .arg("--config")
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0", "--admin-socket"])
        .arg(&sock)
        .args(extra)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("GROUPCHATD_UPGRADE_FD")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ------------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn tls_and_plain_clients_chat_in_one_room() {
    let pki = Pki::new();
    let leaf = pki.valid("chat.test");
    let srv = Served::start("tls-chat", &leaf, |_| {});
    let mut alice = TlsClient::join(srv.tls, &pki, "alice").await;
    assert_eq!(alice.cert, leaf.der, "the configured certificate is served");
    assert_eq!(alice.version, ProtocolVersion::TLSv1_3);
    let mut bob = srv.join("bob").await;
    alice.expect("*** bob joined").await;
    alice.send("hello from TLS").await;
    bob.expect("<alice> hello from TLS").await;
    bob.send("hello from plain text").await;
    alice.expect("<bob> hello from plain text").await;

    // TLS 1.2 too, into the same room, with the same rules (sanitising, commands).
    let tcp = TcpStream::connect(srv.tls).await.unwrap();
    let mut carol = TlsClient::over(tcp, &pki, &[&rustls::version::TLS12]).await;
    assert_eq!(carol.version, ProtocolVersion::TLSv1_2);
    carol.read_until_line("*** Choose a nickname:").await;
    carol.send("carol").await;
    carol.read_until_line("*** Type /help for commands.").await;
    bob.expect("*** carol joined").await;
    alice.expect("*** carol joined").await;
    carol.send("escape \u{1b}[2Jgone").await;
    alice.expect("<carol> escape gone").await;
    bob.expect("<carol> escape gone").await;
    carol.send("/who").await;
    // (After the history of the room, which carol was shown on joining.)
    carol
        .read_until_line("*** 3 online: alice, bob, carol")
        .await;

    // The room knows each TLS client by its real address, not the socket pair's.
    let alice_addr = alice.local;
    let listed = srv.hub.list();
    let alice_info = listed
        .iter()
        .find(|c| c.nick.as_deref() == Some("alice"))
        .unwrap();
    assert_eq!(alice_info.client.peer, alice_addr);
    srv.stop().await;
}

#[tokio::test]
async fn quit_delivers_goodbye_before_close_notify() {
    let pki = Pki::new();
    let srv = Served::start("tls-quit", &pki.valid("chat.test"), |_| {});
    let mut alice = TlsClient::join(srv.tls, &pki, "alice").await;
    let mut bob = srv.join("bob").await;
    alice.expect("*** bob joined").await;
    alice.send("/quit see you").await;
    alice.expect_clean_close(&["*** Goodbye."]).await;
    bob.expect("*** alice left (quit: see you)").await;
    srv.wait_connections_tls(1).await;
    srv.stop().await;
}

#[tokio::test]
async fn shutdown_notice_reaches_tls_clients_before_close_notify() {
    let pki = Pki::new();
    let srv = Served::start("tls-stop", &pki.valid("chat.test"), |_| {});
    let mut alice = TlsClient::join(srv.tls, &pki, "alice").await;
    let stopped = tokio::spawn(srv.stop());
    alice
        .expect_clean_close(&["*** server shutting down"])
        .await;
    stopped.await.unwrap();
}

impl Served {
    async fn wait_connections_tls(&self, n: usize) {
        wait_for(
            &self.hub,
            || self.hub.counts().0 == n,
            &format!("{n} connections"),
        )
        .await;
    }
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let pki = Pki::new();
    let srv = Served::start("tls-timeout", &pki.valid("chat.test"), |c| {
        c.handshake_timeout = Some(Duration::from_secs(1));
    });
    // Connected, but no ClientHello: counted at once, and closed when the time is up.
    let started = Instant::now();
    let mut silent = TcpStream::connect(srv.tls).await.unwrap();
    srv.wait_connections_tls(1).await;
    assert_eq!(
        drain_to_end(&mut silent).await,
        0,
        "nothing is sent before a handshake"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
    srv.wait_connections_tls(0).await;
    assert_eq!(count(&srv.hub.counters.tls_handshake_failures), 1);

    // Plain text on the TLS port fails the handshake at once.
    let mut plain = TcpStream::connect(srv.tls).await.unwrap();
    plain.write_all(b"alice\r\n").await.unwrap();
    let started = Instant::now();
    drain_to_end(&mut plain).await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "refused at once"
    );
    srv.wait_connections_tls(0).await;
    assert_eq!(count(&srv.hub.counters.tls_handshake_failures), 2);

    // A TLS client that finishes its handshake still has only the rest of the same time for
    // its nickname: the handshake counted against it.
    let mut late = TlsClient::connect(srv.tls, &pki).await;
    late.read_until_line("*** Choose a nickname:").await;
    late.expect_clean_close(&["*** No nickname within 1 s; goodbye."])
        .await;
    srv.stop().await;
}

#[tokio::test]
async fn a_full_server_tells_a_tls_newcomer_over_tls() {
    let pki = Pki::new();
    let srv = Served::start("tls-full", &pki.valid("chat.test"), |c| c.max_clients = 1);
    let _alice = TlsClient::join(srv.tls, &pki, "alice").await;
    let mut late = TlsClient::connect(srv.tls, &pki).await;
    late.expect_clean_close(&["*** server full"]).await;
    assert_eq!(count(&srv.hub.counters.rejected), 1);
    srv.stop().await;
}

/// Enough bytes to fill any loopback socket buffers this kernel can give one connection.
fn more_than_kernel_buffers() -> usize {
    let wmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap_or_default();
    let max = wmem
        .split_whitespace()
        .last()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4 << 20);
    2 * max + (2 << 20)
}

#[tokio::test]
async fn a_tls_reader_that_stops_reading_is_cut_off_as_too_slow() {
    let pki = Pki::new();
    let srv = Served::start("tls-slow", &pki.valid("chat.test"), |c| {
        c.max_queue_bytes = 1 << 20;
        c.wrap_width = 0;
    });
    let mut good = srv.join("good").await;
    // A TLS client with a tiny receive buffer that stops reading once it has joined.
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = tokio::time::timeout(WAIT, sock.connect(srv.tls))
        .await
        .unwrap()
        .unwrap();
    let mut slow = TlsClient::over(tcp, &pki, BOTH).await;
    slow.read_until_line("*** Choose a nickname:").await;
    slow.send("slow").await;
    slow.read_until_line("*** Type /help for commands.").await;
    good.expect("*** slow joined").await;
    let mut fast = srv.join("fast").await;
    good.expect("*** fast joined").await;

    // `fast` sends numbered 4000-byte lines, at most IN_FLIGHT ahead of `good`, who must get
    // every one in order, until `good` hears that `slow` was cut off.
    const IN_FLIGHT: usize = 100;
    let most = 2 * more_than_kernel_buffers() / 4000;
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    let sender = tokio::spawn(async move {
        let pad = "x".repeat(3990);
        for i in 0..most {
            if i % IN_FLIGHT == 0 {
                // Ends when `good` stops reading (the receiver is dropped).
                if progress
                    .wait_for(|&got| got + IN_FLIGHT >= i)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            fast.send(&format!("{i:08} {pad}")).await;
        }
        fast
    });
    let mut next = 0;
    loop {
        let l = good.line().await;
        if l == "*** slow left (too slow: send queue full)" {
            break;
        }
        let body = l.strip_prefix("<fast> ").unwrap_or_else(|| panic!("{l:?}"));
        assert_eq!(&body[..8], format!("{next:08}"), "in order, none lost");
        next += 1;
        assert!(next < most, "slow was never cut off");
        progress_tx.send_replace(next);
    }
    drop(progress_tx);
    let mut fast = sender.await.unwrap();
    assert_eq!(
        count(&srv.hub.counters.slow_drops),
        1,
        "only slow was cut off"
    );
    // The room carries on, and the cut-off client's connection is closed.
    fast.send("still here").await;
    good.read_until_line("<fast> still here").await;
    drain_to_end(&mut slow.reader).await;
    srv.wait_connections_tls(2).await;
    srv.stop().await;
}

#[tokio::test]
async fn certificate_rotation_keeps_connected_clients() {
    let pki = Pki::new();
    let dir = Scratch::new("tls-rotate");
    let first = pki.valid("first.test");
    first.install(&dir);
    let d = Daemon::start(&dir, "d", &tls_lines(&dir));
    let tls = tls_addr(&d);
    let mut alice = TlsClient::join(tls, &pki, "alice").await;
    assert_eq!(alice.cert, first.der);
    let mut bob = TestClient::connect(d.addr()).await;
    bob.read_until_line("*** Choose a nickname:").await;
    bob.send("bob").await;
    bob.read_until_line("*** Type /help for commands.").await;
    alice.expect("*** bob joined").await;

    // certbot renews: new files, then `chatctl reload`.
    let second = pki.valid("second.test");
    second.install(&dir);
    let out = chatctl(&d.socket, &["reload"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        d.log_line("TLS certificate reloaded")
            .contains("CN=second.test"),
        "the log names the new certificate"
    );
    let carol = TlsClient::join(tls, &pki, "carol").await;
    assert_eq!(
        carol.cert, second.der,
        "new handshakes get the new certificate"
    );
    // alice's session, made with the first certificate, carries on.
    alice.expect("*** carol joined").await;
    alice.send("still here").await;
    bob.read_until_line("<alice> still here").await;
    bob.send("welcome back").await;
    alice.expect("<bob> welcome back").await;

    // And again through SIGHUP.
    let third = pki.valid("third.test");
    third.install(&dir);
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.log_count("TLS certificate reloaded", 2, WAIT);
    let dave = TlsClient::connect(tls, &pki).await;
    assert_eq!(dave.cert, third.der);
    alice.send("and still").await;
    bob.read_until_line("<alice> and still").await;
}

#[test]
fn bad_tls_files_at_start_exit_78_naming_the_key() {
    let pki = Pki::new();
    let dir = Scratch::new("tls-start");
    let good = pki.valid("good.test");
    let expired = pki.leaf("old.test", 2000, 2001);
    let other = pki.valid("other.test");
    let cert = dir.path("cert.pem");
    let key = dir.path("key.pem");
    let config = tls_lines(&dir);
    let cases: [(&str, &dyn Fn(), &str, &str); 5] = [
        (
            "expired",
            &|| {
                expired.install(&dir);
            },
            "tls_cert_file",
            "expired at 2001-01-01T00:00:00Z",
        ),
        (
            "mismatched key",
            &|| {
                std::fs::write(&cert, &good.chain).unwrap();
                std::fs::write(&key, &other.key).unwrap();
            },
            "tls_key_file",
            "does not belong to the certificate",
        ),
        (
            "missing certificate file",
            &|| {
                good.install(&dir);
                std::fs::remove_file(&cert).unwrap();
            },
            "tls_cert_file",
            "No such file",
        ),
        (
            "missing key file",
            &|| {
                good.install(&dir);
                std::fs::remove_file(&key).unwrap();
            },
            "tls_key_file",
            "No such file",
        ),
        (
            "key where the certificate should be",
            &|| {
                good.install(&dir);
                std::fs::write(&cert, &good.key).unwrap();
            },
            "tls_cert_file",
            "no certificate in it",
        ),
    ];
    for (what, spoil, key_name, reason) in cases {
        spoil();
        for extra in [&[][..], &["--check-config"][..]] {
            let (code, stderr) = start_fails(&dir, &config, extra);
            assert_eq!(code, 78, "{what} {extra:?}: {stderr}");
            assert!(
                stderr.contains(&format!("{key_name} {}", dir.0.display()))
                    && stderr.contains(reason),
                "{what} {extra:?}: {stderr}"
            );
        }
    }
    // Settings themselves: TLS without a key file, a relative path.
    let (code, stderr) = start_fails(
        &dir,
        &format!(
            "tls_listen = [\"127.0.0.1:0\"]\ntls_cert_file = \"{}\"\n",
            cert.display()
        ),
        &[],
    );
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("key 'tls_key_file': must be set"),
        "{stderr}"
    );
    let (code, stderr) = start_fails(&dir, "tls_cert_file = \"cert.pem\"\n", &[]);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("key 'tls_cert_file': 'cert.pem' is not an absolute path"),
        "{stderr}"
    );
    // And a good pair passes the check, which shows the certificate.
    good.install(&dir);
    let out = std::process::Command::new(DAEMON)
        .arg("--config")
        .arg(dir.file("good.toml", &config))
        .arg("--check-config")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("TLS certificate CN=good.test"), "{stdout}");
    assert!(
        stdout.contains("valid until 4000-01-01T00:00:00Z"),
        "{stdout}"
    );
}

#[tokio::test]
async fn bad_tls_files_at_reload_keep_the_certificate_in_use() {
    let pki = Pki::new();
    let dir = Scratch::new("tls-reload");
    let good = pki.valid("good.test");
    good.install(&dir);
    let d = Daemon::start(&dir, "d", &tls_lines(&dir));
    let tls = tls_addr(&d);
    let mut alice = TlsClient::join(tls, &pki, "alice").await;

    let expired = pki.leaf("old.test", 2000, 2001);
    let other = pki.valid("other.test");
    let cert = dir.path("cert.pem");
    let key = dir.path("key.pem");
    let cases: [(&str, &dyn Fn(), &str, &str); 3] = [
        (
            "expired",
            &|| {
                expired.install(&dir);
            },
            "tls_cert_file",
            "expired at 2001-01-01T00:00:00Z",
        ),
        (
            "mismatched key",
            &|| {
                std::fs::write(&cert, &other.chain).unwrap();
                std::fs::write(&key, &good.key).unwrap();
            },
            "tls_key_file",
            "does not belong to the certificate",
        ),
        (
            "missing file",
            &|| std::fs::remove_file(&cert).unwrap(),
            "tls_cert_file",
            "No such file",
        ),
    ];
    for (what, spoil, key_name, reason) in cases {
        spoil();
        let out = chatctl(&d.socket, &["reload"]);
        assert_eq!(out.code, 1, "{what}: {}", out.stdout);
        assert!(
            out.stderr
                .contains(&format!("{key_name} {}", dir.0.display()))
                && out.stderr.contains(reason)
                && out.stderr.contains("the certificate in use stays"),
            "{what}: {}",
            out.stderr
        );
        let newcomer = TlsClient::connect(tls, &pki).await;
        assert_eq!(
            newcomer.cert, good.der,
            "{what}: the old certificate is still served"
        );
    }
    alice.send("/who").await;
    alice.expect("*** 1 online: alice").await;
    // Fixed files are taken at the next reload.
    let renewed = pki.valid("renewed.test");
    renewed.install(&dir);
    let out = chatctl(&d.socket, &["reload"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(TlsClient::connect(tls, &pki).await.cert, renewed.der);
    // Another TLS address waits for a restart, like `listen`.
    let moved = tls_lines(&dir).replace("127.0.0.1:0", "127.0.0.2:0");
    dir.file("d.toml", &moved);
    let out = chatctl(&d.socket, &["reload"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("changed but ignored until restart: tls_listen"),
        "{}",
        out.stdout
    );
    let stats = admin_stats(&d.socket);
    assert_eq!(stats["tls_listen"][0], tls.to_string());
    assert_eq!(stats["tls_handshake_failures"], 0);
    let human = chatctl(&d.socket, &["stats"]).stdout;
    let rows: Vec<String> = human
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(rows.contains(&format!("TLS listening on {tls}")), "{human}");
    assert!(
        rows.contains(&"TLS handshakes 0 failed".to_owned()),
        "{human}"
    );
}

#[tokio::test]
async fn upgrade_tells_tls_clients_to_reconnect_and_keeps_the_tls_port() {
    let pki = Pki::new();
    let dir = Scratch::new("tls-upgrade");
    pki.valid("chat.test").install(&dir);
    let mut d = Daemon::start(&dir, "d", &tls_lines(&dir));
    let tls = tls_addr(&d);
    let first_pid = admin_stats(&d.socket)["pid"].as_u64().unwrap();
    let mut alice = TlsClient::join(tls, &pki, "alice").await;
    let mut bob = TestClient::connect(d.addr()).await;
    bob.read_until_line("*** Choose a nickname:").await;
    bob.send("bob").await;
    bob.read_until_line("*** Type /help for commands.").await;
    alice.expect("*** bob joined").await;

    let out = chatctl(&d.socket, &["upgrade"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("1 connection handed over"),
        "only the plain client moves: {}",
        out.stdout
    );
    let new_pid = admin_stats(&d.socket)["pid"].as_u64().unwrap();
    assert_ne!(new_pid, first_pid);
    let mut serving = Serving(Some(new_pid as u32));
    alice
        .expect_clean_close(&["*** server upgrading; please reconnect"])
        .await;
    bob.expect("*** alice left (server upgrading)").await;
    let told = d.log_line("upgrade: TLS and WebSocket clients told to reconnect");
    assert!(
        told.contains("clients=1") && !told.contains("cut off"),
        "delivered before the hand-over: {told}"
    );

    // The TLS port stayed bound: a new TLS client gets in and chats with bob.
    let mut carol = TlsClient::join(tls, &pki, "carol").await;
    bob.expect("*** carol joined").await;
    carol.send("made it").await;
    bob.expect("<carol> made it").await;
    bob.send("hi carol").await;
    carol.expect("<bob> hi carol").await;
    assert_eq!(serving.stop(&mut d), 0);
}

#[tokio::test]
async fn an_upgrade_can_turn_tls_on_and_will_not_lose_it() {
    let pki = Pki::new();
    let dir = Scratch::new("tls-upgrade-on");
    let leaf = pki.valid("chat.test");
    leaf.install(&dir);
    let mut d = Daemon::start(&dir, "d", "");
    assert!(
        admin_stats(&d.socket)["tls_listen"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let mut bob = TestClient::connect(d.addr()).await;
    bob.read_until_line("*** Choose a nickname:").await;
    bob.send("bob").await;
    bob.read_until_line("*** Type /help for commands.").await;

    // The old process listened for no TLS client: the new one binds `tls_listen` itself.
    dir.file("d.toml", &tls_lines(&dir));
    let out = chatctl(&d.socket, &["upgrade"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut serving = Serving(Some(admin_stats(&d.socket)["pid"].as_u64().unwrap() as u32));
    let tls = tls_addr(&d);
    assert_eq!(admin_stats(&d.socket)["tls_listen"][0], tls.to_string());
    let mut carol = TlsClient::join(tls, &pki, "carol").await;
    assert_eq!(carol.cert, leaf.der);
    bob.expect("*** carol joined").await;

    // A new process that could not serve the TLS listeners is refused before anyone is told
    // to reconnect: one whose configuration names no certificate, one whose certificate expired.
    // The process serving carries on with everyone, TLS clients included.
    let expired = pki.leaf("old.test", 2000, 2001);
    let tls_config = tls_lines(&dir);
    let cases: [(&str, &dyn Fn(), &str); 2] = [
        (
            "",
            &|| (),
            "cannot take over the TLS listeners: its configuration names no tls_cert_file",
        ),
        (
            &tls_config,
            &|| {
                expired.install(&dir);
            },
            "the new process refused: tls_cert_file",
        ),
    ];
    for (config, spoil, reason) in cases {
        dir.file("d.toml", config);
        spoil();
        let out = chatctl(&d.socket, &["upgrade"]);
        assert_eq!(out.code, 1, "{}", out.stdout);
        assert!(out.stderr.contains(reason), "{}", out.stderr);
        bob.send("still here").await;
        carol.expect("<bob> still here").await;
        carol.send("me too").await;
        bob.expect("<carol> me too").await;
    }
    assert_eq!(serving.stop(&mut d), 0);
}

/// The process serving after an upgrade (a descendant of the test's daemon, so not ours to
/// reap): stopped by its PID, and killed if the test fails before that.
struct Serving(Option<u32>);

impl Serving {
    /// SIGTERM, then the exit code, once the log pipe the line of processes shares has closed.
    fn stop(&mut self, d: &mut Daemon) -> i32 {
        let pid = self.0.take().expect("still serving");
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        d.wait_exit(WAIT)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[tokio::test]
async fn openssl_s_client_chats_with_a_plain_client() {
    let openssl = Path::new("/usr/bin/openssl");
    if !openssl.exists() {
        eprintln!("skipped: no /usr/bin/openssl");
        return;
    }
    let pki = Pki::new();
    let srv = Served::start("tls-openssl", &pki.valid("chat.test"), |_| {});
    let ca = srv.dir.file("ca.pem", &pki.ca.pem());
    let mut child = tokio::process::Command::new(openssl)
        .args(["s_client", "-quiet", "-verify_return_error", "-connect"])
        .arg(srv.tls.to_string())
        .args(["-servername", "localhost", "-CAfile"])
        .arg(&ca)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    // Bounded: each round reads a line within the bound or fails.
    while next_line(&mut out).await != "*** Choose a nickname:" {}
    stdin.write_all(b"olga\n").await.unwrap();
    while next_line(&mut out).await != "*** Type /help for commands." {}
    let mut bob = srv.join("bob").await;
    assert_eq!(next_line(&mut out).await, "*** bob joined");
    stdin.write_all(b"hello from openssl\n").await.unwrap();
    bob.expect("<olga> hello from openssl").await;
    bob.send("hello olga").await;
    assert_eq!(next_line(&mut out).await, "<bob> hello olga");
    stdin.write_all(b"/quit\n").await.unwrap();
    assert_eq!(next_line(&mut out).await, "*** Goodbye.");
    bob.expect("*** olga left (quit)").await;
    // openssl ends when the server closes the session.
    tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("openssl exits when the server closes")
        .unwrap();
    srv.stop().await;
}

/// The next line `openssl` printed, without its CR LF.
async fn next_line(out: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
    tokio::time::timeout(WAIT, out.next_line())
        .await
        .expect("a line within the bound")
        .unwrap()
        .expect("a line, not end of file")
}
