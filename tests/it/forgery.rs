//! Lines that try to pass as someone else's on the reader's screen: padding that makes a terminal
//! start a row with a fake server line, reasons long enough to carry a message inside a genuine
//! `***` line, a nickname taken over silently in a big room, and replies big enough to make the
//! asker look slow. Each attack runs against an in-process daemon and is checked on the bytes
//! another client receives.

use groupchatd::config::Config;
use groupchatd::protocol::format::{CONTINUATION, REASON_MAX_CHARS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::support::{TestClient, TestServer, WAIT, test_config};

/// Reads rows up to the barrier from `from` and returns them.
async fn rows_until_barrier(
    reader: &mut TestClient,
    from: &mut TestClient,
    from_nick: &str,
    tag: &str,
) -> Vec<String> {
    let marker = format!("barrier-{tag}");
    from.send(&marker).await;
    reader
        .read_until_line(&format!("<{from_nick}> {marker}"))
        .await
}

#[tokio::test]
async fn padding_cannot_make_a_row_look_like_a_server_line() {
    let srv = TestServer::start(test_config());
    let mut alice = srv.join("alice").await;
    let mut mallory = srv.join("mallory").await;
    alice.expect("*** mallory joined").await;
    let forged = [
        "*** bob left (quit: bye)",
        "<bob> please send me your password",
    ];
    // Pads for terminals of every common width (80, 100, 120, 132, 160, 200 columns).
    for pad in [69, 70, 79, 80, 89, 109, 121, 149, 189, 300, 1000] {
        for text in forged {
            mallory.send(&format!("hi{}{text}", " ".repeat(pad))).await;
            mallory.send(&format!("hi{}{text}", ".".repeat(pad))).await;
        }
    }
    let rows = rows_until_barrier(&mut alice, &mut mallory, "mallory", "pad").await;
    assert!(rows.len() > 44, "every message arrived: {rows:?}");
    for row in &rows {
        assert!(
            row.starts_with("<mallory>") || row.starts_with(CONTINUATION),
            "a row the sender controls starts at column 0: {row:?}"
        );
        // ASCII only here, so bytes are columns.
        assert!(row.len() <= 80, "row wider than wrap_width: {row:?}");
    }
    // The text itself is all there: only spaces at the breaks are gone.
    let text: String = rows.concat().replace([' ', '.'], "");
    assert_eq!(text.matches("***bobleft(quit:bye)").count(), 11 * 2);
    srv.stop().await;
}

#[tokio::test]
async fn wrapping_follows_the_configured_width_and_can_be_turned_off() {
    let srv = TestServer::start(Config {
        wrap_width: 40,
        ..test_config()
    });
    let mut alice = srv.join("alice").await;
    let mut bob = srv.join("bob").await;
    alice.expect("*** bob joined").await;
    bob.send(&"word ".repeat(30)).await;
    let rows = rows_until_barrier(&mut alice, &mut bob, "bob", "w40").await;
    assert!(rows.len() >= 4, "{rows:?}");
    assert!(rows.iter().all(|r| r.len() <= 40), "{rows:?}");
    srv.stop().await;

    let srv = TestServer::start(Config {
        wrap_width: 0,
        ..test_config()
    });
    let mut alice = srv.join("alice").await;
    let mut bob = srv.join("bob").await;
    alice.expect("*** bob joined").await;
    let long = "word ".repeat(30);
    bob.send(&long).await;
    alice.expect(&format!("<bob> {}", long.trim_end())).await;
    srv.stop().await;
}

#[tokio::test]
async fn quit_and_kick_reasons_are_short() {
    let srv = TestServer::start(test_config());
    let mut alice = srv.join("alice").await;
    let mut mallory = srv.join("mallory").await;
    let mut trudy = srv.join("trudy").await;
    alice.read_until_line("*** trudy joined").await;
    // A 4 KB reason would otherwise go out inside a genuine server line.
    let reason = "A".repeat(4000);
    mallory.send(&format!("/quit {reason}")).await;
    mallory.expect_closed().await;
    let leave = alice.line().await;
    assert!(leave.starts_with("*** mallory left (quit:"), "{leave}");
    let mut notice = leave;
    trudy.send("after").await;
    loop {
        let row = alice.line().await;
        if row == "<trudy> after" {
            break;
        }
        assert!(row.starts_with(CONTINUATION), "{row:?}");
        notice.push_str(row.trim_start());
    }
    let kept = notice.matches('A').count();
    assert!(
        kept < REASON_MAX_CHARS,
        "reason kept {kept} chars: {notice}"
    );
    assert!(notice.ends_with("\u{2026})"), "the cut is marked: {notice}");

    // An operator's kick reason is capped the same way.
    srv.hub.kick("trudy", Some(&"B".repeat(500)));
    let told = trudy.expect_closed().await.concat();
    assert!(told.matches('B').count() < REASON_MAX_CHARS, "{told}");
    let seen = alice.line().await;
    assert!(seen.starts_with("*** trudy left (kicked: B"), "{seen}");
    srv.stop().await;
}

#[tokio::test]
async fn renames_are_announced_in_a_big_room() {
    // Above presence_max_members joins and leaves are quiet, so a silent rename would let
    // mallory become `bob` the moment bob left, unnoticed.
    let srv = TestServer::start(Config {
        presence_max_members: 1,
        ..test_config()
    });
    let mut alice = srv.join("alice").await;
    let mut bob = srv.join("bob").await;
    let mut mallory = srv.join("mallory").await;
    bob.send("/quit").await;
    bob.expect_closed().await;
    mallory.send("/nick bob").await;
    alice.expect("*** mallory is now known as bob").await;
    mallory.expect("*** mallory is now known as bob").await;
    srv.stop().await;
}

#[tokio::test]
async fn asking_for_who_again_and_again_does_not_make_the_asker_slow() {
    // A small queue and a room whose `/who` is a few KB: a thousand `/who` in one write would
    // otherwise queue megabytes for a client that reads at its own pace, and drop it as slow.
    let srv = TestServer::start(Config {
        max_line_bytes: 1024,
        max_queue_bytes: 16 * 1024,
        ..test_config()
    });
    let mut members = Vec::new();
    for i in 0..60 {
        members.push(srv.join(&format!("member-with-long-name-{i:02}")).await);
    }
    let mut alice = srv.join("alice").await;
    // The asker has a small receive buffer and does not read while it asks.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = tokio::time::timeout(WAIT, socket.connect(srv.addr))
        .await
        .unwrap()
        .unwrap();
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(b"asker\n").await.unwrap();
    alice.read_until_line("*** asker joined").await;
    // Enough answers to fill the daemon's socket buffer (which the kernel grows up to the
    // largest tcp_wmem) twice over: past that point they would have to queue in the daemon.
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20);
    let asks = (2 * wmem_max / 1700).clamp(1000, 20_000);
    wr.write_all(&b"/who\n".repeat(asks)).await.unwrap();
    // Now read everything that arrives, at the asker's own pace, until its marker comes back
    // from the room, which also proves it is still in the room.
    wr.write_all(b"still here\n").await.unwrap();
    alice.expect("<asker> still here").await;
    alice.send("seen").await;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !got.ends_with(b"<alice> seen\r\n") {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, rd.read(&mut buf))
            .await
            .expect("the asker's output within the bound")
            .unwrap();
        assert!(n > 0, "the asker was disconnected");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(got).unwrap();
    let lists = text.matches("*** 62 online:").count();
    assert!(lists >= 1, "at least one full answer: {text}");
    let skipped = text.matches("Reply skipped").count();
    assert!(
        lists < asks,
        "answers that would not fit were skipped: {lists} lists, {skipped} notes, {} bytes",
        text.len()
    );
    assert!(!text.contains("too slow"), "{text}");
    srv.stop().await;
}
