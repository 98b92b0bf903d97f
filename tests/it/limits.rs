//! Limits and hostile input: slow readers, floods, overlong lines, bad bytes, admission, timeouts.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use groupchatd::config::{Config, Flood};
use tokio::net::TcpSocket;

use crate::process::{DAEMON, Daemon, Scratch};
use crate::support::*;

/// A client whose receive buffer is tiny and which never reads.
async fn stalled_reader(srv: &TestServer, nick: &str) -> TestClient {
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = tokio::time::timeout(WAIT, sock.connect(srv.addr))
        .await
        .unwrap()
        .unwrap();
    let mut c = TestClient::from_stream(stream);
    c.read_until_line("*** Choose a nickname:").await;
    c.send(nick).await;
    c.read_until_line("*** Type /help for commands.").await;
    c
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

/// A sender sends `total` bytes of 4000-byte lines while `reader` must receive every one, in order.
/// The sender is paced by the reader's progress (at most [`IN_FLIGHT`] lines ahead), so the reader
/// is one that keeps up: it must never be mistaken for a slow one.
async fn flood_and_check(sender: TestClient, reader: &mut TestClient, total: usize) -> Vec<String> {
    const IN_FLIGHT: usize = 100;
    let lines = total / 4000 + 1;
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    let task = tokio::spawn(async move {
        let mut sender = sender;
        let pad = "x".repeat(3980);
        for i in 0..lines {
            if i % IN_FLIGHT == 0 {
                progress
                    .wait_for(|&got| got + IN_FLIGHT >= i)
                    .await
                    .unwrap();
            }
            sender.send(&format!("{i:08} {pad}")).await;
        }
        sender
    });
    let mut notices = Vec::new();
    let mut next = 0;
    while next < lines {
        let l = reader.line().await;
        if let Some(body) = l.strip_prefix("<fast> ") {
            assert_eq!(
                &body[..8],
                format!("{next:08}"),
                "line {next} arrives in order, intact"
            );
            assert_eq!(body.len(), 8 + 1 + 3980);
            next += 1;
            progress_tx.send_replace(next);
        } else {
            notices.push(l);
        }
    }
    task.await.unwrap();
    notices
}

/// A stalled reader in a room where `fast` floods: the good reader must get every line in order,
/// and the stalled one must leave with `reason`. Returns the server for further checks.
async fn stalled_reader_scenario(config: Config, reason: &str) -> TestServer {
    let srv = TestServer::start(config);
    let mut good = srv.join("good").await;
    let _slow = stalled_reader(&srv, "slow").await;
    good.expect("*** slow joined").await;
    let fast = srv.join("fast").await;
    good.expect("*** fast joined").await;
    let notices = flood_and_check(fast, &mut good, more_than_kernel_buffers()).await;
    let left = format!("*** slow left ({reason})");
    if !notices.contains(&left) {
        good.read_until_line(&left).await;
    }
    srv
}

#[tokio::test]
async fn stalled_reader_is_cut_off_and_others_lose_nothing() {
    let config = Config {
        max_queue_bytes: 1 << 20,
        // The 4 KB lines are checked byte for byte (wrapping is tested in forgery.rs).
        wrap_width: 0,
        ..test_config()
    };
    let srv = stalled_reader_scenario(config, "too slow: send queue full").await;
    let drops = srv
        .hub
        .counters
        .slow_drops
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(drops, 1, "only the stalled reader was cut off");
}

#[tokio::test]
async fn reader_that_accepts_nothing_is_dropped_after_the_write_timeout() {
    let config = Config {
        max_queue_bytes: 1 << 30,
        write_timeout: Duration::from_secs(1),
        wrap_width: 0,
        ..test_config()
    };
    stalled_reader_scenario(config, "too slow: write timeout").await;
}

#[tokio::test]
async fn flood_is_slowed_not_dropped() {
    let srv = TestServer::start(Config {
        flood: Some(Flood {
            burst: 3,
            per_sec: 50.0,
        }),
        ..test_config()
    });
    let mut a = srv.join("alice").await;
    let mut b = srv.join("bob").await;
    a.expect("*** bob joined").await;
    let burst: String = (0..20).map(|i| format!("flood {i}\n")).collect();
    b.send_raw(burst.as_bytes()).await;
    for i in 0..20 {
        a.expect(&format!("<bob> flood {i}")).await;
    }
    assert_eq!(
        srv.hub
            .counters
            .throttled
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The throttled client is still connected and chatting.
    b.send("still here").await;
    a.expect("<bob> still here").await;
}

#[tokio::test]
async fn overlong_lines_are_refused_without_buffering_and_the_connection_survives() {
    let srv = TestServer::start(Config {
        max_line_bytes: 64,
        max_queue_bytes: 4096,
        ..test_config()
    });
    let mut a = srv.join("alice").await;
    let mut b = srv.join("bob").await;
    a.expect("*** bob joined").await;
    let exactly = "y".repeat(64);
    b.send(&exactly).await;
    a.expect(&format!("<bob> {exactly}")).await;
    b.send(&"z".repeat(65)).await;
    b.expect("*** Line too long (limit 64 bytes); it was not sent.")
        .await;
    // A 10 MiB line without a newline: told once, nothing buffered, then the next line works.
    let chunk = vec![b'q'; 1 << 20];
    for _ in 0..10 {
        b.send_raw(&chunk).await;
    }
    b.expect("*** Line too long (limit 64 bytes); it was not sent.")
        .await;
    b.send_raw(b"\nafter\n").await;
    a.expect("<bob> after").await;
}

#[tokio::test]
async fn invalid_utf8_is_replaced_and_the_sender_told_once() {
    let srv = TestServer::start(test_config());
    let mut a = srv.join("alice").await;
    let mut b = srv.join("bob").await;
    a.expect("*** bob joined").await;
    b.send_raw(b"caf\xe9\n").await;
    a.expect("<bob> caf\u{FFFD}").await;
    b.expect("*** This server expects UTF-8; invalid bytes were replaced with \u{FFFD}.")
        .await;
    b.send_raw(b"\xff\xfe again\n").await;
    a.expect("<bob> again").await; // 0xFF 0xFE is telnet IAC DONT: consumed with its option byte
    b.send_raw(b"\xc3\x28 twice\n").await;
    a.expect("<bob> \u{FFFD}( twice").await;
    barrier(&mut a, "alice", &mut b, "utf8").await; // no second notice
}

#[tokio::test]
async fn terminal_escapes_and_controls_never_reach_other_terminals() {
    let srv = TestServer::start(test_config());
    let mut a = srv.join("alice").await;
    let mut b = srv.join("bob").await;
    a.expect("*** bob joined").await;
    b.send_raw(b"\x1b[31mred\x1b[0m \x1b]0;pwned\x07x\rY\x08Z\tend\n")
        .await;
    a.expect("<bob> red xZ end").await;
    b.send_raw("\u{202E}evil\u{2066} \u{2028}ok\x1b[2J\x1b[H\x07\n".as_bytes())
        .await;
    a.expect("<bob> evil ok").await;
    b.send_raw(b"*** fake server line\n").await;
    a.expect("<bob> *** fake server line").await;
}

#[tokio::test]
async fn telnet_negotiation_is_consumed() {
    let srv = TestServer::start(test_config());
    let mut a = srv.join("alice").await;
    let mut t = srv.client().await;
    t.send_raw(b"\xff\xfb\x01\xff\xfd\x03\xff\xfa\x18\x00xterm\xff\xf0")
        .await;
    t.read_until_line("*** Choose a nickname:").await;
    t.send_raw(b"tel\xff\xf1net\r\0hel\xff\xfd\x01lo\r\n").await;
    a.expect("*** telnet joined").await;
    a.expect("<telnet> hello").await;
}

#[tokio::test]
async fn server_full_and_per_ip_limit_refuse_politely() {
    let srv = TestServer::start(Config {
        max_clients: 2,
        ..test_config()
    });
    let mut a = srv.join("alice").await;
    let _b = srv.join("bob").await;
    a.expect("*** bob joined").await;
    let mut third = srv.client().await;
    assert_eq!(third.expect_closed().await, vec!["*** server full"]);
    barrier_join_free(&mut a).await;

    let srv = TestServer::start(Config {
        max_clients_per_ip: 1,
        per_ip_exempt: vec![],
        ..test_config()
    });
    let _a = srv.join("alice").await;
    let mut second = srv.client().await;
    assert_eq!(
        second.expect_closed().await,
        vec!["*** too many connections from your address"]
    );
    let exempt = TestServer::start(Config {
        max_clients_per_ip: 1,
        ..test_config()
    });
    let _x = exempt.join("x").await;
    let _y = exempt.join("y").await; // loopback is exempt by default
}

/// The room did not notice the refused newcomer: alice's next line is a fresh message.
async fn barrier_join_free(a: &mut TestClient) {
    a.send("/who").await;
    a.expect("*** 2 online: alice, bob").await;
}

#[tokio::test]
async fn handshake_timeout_closes_with_a_reason() {
    let srv = TestServer::start(Config {
        handshake_timeout: Some(Duration::from_secs(1)),
        ..test_config()
    });
    let mut c = srv.client().await;
    c.read_until_line("*** Choose a nickname:").await;
    assert_eq!(
        c.expect_closed().await,
        vec!["*** No nickname within 1 s; goodbye."]
    );
    srv.wait_connections(0).await;
}

#[tokio::test]
async fn idle_timeout_disconnects_quiet_members() {
    let srv = TestServer::start(Config {
        idle_timeout: Some(Duration::from_secs(1)),
        ..test_config()
    });
    let mut b = srv.join("bob").await;
    let mut a = srv.join("alice").await;
    // alice stays active (a /who every 200 ms) while bob says nothing; bounded by WAIT.
    let watch = async {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                line = a.line() => if line == "*** bob left (idle timeout)" { return },
                _ = tick.tick() => a.send("/who").await,
            }
        }
    };
    tokio::time::timeout(WAIT, watch)
        .await
        .expect("bob idles out while alice stays");
    let last = b.expect_closed().await.pop();
    assert_eq!(last.as_deref(), Some("*** Idle for 1 s; disconnecting."));
}

/// A client whose socket is bound to `local` before connecting: all of 127.0.0.0/8 is loopback, so
/// tests can play peers from several addresses of one network.
async fn client_from(server: SocketAddr, local: &str) -> TestClient {
    let sock = TcpSocket::new_v4().unwrap();
    let local: IpAddr = local.parse().unwrap();
    sock.bind(SocketAddr::new(local, 0)).unwrap();
    let stream = tokio::time::timeout(WAIT, sock.connect(server))
        .await
        .unwrap()
        .unwrap();
    TestClient::from_stream(stream)
}

/// Connects from `local` and expects the greeting (admitted, not refused).
async fn admitted_from(server: SocketAddr, local: &str) -> TestClient {
    let mut c = client_from(server, local).await;
    c.read_until_line("*** Choose a nickname:").await;
    c
}

#[tokio::test]
async fn per_ip_limit_counts_a_whole_prefix_as_one_network() {
    let srv = TestServer::start(Config {
        max_clients_per_ip: 2,
        per_ip_prefix_v4: 24,
        per_ip_exempt: vec![],
        ..test_config()
    });
    let mut alice = admitted_from(srv.addr, "127.0.0.1").await;
    alice.send("alice").await;
    alice.read_until_line("*** Type /help for commands.").await;
    let mut bob = admitted_from(srv.addr, "127.0.0.2").await;
    bob.send("bob").await;
    alice.expect("*** bob joined").await;
    // A third address of the same /24: the network's two slots are taken.
    let mut third = client_from(srv.addr, "127.0.0.3").await;
    assert_eq!(
        third.expect_closed().await,
        vec!["*** too many connections from your address"]
    );
    // Another /24 is another network.
    let _other = admitted_from(srv.addr, "127.0.1.1").await;
    // bob leaves: his slot goes back to the /24 he was counted in.
    bob.send("/quit").await;
    alice.expect("*** bob left (quit)").await;
    srv.wait_connections(2).await;
    let _fourth = admitted_from(srv.addr, "127.0.0.4").await;
    assert_eq!(
        srv.hub
            .counters
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_connection_burst_over_connect_burst_is_refused_but_exempt_peers_are_not() {
    let dir = Scratch::new("connect-rate");
    // All of 127/8 is one network here, except 127.0.0.2, which is exempt.
    let config = "per_ip_prefix_v4 = 8\nper_ip_exempt = [\"127.0.0.2\"]\n\
                  connect_burst = 3\nconnect_rate = 0.01\n";
    let d = Daemon::start(&dir, "d", config);
    let addr = d.addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut admitted = Vec::new();
        for local in ["127.0.0.1", "127.0.0.3", "127.0.0.1"] {
            admitted.push(admitted_from(addr, local).await);
        }
        let mut over = client_from(addr, "127.0.0.4").await;
        let refused = over.expect_closed().await;
        assert_eq!(refused.len(), 1, "{refused:?}");
        let retry: u32 = refused[0]
            .strip_prefix("*** too many connections from your network; try again in ")
            .and_then(|rest| rest.strip_suffix(" s"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not the rate-limit line: {refused:?}"));
        // One token at 0.01/s is 100 s away, less what trickled in since the burst.
        assert!((90..=100).contains(&retry), "{retry}");
        // The exempt address is never limited, however many connections it opens.
        for _ in 0..6 {
            admitted.push(admitted_from(addr, "127.0.0.2").await);
        }
        // Still refused for the limited network, with no second log line for the same episode.
        let mut again = client_from(addr, "127.0.0.1").await;
        let line = again.expect_closed().await;
        assert!(
            line[0].starts_with("*** too many connections from your network"),
            "{line:?}"
        );
        // A join logged after both refusals: once it is in, every earlier log line is too.
        let mut zed = admitted_from(addr, "127.0.0.2").await;
        zed.send("zed").await;
        zed.read_until_line("*** Type /help for commands.").await;
    });
    d.log_line("nick=zed");
    let logged = d.log_line("over its connection rate");
    for field in [
        "event=\"connect_rate\"",
        "network=127.0.0.0/8",
        "connect_burst=3",
        "retry_secs=",
    ] {
        assert!(logged.contains(field), "{field} in {logged}");
    }
    let episodes = d
        .take_log()
        .iter()
        .filter(|l| l.contains("over its connection rate"))
        .count();
    assert_eq!(episodes, 1, "logged once per episode, not per refusal");
}

fn check_config_file(dir: &Scratch, name: &str, text: &str) -> (i32, String) {
    let path = dir.file(name, text);
    let out = Command::new(DAEMON)
        .arg("--check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn out_of_range_limits_fail_check_config_with_exit_78() {
    let dir = Scratch::new("limits-check");
    for (name, text, expected) in [
        (
            "tiny-rate.toml",
            "flood_rate = 1e-19\n",
            "key 'flood_rate': must be 0 (off) or between 0.01 and 1000000 lines per second (got 1e-19)",
        ),
        (
            "connect-rate.toml",
            "connect_rate = 0.001\n",
            "key 'connect_rate': must be 0 (off) or between 0.01 and 1000000 connections per second",
        ),
        (
            "prefix.toml",
            "per_ip_prefix_v6 = 16\n",
            "key 'per_ip_prefix_v6': must be between 32 and 128 (got 16)",
        ),
        (
            "mode.toml",
            "admin_socket_mode = \"0\"\n",
            "key 'admin_socket_mode': 0000 does not give the owner read and write",
        ),
        (
            "host-bits.toml",
            "per_ip_exempt = [\"10.0.0.1/8\"]\n",
            "did you mean 10.0.0.0/8?",
        ),
    ] {
        let (code, stderr) = check_config_file(&dir, name, text);
        assert_eq!(code, 78, "{name}: {stderr}");
        assert!(
            stderr.contains(name) && stderr.contains(expected),
            "{name}: {stderr}"
        );
    }
    let (code, stderr) = check_config_file(&dir, "floor.toml", "flood_rate = 0.01\n");
    assert_eq!(code, 0, "the floor itself is accepted: {stderr}");
}

#[test]
fn the_slowest_flood_rate_pauses_a_client_without_harming_the_daemon() {
    let dir = Scratch::new("slow-flood");
    let mut d = Daemon::start(&dir, "d", "flood_burst = 10\nflood_rate = 0.01\n");
    let addr = d.addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut alice = join_at(addr, "alice").await;
        let mut bob = join_at(addr, "bob").await;
        alice.expect("*** bob joined").await;
        // The nickname took one token; ten lines more at once make eleven: the burst of ten goes
        // through, the eleventh waits ~100 s for a token (where 1e-19 once aborted the daemon).
        let lines: String = (0..10).map(|i| format!("line {i}\n")).collect();
        bob.send_raw(lines.as_bytes()).await;
        for i in 0..9 {
            alice.expect(&format!("<bob> line {i}")).await;
        }
        // The daemon is alive and serving: a newcomer joins and chats with alice. (Her next line
        // being carol's join also shows that the eleventh line was held back.)
        let mut carol = join_at(addr, "carol").await;
        alice.expect("*** carol joined").await;
        carol.send("still up").await;
        alice.expect("<carol> still up").await;
    });
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon is running"
    );
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT), 0);
}

/// Connects to a daemon process and joins as `nick`.
async fn join_at(addr: SocketAddr, nick: &str) -> TestClient {
    let mut c = TestClient::connect(addr).await;
    c.read_until_line("*** Choose a nickname:").await;
    c.send(nick).await;
    c.read_until_line("*** Type /help for commands.").await;
    c
}
