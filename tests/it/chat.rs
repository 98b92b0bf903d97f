//! The chat protocol as a netcat user sees it: greeting, nicknames, relay, commands, leaving.

use tokio::io::AsyncWriteExt;

use crate::support::*;

#[tokio::test]
async fn greeting_join_relay_and_leave() {
    let srv = TestServer::start(test_config());
    let mut c = srv.client().await;
    assert_eq!(c.line().await, "*** Welcome to groupchatd.");
    c.expect("*** Choose a nickname:").await;
    c.send("alice").await;
    c.expect("*** Welcome, alice! 1 online: alice").await;
    c.expect("*** Type /help for commands.").await;
    let mut alice = c;

    let mut bob = srv.join("小明").await;
    alice.expect("*** 小明 joined").await;

    bob.send("你好, alice").await;
    alice.expect("<小明> 你好, alice").await;
    alice.send("hi bob_ 👋").await;
    bob.expect("<alice> hi bob_ 👋").await;
    // No echo to the sender: the next thing bob sees is alice's line, not his own.

    drop(bob);
    alice.expect("*** 小明 left (connection closed)").await;
    srv.stop().await;
}

#[tokio::test]
async fn welcome_lists_who_is_online() {
    let srv = TestServer::start(test_config());
    let _a = srv.join("alice").await;
    let _b = srv.join("Bob").await;
    let mut c = srv.client().await;
    c.read_until_line("*** Choose a nickname:").await;
    c.send("carol").await;
    c.expect("*** Welcome, carol! 3 online: alice, Bob, carol")
        .await;
}

#[tokio::test]
async fn every_line_ending_is_accepted_and_crlf_is_sent() {
    let srv = TestServer::start(test_config());
    let mut a = srv.join("alice").await;
    let mut b = srv.join("bob").await;
    a.expect("*** bob joined").await;
    b.send_raw(b"lf\ncrlf\r\ntelnet\r\0last\n").await;
    for want in ["<bob> lf", "<bob> crlf", "<bob> telnet", "<bob> last"] {
        let raw = a.raw_line().await.unwrap();
        assert_eq!(raw, format!("{want}\r\n").into_bytes());
    }
}

#[tokio::test]
async fn fragmented_lines_are_reassembled_and_never_merged() {
    let srv = TestServer::start(test_config());
    let mut a = srv.join("alice").await;
    let mut b = srv.join("bob").await;
    a.expect("*** bob joined").await;
    // One byte per write (TCP_NODELAY on our side too), then many lines in one write.
    let _ = b.writer.as_ref().set_nodelay(true);
    for byte in "split across segments\n".bytes() {
        b.send_raw(&[byte]).await;
    }
    a.expect("<bob> split across segments").await;
    let many: String = (0..50).map(|i| format!("line {i}\n")).collect();
    b.send_raw(many.as_bytes()).await;
    for i in 0..50 {
        a.expect(&format!("<bob> line {i}")).await;
    }
}

#[tokio::test]
async fn input_sent_before_the_prompt_is_not_lost() {
    let srv = TestServer::start(test_config());
    let mut a = srv.join("alice").await;
    let mut piped = srv.client().await;
    // Like `printf 'bob\nfirst\nsecond\n' | nc`: everything at once, before reading anything.
    piped.send_raw(b"bob\nfirst\nsecond\n").await;
    a.expect("*** bob joined").await;
    a.expect("<bob> first").await;
    a.expect("<bob> second").await;
    piped
        .read_until_line("*** Welcome, bob! 2 online: alice, bob")
        .await;
}

#[tokio::test]
async fn nickname_rules() {
    let srv = TestServer::start(test_config());
    let _alice = srv.join("Alice").await;
    let mut c = srv.client().await;
    c.read_until_line("*** Choose a nickname:").await;
    let refusals = [
        ("alice", "*** that nickname is taken"),
        ("ALICE", "*** that nickname is taken"),
        ("server", "*** that nickname is reserved"),
        (
            "bob smith",
            "*** ' ' is not allowed in a nickname (use letters, digits, _ and -)",
        ),
        ("1234", "*** a nickname needs at least one letter"),
        (
            "abcdefghijklmnopqrstuvwxy",
            "*** nicknames are at most 24 characters",
        ),
    ];
    for (nick, why) in refusals {
        c.send(nick).await;
        assert_eq!(c.line().await, why, "nick {nick:?}");
        c.expect("*** Choose a nickname:").await;
    }
    c.send("bob_2").await;
    c.expect("*** Welcome, bob_2! 2 online: Alice, bob_2").await;
}

#[tokio::test]
async fn commands() {
    let srv = TestServer::start(test_config());
    let mut a = srv.join("alice").await;
    let mut b = srv.join("bob").await;
    let mut c = srv.join("carol").await;
    a.read_until_line("*** carol joined").await;
    b.expect("*** carol joined").await;

    a.send("/me waves").await;
    b.expect("* alice waves").await;
    c.expect("* alice waves").await;

    a.send("/who").await;
    a.expect("*** 3 online: alice, bob, carol").await;

    a.send("/msg bob psst").await;
    a.expect("*** -> *bob* psst").await;
    b.expect("*alice* psst").await;
    barrier(&mut b, "bob", &mut c, "after-msg").await; // carol did not see the private line
    a.expect("<bob> barrier-after-msg").await;

    a.send("/msg nobody hello").await;
    a.expect("*** No such nickname: nobody").await;

    a.send("//etc/passwd is a path").await;
    b.expect("<alice> /etc/passwd is a path").await;
    c.expect("<alice> /etc/passwd is a path").await;

    a.send("/frobnicate").await;
    a.expect("*** Unknown command /frobnicate; type /help for the list.")
        .await;
    a.send("/help").await;
    let help = a.line().await;
    assert!(help.starts_with("*** "), "{help}");

    a.send("/nick alicia").await;
    for x in [&mut a, &mut b, &mut c] {
        x.read_until_line("*** alice is now known as alicia").await;
    }
    b.send("/nick ALICIA").await;
    b.expect("*** Cannot change nickname: that nickname is taken")
        .await;
    a.send("after rename").await;
    b.expect("<alicia> after rename").await;
    c.expect("<alicia> after rename").await;

    c.send("/quit see you").await;
    c.expect("*** Goodbye.").await;
    c.expect_closed().await;
    a.read_until_line("*** carol left (quit: see you)").await;
    b.read_until_line("*** carol left (quit: see you)").await;
}

#[tokio::test]
async fn order_is_the_same_for_every_receiver() {
    let srv = TestServer::start(test_config());
    let mut senders = Vec::new();
    for i in 0..3 {
        senders.push(srv.join(&format!("s{i}")).await);
    }
    let mut r1 = srv.join("r1").await;
    let mut r2 = srv.join("r2").await;
    r1.expect("*** r2 joined").await;
    const N: usize = 200;
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                for n in 0..N {
                    s.send(&format!("m{n}")).await;
                }
                s
            })
        })
        .collect();
    let mut seen1 = Vec::new();
    let mut seen2 = Vec::new();
    for _ in 0..3 * N {
        seen1.push(r1.line().await);
        seen2.push(r2.line().await);
    }
    assert_eq!(seen1, seen2, "both receivers see one total order");
    for i in 0..3 {
        let mine: Vec<_> = seen1
            .iter()
            .filter(|l| l.starts_with(&format!("<s{i}> ")))
            .cloned()
            .collect();
        let want: Vec<_> = (0..N).map(|n| format!("<s{i}> m{n}")).collect();
        assert_eq!(
            mine, want,
            "sender s{i}'s lines arrive complete and in order"
        );
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn half_close_delivers_pending_lines_and_leaves_once() {
    let srv = TestServer::start(test_config());
    let mut a = srv.join("alice").await;
    let mut b = srv.join("bob").await;
    a.expect("*** bob joined").await;
    // Like `echo ... | nc -N`: last line has no newline, then FIN; bob still reads the reply.
    b.send_raw(b"/who\nlast words").await;
    b.writer.shutdown().await.unwrap();
    a.expect("<bob> last words").await;
    a.expect("*** bob left (connection closed)").await;
    b.expect("*** 2 online: alice, bob").await;
    b.expect_closed().await;
    barrier_self(&srv, &mut a).await;
}

/// A fresh client joins; the next line `a` sees must be its join notice (so nothing else was pending).
async fn barrier_self(srv: &TestServer, a: &mut TestClient) {
    let _z = srv.join("zed").await;
    a.expect("*** zed joined").await;
}

#[tokio::test]
async fn reset_mid_line_is_cleaned_up_and_not_relayed() {
    let srv = TestServer::start(test_config());
    let mut a = srv.join("alice").await;
    let b = srv.join("bob").await;
    a.expect("*** bob joined").await;
    let TestClient { writer, reader } = b;
    let mut stream = reader.into_inner().reunite(writer).unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"half a li")
        .await
        .unwrap();
    stream.set_zero_linger().unwrap();
    drop(stream); // RST
    a.expect("*** bob left (connection closed)").await;
    barrier_self(&srv, &mut a).await;
    srv.wait_connections(2).await;
}

#[tokio::test]
async fn kick_tells_the_client_and_the_room() {
    let srv = TestServer::start(test_config());
    let mut a = srv.join("alice").await;
    let mut b = srv.join("bob").await;
    a.expect("*** bob joined").await;
    let (_, nick) = srv.hub.kick("BOB", Some("spam")).expect("bob exists");
    assert_eq!(nick.as_deref(), Some("bob"));
    b.expect("*** you were kicked: spam").await;
    b.expect_closed().await;
    a.expect("*** bob left (kicked: spam)").await;
    assert!(srv.hub.kick("bob", None).is_none());
}

#[tokio::test]
async fn shutdown_tells_everyone_and_closes() {
    let srv = TestServer::start(test_config());
    let mut a = srv.join("alice").await;
    let mut b = srv.join("bob").await;
    a.expect("*** bob joined").await;
    let mut pending = srv.client().await; // still choosing a nickname
    pending.read_until_line("*** Choose a nickname:").await;
    b.send("last message").await;
    a.expect("<bob> last message").await;
    srv.stop().await;
    for c in [&mut a, &mut b, &mut pending] {
        assert_eq!(c.expect_closed().await, vec!["*** server shutting down"]);
    }
}
