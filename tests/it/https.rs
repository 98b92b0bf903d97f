//! HTTPS (`https_listen`, issue 15): the page, `/healthz`, `/metrics` and `/ws` over TLS with the
//! TLS chat listeners' certificate; a `wss://` client chatting with a TCP client; the default
//! `Origin` rule for an https page; failed and slow handshakes counted; certificate rotation
//! seen by a new HTTPS handshake; refusal at start without the files; and `chatctl upgrade`,
//! which keeps the HTTPS port serving and tells `wss://` clients to reconnect.
//!
//! The client side is tokio-rustls (verifying the server against the test CA of `tls.rs`) under
//! a hand-written HTTP/1.1 request or tokio-tungstenite's client handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use groupchatd::app::App;
use groupchatd::config::Config;
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::process::{Daemon, Scratch, Serving, chatctl};
use crate::support::http::{Format, Response, parse_exposition, parse_response};
use crate::support::{TestClient, TestServer, WAIT, test_config, wait_for};
use crate::tls::{Pki, start_fails};

type Tls = TlsStream<TcpStream>;

/// A TLS connection to `addr` verified against `pki` for `localhost`, offering HTTP/1.1 by ALPN:
/// the stream and the certificate the server presented.
async fn connect(addr: SocketAddr, pki: &Pki) -> (Tls, CertificateDer<'static>) {
    let mut config = ClientConfig::builder_with_provider(Arc::new(groupchatd::tls::provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(pki.roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(
        WAIT,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("handshake within the bound")
    .expect("handshake");
    let (_, conn) = tls.get_ref();
    assert_eq!(
        conn.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "ALPN says HTTP/1.1"
    );
    let cert = conn.peer_certificates().unwrap()[0].clone().into_owned();
    (tls, cert)
}

/// `GET path` over HTTPS, one request per connection.
async fn get(addr: SocketAddr, pki: &Pki, path: &str) -> Response {
    let (mut tls, _) = connect(addr, pki).await;
    let raw = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    tls.write_all(raw.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    // A TLS peer may end without close_notify after `Connection: close`; what came is whole.
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut got))
        .await
        .expect("the server closes within the bound");
    parse_response(&got, false)
}

/// A `wss://` chat client: one line per text message.
struct WssClient(WebSocketStream<Tls>);

impl WssClient {
    /// Opens `/ws` over TLS with `origin` (if any), as a browser on `https://localhost:PORT` would.
    async fn open(addr: SocketAddr, pki: &Pki, origin: Option<&str>) -> Result<WssClient, u16> {
        let (tls, _) = connect(addr, pki).await;
        let url = format!("wss://localhost:{}/ws", addr.port());
        let mut request = url.into_client_request().unwrap();
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("Origin", origin.parse().unwrap());
        }
        match tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, tls))
            .await
            .expect("handshake within the bound")
        {
            Ok((ws, _)) => Ok(WssClient(ws)),
            Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => {
                Err(answer.status().as_u16())
            }
            Err(e) => panic!("WebSocket handshake: {e}"),
        }
    }

    async fn join(addr: SocketAddr, pki: &Pki, nick: &str) -> WssClient {
        let origin = format!("https://localhost:{}", addr.port());
        let mut c = Self::open(addr, pki, Some(&origin)).await.expect("opened");
        c.read_until("*** Choose a nickname:").await;
        c.send(nick).await;
        c.read_until("*** Type /help for commands.").await;
        c
    }

    async fn send(&mut self, text: &str) {
        tokio::time::timeout(WAIT, self.0.send(Message::text(text)))
            .await
            .expect("sent within the bound")
            .expect("sent");
    }

    /// The next text message; None once the connection ended (a close, or the end).
    async fn line(&mut self) -> Option<String> {
        // Bounded: each round takes a message within the bound or fails.
        loop {
            match tokio::time::timeout(WAIT, self.0.next())
                .await
                .expect("a message within the bound")
            {
                Some(Ok(Message::Text(text))) => return Some(text.to_string()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(other)) => panic!("unexpected {other:?}"),
            }
        }
    }

    async fn expect(&mut self, expected: &str) {
        assert_eq!(self.line().await.as_deref(), Some(expected));
    }

    async fn read_until(&mut self, expected: &str) {
        // Bounded: each round reads a line within the bound or fails.
        while self.line().await.expect("connected") != expected {}
    }
}

/// Config lines for HTTPS on 127.0.0.1 (any port) with `dir`'s cert.pem and key.pem.
fn https_lines(dir: &Scratch) -> String {
    format!(
        "https_listen = [\"127.0.0.1:0\"]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        dir.path("cert.pem").display(),
        dir.path("key.pem").display()
    )
}

/// The HTTPS address a daemon process logged.
fn https_addr(d: &Daemon) -> SocketAddr {
    let line = d.log_line("listening for HTTPS connections");
    let start = line.find("addr=").expect("addr field") + 5;
    line[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// An in-process daemon with HTTPS (and no TLS chat listener), `tune`d.
fn serve(dir: &Scratch, pki: &Pki, tune: impl FnOnce(&mut Config)) -> (TestServer, SocketAddr) {
    let (cert, key) = pki.valid("chat.test").install(dir);
    let mut config = Config {
        https_listen: vec!["127.0.0.1:0".parse().unwrap()],
        tls_cert_file: Some(cert),
        tls_key_file: Some(key),
        ..test_config()
    };
    tune(&mut config);
    let app = App::bind(config).expect("bind");
    assert!(app.tls_addrs().is_empty(), "no TLS chat listener asked for");
    let https = app.https_addrs()[0];
    (TestServer::serve(app), https)
}

#[tokio::test]
async fn https_serves_the_page_health_metrics_and_a_wss_chat() {
    let pki = Pki::new();
    let dir = Scratch::new("https-serve");
    let (srv, https) = serve(&dir, &pki, |_| {});

    let page = get(https, &pki, "/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.header("content-security-policy").is_some());
    let health = get(https, &pki, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

    // A wss:// page and a netcat user chat in one room.
    let mut tom = srv.join("tom").await;
    let mut wendy = WssClient::join(https, &pki, "wendy").await;
    tom.expect("*** wendy joined").await;
    wendy.send("hello over wss").await;
    tom.expect("<wendy> hello over wss").await;
    tom.send("hello wendy").await;
    wendy.expect("<tom> hello wendy").await;

    let metrics = get(https, &pki, "/metrics").await;
    assert_eq!(metrics.status, 200);
    let m = parse_exposition(&metrics.body, Format::Prometheus).unwrap();
    assert_eq!(m.expect("groupchatd_clients", &[("transport", "wss")]), 1.0);
    assert_eq!(
        m.expect("groupchatd_clients", &[("transport", "websocket")]),
        0.0
    );
    assert_eq!(m.expect("groupchatd_clients", &[("transport", "tcp")]), 1.0);
    srv.stop().await;
}

#[tokio::test]
async fn the_default_origin_rule_takes_the_https_pages_own_origin() {
    let pki = Pki::new();
    let dir = Scratch::new("https-origin");
    let (srv, https) = serve(&dir, &pki, |_| {});
    let port = https.port();
    // The page's own origin, as the browser names it, and without the default port's number
    // written out (it is not 443 here, so only with it).
    for own in [
        format!("https://localhost:{port}"),
        format!("HTTPS://LOCALHOST:{port}"),
    ] {
        assert!(
            WssClient::open(https, &pki, Some(&own)).await.is_ok(),
            "{own}"
        );
    }
    // Another site, another port, and the plain-HTTP twin of another port are refused.
    for other in [
        "https://evil.example".to_owned(),
        format!("https://localhost:{}", port + 1),
        format!("http://localhost:{}", port + 1),
        "null".to_owned(),
    ] {
        assert_eq!(
            WssClient::open(https, &pki, Some(&other)).await.err(),
            Some(403),
            "{other}"
        );
    }
    srv.stop().await;
}

#[tokio::test]
async fn failed_and_slow_https_handshakes_are_counted() {
    let pki = Pki::new();
    let dir = Scratch::new("https-fail");
    let (srv, https) = serve(&dir, &pki, |c| {
        c.handshake_timeout = Some(Duration::from_secs(1));
    });
    let failures = || {
        srv.hub
            .counters
            .tls_handshake_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(failures(), 0);
    // Plain HTTP to the HTTPS port is not a TLS handshake.
    let mut plain = TcpStream::connect(https).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut sink))
        .await
        .expect("closed within the bound");
    wait_for(&srv.hub, || failures() >= 1, "the failure counted").await;
    // A client that connects and says nothing is closed at the handshake timeout.
    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(https).await.unwrap();
    let n = tokio::time::timeout(WAIT, silent.read(&mut [0u8; 16]))
        .await
        .expect("closed within the bound")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a word");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(failures(), 2);
    // The service is unharmed.
    assert_eq!(get(https, &pki, "/healthz").await.status, 200);
    srv.stop().await;
}

#[tokio::test]
async fn a_reload_renews_the_certificate_for_https() {
    let pki = Pki::new();
    let dir = Scratch::new("https-rotate");
    let first = pki.valid("first.test");
    first.install(&dir);
    let d = Daemon::start(&dir, "d", &https_lines(&dir));
    let https = https_addr(&d);
    let (_, cert) = connect(https, &pki).await;
    assert_eq!(cert, first.der);
    let mut wendy = WssClient::join(https, &pki, "wendy").await;

    let second = pki.valid("second.test");
    second.install(&dir);
    let out = chatctl(&d.socket, &["reload"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (_, cert) = connect(https, &pki).await;
    assert_eq!(
        cert, second.der,
        "a new HTTPS handshake gets the new certificate"
    );
    // The page connected before keeps its connection.
    let mut tom = TestClient::connect(d.addr()).await;
    tom.read_until_line("*** Choose a nickname:").await;
    tom.send("tom").await;
    wendy.expect("*** tom joined").await;
    wendy.send("still here").await;
    tom.read_until_line("<wendy> still here").await;
}

#[test]
fn https_without_its_files_is_refused_at_start_naming_the_key() {
    let pki = Pki::new();
    let dir = Scratch::new("https-start");
    let (code, err) = start_fails(
        &dir,
        "https_listen = [\"127.0.0.1:0\"]\n",
        &["--check-config"],
    );
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("tls_cert_file")
            && err.contains("must be set while https_listen is not empty"),
        "{err}"
    );
    // An expired certificate, for HTTPS alone: refused at start and by --check-config.
    pki.leaf("old.test", 2000, 2001).install(&dir);
    for extra in [&["--check-config"][..], &[]] {
        let (code, err) = start_fails(&dir, &https_lines(&dir), extra);
        assert_eq!(code, 78, "{extra:?}: {err}");
        assert!(
            err.contains("tls_cert_file") && err.contains("expired"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn an_upgrade_keeps_the_https_port_and_tells_wss_clients_to_reconnect() {
    let pki = Pki::new();
    let dir = Scratch::new("https-upgrade");
    pki.valid("chat.test").install(&dir);
    let mut d = Daemon::start(&dir, "d", &https_lines(&dir));
    let https = https_addr(&d);
    let mut tom = TestClient::connect(d.addr()).await;
    tom.read_until_line("*** Choose a nickname:").await;
    tom.send("tom").await;
    tom.read_until_line("*** Type /help for commands.").await;
    let mut wendy = WssClient::join(https, &pki, "wendy").await;
    tom.expect("*** wendy joined").await;

    let out = chatctl(&d.socket, &["upgrade"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("1 connection handed over"),
        "{}",
        out.stdout
    );
    let mut serving = Serving::of(&d.socket);
    // The TLS session cannot move: the page is told, and its connection closed.
    wendy.expect("*** server upgrading; please reconnect").await;
    assert_eq!(wendy.line().await, None, "closed after the notice");
    tom.expect("*** wendy left (server upgrading)").await;

    // The same HTTPS port, now the new process's, serves the page and takes wendy back.
    let line = format!("listening for HTTPS connections addr={https}");
    d.log_count(&line, 2, WAIT);
    assert_eq!(get(https, &pki, "/healthz").await.status, 200);
    let mut wendy = WssClient::join(https, &pki, "wendy").await;
    tom.expect("*** wendy joined").await;
    wendy.send("back").await;
    tom.expect("<wendy> back").await;
    let metrics = get(https, &pki, "/metrics").await;
    let m = parse_exposition(&metrics.body, Format::Prometheus).unwrap();
    assert_eq!(m.expect("groupchatd_upgrades_total", &[]), 1.0);
    assert_eq!(serving.stop(&mut d), 0);
}
