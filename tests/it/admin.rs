//! The admin socket and `chatctl`, as an operator uses them: the real daemon binary, the real chatctl.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::process::{
    CHATCTL, Daemon, Scratch, admin_exchange, admin_request, chatctl, chatctl_with,
};
use crate::support::{TestClient, WAIT};

/// Connects and joins a running daemon as `nick`.
async fn join(d: &Daemon, nick: &str) -> TestClient {
    let mut c = TestClient::connect(d.addr()).await;
    c.read_until_line("*** Choose a nickname:").await;
    c.send(nick).await;
    c.read_until_line("*** Type /help for commands.").await;
    c
}

#[tokio::test]
async fn list_stats_announce_and_json() {
    let dir = Scratch::new("adm-list");
    let d = Daemon::start(&dir, "d", "");
    let mut alice = join(&d, "alice").await;
    let mut bob = join(&d, "小明").await;
    alice.expect("*** 小明 joined").await;
    bob.send("hello").await;
    alice.expect("<小明> hello").await;

    let out = chatctl(&d.socket, &["list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("NICK") && lines[0].contains("QUEUED"));
    assert!(
        lines[1].contains("alice") && lines[2].contains("小明"),
        "{}",
        out.stdout
    );

    let json = chatctl(&d.socket, &["--json", "list"]).json();
    assert_eq!(json["version"], 1);
    assert_eq!(json["ok"], true);
    let clients = json["result"]["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 2);
    let bob_entry = clients.iter().find(|c| c["nick"] == "小明").unwrap();
    assert_eq!(
        bob_entry["peer"],
        bob.writer.local_addr().unwrap().to_string()
    );
    assert_eq!(bob_entry["lines_in"], 2, "nickname + one message");
    assert_eq!(bob_entry["bytes_in"], "小明\nhello\n".len());
    assert_eq!(bob_entry["queued_bytes"], 0);
    for key in [
        "id",
        "connected_at",
        "connected_secs",
        "idle_secs",
        "lines_out",
        "bytes_out",
    ] {
        assert!(!bob_entry[key].is_null(), "{key}");
    }

    let before = chatctl(&d.socket, &["--json", "stats"]).json()["result"].clone();
    assert_eq!(before["clients"], 2);
    assert_eq!(before["lines_relayed"], 1);
    assert_eq!(before["listen"][0], d.addr().to_string());

    let out = chatctl(&d.socket, &["announce", "restart", "at", "18:00"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "announced to 2 clients\n")
    );
    alice.expect("*** restart at 18:00").await;
    bob.expect("*** restart at 18:00").await;
    // Announcements are sanitised like chat.
    let out = chatctl(&d.socket, &["--json", "announce", "\x1b[2Jclear\x07"]);
    assert_eq!(out.json()["result"]["reached"], 2);
    alice.expect("*** clear").await;
    bob.expect("*** clear").await;

    alice.send("more").await;
    bob.expect("<alice> more").await;
    let after = chatctl(&d.socket, &["--json", "stats"]).json()["result"].clone();
    assert_eq!(after["lines_relayed"], 2);
    assert_eq!(after["connections_total"], 2);
    let human = chatctl(&d.socket, &["stats"]);
    assert!(
        human.stdout.contains("2 connected, 2 joined, peak 2"),
        "{}",
        human.stdout
    );
}

#[tokio::test]
async fn kick_by_nick_and_by_id() {
    let dir = Scratch::new("adm-kick");
    let d = Daemon::start(&dir, "d", "");
    let mut alice = join(&d, "alice").await;
    let mut bob = join(&d, "bob").await;
    let mut carol = join(&d, "carol").await;
    alice.read_until_line("*** carol joined").await;
    bob.expect("*** carol joined").await;

    let out = chatctl(&d.socket, &["kick", "BOB", "--reason", "spam"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "kicked bob (id 2)\n"),
        "{}",
        out.stderr
    );
    assert_eq!(bob.expect_closed().await, vec!["*** you were kicked: spam"]);
    alice.expect("*** bob left (kicked: spam)").await;
    carol.expect("*** bob left (kicked: spam)").await;
    let logged = d.log_line("admin kicked a client");
    assert!(logged.contains("room=#lobby"), "{logged}");

    let out = chatctl(&d.socket, &["--json", "kick", "3"]);
    assert_eq!(out.code, 0);
    assert_eq!(out.json()["result"]["nick"], "carol");
    assert_eq!(carol.expect_closed().await, vec!["*** you were kicked"]);
    alice.expect("*** carol left (kicked)").await;

    let out = chatctl(&d.socket, &["kick", "bob"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("no client with id or nickname 'bob'"),
        "{}",
        out.stderr
    );
    let out = chatctl(&d.socket, &["--json", "kick", "99"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.json()["error"]["code"], "not_found");
    let stats = chatctl(&d.socket, &["--json", "stats"]).json();
    assert_eq!(stats["result"]["kicks"], 2);
}

#[test]
fn no_daemon_exits_69_and_names_the_socket() {
    let dir = Scratch::new("adm-none");
    let path = dir.path("nothing.sock");
    let out = chatctl(&path, &["list"]);
    assert_eq!(out.code, 69);
    assert!(
        out.stderr.contains(path.to_str().unwrap()) && out.stderr.contains("is groupchatd running")
    );
    // A stale socket file with nobody behind it is unreachable too.
    drop(UnixListener::bind(&path).unwrap());
    assert_eq!(chatctl(&path, &["stats"]).code, 69);
}

#[test]
fn stale_socket_is_replaced_live_one_is_not_stolen_other_files_are_refused() {
    let dir = Scratch::new("adm-stale");
    // A socket file left by a crash: bound, then the listener is gone.
    drop(UnixListener::bind(dir.path("d.sock")).unwrap());
    let d = Daemon::start(&dir, "d", "");
    d.log_line("removed stale admin socket");
    assert_eq!(chatctl(&d.socket, &["list"]).code, 0);

    // A second daemon on the same path must refuse to start and leave the first one serving.
    let cfg = dir.file("second.toml", "http_listen = []\n");
    let second = Command::new(crate::process::DAEMON)
        .arg("--config")
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0", "--admin-socket"])
        .arg(&d.socket)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert_ne!(second.status.code(), Some(0));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("already serving") && err.contains("d.sock"),
        "{err}"
    );
    assert_eq!(
        chatctl(&d.socket, &["list"]).code,
        0,
        "first daemon still answers"
    );

    // A regular file at the path is never replaced.
    let file = dir.file("plain.sock", "precious");
    let third = Command::new(crate::process::DAEMON)
        .arg("--config")
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0", "--admin-socket"])
        .arg(&file)
        .output()
        .unwrap();
    assert_ne!(third.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&third.stderr).contains("is not a socket"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
}

#[test]
fn garbage_gets_error_replies_and_the_daemon_keeps_serving() {
    let dir = Scratch::new("adm-garbage");
    let d = Daemon::start(&dir, "d", "");
    let replies = admin_exchange(
        &d.socket,
        b"garbage\n\xff\xfe\n{\"cmd\":\"frob\"}\n{\"version\":9,\"cmd\":\"list\"}\n{\"cmd\":\"stats\"}\n",
        5,
    );
    let codes: Vec<_> = replies.iter().map(|r| r["error"]["code"].clone()).collect();
    assert_eq!(
        codes[..4],
        [
            "bad_request",
            "bad_request",
            "bad_request",
            "unsupported_version"
        ]
    );
    assert_eq!(replies[4]["ok"], true, "the same connection still works");

    let mut huge = vec![b'x'; 100 * 1024];
    huge.push(b'\n');
    let replies = admin_exchange(&d.socket, &huge, 1);
    assert_eq!(replies[0]["error"]["code"], "too_large");

    // Eight connections fill the admin slots; a ninth closes the longest-idle one (the first to
    // have made its last request) instead of being turned away, and the others are still served.
    let idle: Vec<UnixStream> = (0..8)
        .map(|_| {
            let s = UnixStream::connect(&d.socket).unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            (&s).write_all(b"{\"cmd\":\"stats\"}\n").unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            assert!(line.contains("\"ok\":true"), "{line}");
            s
        })
        .collect();
    let replies = admin_exchange(&d.socket, b"{\"cmd\":\"stats\"}\n", 1);
    assert_eq!(replies[0]["ok"], true);
    let mut gone = String::new();
    assert_eq!(BufReader::new(&idle[0]).read_line(&mut gone).unwrap(), 0);
    let second = &idle[1];
    (&*second).write_all(b"{\"cmd\":\"stats\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(second).read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":true"), "{line}");
    drop(idle);
}

#[test]
fn disallowed_uid_is_refused_and_logged() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run chatctl as a second uid");
        return;
    }
    let dir = Scratch::new("adm-perm");
    // World-connectable, so the refusal comes from the SO_PEERCRED check, not file permissions.
    let d = Daemon::start(&dir, "d", "admin_socket_mode = \"0666\"\n");
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = Command::new(CHATCTL);
    cmd.arg("--socket")
        .arg(&d.socket)
        .arg("list")
        .uid(65534)
        .gid(65534);
    let out = chatctl_with(&mut cmd);
    assert_eq!(out.code, 77, "stdout {} stderr {}", out.stdout, out.stderr);
    assert!(out.stderr.contains("uid 65534"), "{}", out.stderr);
    let logged = d.log_line("admin connection refused");
    assert!(
        logged.contains("uid=65534") && logged.contains("pid="),
        "{logged}"
    );

    // With the default 0660 mode the OS refuses first; chatctl still says permission denied (77).
    let d2 = Daemon::start(&dir, "d2", "");
    let mut cmd = Command::new(CHATCTL);
    cmd.arg("--socket")
        .arg(&d2.socket)
        .arg("list")
        .uid(65534)
        .gid(65534);
    let out = chatctl_with(&mut cmd);
    assert_eq!(out.code, 77, "{}", out.stderr);
}

#[tokio::test]
async fn reload_applies_new_config_and_refuses_a_broken_one() {
    let dir = Scratch::new("adm-reload");
    let d = Daemon::start(&dir, "d", "motd = \"first motd\"\n");
    let mut alice = join(&d, "alice").await;
    dir.file(
        "d.toml",
        "motd = \"second motd\"\nmax_line_bytes = 100\nmax_queue_bytes = 4096\n",
    );
    let out = chatctl(&d.socket, &["reload"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("configuration reloaded from"),
        "{}",
        out.stdout
    );
    let mut newcomer = TestClient::connect(d.addr()).await;
    newcomer.expect("*** second motd").await;
    // Existing clients stay connected and get the new limits.
    alice.send(&"x".repeat(150)).await;
    alice
        .expect("*** Line too long (limit 100 bytes); it was not sent.")
        .await;

    dir.file("d.toml", "motd = \"third\"\nmax_line_bytes = 5\n");
    let out = chatctl(&d.socket, &["reload"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("max_line_bytes"), "{}", out.stderr);
    let out = chatctl(&d.socket, &["--json", "reload"]);
    assert_eq!(out.json()["error"]["code"], "reload_failed");
    let mut later = TestClient::connect(d.addr()).await;
    later.expect("*** second motd").await;
    alice.send("/who").await;
    alice.expect("*** 1 online: alice").await;
}

// ------------------------------------------------------------------------------------------------
// Rooms (issue 13): `rooms`, `list --room`, `announce --room`, `topic`, `move`.

/// Sends `/join ROOM` and waits for the member's `*** Now in …` line, which must be `now_in`.
async fn enter(c: &mut TestClient, room: &str, now_in: &str) {
    c.send(&format!("/join {room}")).await;
    c.expect(now_in).await;
}

/// Asserts the next bytes `c` receives are exactly `line` (CRLF included).
async fn expect_bytes(c: &mut TestClient, line: &str) {
    let got = c.raw_line().await.expect("a line, not EOF");
    assert_eq!(String::from_utf8_lossy(&got), line);
}

#[tokio::test]
async fn rooms_are_listed_as_a_table_and_as_json() {
    let dir = Scratch::new("adm-rooms");
    let config = "[[rooms]]\nname = \"ops\"\ntopic = \"on call: dana\"\nhistory_lines = 0\n";
    let d = Daemon::start(&dir, "d", config);
    let mut alice = join(&d, "alice").await;
    let mut bob = join(&d, "bob").await;
    alice.expect("*** bob joined").await;
    alice.send("hello").await;
    bob.expect("<alice> hello").await;
    enter(
        &mut bob,
        "#rust",
        "*** Now in #rust (no topic). 1 online: bob",
    )
    .await;
    alice.expect("*** bob left (moved to #rust)").await;

    let out = chatctl(&d.socket, &["rooms"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "ROOM    MEMBERS  TOPIC          HISTORY\n\
         #lobby  1        -              1 line\n\
         #ops    0        on call: dana  0 lines\n\
         #rust   1        -              0 lines\n"
    );

    let json = chatctl(&d.socket, &["--json", "rooms"]).json();
    assert_eq!(json["ok"], true);
    assert_eq!(
        json["result"]["rooms"],
        serde_json::json!([
            {"name": "#lobby", "members": 1, "topic": "", "history": 1, "predefined": true},
            {"name": "#ops", "members": 0, "topic": "on call: dana", "history": 0, "predefined": true},
            {"name": "#rust", "members": 1, "topic": "", "history": 0, "predefined": false},
        ])
    );
    let stats = chatctl(&d.socket, &["--json", "stats"]).json();
    assert_eq!(stats["result"]["rooms"], 3);
    let human = chatctl(&d.socket, &["stats"]).stdout;
    assert!(
        human
            .lines()
            .any(|l| l.split_whitespace().eq(["rooms", "3"])),
        "{human}"
    );

    // A room a user made goes with its last member; the configuration's rooms stay, empty.
    bob.send("/quit").await;
    bob.expect_closed().await;
    alice.send("/join #Go").await;
    alice
        .expect("*** Now in #Go (no topic). 1 online: alice")
        .await;
    let json = chatctl(&d.socket, &["--json", "rooms"]).json();
    let names: Vec<_> = json["result"]["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].clone(), r["members"].clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("#Go".into(), 1.into()),
            ("#lobby".into(), 0.into()),
            ("#ops".into(), 0.into())
        ]
    );
}

#[tokio::test]
async fn list_shows_each_clients_room_and_filters_by_room() {
    let dir = Scratch::new("adm-lroom");
    let d = Daemon::start(&dir, "d", "");
    let mut alice = join(&d, "alice").await;
    let mut bob = join(&d, "bob").await;
    let mut carol = join(&d, "carol").await;
    bob.expect("*** carol joined").await;
    // Still choosing a nickname: in no room.
    let mut pending = TestClient::connect(d.addr()).await;
    pending.read_until_line("*** Choose a nickname:").await;
    enter(
        &mut bob,
        "#Rust",
        "*** Now in #Rust (no topic). 1 online: bob",
    )
    .await;
    carol.expect("*** bob left (moved to #Rust)").await;
    enter(
        &mut carol,
        "rust",
        "*** Now in #Rust (no topic). 2 online: bob, carol",
    )
    .await;
    bob.expect("*** carol joined").await;
    alice
        .read_until_line("*** carol left (moved to #Rust)")
        .await;

    let out = chatctl(&d.socket, &["list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0][..4],
        ["ID", "NICK", "ROOM", "PEER"],
        "{}",
        out.stdout
    );
    let rooms: Vec<[&str; 2]> = rows[1..].iter().map(|r| [r[1], r[2]]).collect();
    assert_eq!(
        rooms,
        [
            ["alice", "#lobby"],
            ["bob", "#Rust"],
            ["carol", "#Rust"],
            ["-", "-"]
        ],
        "{}",
        out.stdout
    );
    let json = chatctl(&d.socket, &["--json", "list"]).json();
    let rooms: Vec<_> = json["result"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["room"].clone())
        .collect();
    assert_eq!(
        rooms,
        [
            "#lobby".into(),
            "#Rust".into(),
            "#Rust".into(),
            serde_json::Value::Null
        ]
    );

    // The filter takes the name with or without `#`, in any case.
    for name in ["RUST", "#rust", "ＲＵＳＴ"] {
        let json = chatctl(&d.socket, &["--json", "list", "--room", name]).json();
        assert_eq!(json["result"]["room"], "#Rust", "{name}");
        let nicks: Vec<_> = json["result"]["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["nick"].clone())
            .collect();
        assert_eq!(nicks, ["bob", "carol"], "{name}");
    }
    let out = chatctl(&d.socket, &["list", "--room", "lobby"]);
    let nicks: Vec<&str> = out
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(nicks, ["alice"], "{}", out.stdout);

    // An existing room nobody is in is an empty list; a missing room, or an invalid name, is an
    // error.
    alice.send("/join #go").await;
    alice
        .expect("*** Now in #go (no topic). 1 online: alice")
        .await;
    let out = chatctl(&d.socket, &["list", "--room", "#lobby"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "nobody in #lobby\n"));
    let out = chatctl(&d.socket, &["list", "--room", "#nope"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no room #nope"), "{}", out.stderr);
    let out = chatctl(&d.socket, &["--json", "list", "--room", "a.b"]);
    assert_eq!(out.code, 1);
    let error = &out.json()["error"];
    assert_eq!(error["code"], "bad_request");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("'.' is not allowed in a room name"),
        "{error}"
    );
    drop(pending);
}

#[tokio::test]
async fn announce_reaches_one_room_or_every_room() {
    let dir = Scratch::new("adm-aroom");
    let d = Daemon::start(&dir, "d", "");
    let mut alice = join(&d, "alice").await;
    let mut bob = join(&d, "bob").await;
    let mut carol = join(&d, "carol").await;
    bob.expect("*** carol joined").await;
    enter(
        &mut bob,
        "#rust",
        "*** Now in #rust (no topic). 1 online: bob",
    )
    .await;
    carol.expect("*** bob left (moved to #rust)").await;
    enter(
        &mut carol,
        "#rust",
        "*** Now in #rust (no topic). 2 online: bob, carol",
    )
    .await;
    bob.expect("*** carol joined").await;
    alice
        .read_until_line("*** carol left (moved to #rust)")
        .await;

    let out = chatctl(
        &d.socket,
        &["announce", "--room", "RUST", "pizza", "is", "here"],
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "announced to 2 clients in #rust\n"),
        "{}",
        out.stderr
    );
    expect_bytes(&mut bob, "*** pizza is here\r\n").await;
    expect_bytes(&mut carol, "*** pizza is here\r\n").await;
    let logged = d.log_line("admin announcement");
    assert!(
        logged.contains("room=#rust") && logged.contains("reached=2"),
        "{logged}"
    );

    // Without --room: every room. It is also alice's first line since the moves, so she did
    // not get the one for #rust.
    let out = chatctl(&d.socket, &["--json", "announce", "everyone"]);
    let result = &out.json()["result"];
    assert_eq!(result["reached"], 3);
    assert!(result.get("room").is_none(), "{result}");
    for c in [&mut alice, &mut bob, &mut carol] {
        expect_bytes(c, "*** everyone\r\n").await;
    }
    // A request written before rooms existed still means every room.
    let reply = admin_request(&d.socket, r#"{"cmd":"announce","text":"old style"}"#);
    assert_eq!(reply["result"]["reached"], 3, "{reply}");
    for c in [&mut alice, &mut bob, &mut carol] {
        expect_bytes(c, "*** old style\r\n").await;
    }

    let out = chatctl(&d.socket, &["announce", "--room", "#nope", "hello"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no room #nope"), "{}", out.stderr);
    let out = chatctl(
        &d.socket,
        &["--json", "announce", "--room", "#nope", "hello"],
    );
    assert_eq!(out.json()["error"]["code"], "not_found");
    // Nobody got anything from the refused ones.
    chatctl(&d.socket, &["announce", "--room", "lobby", "last"]);
    expect_bytes(&mut alice, "*** last\r\n").await;
    alice.send("/join #rust").await;
    alice
        .read_until_line("*** Now in #rust (no topic). 3 online: alice, bob, carol")
        .await;
    bob.expect("*** alice joined").await;
}

#[tokio::test]
async fn topic_is_set_and_cleared_by_the_operator() {
    let dir = Scratch::new("adm-topic");
    let d = Daemon::start(&dir, "d", "");
    let mut alice = join(&d, "alice").await;
    let mut bob = join(&d, "bob").await;
    enter(
        &mut bob,
        "#rust",
        "*** Now in #rust (no topic). 1 online: bob",
    )
    .await;
    alice.read_until_line("*** bob left (moved to #rust)").await;

    let out = chatctl(
        &d.socket,
        &["topic", "rust", "borrow", "checker", "\x1b[1mtips\x07"],
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "topic of #rust set: borrow checker tips\n"),
        "{}",
        out.stderr
    );
    bob.expect("*** the operator set the topic: borrow checker tips")
        .await;
    let logged = d.log_line("admin set a topic");
    assert!(
        logged.contains("room=#rust") && logged.contains("uid="),
        "{logged}"
    );
    let rooms = chatctl(&d.socket, &["--json", "rooms"]).json();
    assert_eq!(rooms["result"]["rooms"][1]["topic"], "borrow checker tips");
    // Newcomers see it.
    alice.send("/join #rust").await;
    alice
        .expect("*** Now in #rust (topic: borrow checker tips). 2 online: alice, bob")
        .await;
    bob.expect("*** alice joined").await;

    let out = chatctl(&d.socket, &["--json", "topic", "#RUST", ""]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.json()["result"],
        serde_json::json!({"room": "#rust", "topic": ""})
    );
    for c in [&mut alice, &mut bob] {
        c.expect("*** the operator cleared the topic").await;
    }
    let out = chatctl(&d.socket, &["topic", "rust", ""]);
    assert_eq!(out.stdout, "topic of #rust cleared\n");
    bob.expect("*** the operator cleared the topic").await;
    alice.expect("*** the operator cleared the topic").await;

    let out = chatctl(&d.socket, &["--json", "topic", "#nope", "x"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.json()["error"]["code"], "not_found");
    let long = "x".repeat(301);
    let out = chatctl(&d.socket, &["topic", "rust", &long]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("at most 300 characters"),
        "{}",
        out.stderr
    );
    // The refused ones told nobody anything.
    chatctl(&d.socket, &["announce", "after"]);
    expect_bytes(&mut alice, "*** after\r\n").await;
    expect_bytes(&mut bob, "*** after\r\n").await;
}

#[tokio::test]
async fn move_takes_a_member_to_another_room() {
    let dir = Scratch::new("adm-move");
    let d = Daemon::start(&dir, "d", "");
    let mut alice = join(&d, "alice").await;
    let mut bob = join(&d, "bob").await;
    let mut carol = join(&d, "carol").await;
    let mut pending = TestClient::connect(d.addr()).await;
    pending.read_until_line("*** Choose a nickname:").await;
    enter(
        &mut carol,
        "#rust",
        "*** Now in #rust (no topic). 1 online: carol",
    )
    .await;
    alice
        .read_until_line("*** carol left (moved to #rust)")
        .await;
    bob.read_until_line("*** carol left (moved to #rust)").await;

    let out = chatctl(&d.socket, &["move", "BOB", "rust"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "moved bob (id 2) from #lobby to #rust\n"),
        "{}",
        out.stderr
    );
    bob.expect("*** The operator moved you to #rust.").await;
    bob.expect("*** Now in #rust (no topic). 2 online: bob, carol")
        .await;
    alice.expect("*** bob left (moved to #rust)").await;
    carol.expect("*** bob joined").await;
    let logged = d.log_line("admin moved a member");
    assert!(
        logged.contains("from=#lobby")
            && logged.contains("room=#rust")
            && logged.contains("nick=bob"),
        "{logged}"
    );
    // The moved member chats in its new room.
    bob.send("hi rust").await;
    carol.expect("<bob> hi rust").await;

    // By id, into a room that does not exist yet: it is made, spelt as the operator typed it.
    let out = chatctl(&d.socket, &["--json", "move", "1", "#Games"]);
    assert_eq!(
        out.json()["result"],
        serde_json::json!({"id": 1, "nick": "alice", "from": "#lobby", "room": "#Games"})
    );
    alice.expect("*** The operator moved you to #Games.").await;
    alice
        .expect("*** Now in #Games (no topic). 1 online: alice")
        .await;
    // An existing room is named as it is spelt, whatever the operator typed.
    let out = chatctl(&d.socket, &["move", "carol", "GAMES"]);
    assert_eq!(out.stdout, "moved carol (id 3) from #rust to #Games\n");
    carol.expect("*** The operator moved you to #Games.").await;
    carol
        .expect("*** Now in #Games (no topic). 2 online: alice, carol")
        .await;
    alice.expect("*** carol joined").await;
    bob.expect("*** carol left (moved to #Games)").await;

    // Refusals: nothing moves, nobody is told.
    let cases: [(&[&str], &str, &str); 5] = [
        (
            &["move", "carol", "#games"],
            "bad_request",
            "carol is in #Games already",
        ),
        (
            &["move", "dave", "#rust"],
            "not_found",
            "no client with id or nickname 'dave'",
        ),
        (
            &["move", "99", "#rust"],
            "not_found",
            "no client with id or nickname '99'",
        ),
        (
            &["move", "4", "#rust"],
            "not_found",
            "client 4 has not chosen a nickname yet",
        ),
        (
            &["move", "bob", "a.b"],
            "bad_request",
            "'.' is not allowed in a room name",
        ),
    ];
    for (args, code, message) in cases {
        let out = chatctl(&d.socket, args);
        assert_eq!(out.code, 1, "{args:?}");
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
        let mut json = vec!["--json"];
        json.extend_from_slice(args);
        assert_eq!(
            chatctl(&d.socket, &json).json()["error"]["code"],
            code,
            "{args:?}"
        );
    }
    chatctl(&d.socket, &["announce", "after"]);
    for c in [&mut alice, &mut bob, &mut carol] {
        expect_bytes(c, "*** after\r\n").await;
    }
    drop(pending);
}

#[tokio::test]
async fn reload_adds_changes_and_removes_configured_rooms_without_disconnecting_anyone() {
    let dir = Scratch::new("adm-reload-rooms");
    let d = Daemon::start(
        &dir,
        "d",
        "[[rooms]]\nname = \"help\"\ntopic = \"Ask here\"\n\n[[rooms]]\nname = \"ops\"\n",
    );
    let mut alice = join(&d, "alice").await;
    enter(
        &mut alice,
        "#help",
        "*** Now in #help (topic: Ask here). 1 online: alice",
    )
    .await;
    let mut bob = join(&d, "bob").await;
    enter(&mut bob, "ops", "*** Now in #ops (no topic). 1 online: bob").await;

    // The topic changes in the file, #ops goes, #news comes: nobody is disconnected.
    dir.file(
        "d.toml",
        "[[rooms]]\nname = \"help\"\ntopic = \"Ask politely\"\n\n\
         [[rooms]]\nname = \"news\"\ntopic = \"Read only\"\n",
    );
    let out = chatctl(&d.socket, &["reload"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    alice
        .expect("*** the operator set the topic: Ask politely")
        .await;
    bob.expect("*** #ops was closed by the operator; you are back in #lobby.")
        .await;
    bob.expect("*** Now in #lobby (no topic). 1 online: bob")
        .await;
    let out = chatctl(&d.socket, &["--json", "rooms"]);
    let names: Vec<String> = out.json()["result"]["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["#help", "#lobby", "#news"]);
    // Both still chat, each in their room.
    bob.send("/join news").await;
    bob.expect("*** Now in #news (topic: Read only). 1 online: bob")
        .await;
    alice.send("/who").await;
    alice.expect("*** 1 online: alice").await;

    // A broken [[rooms]] table fails the reload and changes nothing.
    dir.file("d.toml", "[[rooms]]\nname = \"no spaces allowed\"\n");
    let out = chatctl(&d.socket, &["reload"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("rooms.name"), "{}", out.stderr);
    bob.send("/topic").await;
    bob.expect("*** Topic of #news: Read only").await;
}
