//! Hub unit tests: an upgrade's freeze and hand-over, through the snapshot, keep every byte each
//! client is owed, and every room's members, topic and history.

use super::*;

#[tokio::test]
async fn a_frozen_room_exports_what_each_client_is_owed_and_thaws_where_it_stopped() {
    let h = Arc::new(Hub::new(Config::default()));
    let bob = member(&h, "bob", 1);
    let mut alice = connect_at(&h, 2, true).unwrap();
    h.join(alice.id(), "alice").unwrap();
    alice.read_until("Type /help for commands.\r\n");
    // Bob talks until alice's small socket is full and part of it waits in her queue.
    let mut sent = String::new();
    for i in 0..300 {
        let text = format!("<bob> {i:03} {}\r\n", "y".repeat(500));
        sent.push_str(&text);
        say(&h, bob.id(), Bytes::from(text), 1);
    }
    assert!(alice.client.outbox.is_parked(), "alice's socket is full");
    let mut frozen = freeze(&h, &[&alice, &bob]).await;
    let (room, fds) = h.export(&mut frozen, 1, &Default::default());
    assert_eq!(fds.len(), 2, "one socket per frozen client");
    assert_eq!(room.next_id, 3);
    let mine = room.clients.iter().find(|c| c.id == alice.id()).unwrap();
    assert_eq!(mine.nick.as_deref(), Some("alice"));
    assert!(
        !mine.unsent.is_empty(),
        "part of bob's lines is still owed to alice"
    );
    // What alice's socket already holds, followed by what the snapshot owes her, is everything
    // bob said, once and in order. Nothing more reaches her socket while frozen.
    let owed = String::from_utf8(mine.unsent.clone()).unwrap();
    let mut written = String::new();
    alice
        .far
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 65536];
    while let Ok(n) = alice.far.read(&mut buf) {
        if n == 0 {
            break;
        }
        written.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        // Drained: a frozen writer must not fill the socket again.
        alice.flush();
    }
    assert!(sent.starts_with(&written), "written part is a prefix");
    assert_eq!(format!("{written}{owed}"), sent);
    // Rolled back: writing resumes exactly where it stopped.
    let resumed = h.thaw(frozen);
    assert_eq!(resumed.len(), 2);
    alice.far.set_read_timeout(Some(WAIT)).unwrap();
    let mut rest = Vec::new();
    let deadline = Instant::now() + WAIT;
    while rest.len() < owed.len() {
        assert!(Instant::now() < deadline, "the rest within the bound");
        // The session's part: write while the socket takes it.
        alice.flush();
        let n = alice.far.read(&mut buf).unwrap();
        assert!(n > 0);
        rest.extend_from_slice(&buf[..n]);
    }
    assert!(
        rest == owed.as_bytes(),
        "after the thaw, exactly what was owed"
    );
}

#[tokio::test]
async fn rooms_topics_and_history_move_with_an_upgrade() {
    let old = with_rooms(&[
        ("#help", "Ask here"),
        ("#news", "Old news"),
        ("#gone", "Gone soon"),
        ("#empty", ""),
    ]);
    let h = hub(old);
    let [bob, alice, carol, dave, eve] =
        ["bob", "alice", "carol", "dave", "eve"].map(|nick| member(&h, nick, 1));
    say(&h, bob.id(), line("<bob> in lobby"), 1);
    h.enter(alice.id(), "#x", None, false).unwrap();
    h.set_topic(
        crate::hub::TopicOf::MemberOf(alice.id()),
        "x marks the spot",
        Some("alice"),
    )
    .unwrap();
    say(&h, alice.id(), line("<alice> in x"), 1);
    h.enter(carol.id(), "#help", None, false).unwrap();
    h.set_topic(
        crate::hub::TopicOf::MemberOf(carol.id()),
        "helping",
        Some("carol"),
    )
    .unwrap();
    say(&h, carol.id(), line("<carol> in help"), 1);
    h.enter(dave.id(), "#gone", None, false).unwrap();
    say(&h, dave.id(), line("<dave> in gone"), 1);
    h.enter(eve.id(), "#news", None, false).unwrap();
    h.set_topic(crate::hub::TopicOf::Room("#news"), "operator news", None)
        .unwrap();

    // The new configuration drops #gone (occupied) and #empty, and changes #news's topic.
    let new = with_rooms(&[("#help", "Ask here"), ("#news", "New news")]);
    let conns = [&bob, &alice, &carol, &dave, &eve];
    let (h, moved) = hand_over(&h, &conns, new, crate::upgrade::snapshot::VERSION).await;
    let [mut bob, alice, _, _, mut eve] = <[Conn; 5]>::try_from(moved).ok().unwrap();
    let room = |c: &Conn| h.room_of(c.id()).unwrap().name.to_string();
    assert_eq!(room(&bob), "#lobby");
    assert_eq!(room(&alice), "#x");
    // Each room's line count (`groupchatd_room_lines_total`) carries on, like every counter.
    let lines = |c: &Conn| h.room_of(c.id()).unwrap().lines();
    assert_eq!((lines(&bob), lines(&alice)), (1, 1));
    let s = |t: &str| t.to_owned();
    assert_eq!(
        rooms(&h),
        [
            // Kept while occupied, as a room users made: it goes when dave leaves.
            (s("#gone"), 1, s("Gone soon"), false),
            // The configuration's topic is unchanged, so carol's stands.
            (s("#help"), 1, s("helping"), true),
            (s("#lobby"), 1, s(""), true),
            // The configuration changed the topic: the operator's is replaced, as by a reload.
            (s("#news"), 1, s("New news"), true),
            (s("#x"), 1, s("x marks the spot"), false),
        ]
    );
    // And the room is told so, as by a reload.
    eve.flush();
    eve.read_until("*** the operator set the topic: New news\r\n");
    eve.quiet();
    // A newcomer gets each room's history.
    let mut zed = connect(&h, 9);
    h.join(zed.id(), "zed").unwrap();
    let welcome = zed.read_until("*** End of history.\r\n");
    assert!(welcome.contains("] <bob> in lobby\r\n"), "{welcome}");
    for (name, said) in [
        ("#help", "<carol> in help"),
        ("#gone", "<dave> in gone"),
        ("#x", "<alice> in x"),
    ] {
        h.enter(zed.id(), name, None, false).unwrap();
        let got = zed.read_until("*** End of history.\r\n");
        let replay = format!("*** History of {name}: the last line (times UTC)\r\n[");
        assert!(got.contains(&replay), "{got}");
        assert!(got.contains(&format!("] {said}\r\n")), "{got}");
    }
    // alice is seated in #x: zed hears her there, bob in #lobby does not.
    bob.read_until("*** zed left (moved to #help)\r\n");
    say(&h, alice.id(), line("<alice> still in x"), 1);
    zed.expect("<alice> still in x\r\n");
    bob.quiet();
}

#[tokio::test]
async fn a_version_1_snapshot_seats_everyone_in_the_default_room() {
    let h = hub(Config::default());
    let bob = member(&h, "bob", 1);
    let alice = member(&h, "alice", 2);
    h.enter(alice.id(), "#x", None, false).unwrap();
    say(&h, alice.id(), line("<alice> in x"), 1);
    let (h, moved) = hand_over(&h, &[&bob, &alice], Config::default(), 1).await;
    assert!(
        moved
            .iter()
            .all(|c| &*h.room_of(c.id()).unwrap().name == "#lobby")
    );
    let lobby = &h.rooms()[..];
    assert_eq!((lobby.len(), lobby[0].members, lobby[0].history), (1, 2, 0));
}
