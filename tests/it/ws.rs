//! WebSocket clients (`GET /ws`, issue 15): a WebSocket client and a TCP client in one room (the
//! exact lines both ways, the transport in `/metrics`, the close handshake, the shutdown notice),
//! messages over `max_line_bytes` and over the WebSocket's own limit, binary messages and line
//! breaks, the `Origin` check, refusals at the door, a reader that stops reading, flood control,
//! the keepalive, and `chatctl upgrade` moving WebSocket clients to the new process (with a frame
//! sent half before and half after) or, rolled back, leaving them where they were.
//!
//! The client is tokio-tungstenite's (the same tungstenite the daemon uses through axum), over a
//! TCP connection the test makes, so it can set a small receive buffer or an `Origin` header.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use groupchatd::app::App;
use groupchatd::config::{Config, Flood, Rate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::process::{Daemon, Scratch, Serving, admin_stats, chatctl};
use crate::support::http::{Format, get, parse_exposition, parse_response};
use crate::support::{TestClient, TestServer, WAIT, test_config};

type Ws = WebSocketStream<TcpStream>;

/// A WebSocket chat client: one line per text message.
struct WsClient {
    ws: Ws,
    /// Pings the server sent (answered by tungstenite while reading).
    pings: usize,
}

impl WsClient {
    /// Opens `/ws` on `http` with extra request `headers`.
    async fn open(http: SocketAddr, headers: &[(&str, &str)]) -> WsClient {
        let tcp = tokio::time::timeout(WAIT, TcpStream::connect(http))
            .await
            .unwrap()
            .unwrap();
        Self::over(tcp, http, headers).await
    }

    /// Opens `/ws` over `tcp`, a connection to `http`.
    async fn over(tcp: TcpStream, http: SocketAddr, headers: &[(&str, &str)]) -> WsClient {
        let mut request = format!("ws://{http}/ws").into_client_request().unwrap();
        for (name, value) in headers {
            let name =
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes());
            request
                .headers_mut()
                .insert(name.unwrap(), value.parse().unwrap());
        }
        let (ws, response) =
            tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, tcp))
                .await
                .expect("handshake within the bound")
                .expect("handshake");
        assert_eq!(response.status(), 101);
        WsClient { ws, pings: 0 }
    }

    /// Opens `/ws` and joins as `nick`, consuming the greeting and the welcome.
    async fn join(http: SocketAddr, nick: &str) -> WsClient {
        let mut c = Self::open(http, &[]).await;
        c.read_until("*** Choose a nickname:").await;
        c.send(nick).await;
        let welcome = c.line().await;
        assert!(
            welcome.starts_with(&format!("*** Welcome, {nick}!")),
            "{welcome:?}"
        );
        c.read_until("*** Type /help for commands.").await;
        c
    }

    async fn send(&mut self, text: &str) {
        self.send_message(Message::text(text)).await;
    }

    async fn send_message(&mut self, message: Message) {
        tokio::time::timeout(WAIT, self.ws.send(message))
            .await
            .expect("sent within the bound")
            .expect("sent");
    }

    /// The next message, whatever it is (pings are counted and skipped); None at the end.
    async fn next(&mut self) -> Option<Message> {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message within the bound")?;
            match message {
                Ok(Message::Ping(_)) => self.pings += 1,
                Ok(m) => return Some(m),
                Err(_) => return None,
            }
        }
    }

    /// The next line: a text message, which must carry exactly one line, without a line end.
    async fn line(&mut self) -> String {
        match self.next().await {
            Some(Message::Text(text)) => {
                assert!(
                    !text.contains(['\r', '\n']),
                    "one line per message: {text:?}"
                );
                text.to_string()
            }
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    async fn expect(&mut self, expected: &str) {
        assert_eq!(self.line().await, expected);
    }

    async fn read_until(&mut self, expected: &str) {
        // Bounded: each round reads a line within the bound or fails.
        while self.line().await != expected {}
    }

    /// Expects exactly `last` as the final lines, then a close with `code`, then the end.
    async fn expect_close(&mut self, last: &[&str], code: CloseCode) {
        for line in last {
            self.expect(line).await;
        }
        match self.next().await {
            Some(Message::Close(Some(CloseFrame { code: got, .. }))) => assert_eq!(got, code),
            other => panic!("expected a close ({code}), got {other:?}"),
        }
        assert!(self.next().await.is_none(), "nothing after the close");
    }
}

/// A config with HTTP on port 0.
fn with_http(config: Config) -> Config {
    Config {
        http_listen: vec!["127.0.0.1:0".parse().unwrap()],
        ..config
    }
}

fn http_of(srv: &TestServer) -> SocketAddr {
    srv.http.expect("HTTP is on")
}

/// A raw WebSocket upgrade request for `/ws` with `origin` (if any): the status of the answer,
/// and the answer (its head, and for a refusal its body).
async fn upgrade_status(http: SocketAddr, origin: Option<&str>) -> (u16, String) {
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    let raw = format!(
        "GET /ws HTTP/1.1\r\nHost: {http}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{origin}\r\n"
    );
    let mut tcp = tokio::time::timeout(WAIT, TcpStream::connect(http))
        .await
        .unwrap()
        .unwrap();
    tcp.write_all(raw.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    // Bounded by the deadline: reads the head, then a refusal's body (its Content-Length).
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no status in {head:?}"));
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if status == 101 || body.len() >= length {
                return (status, text);
            }
        }
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut buf))
            .await
            .expect("an answer within the bound")
            .unwrap();
        assert!(n > 0, "closed before answering: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Parses `/metrics`.
async fn metric(http: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    let page = get(http, "/metrics").await;
    parse_exposition(&page.body, Format::Prometheus)
        .unwrap()
        .expect(name, labels)
}

#[tokio::test]
async fn a_websocket_client_and_a_tcp_client_chat_in_one_room() {
    let mut srv = TestServer::start(with_http(test_config()));
    let http = http_of(&srv);
    let mut tom = srv.join("tom").await;
    let mut wendy = WsClient::open(http, &[]).await;
    wendy.expect("*** Welcome to groupchatd.").await;
    wendy.expect("*** Choose a nickname:").await;
    wendy.send("wendy").await;
    wendy
        .expect("*** Welcome, wendy! 2 online: tom, wendy")
        .await;
    wendy.expect("*** Type /help for commands.").await;
    tom.expect("*** wendy joined").await;

    wendy.send("hello tom").await;
    tom.expect("<wendy> hello tom").await;
    tom.send("hi wendy").await;
    wendy.expect("<tom> hi wendy").await;
    wendy.send("/me waves").await;
    tom.expect("* wendy waves").await;
    tom.send("/msg wendy psst").await;
    tom.expect("*** -> *wendy* psst").await;
    wendy.expect("*tom* psst").await;
    // Sanitised like any client's text: the escape sequence never reaches tom's terminal.
    wendy.send("\u{1b}[2Jclear?").await;
    tom.expect("<wendy> clear?").await;
    // A line the server wraps arrives as its rows, one message each.
    let long = "word ".repeat(30);
    tom.send(long.trim_end()).await;
    let first = wendy.line().await;
    let second = wendy.line().await;
    assert!(first.starts_with("<tom> word word"), "{first:?}");
    assert!(second.starts_with("    word"), "{second:?}");

    let clients = |t| [("transport", t)];
    assert_eq!(
        metric(http, "groupchatd_clients", &clients("websocket")).await,
        1.0
    );
    assert_eq!(
        metric(http, "groupchatd_clients", &clients("tcp")).await,
        1.0
    );

    // A second one, then a close from the client: answered, and the room is told.
    let mut walt = WsClient::join(http, "walt").await;
    tom.read_until_line("*** walt joined").await;
    walt.ws.close(None).await.unwrap();
    // What was on its way (the room's history) still arrives; then the answer to the close.
    loop {
        match walt.next().await {
            Some(Message::Text(_)) => {}
            Some(Message::Close(_)) => break,
            other => panic!("expected the close answered, got {other:?}"),
        }
    }
    assert!(
        walt.next().await.is_none(),
        "the close answered, then the end"
    );
    tom.expect("*** walt left (connection closed)").await;

    // A stop: the notice, then a close saying the server is going.
    tom.send("bye").await;
    wendy.read_until("<tom> bye").await;
    srv.begin_stop();
    wendy
        .expect_close(&["*** server shutting down"], CloseCode::Normal)
        .await;
    srv.stop().await;
}

#[tokio::test]
async fn messages_over_max_line_bytes_are_refused_like_overlong_lines() {
    let srv = TestServer::start(with_http(Config {
        max_line_bytes: 64,
        wrap_width: 0,
        ..test_config()
    }));
    let http = http_of(&srv);
    let mut tom = srv.join("tom").await;
    let mut wendy = WsClient::join(http, "wendy").await;
    tom.expect("*** wendy joined").await;

    // Exactly the limit goes through.
    let fits = "a".repeat(64);
    wendy.send(&fits).await;
    tom.expect(&format!("<wendy> {fits}")).await;
    // One byte more, and up to the WebSocket's own limit (four lines): refused, as from netcat,
    // and the connection goes on.
    for len in [65, 200, 256] {
        wendy.send(&"b".repeat(len)).await;
        wendy
            .expect("*** Line too long (limit 64 bytes); it was not sent.")
            .await;
    }
    barrier_ws(&mut wendy, &mut tom, "after-long").await;

    // Past the WebSocket's limit the message is not read at all: told why, then closed (1009).
    wendy.send(&"c".repeat(257)).await;
    wendy
        .expect_close(
            &["*** Message too long (limit 256 bytes); closing the connection."],
            CloseCode::Size,
        )
        .await;
    tom.expect("*** wendy left (connection closed)").await;
    srv.stop().await;
}

/// Proves `tcp` got nothing from the WebSocket client before: the next line is its marker.
async fn barrier_ws(ws: &mut WsClient, tcp: &mut TestClient, tag: &str) {
    let marker = format!("barrier-{tag}");
    ws.send(&marker).await;
    tcp.expect(&format!("<wendy> {marker}")).await;
}

#[tokio::test]
async fn binary_messages_and_line_breaks_are_refused() {
    let srv = TestServer::start(with_http(test_config()));
    let http = http_of(&srv);
    let mut tom = srv.join("tom").await;
    let mut wendy = WsClient::join(http, "wendy").await;
    tom.expect("*** wendy joined").await;

    wendy
        .send_message(Message::Binary(Bytes::from_static(b"\x00\x01")))
        .await;
    wendy
        .expect("*** Binary messages are not accepted: send text, one line per message.")
        .await;
    for smuggled in ["one\ntwo", "one\r\ntwo", "one\rtwo", "one\n\n"] {
        wendy.send(smuggled).await;
        wendy
            .expect("*** One line per message: this one had a line break in it; it was not sent.")
            .await;
    }
    // One line end at the end is tolerated (some tools send one); nothing above reached tom.
    wendy.send("with a line end\r\n").await;
    tom.expect("<wendy> with a line end").await;
    wendy.send("another\n").await;
    tom.expect("<wendy> another").await;
    srv.stop().await;
}

#[tokio::test]
async fn only_allowed_origins_may_open_a_websocket() {
    let srv = TestServer::start(with_http(test_config()));
    let http = http_of(&srv);
    let own = format!("http://{http}");
    // Another site's page, a sandboxed one, and the same host on another port: refused before
    // any upgrade.
    for origin in [
        "http://evil.example",
        "null",
        &format!("http://127.0.0.1:{}", http.port() + 1),
    ] {
        let (status, text) = upgrade_status(http, Some(origin)).await;
        assert_eq!(status, 403, "{origin}: {text}");
        assert!(text.ends_with("origin not allowed\n"), "{text}");
    }
    // The page's own origin, and no Origin at all (not a browser): upgraded.
    assert_eq!(upgrade_status(http, Some(&own)).await.0, 101);
    assert_eq!(upgrade_status(http, None).await.0, 101);
    let mut own_page = WsClient::open(http, &[("Origin", &own)]).await;
    own_page.read_until("*** Choose a nickname:").await;
    // Not a WebSocket request at all.
    let plain = get(http, "/ws").await;
    assert_eq!(plain.status, 426, "{plain:?}");
    assert_eq!(plain.header("upgrade"), Some("websocket"));
    srv.stop().await;

    // With allowed_origins, exactly those: the page's own origin only if listed.
    let srv = TestServer::start(with_http(Config {
        allowed_origins: vec!["https://chat.example.org".parse().unwrap()],
        ..test_config()
    }));
    let http = http_of(&srv);
    let own = format!("http://{http}");
    assert_eq!(
        upgrade_status(http, Some("https://chat.example.org"))
            .await
            .0,
        101
    );
    assert_eq!(upgrade_status(http, Some(&own)).await.0, 403);
    assert_eq!(
        upgrade_status(http, Some("http://chat.example.org"))
            .await
            .0,
        403
    );
    let mut proxied = WsClient::open(http, &[("Origin", "https://chat.example.org")]).await;
    proxied.read_until("*** Choose a nickname:").await;
    srv.stop().await;
}

#[tokio::test]
async fn refused_websocket_clients_are_told_why() {
    // The door: a full server tells the newcomer in a message and closes with 1013.
    let srv = TestServer::start(with_http(Config {
        max_clients: 1,
        ..test_config()
    }));
    let http = http_of(&srv);
    let mut tom = srv.join("tom").await;
    let mut late = WsClient::open(http, &[]).await;
    late.expect_close(&["*** server full"], CloseCode::Again)
        .await;
    assert_eq!(
        metric(http, "groupchatd_rejected_connections_total", &[]).await,
        1.0
    );
    tom.send("/who").await;
    tom.expect("*** 1 online: tom").await;
    srv.stop().await;

    // A network over its connection rate gets 429 before any WebSocket handshake.
    let srv = TestServer::start(with_http(Config {
        per_ip_exempt: vec![],
        connect_rate: Some(Rate {
            burst: 1,
            per_sec: 0.01,
        }),
        ..test_config()
    }));
    let http = http_of(&srv);
    let mut first = WsClient::join(http, "first").await;
    let (status, text) = upgrade_status(http, None).await;
    assert_eq!(status, 429, "{text}");
    let response = parse_response(text.as_bytes(), false);
    let retry: u32 = response.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=100).contains(&retry), "{retry}");
    assert!(
        response
            .body
            .starts_with("too many connections from your network")
    );
    first.send("/who").await;
    first.expect("*** 1 online: first").await;
    srv.stop().await;
}

/// More than the kernel can buffer between a sender and a reader that stopped: both sockets'
/// buffers at their largest, and some.
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
async fn a_websocket_reader_that_stops_reading_is_cut_off_as_too_slow() {
    let srv = TestServer::start(with_http(Config {
        max_queue_bytes: 1 << 20,
        wrap_width: 0,
        ..test_config()
    }));
    let http = http_of(&srv);
    let mut good = srv.join("good").await;
    // A browser with a tiny receive buffer that stops reading once it has joined.
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = tokio::time::timeout(WAIT, sock.connect(http))
        .await
        .unwrap()
        .unwrap();
    let mut slow = WsClient::over(tcp, http, &[]).await;
    slow.read_until("*** Choose a nickname:").await;
    slow.send("slow").await;
    slow.read_until("*** Type /help for commands.").await;
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
            if i % IN_FLIGHT == 0
                && progress
                    .wait_for(|&got| got + IN_FLIGHT >= i)
                    .await
                    .is_err()
            {
                break;
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
        metric(http, "groupchatd_slow_consumer_drops_total", &[]).await,
        1.0
    );
    // The room carries on, and the cut-off client's connection ends.
    fast.send("still here").await;
    good.read_until_line("<fast> still here").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    // Bounded by the deadline: reads what the kernel held for `slow` until the end.
    while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, slow.ws.next()).await {}
    assert!(
        tokio::time::Instant::now() < deadline,
        "slow's connection never ended"
    );
    srv.stop().await;
}

#[tokio::test]
async fn flood_control_slows_a_websocket_sender() {
    let srv = TestServer::start(with_http(Config {
        flood: Some(Flood {
            burst: 2,
            per_sec: 5.0,
        }),
        ..test_config()
    }));
    let http = http_of(&srv);
    let mut tom = srv.join("tom").await;
    let mut wendy = WsClient::join(http, "wendy").await;
    tom.expect("*** wendy joined").await;
    // Joining spent one line of the burst; at 5 lines a second the 8 lines below take at least a
    // second to be relayed, however fast they are sent. None is dropped.
    let started = Instant::now();
    for i in 0..8 {
        wendy.send(&format!("line {i}")).await;
    }
    for i in 0..8 {
        tom.expect(&format!("<wendy> line {i}")).await;
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "not slowed down: {took:?}"
    );
    assert!(metric(http, "groupchatd_throttled_senders_total", &[]).await >= 1.0);
    srv.stop().await;
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_and_a_silent_one_is_closed() {
    let mut app = App::bind(with_http(test_config())).expect("bind");
    // Short, for the test; long enough that a busy machine does not starve a reader past two.
    app.set_websocket_ping(Duration::from_secs(1));
    let srv = TestServer::serve(app);
    let http = http_of(&srv);
    let mut tom = srv.join("tom").await;
    let mut wendy = WsClient::join(http, "wendy").await;
    tom.expect("*** wendy joined").await;
    // A client that reads (and so answers pings) outlives many pings without saying a word.
    let reader = tokio::spawn(async move {
        // Bounded: each round reads a message within the bound or fails.
        for _ in 0..3 {
            loop {
                let m = tokio::time::timeout(WAIT, wendy.ws.next()).await.unwrap();
                match m {
                    Some(Ok(Message::Ping(_))) => break,
                    Some(Ok(Message::Text(_))) => {}
                    other => panic!("still connected: {other:?}"),
                }
            }
        }
        wendy
    });
    // One that stops reading answers no ping, and is closed after two intervals of silence.
    let mute = WsClient::join(http, "mute").await;
    tom.expect("*** mute joined").await;
    tom.expect("*** mute left (no answer to pings)").await;
    let mut wendy = reader.await.unwrap();
    barrier_ws(&mut wendy, &mut tom, "pinged").await;
    drop(mute);
    srv.stop().await;
}

/// A masked client text frame carrying `text` (mask 0: the payload reads plainly), for writing
/// by hand below tungstenite.
fn text_frame(text: &str) -> Vec<u8> {
    assert!(text.len() < 126);
    let mut f = vec![0x81, 0x80 | text.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(text.as_bytes());
    f
}

/// Joins `nick` over TCP to the daemon `d`.
async fn tcp_join(d: &Daemon, nick: &str) -> TestClient {
    let mut c = TestClient::connect(d.addr()).await;
    c.read_until_line("*** Choose a nickname:").await;
    c.send(nick).await;
    c.read_until_line("*** Type /help for commands.").await;
    c
}

#[tokio::test]
async fn websocket_clients_move_with_an_upgrade_and_lose_nothing() {
    let dir = Scratch::new("ws-upgrade");
    let mut d = Daemon::start(
        &dir,
        "d",
        "http_listen = [\"127.0.0.1:0\"]\nflood_burst = 0\n",
    );
    let http = d.http_addr();
    let first_pid = admin_stats(&d.socket)["pid"].as_u64().unwrap();
    let mut tom = tcp_join(&d, "tom").await;
    let mut wendy = WsClient::join(http, "wendy").await;
    tom.expect("*** wendy joined").await;

    // Lines in flight both ways as the upgrade starts, none read yet; and half a frame of
    // wendy's, the rest of which she sends once the new process serves.
    const N: usize = 40;
    for i in 0..N {
        tom.send(&format!("from tom {i}")).await;
        wendy.send(&format!("from wendy {i}")).await;
    }
    let half = text_frame("a line sent in two halves");
    wendy.ws.get_mut().write_all(&half[..9]).await.unwrap();

    let out = chatctl(&d.socket, &["upgrade"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("2 connections handed over"),
        "the WebSocket client moves too: {}",
        out.stdout
    );
    // Stops the new process if the test fails before the next upgrade.
    let _moved = Serving::of(&d.socket);
    assert_ne!(admin_stats(&d.socket)["pid"].as_u64().unwrap(), first_pid);
    wendy.ws.get_mut().write_all(&half[9..]).await.unwrap();

    // Everything exactly once, in order, on the same connections; then the half-sent line whole.
    for i in 0..N {
        wendy.expect(&format!("<tom> from tom {i}")).await;
        tom.expect(&format!("<wendy> from wendy {i}")).await;
    }
    tom.expect("<wendy> a line sent in two halves").await;
    barrier_ws(&mut wendy, &mut tom, "after").await;
    tom.send("still with you").await;
    wendy.expect("<tom> still with you").await;
    // The new process counts her as a WebSocket client; nobody left, nobody was told anything.
    let clients = [("transport", "websocket")];
    assert_eq!(metric(http, "groupchatd_clients", &clients).await, 1.0);
    let upgraded = d.log_line("upgrade: handed over");
    assert!(upgraded.contains("clients=2"), "{upgraded}");

    // And again, to a third process: the moved relay moves on like any other.
    let out = chatctl(&d.socket, &["upgrade"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut serving = Serving::of(&d.socket);
    wendy.send("twice moved").await;
    tom.expect("<wendy> twice moved").await;
    tom.send("me too").await;
    wendy.expect("<tom> me too").await;
    assert_eq!(serving.stop(&mut d), 0);
}

#[tokio::test]
async fn a_rolled_back_upgrade_leaves_websocket_clients_where_they_were() {
    let dir = Scratch::new("ws-rollback");
    // Debug builds only: the old process writes a snapshot version the new one refuses, after
    // everything was frozen and exported.
    let mut d = Daemon::start_with(&dir, "d", "http_listen = [\"127.0.0.1:0\"]\n", |cmd| {
        cmd.env("GROUPCHATD_TEST_SNAPSHOT_VERSION", "999");
    });
    let http = d.http_addr();
    let mut serving = Serving::of(&d.socket);
    let mut tom = tcp_join(&d, "tom").await;
    let mut wendy = WsClient::join(http, "wendy").await;
    tom.expect("*** wendy joined").await;
    let half = text_frame("half before, half after");
    wendy.ws.get_mut().write_all(&half[..4]).await.unwrap();
    let out = chatctl(&d.socket, &["upgrade"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr.contains("snapshot version 999"),
        "{}",
        out.stderr
    );
    wendy.ws.get_mut().write_all(&half[4..]).await.unwrap();
    tom.expect("<wendy> half before, half after").await;
    tom.send("welcome back").await;
    wendy.expect("<tom> welcome back").await;
    // She is still there to be told the end.
    assert_eq!(serving.stop(&mut d), 0);
    wendy
        .expect_close(&["*** server shutting down"], CloseCode::Normal)
        .await;
}
