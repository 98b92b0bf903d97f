//! The HTTP listener against an in-process daemon: `/healthz` through a stop, `/metrics` parsed
//! strictly in both text formats while traffic moves its counters, bad requests, the browser
//! client's files and their headers.
//! (That the HTTP port moves with `chatctl upgrade` is in `upgrade.rs`.)

use std::net::SocketAddr;

use groupchatd::config::Config;
use tokio::net::TcpSocket;

use crate::support::http::{
    Exposition, Format, exchange, get, parse_exposition, parse_response, request, try_request,
};
use crate::support::{TestClient, TestServer, WAIT, test_config, wait_for};

/// What Prometheus sends (2.x and 3.x): OpenMetrics first.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

fn with_http(config: Config) -> Config {
    Config {
        http_listen: vec!["127.0.0.1:0".parse().unwrap()],
        ..config
    }
}

/// Scrapes `/metrics` in `format` and parses it strictly; checks the content type and that
/// every family is the daemon's.
async fn scrape(http: SocketAddr, format: Format) -> Exposition {
    let response = match format {
        Format::OpenMetrics => {
            request(http, "GET", "/metrics", &[("Accept", PROMETHEUS_ACCEPT)]).await
        }
        Format::Prometheus => get(http, "/metrics").await,
    };
    assert_eq!(response.status, 200, "{response:?}");
    let content_type = response.header("content-type").unwrap();
    match format {
        Format::OpenMetrics => assert_eq!(
            content_type,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        ),
        Format::Prometheus => {
            assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8")
        }
    }
    let exposition = parse_exposition(&response.body, format)
        .unwrap_or_else(|e| panic!("{e}\n{}", response.body));
    for family in &exposition.families {
        assert!(family.name.starts_with("groupchatd_"), "{}", family.name);
        assert!(!family.help.is_empty(), "{} has no help", family.name);
    }
    exposition
}

#[tokio::test]
async fn healthz_is_ok_while_serving_503_while_stopping_and_gone_after() {
    let mut srv = TestServer::start(Config {
        // Room for everything queued for the sleeper: it holds the stop, it is not cut off.
        max_queue_bytes: 64 << 20,
        shutdown_grace: std::time::Duration::from_secs(60),
        ..with_http(test_config())
    });
    let http = srv.http.unwrap();
    let ok = get(http, "/healthz").await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "ok\n"));
    assert_eq!(ok.header("cache-control"), Some("no-store"));
    let head = request(http, "HEAD", "/healthz", &[]).await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));

    // A member that reads nothing and whose socket is full: the stop waits (up to the grace) to
    // flush its queue, which keeps the daemon in its stop for as long as this test wants.
    let sleeper = TcpSocket::new_v4().unwrap();
    sleeper.set_recv_buffer_size(4096).unwrap();
    let sleeper = tokio::time::timeout(WAIT, sleeper.connect(srv.addr))
        .await
        .unwrap()
        .unwrap();
    let mut sleeper = TestClient::from_stream(sleeper);
    sleeper.read_until_line("*** Choose a nickname:").await;
    sleeper.send("sleeper").await;
    sleeper
        .read_until_line("*** Type /help for commands.")
        .await;
    let mut talker = srv.join("talker").await;
    let mut watcher = srv.join("watcher").await;
    let sleeper_id = srv.hub.resolve("sleeper").unwrap();
    let unsent = |srv: &TestServer| {
        srv.hub
            .list()
            .iter()
            .find(|c| c.client.id == sleeper_id)
            .map_or(0, |c| c.unsent)
    };
    let long = "x".repeat(3000);
    let mut batches = 0;
    while unsent(&srv) == 0 {
        assert!(batches < 500, "the sleeper's socket never filled");
        for _ in 0..16 {
            talker.send(&long).await;
        }
        talker.send(&format!("mark {batches}")).await;
        watcher
            .read_until_line(&format!("<talker> mark {batches}"))
            .await;
        batches += 1;
    }

    srv.begin_stop();
    wait_for(&srv.hub, || srv.hub.is_stopping(), "the stop to begin").await;
    // The chat side is stopping (the sleeper still flushing); HTTP still answers, with 503.
    let draining = get(http, "/healthz").await;
    assert_eq!(
        (draining.status, draining.body.as_str()),
        (503, "stopping\n")
    );
    // Metrics are still served meanwhile.
    assert_eq!(get(http, "/metrics").await.status, 200);

    // The sleeper goes (its unread data makes the close a reset): the stop completes, and the
    // HTTP listener is closed last.
    drop(sleeper);
    drop(talker);
    drop(watcher);
    srv.stop().await;
    let gone = try_request(http, "GET", "/healthz", &[]).await;
    assert!(
        gone.as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
        "{gone:?}"
    );
}

#[tokio::test]
async fn metrics_parse_strictly_and_move_with_traffic() {
    let srv = TestServer::start(with_http(test_config()));
    let http = srv.http.unwrap();

    // A fresh daemon, in both formats.
    for format in [Format::OpenMetrics, Format::Prometheus] {
        let m = scrape(http, format).await;
        for transport in ["tcp", "tls", "websocket"] {
            assert_eq!(
                m.expect("groupchatd_clients", &[("transport", transport)]),
                0.0
            );
        }
        assert_eq!(m.expect("groupchatd_rooms", &[]), 1.0);
        assert_eq!(
            m.expect("groupchatd_room_members", &[("room", "#lobby")]),
            0.0
        );
        assert_eq!(
            m.expect("groupchatd_room_lines_total", &[("room", "#lobby")]),
            0.0
        );
        for counter in [
            "connections",
            "rejected_connections",
            "lines_relayed",
            "bytes_relayed",
            "kicks",
            "slow_consumer_drops",
            "throttled_senders",
            "upgrades",
            "tls_handshake_failures",
        ] {
            assert_eq!(m.expect(&format!("groupchatd_{counter}_total"), &[]), 0.0);
        }
        assert_eq!(
            m.expect("groupchatd_fanout_latency_seconds_count", &[]),
            0.0
        );
        let family = m
            .family_of("groupchatd_fanout_latency_seconds_bucket")
            .unwrap();
        assert_eq!(family.kind, "histogram");
        let started = m.expect("groupchatd_start_time_seconds", &[]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            (now - 3600.0..=now + 1.0).contains(&started),
            "{started} vs {now}"
        );
    }
    let om = scrape(http, Format::OpenMetrics).await;
    assert_eq!(
        om.family_of("groupchatd_fanout_latency_seconds_bucket")
            .unwrap()
            .unit
            .as_deref(),
        Some("seconds")
    );
    assert_eq!(
        om.family_of("groupchatd_kicks_total").unwrap().name,
        "groupchatd_kicks"
    );

    // alice and bob in #lobby, carol alone in #side.
    let mut alice = srv.join("alice").await;
    let mut bob = srv.join("bob").await;
    alice.expect("*** bob joined").await;
    let mut carol = srv.join("carol").await;
    carol.send("/join #side").await;
    carol
        .expect("*** Now in #side (no topic). 1 online: carol")
        .await;
    alice.send("/who").await;
    alice.read_until_line("*** 2 online: alice, bob").await;
    let joined = scrape(http, Format::Prometheus).await;
    assert_eq!(
        joined.expect("groupchatd_clients", &[("transport", "tcp")]),
        3.0
    );
    assert_eq!(joined.expect("groupchatd_rooms", &[]), 2.0);
    assert_eq!(
        joined.expect("groupchatd_room_members", &[("room", "#lobby")]),
        2.0
    );
    assert_eq!(
        joined.expect("groupchatd_room_members", &[("room", "#side")]),
        1.0
    );
    let observed = joined.expect("groupchatd_fanout_latency_seconds_count", &[]);

    alice.send_raw(b"one\ntwo\nthree\n").await;
    let mut relayed_bytes = 0;
    for text in ["one", "two", "three"] {
        let line = bob.read_until_line(&format!("<alice> {text}")).await;
        assert!(line.iter().all(|l| l.starts_with("***")), "{line:?}");
        relayed_bytes += format!("<alice> {text}\r\n").len();
    }
    carol.send("hi").await;
    relayed_bytes += "<carol> hi\r\n".len();
    // Each one's next reply comes after its publish (and its delivery round) was done.
    carol.send("/who").await;
    carol.expect("*** 1 online: carol").await;
    alice.send("/who").await;
    alice.expect("*** 2 online: alice, bob").await;
    assert!(srv.hub.kick("bob", Some("metrics test")).is_some());
    assert_eq!(
        bob.expect_closed().await,
        ["*** you were kicked: metrics test"]
    );
    srv.wait_connections(2).await;

    for format in [Format::OpenMetrics, Format::Prometheus] {
        let m = scrape(http, format).await;
        assert_eq!(m.expect("groupchatd_clients", &[("transport", "tcp")]), 2.0);
        assert_eq!(m.expect("groupchatd_clients", &[("transport", "tls")]), 0.0);
        assert_eq!(
            m.expect("groupchatd_room_members", &[("room", "#lobby")]),
            1.0
        );
        assert_eq!(
            m.expect("groupchatd_room_members", &[("room", "#side")]),
            1.0
        );
        assert_eq!(
            m.expect("groupchatd_room_lines_total", &[("room", "#lobby")]),
            3.0
        );
        assert_eq!(
            m.expect("groupchatd_room_lines_total", &[("room", "#side")]),
            1.0
        );
        assert_eq!(m.expect("groupchatd_lines_relayed_total", &[]), 4.0);
        assert_eq!(
            m.expect("groupchatd_bytes_relayed_total", &[]),
            relayed_bytes as f64
        );
        assert_eq!(m.expect("groupchatd_connections_total", &[]), 3.0);
        assert_eq!(m.expect("groupchatd_kicks_total", &[]), 1.0);
        assert_eq!(m.expect("groupchatd_rejected_connections_total", &[]), 0.0);
        let count = m.expect("groupchatd_fanout_latency_seconds_count", &[]);
        assert!(count >= observed + 2.0, "{observed} -> {count}");
        let sum = m.expect("groupchatd_fanout_latency_seconds_sum", &[]);
        assert!(sum > 0.0 && sum < count * 10.0, "sum {sum} for {count}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn bad_requests_are_answered_and_harm_nothing() {
    let srv = TestServer::start(with_http(test_config()));
    let http = srv.http.unwrap();
    let mut alice = srv.join("alice").await;

    let post = request(http, "POST", "/metrics", &[("Content-Length", "0")]).await;
    assert_eq!(post.status, 405);
    assert!(post.header("allow").unwrap().contains("GET"), "{post:?}");
    assert_eq!(request(http, "DELETE", "/healthz", &[]).await.status, 405);
    assert_eq!(get(http, "/nope").await.status, 404);
    assert_eq!(get(http, "/metrics/extra").await.status, 404);
    // The WebSocket endpoint, asked without an upgrade.
    assert_eq!(get(http, "/ws").await.status, 426);
    // Not HTTP at all, and a head too large to buffer: an error status, then the close.
    let garbage = exchange(http, b"HELLO THERE\r\n\r\n").await.unwrap();
    assert_eq!(parse_response(&garbage, false).status, 400);
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let refused = exchange(http, huge.as_bytes()).await.unwrap_or_default();
    if !refused.is_empty() {
        assert_eq!(parse_response(&refused, false).status, 431);
    }
    // A request body is never read: POST with one is refused the same way.
    let with_body = exchange(
        http,
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await
    .unwrap();
    assert_eq!(parse_response(&with_body, false).status, 405);

    // Everything still works.
    assert_eq!(get(http, "/healthz").await.status, 200);
    assert_eq!(
        scrape(http, Format::Prometheus)
            .await
            .expect("groupchatd_kicks_total", &[]),
        0.0
    );
    alice.send("/who").await;
    alice.expect("*** 1 online: alice").await;
    srv.stop().await;
}

#[tokio::test]
async fn the_front_page_is_the_browser_client() {
    let srv = TestServer::start(with_http(test_config()));
    let http = srv.http.unwrap();
    let csp = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
               img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/app.css", "text/css; charset=utf-8"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let file = get(http, path).await;
        assert_eq!(file.status, 200, "{path}");
        assert_eq!(file.header("content-type"), Some(content_type), "{path}");
        assert_eq!(file.header("content-security-policy"), Some(csp), "{path}");
        assert_eq!(
            file.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(file.header("cache-control"), Some("no-cache"), "{path}");
    }
    let page = get(http, "/").await;
    assert!(
        page.body
            .contains(r#"<script src="/app.js" defer></script>"#),
        "{}",
        page.body
    );
    // Filled in per request: where terminal users connect, and the line limit.
    assert!(
        page.body
            .contains(&format!("nc 127.0.0.1 {}", srv.addr.port())),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(r#"data-max-line="4096""#),
        "{}",
        page.body
    );
    assert!(!page.body.contains("{{"), "{}", page.body);
    let script = get(http, "/app.js").await;
    assert!(script.body.contains("new WebSocket("), "{}", script.body);
    srv.stop().await;
}
