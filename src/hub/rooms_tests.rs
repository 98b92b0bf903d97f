//! The room model: moves, history, isolation, per-room congestion, and rooms from the
//! configuration, against real loopback sockets like the rest of the hub's tests.

use super::*;
use crate::config::RoomConfig;
use crate::hub::EnterRefused;

fn rooms_config() -> Config {
    Config {
        history_lines: 3,
        ..Config::default()
    }
}

#[tokio::test]
async fn a_move_delivers_the_old_room_up_to_the_leave_and_the_new_one_after_the_join() {
    let h = hub(rooms_config());
    let mut a = member(&h, "alice", 1);
    let mut b = member(&h, "bob", 2);
    a.read_until("*** bob joined\r\n");
    // Nobody reads yet: what lobby says before the move is owed to alice when she moves.
    say(&h, b.id(), line("<bob> one"), 1);
    say(&h, b.id(), line("<bob> two"), 1);
    let room = h.enter(a.id(), "rust", None, false).unwrap();
    assert_eq!(&*room.name, "#rust");
    say(&h, b.id(), line("<bob> after"), 1);
    a.expect("<bob> one\r\n<bob> two\r\n");
    a.expect("*** Now in #rust (no topic). 1 online: alice\r\n");
    // Lobby's history (bob's lines) is not replayed in #rust, which has none.
    a.quiet();
    b.expect("*** alice left (moved to #rust)\r\n");
    b.quiet();
    // Back in lobby, alice gets its history: the last 3 chat lines, no notices.
    let c = member(&h, "carol", 3);
    drop(c);
    h.part(a.id()).unwrap();
    let got = a.read_until("*** End of history.\r\n");
    assert!(got.starts_with("*** Now in #lobby (no topic). 3 online: alice, bob, carol\r\n"));
    let history: Vec<&str> = got.lines().skip(2).collect();
    assert_eq!(history.len(), 4, "{got}");
    for (row, text) in history
        .iter()
        .zip(["<bob> one", "<bob> two", "<bob> after"])
    {
        assert!(row.starts_with('[') && row.ends_with(text), "{row}");
    }
}

#[tokio::test]
async fn rooms_are_isolated_but_announcements_and_private_lines_cross() {
    let h = hub(rooms_config());
    let mut a = member(&h, "alice", 1);
    let mut b = member(&h, "bob", 2);
    a.read_until("*** bob joined\r\n");
    h.enter(b.id(), "#x", None, false).unwrap();
    b.read_until("*** Now in #x (no topic). 1 online: bob\r\n");
    a.expect("*** bob left (moved to #x)\r\n");
    say(&h, a.id(), line("<alice> lobby only"), 1);
    say(&h, b.id(), line("<bob> x only"), 1);
    a.quiet();
    b.quiet();
    assert!(h.send_private("bob", line("*alice* psst")).is_some());
    b.expect("*alice* psst\r\n");
    assert_eq!(h.announce(Some("x"), "to x"), Some(1));
    b.expect("*** to x\r\n");
    a.quiet();
    assert_eq!(h.announce(None, "to all"), Some(2));
    a.expect("*** to all\r\n");
    b.expect("*** to all\r\n");
    assert_eq!(h.announce(Some("nowhere"), "?"), None);
    // A rename is told in the member's room only.
    h.rename(b.id(), "robert").unwrap();
    b.expect("*** bob is now known as robert\r\n");
    a.quiet();
}

#[tokio::test]
async fn a_user_room_goes_with_its_history_when_its_last_member_leaves() {
    let h = hub(rooms_config());
    let mut a = member(&h, "alice", 1);
    h.enter(a.id(), "tmp", None, false).unwrap();
    a.read_until("1 online: alice\r\n");
    let mut b = member(&h, "bob", 2);
    h.enter(b.id(), "TMP", None, false).unwrap();
    b.read_until("2 online: alice, bob\r\n");
    say(&h, b.id(), line("<bob> remember me"), 1);
    assert_eq!(h.rooms().len(), 2);
    h.part(a.id()).unwrap();
    h.close(b.id(), LeaveReason::Closed, None);
    let names: Vec<_> = h.rooms().into_iter().map(|r| r.name).collect();
    assert_eq!(names, [Arc::from("#lobby")]);
    a.read_until("(no topic). 1 online: alice\r\n");
    h.enter(a.id(), "tmp", None, false).unwrap();
    // A new room by that name: no history.
    a.expect("*** Now in #tmp (no topic). 1 online: alice\r\n");
    a.quiet();
}

#[tokio::test]
async fn refusals_name_the_reason() {
    let h = hub(Config {
        max_rooms: 2,
        ..rooms_config()
    });
    let a = member(&h, "alice", 1);
    let b = member(&h, "bob", 2);
    assert_eq!(
        h.enter(a.id(), "lobby", None, false).err(),
        Some(EnterRefused::AlreadyThere(Arc::from("#lobby")))
    );
    assert!(matches!(
        h.enter(a.id(), "no spaces", None, false),
        Err(EnterRefused::Invalid(_))
    ));
    h.enter(a.id(), "one", None, false).unwrap();
    assert_eq!(
        h.enter(b.id(), "two", None, false).err(),
        Some(EnterRefused::TooManyRooms(2))
    );
    // Alone in #one, alice gives it up by leaving: she may make #two.
    assert_eq!(&*h.enter(a.id(), "two", None, false).unwrap().name, "#two");
    assert_eq!(h.rooms().len(), 2);
    let closed = hub(Config {
        allow_user_rooms: false,
        ..rooms_config()
    });
    let c = member(&closed, "carol", 3);
    assert_eq!(
        closed.enter(c.id(), "new", None, false).err(),
        Some(EnterRefused::NoSuchRoom("#new".into()))
    );
    // The operator may still make one.
    assert!(closed.enter(c.id(), "new", None, true).is_ok());
}

#[tokio::test]
async fn congestion_is_per_room() {
    let h = hub(Config {
        max_queue_bytes: 64 * 1024,
        ..rooms_config()
    });
    let a = member(&h, "a", 1);
    let slow = connect_at(&h, 2, true).unwrap();
    h.join(slow.id(), "slow").unwrap();
    let c = member(&h, "c", 3);
    let d = member(&h, "d", 4);
    h.enter(c.id(), "calm", None, false).unwrap();
    h.enter(d.id(), "calm", None, false).unwrap();
    assert!(publish_until_congested(&h, &a), "slow fell behind in lobby");
    let calm = h.room_of(c.id()).unwrap();
    assert!(!calm.congestion.any());
    assert_eq!(
        h.publish(&calm, c.id(), line("<c> fine"), 1),
        Some(false),
        "a slow reader in lobby does not pause senders in #calm"
    );
    // Moving out of the congested room takes its count along: lobby is relieved.
    h.enter(slow.id(), "calm", None, false).unwrap();
    let lobby = h.room_of(a.id()).unwrap();
    assert!(!lobby.congestion.any());
    // A publish into a room the sender has left is refused (its session looks again).
    assert_eq!(h.publish(&lobby, c.id(), line("<c> lost?"), 1), None);
}

#[tokio::test]
async fn positions_never_mix_rooms_when_a_slot_is_reused() {
    let h = hub(rooms_config());
    let a = member(&h, "alice", 1);
    h.enter(a.id(), "first", None, false).unwrap();
    for _ in 0..10 {
        say(&h, a.id(), kilo_line(), 1);
    }
    let first = h.room_of(a.id()).unwrap();
    h.part(a.id()).unwrap();
    h.enter(a.id(), "second", None, false).unwrap();
    let second = h.room_of(a.id()).unwrap();
    // The slot of #first went to #second, whose log carries on where #first's ended.
    assert!(second.log_end() >= first.log_end());
    assert!(crate::hub::log::same_log(second.log_end(), first.log_end()));
    // Judged against the lobby it has left, alice owes nothing there.
    let lobby_end = h.lock().rooms.default_room().log_end();
    assert!(a.client.outbox.lag(lobby_end) < 1000);
}

#[tokio::test]
async fn a_reload_makes_closes_and_retopics_predefined_rooms() {
    let help = |topic: &str| RoomConfig {
        name: "#help".into(),
        topic: topic.into(),
        history_lines: Some(1),
    };
    let h = hub(Config {
        rooms: vec![help("Ask here")],
        ..rooms_config()
    });
    let mut a = member(&h, "alice", 1);
    h.enter(a.id(), "help", None, false).unwrap();
    a.read_until("*** Now in #help (topic: Ask here). 1 online: alice\r\n");
    h.set_topic(
        crate::hub::TopicOf::MemberOf(a.id()),
        "mine now",
        Some("alice"),
    )
    .unwrap();
    a.expect("*** alice set the topic: mine now\r\n");
    // Unchanged in the file: the users' topic stays.
    h.set_config(Config {
        rooms: vec![help("Ask here")],
        ..rooms_config()
    });
    a.quiet();
    // Changed in the file: replaced and told.
    h.set_config(Config {
        rooms: vec![help("Ask politely")],
        ..rooms_config()
    });
    a.expect("*** the operator set the topic: Ask politely\r\n");
    // Removed: its members go to the default room, told why; nobody is disconnected.
    h.set_config(rooms_config());
    a.expect("*** #help was closed by the operator; you are back in #lobby.\r\n");
    a.expect("*** Now in #lobby (no topic). 1 online: alice\r\n");
    let names: Vec<_> = h.rooms().into_iter().map(|r| r.name).collect();
    assert_eq!(names, [Arc::from("#lobby")]);
    assert_eq!(h.counts().1, 1);
}
