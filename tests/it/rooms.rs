//! Rooms (issue 13) as netcat users see them: moving between rooms and what each room is told,
//! `/part`, `/rooms`, `/topic`, `/who`, history on entering, isolation between rooms, the limits
//! (`max_rooms`, `allow_user_rooms`, `presence_max_members` per room), user rooms vanishing when
//! empty, moves while lines are flowing, and hostile clients in two rooms at once.
//!
//! Every line a client receives is checked where the test can know it; "nothing else arrived" is
//! proven with a barrier (a line from someone in the same room, or the reply to the client's own
//! `/who`, which is queued behind everything the client was owed before it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use groupchatd::config::{Config, RoomConfig};
use groupchatd::protocol::format::{Wrap, wrapped_notice};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::hostile::{Hostile, join_small_buffer, kernel_buffers, read_until};
use crate::process::{Daemon, Scratch};
use crate::support::audience::{Audience, Report, Spec};
use crate::support::*;

// ---- helpers -----------------------------------------------------------------------------------

/// The test configuration with `change` applied.
fn config(change: impl FnOnce(&mut Config)) -> Config {
    let mut c = test_config();
    change(&mut c);
    c
}

fn room(name: &str, topic: &str, history_lines: Option<usize>) -> RoomConfig {
    RoomConfig {
        name: name.to_owned(),
        topic: topic.to_owned(),
        history_lines,
    }
}

/// Sends `/join ROOM` and expects the line saying where the client is now.
async fn enter(c: &mut TestClient, room: &str, now_in: &str) {
    c.send(&format!("/join {room}")).await;
    c.expect(now_in).await;
}

/// Asks `/who` and expects `who` as the next line: proves nothing else was queued for `c` first.
async fn settled(c: &mut TestClient, who: &str) {
    c.send("/who").await;
    c.expect(who).await;
}

/// Expects the notice `*** {text}` broken into rows as the server does at its default width (80).
async fn expect_notice(c: &mut TestClient, text: &str) {
    let rows = wrapped_notice(Wrap::at(80), text);
    for row in std::str::from_utf8(&rows).unwrap().split_terminator("\r\n") {
        c.expect(row).await;
    }
}

/// Minutes since midnight UTC now.
pub(crate) fn utc_minutes_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    secs.rem_euclid(86_400) / 60
}

/// `*** YYYY-MM-DD` (a replayed line said on another day than the one before it).
pub(crate) fn is_date_line(line: &str) -> bool {
    let Some(d) = line.strip_prefix("*** ") else {
        return false;
    };
    let b = d.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// Splits a replayed line into its stamp's minutes since midnight and the line as said live,
/// checking the stamp's shape (`[HH:MM] `).
pub(crate) fn unstamp(line: &str) -> (i64, &str) {
    let b = line.as_bytes();
    let shaped = b.len() >= 8
        && b[0] == b'['
        && b[3] == b':'
        && b[6] == b']'
        && b[7] == b' '
        && [1, 2, 4, 5].iter().all(|&i| b[i].is_ascii_digit());
    assert!(shaped, "a history line starts with [HH:MM]: {line:?}");
    let hh: i64 = line[1..3].parse().unwrap();
    let mm: i64 = line[4..6].parse().unwrap();
    assert!(hh < 24 && mm < 60, "{line:?}");
    (hh * 60 + mm, &line[8..])
}

/// Reads a history replay of `room` that must hold exactly `lines` (as said live), oldest first,
/// each stamped with a time within a few minutes of now (UTC).
async fn expect_history(c: &mut TestClient, room: &str, lines: &[&str]) {
    let what = match lines.len() {
        1 => "the last line".to_owned(),
        n => format!("the last {n} lines"),
    };
    c.expect(&format!("*** History of {room}: {what} (times UTC)"))
        .await;
    for want in lines {
        let mut got = c.line().await;
        if is_date_line(&got) {
            got = c.line().await; // said before midnight UTC, replayed after it
        }
        let (at, text) = unstamp(&got);
        assert_eq!(text, *want, "history of {room}");
        let skew = (utc_minutes_now() - at).rem_euclid(1440);
        assert!(skew <= 5, "stamp {at} min is not about now: {got:?}");
    }
    c.expect("*** End of history.").await;
}

/// The `/rooms` reply: the count line and one line per room.
async fn expect_rooms(c: &mut TestClient, rooms: &[&str]) {
    c.send("/rooms").await;
    let count = match rooms.len() {
        1 => "1 room".to_owned(),
        n => format!("{n} rooms"),
    };
    c.expect(&format!("*** {count} (/join NAME to enter one):"))
        .await;
    for r in rooms {
        c.expect(&format!("*** {r}")).await;
    }
}

// ---- commands and notices ----------------------------------------------------------------------

#[tokio::test]
async fn join_moves_a_member_and_each_room_is_told() {
    let srv = TestServer::start(test_config());
    let mut alice = srv.join("alice").await;
    let mut bob = srv.join("bob").await;
    let mut carol = srv.join("carol").await;
    alice.expect("*** bob joined").await;
    alice.expect("*** carol joined").await;
    bob.expect("*** carol joined").await;

    // Without the #: the old room is told where she went, she is told where she is; she does
    // not get her own leave notice.
    enter(
        &mut alice,
        "rust",
        "*** Now in #rust (no topic). 1 online: alice",
    )
    .await;
    bob.expect("*** alice left (moved to #rust)").await;
    carol.expect("*** alice left (moved to #rust)").await;
    settled(&mut alice, "*** 1 online: alice").await;

    // With the #, and another spelling of the same room.
    enter(
        &mut bob,
        "#RUST",
        "*** Now in #rust (no topic). 2 online: alice, bob",
    )
    .await;
    alice.expect("*** bob joined").await;
    carol.expect("*** bob left (moved to #rust)").await;

    // Chat and /me reach the current room only.
    alice.send("hello rust").await;
    alice.send("/me waves").await;
    bob.expect("<alice> hello rust").await;
    bob.expect("* alice waves").await;
    carol.send("hello lobby").await;
    settled(&mut carol, "*** 1 online: carol").await;
    settled(&mut alice, "*** 2 online: alice, bob").await;
    settled(&mut bob, "*** 2 online: alice, bob").await;

    // Already there, under any spelling.
    for name in ["#rust", "rust", "#Rust", "＃ｒｕｓｔ"] {
        alice.send(&format!("/join {name}")).await;
        alice
            .expect("*** Cannot join: you are in #rust already.")
            .await;
    }
    carol.send("/join #lobby").await;
    carol
        .expect("*** Cannot join: you are in #lobby already.")
        .await;
    // The room keeps the spelling it was made with; a member's /who and the others agree.
    settled(&mut bob, "*** 2 online: alice, bob").await;
    settled(&mut carol, "*** 1 online: carol").await;
    srv.stop().await;
}

#[tokio::test]
async fn join_refuses_bad_names_with_the_reason() {
    let srv = TestServer::start(test_config());
    let mut alice = srv.join("alice").await;
    let rule = "room names are # plus 1 to 32 letters, digits, - or _";
    let long = "a".repeat(33);
    let refusals = [
        ("/join", "usage: /join ROOM".to_owned()),
        ("/join a b", "usage: /join ROOM".to_owned()),
        ("/join #", format!("Cannot join: {rule}.")),
        (
            "/join #a!b",
            format!("Cannot join: '!' is not allowed in a room name ({rule})."),
        ),
        (
            "/join ##x",
            format!("Cannot join: '#' is not allowed in a room name ({rule})."),
        ),
        (
            &*format!("/join #{long}"),
            "Cannot join: room names are at most 32 characters after the #.".to_owned(),
        ),
    ];
    for (line, want) in &refusals {
        alice.send(line).await;
        expect_notice(&mut alice, want).await;
    }
    // Look-alikes of the room she is in are that room.
    alice.send("/join #l0bby").await;
    alice
        .expect("*** Cannot join: you are in #lobby already.")
        .await;
    // 32 characters is fine; no room was made by the refusals.
    let ok = "b".repeat(32);
    enter(
        &mut alice,
        &ok,
        &format!("*** Now in #{ok} (no topic). 1 online: alice"),
    )
    .await;
    expect_rooms(
        &mut alice,
        &[&format!("#{ok} (1, you are here)"), "#lobby (0)"],
    )
    .await;
    srv.stop().await;
}

/// Room names are unique under the same look-alike rules as nicknames: a name that only looks
/// like an existing room's (capital I for small l: `#AI`, `#Al`) is either that room or refused,
/// never a second room nobody could tell from the first. Both orders of making them.
#[tokio::test]
async fn a_look_alike_room_name_is_not_a_second_room() {
    let srv = TestServer::start(test_config());
    for (first, second) in [("#Al", "#AI"), ("#XI", "#Xl")] {
        let mut alice = srv.join("alice").await;
        let mut bob = srv.join("bob").await;
        alice.expect("*** bob joined").await;
        enter(
            &mut alice,
            first,
            &format!("*** Now in {first} (no topic). 1 online: alice"),
        )
        .await;
        bob.expect(&format!("*** alice left (moved to {first})"))
            .await;
        bob.send(&format!("/join {second}")).await;
        let reply = bob.line().await;
        let rooms = if reply.starts_with("*** Cannot join: ") {
            [
                format!("{first} (1)"),
                "#lobby (1, you are here)".to_owned(),
            ]
        } else {
            let now_in = format!("*** Now in {first} (no topic). 2 online: alice, bob");
            assert_eq!(reply, now_in, "/join {second} with {first} there");
            alice.expect("*** bob joined").await;
            [
                format!("{first} (2, you are here)"),
                "#lobby (0)".to_owned(),
            ]
        };
        let mut rooms: Vec<&str> = rooms.iter().map(String::as_str).collect();
        rooms.sort_by_key(|r| r.to_lowercase());
        expect_rooms(&mut bob, &rooms).await;
        drop((alice, bob));
        srv.wait_connections(0).await;
    }
    srv.stop().await;
}

#[tokio::test]
async fn part_goes_back_to_the_default_room() {
    let srv = TestServer::start(config(|c| c.history_lines = 5));
    let mut alice = srv.join("alice").await;
    let mut bob = srv.join("bob").await;
    alice.expect("*** bob joined").await;
    alice.send("/part").await;
    alice
        .expect("*** Cannot join: you are in #lobby already.")
        .await;
    enter(
        &mut alice,
        "#rust",
        "*** Now in #rust (no topic). 1 online: alice",
    )
    .await;
    bob.expect("*** alice left (moved to #rust)").await;
    bob.send("said while alice was away").await;
    settled(&mut bob, "*** 1 online: bob").await;

    alice.send("/part now").await;
    alice
        .expect("*** Now in #lobby (no topic). 2 online: alice, bob")
        .await;
    expect_history(&mut alice, "#lobby", &["<bob> said while alice was away"]).await;
    bob.expect("*** alice joined").await;
    alice.send("back").await;
    bob.expect("<alice> back").await;
    settled(&mut alice, "*** 2 online: alice, bob").await;
    // #rust was a user room: it went when she left it.
    expect_rooms(&mut alice, &["#lobby (2, you are here)"]).await;
    srv.stop().await;
}

#[tokio::test]
async fn rooms_lists_every_room_with_its_members_and_topic() {
    let srv = TestServer::start(config(|c| {
        c.rooms = vec![
            room("#help", "Ask here", None),
            room("#Zeta", "", None),
            room("#empty", "Nobody here", None),
        ]
    }));
    let mut alice = srv.join("alice").await;
    let mut bob = srv.join("bob").await;
    let mut carol = srv.join("carol").await;
    alice.read_until_line("*** carol joined").await;
    bob.expect("*** carol joined").await;
    enter(
        &mut bob,
        "help",
        "*** Now in #help (topic: Ask here). 1 online: bob",
    )
    .await;
    carol.expect("*** bob left (moved to #help)").await;
    enter(
        &mut carol,
        "#rust",
        "*** Now in #rust (no topic). 1 online: carol",
    )
    .await;
    alice.expect("*** bob left (moved to #help)").await;
    alice.expect("*** carol left (moved to #rust)").await;
    // Sorted by name regardless of case; the asker's own room marked.
    let list = [
        "#empty (0): Nobody here",
        "#help (1): Ask here",
        "#lobby (1, you are here)",
        "#rust (1)",
        "#Zeta (0)",
    ];
    expect_rooms(&mut alice, &list).await;
    let list = [
        "#empty (0): Nobody here",
        "#help (1, you are here): Ask here",
        "#lobby (1)",
        "#rust (1)",
        "#Zeta (0)",
    ];
    expect_rooms(&mut bob, &list).await;
    // The one-room form, once the user room has gone and only the predefined ones are left.
    drop(carol);
    let list = [
        "#empty (0): Nobody here",
        "#help (1, you are here): Ask here",
        "#lobby (1)",
        "#Zeta (0)",
    ];
    wait_for(&srv.hub, || srv.hub.rooms().len() == 4, "#rust gone").await;
    expect_rooms(&mut bob, &list).await;
    srv.stop().await;

    let srv = TestServer::start(test_config());
    let mut alice = srv.join("alice").await;
    expect_rooms(&mut alice, &["#lobby (1, you are here)"]).await;
    srv.stop().await;
}

#[tokio::test]
async fn topic_is_shown_set_announced_to_the_room_and_cleared() {
    let srv = TestServer::start(config(|c| {
        c.wrap_width = 0;
        c.rooms = vec![room("#lobby", "Lobby talk", None)];
    }));
    // The default room's topic is part of the welcome.
    let mut alice = srv.client().await;
    alice.read_until_line("*** Choose a nickname:").await;
    alice.send("alice").await;
    alice.expect("*** Welcome, alice! 1 online: alice").await;
    alice.expect("*** Topic: Lobby talk").await;
    alice.expect("*** Type /help for commands.").await;
    alice.send("/topic").await;
    alice.expect("*** Topic of #lobby: Lobby talk").await;
    let mut bob = srv.join("bob").await;
    alice.expect("*** bob joined").await;

    enter(
        &mut alice,
        "#rust",
        "*** Now in #rust (no topic). 1 online: alice",
    )
    .await;
    bob.expect("*** alice left (moved to #rust)").await;
    alice.send("/topic").await;
    alice
        .expect("*** #rust has no topic; /topic TEXT sets one.")
        .await;
    alice.send("/TOPIC   Rust talk  ").await;
    alice.expect("*** alice set the topic: Rust talk").await;
    alice.send("/topic").await;
    alice.expect("*** Topic of #rust: Rust talk").await;
    // The lobby is not told, and keeps its own.
    settled(&mut bob, "*** 1 online: bob").await;
    bob.send("/topic").await;
    bob.expect("*** Topic of #lobby: Lobby talk").await;

    // A newcomer sees it on entering; a change reaches everyone in the room.
    enter(
        &mut bob,
        "#rust",
        "*** Now in #rust (topic: Rust talk). 2 online: alice, bob",
    )
    .await;
    alice.expect("*** bob joined").await;
    bob.send("/topic Rust, mostly async").await;
    alice
        .expect("*** bob set the topic: Rust, mostly async")
        .await;
    bob.expect("*** bob set the topic: Rust, mostly async")
        .await;

    // Limits: 300 characters.
    let long = "t".repeat(301);
    bob.send(&format!("/topic {long}")).await;
    bob.expect("*** Cannot set the topic: topics are at most 300 characters.")
        .await;
    let longest = "t".repeat(300);
    bob.send(&format!("/topic {longest}")).await;
    bob.expect(&format!("*** bob set the topic: {longest}"))
        .await;
    alice
        .expect(&format!("*** bob set the topic: {longest}"))
        .await;

    // Cleared (by the operator: `chatctl topic #rust ""`), the room is told.
    let name = srv
        .hub
        .set_topic(groupchatd::hub::TopicOf::Room("rust"), "", None)
        .unwrap();
    assert_eq!(&*name, "#rust");
    alice.expect("*** the operator cleared the topic").await;
    bob.expect("*** the operator cleared the topic").await;
    bob.send("/topic").await;
    bob.expect("*** #rust has no topic; /topic TEXT sets one.")
        .await;
    // Not a chat line: no history of it.
    let mut carol = srv.join("carol").await;
    enter(
        &mut carol,
        "#rust",
        "*** Now in #rust (no topic). 3 online: alice, bob, carol",
    )
    .await;
    settled(&mut carol, "*** 3 online: alice, bob, carol").await;
    srv.stop().await;
}

#[tokio::test]
async fn help_lists_the_room_commands() {
    let srv = TestServer::start(test_config());
    let mut alice = srv.join("alice").await;
    alice.send("/help").await;
    for line in [
        "TEXT             send TEXT to everyone in this room",
        "/me ACTION       describe what you are doing",
        "/nick NEWNICK    change your nickname",
        "/who             list who is in this room",
        "/join ROOM       go to ROOM (made if new)",
        "/part            go back to the default room",
        "/rooms           list the rooms",
        "/topic [TEXT]    show or set this room's topic",
        "/msg NICK TEXT   send TEXT to NICK only",
        "/quit [REASON]   leave the chat",
        "/help            show this help",
        "//TEXT           send a message that starts with /",
    ] {
        alice.expect(&format!("*** {line}")).await;
    }
    settled(&mut alice, "*** 1 online: alice").await;
    srv.stop().await;
}

// ---- history -----------------------------------------------------------------------------------

#[tokio::test]
async fn history_replays_the_last_chat_lines_oldest_first() {
    let srv = TestServer::start(config(|c| c.history_lines = 3));
    let mut alice = srv.join("alice").await;
    // An empty room: no history fence at all.
    settled(&mut alice, "*** 1 online: alice").await;
    let mut bob = srv.join("bob").await;
    alice.expect("*** bob joined").await;
    alice.send("one").await;
    bob.expect("<alice> one").await;
    bob.send("two").await;
    alice.expect("<bob> two").await;
    // None of these is kept: notices, command replies, private lines, a topic change.
    alice.send("/msg bob secret").await;
    alice.expect("*** -> *bob* secret").await;
    bob.expect("*alice* secret").await;
    alice.send("/who").await;
    alice.expect("*** 2 online: alice, bob").await;
    alice.send("/topic Talk").await;
    alice.expect("*** alice set the topic: Talk").await;
    bob.expect("*** alice set the topic: Talk").await;
    bob.send("/nick robert").await;
    alice.expect("*** bob is now known as robert").await;
    bob.expect("*** bob is now known as robert").await;

    // The welcome (with the topic), then the said lines only, as they were said (bob's under
    // his name then).
    let mut carol = srv.client().await;
    carol.read_until_line("*** Choose a nickname:").await;
    carol.send("carol").await;
    carol
        .expect("*** Welcome, carol! 3 online: alice, carol, robert")
        .await;
    carol.expect("*** Topic: Talk").await;
    carol.expect("*** Type /help for commands.").await;
    expect_history(&mut carol, "#lobby", &["<alice> one", "<bob> two"]).await;
    settled(&mut carol, "*** 3 online: alice, carol, robert").await;
    alice.expect("*** carol joined").await;
    bob.expect("*** carol joined").await;

    // Said and /me lines, bounded by history_lines (3): the oldest go first.
    alice.send("/me three").await;
    bob.send("four").await;
    carol.send("five").await;
    alice.expect("<robert> four").await;
    alice.expect("<carol> five").await;
    bob.expect("* alice three").await;
    bob.expect("<carol> five").await;
    let mut dave = srv.join("dave").await;
    expect_history(
        &mut dave,
        "#lobby",
        &["* alice three", "<robert> four", "<carol> five"],
    )
    .await;
    alice.expect("*** dave joined").await;
    settled(&mut dave, "*** 4 online: alice, carol, dave, robert").await;

    // The same on /join into a room, after the Now-in line.
    enter(
        &mut alice,
        "#r",
        "*** Now in #r (no topic). 1 online: alice",
    )
    .await;
    alice.send("in r").await;
    settled(&mut alice, "*** 1 online: alice").await;
    dave.expect("*** alice left (moved to #r)").await;
    enter(
        &mut dave,
        "r",
        "*** Now in #r (no topic). 2 online: alice, dave",
    )
    .await;
    expect_history(&mut dave, "#r", &["<alice> in r"]).await;
    settled(&mut dave, "*** 2 online: alice, dave").await;
    srv.stop().await;
}

#[tokio::test]
async fn history_is_bounded_by_bytes_too() {
    // `<bob> xxxxxxxxxx\r\n` is 18 bytes: two fit in 40, three do not; 41 bytes never fits.
    let srv = TestServer::start(config(|c| {
        c.history_lines = 10;
        c.history_bytes = 40;
    }));
    let mut alice = srv.join("alice").await;
    let mut bob = srv.join("bob").await;
    alice.expect("*** bob joined").await;
    for line in ["aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc"] {
        bob.send(line).await;
        alice.expect(&format!("<bob> {line}")).await;
    }
    let mut carol = srv.join("carol").await;
    expect_history(
        &mut carol,
        "#lobby",
        &["<bob> bbbbbbbbbb", "<bob> cccccccccc"],
    )
    .await;
    // A line longer than the whole bound is not kept (the older ones stay).
    bob.send(&"z".repeat(33)).await;
    alice.read_until_line("*** carol joined").await;
    alice.expect(&format!("<bob> {}", "z".repeat(33))).await;
    let mut dave = srv.join("dave").await;
    expect_history(
        &mut dave,
        "#lobby",
        &["<bob> bbbbbbbbbb", "<bob> cccccccccc"],
    )
    .await;
    settled(&mut dave, "*** 4 online: alice, bob, carol, dave").await;
    srv.stop().await;
}

/// A wrapped chat line is replayed whole, its stamp in front of a first row that was kept that
/// much narrower, so no replayed row is wider than the live ones (80 columns here).
#[tokio::test]
async fn a_wrapped_line_is_replayed_with_the_same_rows_within_the_width() {
    let srv = TestServer::start(test_config());
    let mut alice = srv.join("alice").await;
    let mut bob = srv.join("bob").await;
    alice.expect("*** bob joined").await;
    let text: String = (0..30).map(|i| format!("word{i:02} ")).collect();
    bob.send(text.trim_end()).await;
    let mut rows = vec![alice.line().await];
    // Bounded: 240 characters make a handful of rows.
    while rows.concat().replace("    ", " ").len() < text.len() {
        let row = alice.line().await;
        assert!(row.starts_with("    "), "{row:?}");
        rows.push(row);
    }
    assert!(rows.len() > 2, "{rows:?}");
    assert!(rows[0].len() <= 80 - 8, "{rows:?}");
    assert!(rows.iter().all(|r| r.len() <= 80), "{rows:?}");
    let mut carol = srv.join("carol").await;
    carol
        .expect("*** History of #lobby: the last line (times UTC)")
        .await;
    let first = carol.line().await;
    let (_, row) = unstamp(&first);
    assert_eq!(row, rows[0]);
    assert!(first.len() <= 80, "{first:?}");
    for r in &rows[1..] {
        carol.expect(r).await;
    }
    carol.expect("*** End of history.").await;
    settled(&mut carol, "*** 3 online: alice, bob, carol").await;
    srv.stop().await;
}

#[tokio::test]
async fn history_lines_per_room_override_and_off() {
    let srv = TestServer::start(config(|c| {
        c.history_lines = 0; // off in the default room and in user rooms
        c.rooms = vec![room("#one", "", Some(1)), room("#many", "", Some(4))];
    }));
    let mut alice = srv.join("alice").await;
    alice.send_raw(b"h1\nh2\nh3\nh4\nh5\n").await;
    settled(&mut alice, "*** 1 online: alice").await;
    // Off: bob's welcome is followed by no history fence.
    let mut bob = srv.join("bob").await;
    settled(&mut bob, "*** 2 online: alice, bob").await;
    alice.expect("*** bob joined").await;
    let rooms: [(&str, &[&str]); 3] = [
        ("#one", &["<alice> h5"]),
        (
            "#many",
            &["<alice> h2", "<alice> h3", "<alice> h4", "<alice> h5"],
        ),
        ("#user", &[]),
    ];
    for (r, kept) in rooms {
        enter(
            &mut alice,
            r,
            &format!("*** Now in {r} (no topic). 1 online: alice"),
        )
        .await;
        bob.expect(&format!("*** alice left (moved to {r})")).await;
        alice.send_raw(b"h1\nh2\nh3\nh4\nh5\n").await;
        settled(&mut alice, "*** 1 online: alice").await;
        enter(
            &mut bob,
            r,
            &format!("*** Now in {r} (no topic). 2 online: alice, bob"),
        )
        .await;
        if !kept.is_empty() {
            expect_history(&mut bob, r, kept).await;
        }
        settled(&mut bob, "*** 2 online: alice, bob").await;
        alice.expect("*** bob joined").await;
    }
    srv.stop().await;
}

// ---- isolation ---------------------------------------------------------------------------------

#[tokio::test]
async fn nothing_crosses_rooms_but_private_messages_and_announcements() {
    let srv = TestServer::start(test_config());
    let mut l1 = srv.join("l1").await;
    let mut a1 = srv.join("a1").await;
    l1.expect("*** a1 joined").await;
    enter(&mut a1, "#a", "*** Now in #a (no topic). 1 online: a1").await;
    l1.expect("*** a1 left (moved to #a)").await;
    let mut a2 = srv.join("a2").await;
    l1.expect("*** a2 joined").await;
    enter(&mut a2, "#a", "*** Now in #a (no topic). 2 online: a1, a2").await;
    a1.expect("*** a2 joined").await;
    l1.expect("*** a2 left (moved to #a)").await;
    let mut b1 = srv.join("b1").await;
    l1.expect("*** b1 joined").await;
    enter(&mut b1, "#b", "*** Now in #b (no topic). 1 online: b1").await;
    l1.expect("*** b1 left (moved to #b)").await;
    let mut b2 = srv.join("b2").await;
    l1.expect("*** b2 joined").await;
    enter(&mut b2, "#b", "*** Now in #b (no topic). 2 online: b1, b2").await;
    b1.expect("*** b2 joined").await;
    l1.expect("*** b2 left (moved to #b)").await;

    // Everything that happens in #a: chat, /me, a topic, a rename, a join, a quit.
    a1.send("hello a").await;
    a2.expect("<a1> hello a").await;
    a1.send("/me waves").await;
    a2.expect("* a1 waves").await;
    a1.send("/topic A talk").await;
    a1.expect("*** a1 set the topic: A talk").await;
    a2.expect("*** a1 set the topic: A talk").await;
    a2.send("/nick a2x").await;
    a1.expect("*** a2 is now known as a2x").await;
    a2.expect("*** a2 is now known as a2x").await;
    let mut a3 = srv.join("a3").await;
    l1.expect("*** a3 joined").await;
    enter(
        &mut a3,
        "#a",
        "*** Now in #a (topic: A talk). 3 online: a1, a2x, a3",
    )
    .await;
    expect_history(&mut a3, "#a", &["<a1> hello a", "* a1 waves"]).await;
    a1.expect("*** a3 joined").await;
    a2.expect("*** a3 joined").await;
    l1.expect("*** a3 left (moved to #a)").await;
    a3.send("/quit bye").await;
    a3.expect("*** Goodbye.").await;
    a3.expect_closed().await;
    a1.expect("*** a3 left (quit: bye)").await;
    a2.expect("*** a3 left (quit: bye)").await;
    // ... and in #b and the lobby, a line each.
    b1.send("hello b").await;
    b2.expect("<b1> hello b").await;
    l1.send("hello lobby").await;
    // Nobody got anything from another room.
    settled(&mut a1, "*** 2 online: a1, a2x").await;
    settled(&mut a2, "*** 2 online: a1, a2x").await;
    settled(&mut b1, "*** 2 online: b1, b2").await;
    settled(&mut b2, "*** 2 online: b1, b2").await;
    settled(&mut l1, "*** 1 online: l1").await;
    // /topic is each room's own.
    b1.send("/topic").await;
    b1.expect("*** #b has no topic; /topic TEXT sets one.")
        .await;

    // Private lines reach anyone, in any room, and only them.
    a1.send("/msg b1 psst").await;
    a1.expect("*** -> *b1* psst").await;
    b1.expect("*a1* psst").await;
    l1.send("/msg A2X hi from the lobby").await;
    l1.expect("*** -> *a2x* hi from the lobby").await;
    a2.expect("*l1* hi from the lobby").await;
    b2.send("/msg a3 gone?").await;
    b2.expect("*** No such nickname: a3").await;

    // An announcement to one room, then to every room.
    assert_eq!(srv.hub.announce(Some("b"), "maintenance in b"), Some(2));
    b1.expect("*** maintenance in b").await;
    b2.expect("*** maintenance in b").await;
    assert_eq!(srv.hub.announce(Some("#nope"), "nobody"), None);
    assert_eq!(srv.hub.announce(None, "restart at noon"), Some(5));
    for c in [&mut a1, &mut a2, &mut b1, &mut b2, &mut l1] {
        c.expect("*** restart at noon").await;
    }
    // A kick is told in the kicked member's room only.
    srv.hub.kick("b2", Some("spam")).unwrap();
    b2.expect("*** you were kicked: spam").await;
    b2.expect_closed().await;
    b1.expect("*** b2 left (kicked: spam)").await;
    settled(&mut a1, "*** 2 online: a1, a2x").await;
    settled(&mut a2, "*** 2 online: a1, a2x").await;
    settled(&mut b1, "*** 1 online: b1").await;
    settled(&mut l1, "*** 1 online: l1").await;
    // A stop reaches every room, with nothing after it.
    srv.stop().await;
    for c in [&mut a1, &mut a2, &mut b1, &mut l1] {
        assert_eq!(c.expect_closed().await, ["*** server shutting down"]);
    }
}

#[tokio::test]
async fn lines_after_a_move_in_the_same_write_go_to_the_new_room() {
    let srv = TestServer::start(test_config());
    let mut alice = srv.join("alice").await;
    let mut bob = srv.join("bob").await;
    alice.expect("*** bob joined").await;
    let mut carol = srv.join("carol").await;
    alice.expect("*** carol joined").await;
    bob.expect("*** carol joined").await;
    enter(
        &mut carol,
        "#b",
        "*** Now in #b (no topic). 1 online: carol",
    )
    .await;
    alice.expect("*** carol left (moved to #b)").await;
    bob.expect("*** carol left (moved to #b)").await;

    alice.send_raw(b"x\n/join #b\ny\n/part\nz\n").await;
    for want in [
        "<alice> x",
        "*** alice left (moved to #b)",
        "*** alice joined",
        "<alice> z",
    ] {
        bob.expect(want).await;
    }
    for want in [
        "*** alice joined",
        "<alice> y",
        "*** alice left (moved to #lobby)",
    ] {
        carol.expect(want).await;
    }
    alice
        .expect("*** Now in #b (no topic). 2 online: alice, carol")
        .await;
    alice
        .expect("*** Now in #lobby (no topic). 2 online: alice, bob")
        .await;
    expect_history(&mut alice, "#lobby", &["<alice> x"]).await;
    settled(&mut alice, "*** 2 online: alice, bob").await;
    settled(&mut bob, "*** 2 online: alice, bob").await;
    settled(&mut carol, "*** 1 online: carol").await;
    srv.stop().await;
}

// ---- rooms coming and going ----------------------------------------------------------------------

#[tokio::test]
async fn a_user_room_vanishes_with_its_topic_and_history_when_its_last_member_leaves() {
    let srv = TestServer::start(config(|c| c.rooms = vec![room("#keep", "", None)]));
    let mut alice = srv.join("alice").await;
    enter(
        &mut alice,
        "#tmp",
        "*** Now in #tmp (no topic). 1 online: alice",
    )
    .await;
    alice.send("/topic Temporary").await;
    alice.expect("*** alice set the topic: Temporary").await;
    alice.send("old line").await;
    let mut bob = srv.join("bob").await;
    enter(
        &mut bob,
        "#tmp",
        "*** Now in #tmp (topic: Temporary). 2 online: alice, bob",
    )
    .await;
    expect_history(&mut bob, "#tmp", &["<alice> old line"]).await;
    alice.expect("*** bob joined").await;
    bob.send("/part").await;
    bob.expect("*** Now in #lobby (no topic). 1 online: bob")
        .await;
    alice.expect("*** bob left (moved to #lobby)").await;
    expect_rooms(
        &mut bob,
        &[
            "#keep (0)",
            "#lobby (1, you are here)",
            "#tmp (1): Temporary",
        ],
    )
    .await;

    // Its last member disconnects: the room goes.
    drop(alice);
    wait_for(&srv.hub, || srv.hub.rooms().len() == 2, "#tmp gone").await;
    expect_rooms(&mut bob, &["#keep (0)", "#lobby (1, you are here)"]).await;
    // Made again (spelt differently): a new room, without the old topic or history.
    enter(
        &mut bob,
        "#TMP",
        "*** Now in #TMP (no topic). 1 online: bob",
    )
    .await;
    settled(&mut bob, "*** 1 online: bob").await;
    bob.send("new line").await;
    // Its last member moves out: gone at once.
    enter(
        &mut bob,
        "#keep",
        "*** Now in #keep (no topic). 1 online: bob",
    )
    .await;
    expect_rooms(&mut bob, &["#keep (1, you are here)", "#lobby (0)"]).await;
    // Or quits.
    let mut carol = srv.join("carol").await;
    enter(
        &mut carol,
        "#tmp",
        "*** Now in #tmp (no topic). 1 online: carol",
    )
    .await;
    settled(&mut carol, "*** 1 online: carol").await;
    carol.send("/quit").await;
    carol.expect("*** Goodbye.").await;
    carol.expect_closed().await;
    wait_for(&srv.hub, || srv.hub.rooms().len() == 2, "#tmp gone").await;

    // A predefined room stays when empty, with its topic and history.
    bob.send("/topic Kept").await;
    bob.expect("*** bob set the topic: Kept").await;
    bob.send("kept line").await;
    bob.send("/part").await;
    bob.expect("*** Now in #lobby (no topic). 1 online: bob")
        .await;
    expect_rooms(&mut bob, &["#keep (0): Kept", "#lobby (1, you are here)"]).await;
    let mut dave = srv.join("dave").await;
    bob.expect("*** dave joined").await;
    enter(
        &mut dave,
        "keep",
        "*** Now in #keep (topic: Kept). 1 online: dave",
    )
    .await;
    expect_history(&mut dave, "#keep", &["<bob> kept line"]).await;
    settled(&mut dave, "*** 1 online: dave").await;
    srv.stop().await;
}

// ---- limits ------------------------------------------------------------------------------------

#[tokio::test]
async fn without_user_rooms_only_the_configured_rooms_can_be_joined() {
    let srv = TestServer::start(config(|c| {
        c.allow_user_rooms = false;
        c.rooms = vec![room("#help", "", None)];
    }));
    let mut alice = srv.join("alice").await;
    for name in ["#new", "new"] {
        alice.send(&format!("/join {name}")).await;
        let why = "there is no room #new, and new rooms cannot be made here (/rooms lists them)";
        expect_notice(&mut alice, &format!("Cannot join: {why}.")).await;
    }
    enter(
        &mut alice,
        "#Help",
        "*** Now in #help (no topic). 1 online: alice",
    )
    .await;
    expect_rooms(&mut alice, &["#help (1, you are here)", "#lobby (0)"]).await;
    alice.send("/part").await;
    alice
        .expect("*** Now in #lobby (no topic). 1 online: alice")
        .await;
    // The operator may still make one (`chatctl move alice #ops`).
    let id = srv.hub.resolve("alice").unwrap();
    let moved = srv
        .hub
        .enter(id, "#ops", Some("Moved by the operator."), true);
    assert!(moved.is_ok(), "{moved:?}");
    alice.expect("*** Moved by the operator.").await;
    alice
        .expect("*** Now in #ops (no topic). 1 online: alice")
        .await;
    settled(&mut alice, "*** 1 online: alice").await;
    srv.stop().await;
}

#[tokio::test]
async fn max_rooms_refuses_a_new_room_until_one_closes() {
    // The default room, #help and one more.
    let srv = TestServer::start(config(|c| {
        c.max_rooms = 3;
        c.rooms = vec![room("#help", "", None)];
    }));
    let mut alice = srv.join("alice").await;
    let mut bob = srv.join("bob").await;
    alice.expect("*** bob joined").await;
    enter(
        &mut alice,
        "#a",
        "*** Now in #a (no topic). 1 online: alice",
    )
    .await;
    bob.expect("*** alice left (moved to #a)").await;
    let full = "Cannot join: the server has reached its limit of 3 rooms (/rooms lists them).";
    bob.send("/join #b").await;
    expect_notice(&mut bob, full).await;
    // Existing rooms can still be entered.
    enter(
        &mut bob,
        "#help",
        "*** Now in #help (no topic). 1 online: bob",
    )
    .await;
    bob.send("/join b").await;
    expect_notice(&mut bob, full).await;
    enter(
        &mut bob,
        "#A",
        "*** Now in #a (no topic). 2 online: alice, bob",
    )
    .await;
    alice.expect("*** bob joined").await;
    // Once #a has closed there is room for #b.
    bob.send("/part").await;
    bob.expect("*** Now in #lobby (no topic). 1 online: bob")
        .await;
    alice.expect("*** bob left (moved to #lobby)").await;
    alice.send("/part").await;
    alice
        .expect("*** Now in #lobby (no topic). 2 online: alice, bob")
        .await;
    bob.expect("*** alice joined").await;
    enter(&mut bob, "#b", "*** Now in #b (no topic). 1 online: bob").await;
    alice.expect("*** bob left (moved to #b)").await;
    alice.send("/join #c").await;
    expect_notice(&mut alice, full).await;
    settled(&mut alice, "*** 1 online: alice").await;
    srv.stop().await;
}

#[tokio::test]
async fn presence_notices_follow_each_rooms_own_size() {
    let srv = TestServer::start(config(|c| c.presence_max_members = 2));
    let mut alice = srv.join("alice").await;
    let mut bob = srv.join("bob").await;
    alice.expect("*** bob joined").await;
    // A third member of the lobby: too many to announce, or to list in the welcome.
    let mut carol = srv.client().await;
    carol.read_until_line("*** Choose a nickname:").await;
    carol.send("carol").await;
    carol
        .expect("*** Welcome, carol! 3 online (type /who to list them)")
        .await;
    carol.expect("*** Type /help for commands.").await;
    // alice leaves a lobby of 3 (quietly) for a room of 1.
    enter(
        &mut alice,
        "#small",
        "*** Now in #small (no topic). 1 online: alice",
    )
    .await;
    // bob leaves a lobby of 2 (carol is told) for a room of 2 (alice is told).
    enter(
        &mut bob,
        "#small",
        "*** Now in #small (no topic). 2 online: alice, bob",
    )
    .await;
    carol.expect("*** bob left (moved to #small)").await;
    alice.expect("*** bob joined").await;
    // carol makes #small too big to announce; the lobby she leaves is empty.
    enter(
        &mut carol,
        "#small",
        "*** Now in #small (no topic). 3 online (type /who to list them)",
    )
    .await;
    settled(&mut carol, "*** 3 online: alice, bob, carol").await;
    // A newcomer in the lobby, now small again, is listed and announced.
    let mut dave = srv.join("dave").await;
    settled(&mut dave, "*** 1 online: dave").await;
    // Leaving #small of 3: quiet there; entering a lobby of 2: dave is told.
    carol.send("/part").await;
    carol
        .expect("*** Now in #lobby (no topic). 2 online: carol, dave")
        .await;
    dave.expect("*** carol joined").await;
    // Leaving #small of 2: alice is told.
    bob.send("/part").await;
    alice.expect("*** bob left (moved to #lobby)").await;
    bob.expect("*** Now in #lobby (no topic). 3 online (type /who to list them)")
        .await;
    settled(&mut alice, "*** 1 online: alice").await;
    settled(&mut dave, "*** 3 online: bob, carol, dave").await;
    settled(&mut carol, "*** 3 online: bob, carol, dave").await;
    srv.stop().await;
}

// ---- moves while lines are flowing ----------------------------------------------------------------

/// Says numbered lines (`1`, `2`, …), ten to a write, until `stop` is cancelled, then ten more
/// writes and `end`. Returns the client and how many numbered lines it said.
async fn talk(mut c: TestClient, stop: CancellationToken) -> (TestClient, u64) {
    const MAX_WRITES: u64 = 5000;
    let mut n = 0;
    let mut after = 0;
    for _ in 0..MAX_WRITES {
        if stop.is_cancelled() {
            after += 1;
            if after > 10 {
                break;
            }
        }
        let chunk: String = (n + 1..=n + 10).map(|k| format!("{k}\n")).collect();
        c.send_raw(chunk.as_bytes()).await;
        n += 10;
    }
    assert!(after > 10, "the event to stop at never came");
    c.send("end").await;
    (c, n)
}

/// Reads every line until `end`, cancelling `seen` when `signal` arrives and counting lines into
/// `count`. Returns the client and the lines.
async fn listen(
    mut c: TestClient,
    end: String,
    signal: String,
    seen: CancellationToken,
    count: watch::Sender<usize>,
) -> (TestClient, Vec<String>) {
    let mut lines = Vec::new();
    for _ in 0..200_000 {
        let l = c.line().await;
        if l == signal {
            seen.cancel();
        }
        let done = l == end;
        lines.push(l);
        count.send_replace(lines.len());
        if done {
            return (c, lines);
        }
    }
    panic!("no {end:?} within 200000 lines");
}

/// The task's result, within a bound.
async fn joined<T>(task: JoinHandle<T>) -> T {
    tokio::time::timeout(WAIT * 3, task)
        .await
        .expect("task finished within the bound")
        .unwrap()
}

/// bob talks in #a and carol in #b, without pause, while alice moves from #a to #b. alice must
/// get exactly the lines of #a that its listener (dave) got before `alice left`, in order, then
/// `Now in #b`, then as history exactly the 20 lines #b's listener (eve) got before `alice
/// joined`, then exactly the lines eve got after it, and nothing else.
#[tokio::test]
async fn a_member_moved_while_lines_flow_gets_exactly_the_lines_of_its_time_in_each_room() {
    let srv = TestServer::start(test_config());
    for round in 0..3 {
        let nick = |s: &str| format!("{s}{round}");
        let (alice, bob, carol, dave, eve) = (
            nick("alice"),
            nick("bob"),
            nick("carol"),
            nick("dave"),
            nick("eve"),
        );
        let (ra, rb) = (format!("#a{round}"), format!("#b{round}"));
        let mut dave_c = srv.join(&dave).await;
        enter(
            &mut dave_c,
            &ra,
            &format!("*** Now in {ra} (no topic). 1 online: {dave}"),
        )
        .await;
        let mut bob_c = srv.join(&bob).await;
        let now_in = format!("*** Now in {ra} (no topic). 2 online: {bob}, {dave}");
        enter(&mut bob_c, &ra, &now_in).await;
        dave_c.expect(&format!("*** {bob} joined")).await;
        let mut alice_c = srv.join(&alice).await;
        let now_in = format!("*** Now in {ra} (no topic). 3 online: {alice}, {bob}, {dave}");
        enter(&mut alice_c, &ra, &now_in).await;
        dave_c.expect(&format!("*** {alice} joined")).await;
        let mut eve_c = srv.join(&eve).await;
        enter(
            &mut eve_c,
            &rb,
            &format!("*** Now in {rb} (no topic). 1 online: {eve}"),
        )
        .await;
        let mut carol_c = srv.join(&carol).await;
        let now_in = format!("*** Now in {rb} (no topic). 2 online: {carol}, {eve}");
        enter(&mut carol_c, &rb, &now_in).await;
        eve_c.expect(&format!("*** {carol} joined")).await;

        let left = format!("*** {alice} left (moved to {rb})");
        let came = format!("*** {alice} joined");
        let (a_seen, b_seen) = (CancellationToken::new(), CancellationToken::new());
        let (a_count, _) = watch::channel(0);
        let (b_count, mut b_heard) = watch::channel(0);
        let dave_t = tokio::spawn(listen(
            dave_c,
            format!("<{bob}> end"),
            left.clone(),
            a_seen.clone(),
            a_count,
        ));
        let eve_t = tokio::spawn(listen(
            eve_c,
            format!("<{carol}> end"),
            came.clone(),
            b_seen.clone(),
            b_count,
        ));
        let bob_t = tokio::spawn(talk(bob_c, a_seen));
        let carol_t = tokio::spawn(talk(carol_c, b_seen));
        // #b has more than 20 lines of history by the time alice moves.
        tokio::time::timeout(WAIT, b_heard.wait_for(|n| *n >= 30))
            .await
            .expect("carol's lines reach eve")
            .unwrap();
        // alice hears the first 50 of bob's lines, then moves.
        for k in 1..=50 {
            alice_c.expect(&format!("<{bob}> {k}")).await;
        }
        alice_c.send(&format!("/join {rb}")).await;
        let mut got = 50;
        let now_in = format!("*** Now in {rb} (no topic). 3 online: {alice}, {carol}, {eve}");
        // Bounded: bob's lines are finite (see `talk`).
        loop {
            let l = alice_c.line().await;
            if l == now_in {
                break;
            }
            assert_eq!(
                l,
                format!("<{bob}> {}", got + 1),
                "{alice}: #a in order, then the move"
            );
            got += 1;
        }
        alice_c
            .expect(&format!(
                "*** History of {rb}: the last 20 lines (times UTC)"
            ))
            .await;
        let mut history = Vec::new();
        for _ in 0..20 {
            let mut l = alice_c.line().await;
            if is_date_line(&l) {
                l = alice_c.line().await;
            }
            history.push(unstamp(&l).1.to_owned());
        }
        alice_c.expect("*** End of history.").await;
        let mut live = Vec::new();
        let end = format!("<{carol}> end");
        for _ in 0..200_000 {
            let l = alice_c.line().await;
            let done = l == end;
            live.push(l);
            if done {
                break;
            }
        }

        let (_bob_c, bob_said) = joined(bob_t).await;
        let (_carol_c, carol_said) = joined(carol_t).await;
        let (_dave_c, dave_heard) = joined(dave_t).await;
        let (mut eve_c, eve_heard) = joined(eve_t).await;
        // dave got all of bob's lines, and alice's leave right after the last one she got.
        assert!(got < bob_said, "bob still talked after alice left");
        let mut want: Vec<String> = (1..=bob_said).map(|k| format!("<{bob}> {k}")).collect();
        want.insert(got as usize, left.clone());
        want.push(format!("<{bob}> end"));
        assert_eq!(dave_heard, want, "{dave}");
        // eve got all of carol's lines and alice's arrival between two of them.
        let at = eve_heard.iter().position(|l| *l == came).unwrap();
        let mut want: Vec<String> = (1..=carol_said).map(|k| format!("<{carol}> {k}")).collect();
        want.push(format!("<{carol}> end"));
        let mut eve_lines = eve_heard.clone();
        eve_lines.remove(at);
        assert_eq!(eve_lines, want, "{eve}");
        assert!(at >= 20, "{at}");
        assert_eq!(
            history,
            eve_heard[at - 20..at],
            "{alice}: the history of {rb}"
        );
        assert_eq!(live, eve_heard[at + 1..], "{alice}: live lines of {rb}");
        assert!(live.len() > 10, "carol still talked after alice came");
        barrier(&mut eve_c, &eve, &mut alice_c, "moved").await;
    }
    srv.stop().await;
}

// ---- hostile clients in two rooms at once ------------------------------------------------------

/// Terminal escapes and other control characters (as in hostile.rs), one line each.
const ESCAPES: [&[u8]; 6] = [
    b"\x1b[31mred\x1b[0m",
    b"\x1b]0;pwned\x07title",
    b"\x1b[2J\x1b[Hclear",
    "\u{202e}reversed\u{202c} \u{2066}isolate\u{2069}".as_bytes(),
    "c1 \u{9b}31m csi".as_bytes(),
    b"bs\x08\x08 del\x7f tab\tx bell\x07 cr\rlf",
];

fn sanitised(raw: &[u8]) -> String {
    let mut out = String::new();
    groupchatd::protocol::sanitise_into(raw, &mut out);
    out
}

/// What every reader of `report` got from `nick`, in order.
fn said_by(report: &Report, nick: &str) -> Vec<Vec<String>> {
    let prefix = format!("<{nick}> ");
    report
        .heard
        .iter()
        .map(|h| {
            let lines = h.others.iter().filter_map(|l| l.strip_prefix(&prefix));
            lines.map(str::to_owned).collect()
        })
        .collect()
}

/// Joins as `nick`, moves to `room` and reads up to where it is in it; returns a connection with
/// a 4 KiB receive buffer that nobody reads any more.
async fn stalled_in(addr: std::net::SocketAddr, nick: &str, room: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = join_small_buffer(addr, nick).await;
    s.write_all(format!("/join {room}\n").as_bytes())
        .await
        .unwrap();
    read_until(&mut s, format!("*** Now in {room} (").as_bytes()).await;
    s
}

/// The hostile suite's slow readers, floods and escape codes in #a while #b has floods and escape
/// codes of its own: #a's slow readers are cut off; #b's audience never waits more than 3 s for a
/// line (while #a is congested too), nobody in #b is dropped or hears anything of #a, and every
/// audience gets every line of its own room once, in order, and its hostile clients' lines clean.
#[tokio::test]
async fn hostile_clients_in_one_room_leave_the_others_alone() {
    let dir = Scratch::new("r-hostile");
    let config = "flood_burst = 10\nflood_rate = 200.0\nwrite_timeout_secs = 2\n\
                  max_queue_bytes = 65536\nwrap_width = 0\n";
    let d = Daemon::start(&dir, "d", config);
    let addr = d.addr();
    // #a talks fast (3 KB lines), so a stalled reader there is noticed soon.
    let spec_a = Spec {
        pad: 3000,
        tag: "a",
        room: Some("#a"),
        ..Spec::new(4, 2, 100.0)
    };
    let spec_b = Spec {
        tag: "b",
        room: Some("#b"),
        line_wait: Duration::from_secs(3),
        ..Spec::new(4, 2, 20.0)
    };
    let aud_a = Audience::join(addr, spec_a).await;
    let aud_b = Audience::join(addr, spec_b).await;
    aud_a.wait_lines(50).await;
    aud_b.wait_lines(20).await;
    let cut_off_within =
        WAIT + Duration::from_secs_f64(2.0 * kernel_buffers() as f64 / (aud_a.rate() * 3000.0));

    // In #a: two that never read, one that reads a byte a second.
    let stall_began = tokio::time::Instant::now();
    let heard_b = aud_b.seen_now().iter().sum::<u64>();
    let mut never = Vec::new();
    for i in 0..2 {
        never.push(stalled_in(addr, &format!("anever{i}"), "#a").await);
    }
    let done = CancellationToken::new();
    let mut s = stalled_in(addr, "atrickle", "#a").await;
    let stop = done.clone();
    let trickle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        for _ in 0..60 {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut b = [0u8; 1];
            if !matches!(s.read(&mut b).await, Ok(1)) {
                return;
            }
        }
    });
    // In both rooms: a flood (600 lines in one write, slowed by flood control) and escapes.
    let mut hostiles = Vec::new();
    for r in ["a", "b"] {
        let mut flood = Hostile::join(addr, &format!("{r}flood")).await;
        let mut esc = Hostile::join(addr, &format!("{r}esc")).await;
        let lines: String = (0..600).map(|n| format!("f {n}\n")).collect();
        flood.send(format!("/join #{r}\n{lines}").as_bytes()).await;
        esc.send(format!("/join #{r}\n").as_bytes()).await;
        for (i, e) in ESCAPES.iter().enumerate() {
            esc.send(&[format!("e{i} ").as_bytes(), e, b"\n"].concat())
                .await;
        }
        esc.send(b"done\n").await;
        hostiles.push(flood);
        hostiles.push(esc);
    }
    for nick in ["anever0", "anever1", "atrickle"] {
        let left = aud_a
            .wait_notice_prefix(&format!("*** {nick} left ("), cut_off_within)
            .await;
        assert!(
            left.starts_with(&format!("*** {nick} left (too slow: ")),
            "{left}"
        );
    }
    // While #a's stalled readers were in it, #b kept its pace (40 lines/s; half of it allowed
    // for a busy machine).
    let stalled = stall_began.elapsed().as_secs_f64();
    let during = aud_b.seen_now().iter().sum::<u64>() - heard_b;
    eprintln!("#a stalled for {stalled:.1} s; #b heard {during} lines meanwhile");
    assert!(
        during as f64 >= 0.5 * aud_b.rate() * stalled - 5.0,
        "#b slowed down while #a was stalled: {during} lines in {stalled:.1} s"
    );
    let flood_bound = WAIT + Duration::from_secs(600 / 200 * 2);
    for (aud, r) in [(&aud_a, "a"), (&aud_b, "b")] {
        aud.wait_other(&format!("<{r}flood> f 599"), flood_bound)
            .await;
        aud.wait_other(&format!("<{r}esc> done"), WAIT).await;
    }
    drop(never);
    done.cancel();
    trickle.await.unwrap();
    for h in hostiles {
        h.close().await;
    }
    let report_a = aud_a.finish().await;
    let report_b = aud_b.finish().await;

    let flood: Vec<String> = (0..600).map(|n| format!("f {n}")).collect();
    let esc: Vec<String> = ESCAPES
        .iter()
        .enumerate()
        .map(|(i, e)| sanitised(&[format!("e{i} ").as_bytes(), e].concat()))
        .chain(["done".to_owned()])
        .collect();
    for (report, r, other) in [(&report_a, "a", "b"), (&report_b, "b", "a")] {
        for got in said_by(report, &format!("{r}flood")) {
            assert_eq!(got, flood, "#{r}: {r}flood's lines, all, in order");
        }
        for got in said_by(report, &format!("{r}esc")) {
            assert_eq!(got, esc, "#{r}: {r}esc's lines, sanitised");
        }
        for h in &report.heard {
            let foreign = h
                .others
                .iter()
                .chain(&h.notices)
                .filter(|l| {
                    l.starts_with(&format!("<{other}")) || l.starts_with(&format!("*** {other}"))
                })
                .collect::<Vec<_>>();
            assert!(
                foreign.is_empty(),
                "#{r}: {} heard #{other}: {foreign:?}",
                h.nick
            );
        }
    }
    let slow: Vec<&String> = report_b
        .heard
        .iter()
        .flat_map(|h| &h.notices)
        .filter(|n| n.contains("too slow"))
        .collect();
    assert!(slow.is_empty(), "#b lost someone: {slow:?}");
}
