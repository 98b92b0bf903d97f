//! Hub unit tests against real loopback sockets: a publish writes to the members' sockets before
//! it returns (when they have room), so each test reads exactly what a client would receive. No
//! session runs here; where a session would take over a full socket, the test does its part.

use std::io::{ErrorKind, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Hub, NickRefused, Refusal};
use crate::client::{Client, Close, Flushed, LeaveReason};
use crate::config::Config;

const WAIT: Duration = Duration::from_secs(5);

#[path = "rooms_tests.rs"]
mod rooms;

#[path = "relay_tests.rs"]
mod relay;

#[path = "congestion_tests.rs"]
mod congestion;

#[path = "admission_tests.rs"]
mod admission;

#[path = "handover_tests.rs"]
mod handover;

fn peer(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 5000))
}

/// A connection: the daemon's side registered in the hub, the far side read by the test.
struct Conn {
    client: Arc<Client>,
    far: std::net::TcpStream,
}

/// Small buffers on both sides make a client that does not read fill up quickly.
fn sockets(small: bool) -> (tokio::net::TcpStream, std::net::TcpStream) {
    use nix::sys::socket::{setsockopt, sockopt};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let far = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (near, _) = listener.accept().unwrap();
    if small {
        setsockopt(&near, sockopt::SndBuf, &4096).unwrap();
        setsockopt(&far, sockopt::RcvBuf, &4096).unwrap();
    }
    near.set_nonblocking(true).unwrap();
    far.set_read_timeout(Some(WAIT)).unwrap();
    (tokio::net::TcpStream::from_std(near).unwrap(), far)
}

fn connect_at(hub: &Hub, ip: u8, small: bool) -> Result<Conn, Refusal> {
    let (near, far) = sockets(small);
    let client = hub.register(peer(ip), near).map_err(|(why, _)| why)?;
    let mut conn = Conn { client, far };
    // What a session does first: write the greeting.
    conn.flush();
    conn.read_until("*** Choose a nickname:\r\n");
    Ok(conn)
}

fn connect(hub: &Hub, ip: u8) -> Conn {
    connect_at(hub, ip, false).unwrap()
}

/// Registers and joins a client, reading its welcome.
fn member(hub: &Arc<Hub>, nick: &str, ip: u8) -> Conn {
    let mut c = connect(hub, ip);
    hub.join(c.client.id, nick).unwrap();
    let got = c.read_until_contains("Type /help for commands.\r\n");
    // The room's history, if it has any, follows the welcome.
    if got.contains("*** History of ") && !got.ends_with("*** End of history.\r\n") {
        c.read_until("*** End of history.\r\n");
    }
    c
}

impl Conn {
    fn id(&self) -> u64 {
        self.client.id
    }

    /// Writes what this client is owed, as its session would.
    fn flush(&self) -> Flushed {
        let hub_limits = crate::client::Limits {
            log_end: u64::MAX / 2,
            max_queue_bytes: usize::MAX,
            congestion: &Arc::default(),
        };
        self.client.flush_own(hub_limits)
    }

    /// Reads until `want` has arrived (it must be exactly the next bytes).
    fn expect(&mut self, want: &str) {
        let mut got = vec![0; want.len()];
        self.far
            .read_exact(&mut got)
            .expect("the expected bytes in time");
        assert_eq!(String::from_utf8_lossy(&got), want);
    }

    /// Reads until the text received contains `part`; returns all of it (which may go on past
    /// it, to the end of a write).
    fn read_until_contains(&mut self, part: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut got = String::new();
        while !got.contains(part) {
            assert!(Instant::now() < deadline, "no {part:?} in {got:?}");
            got.push_str(&self.read_until("\n"));
        }
        got
    }

    /// Reads until the text received ends with `end`; returns all of it.
    fn read_until(&mut self, end: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(end.as_bytes()) {
            assert!(
                Instant::now() < deadline,
                "no {end:?} in {:?}",
                String::from_utf8_lossy(&got)
            );
            match self.far.read(&mut buf) {
                Ok(0) => panic!("closed before {end:?}: {:?}", String::from_utf8_lossy(&got)),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("reading: {e}"),
            }
        }
        String::from_utf8(got).unwrap()
    }

    /// Asserts nothing more has arrived (the hub writes synchronously on loopback, so anything
    /// sent would be here already).
    fn quiet(&mut self) {
        self.far.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 256];
        match self.far.read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!(
                "expected silence, got {other:?}: {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
        self.far.set_nonblocking(false).unwrap();
    }
}

/// Publishes as `from` in the room it sits in; true if the room is congested.
fn say(h: &Arc<Hub>, from: u64, buf: Bytes, lines: u32) -> bool {
    let room = h.room_of(from).expect("a member");
    h.publish(&room, from, buf, lines)
        .expect("sits in its room")
}

fn hub(config: Config) -> Arc<Hub> {
    Arc::new(Hub::new(config))
}

/// A 1000-byte chat line, for filling queues.
fn kilo_line() -> Bytes {
    Bytes::from(format!("{}\r\n", "x".repeat(998)))
}

fn line(text: &str) -> Bytes {
    Bytes::from(format!("{text}\r\n"))
}

#[tokio::test]
async fn publish_reaches_everyone_but_the_sender_in_one_order() {
    let h = Arc::new(Hub::new(Config::default()));
    let mut a = member(&h, "a", 1);
    let mut b = member(&h, "b", 2);
    let mut c = member(&h, "c", 3);
    a.read_until("*** c joined\r\n");
    b.read_until("*** c joined\r\n");
    say(&h, a.id(), line("<a> one"), 1);
    say(&h, b.id(), line("<b> two"), 1);
    say(&h, a.id(), line("<a> three"), 1);
    a.expect("<b> two\r\n");
    b.expect("<a> one\r\n<a> three\r\n");
    c.expect("<a> one\r\n<b> two\r\n<a> three\r\n");
    for conn in [&mut a, &mut b, &mut c] {
        conn.quiet();
    }
    assert_eq!(h.counters.lines_relayed.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn joins_welcome_and_announce_within_the_presence_limit_only() {
    let h = Arc::new(Hub::new(Config {
        presence_max_members: 2,
        ..Config::default()
    }));
    let mut a = member(&h, "alice", 1);
    let mut b = connect(&h, 2);
    h.join(b.id(), "Bob").unwrap();
    b.expect("*** Welcome, Bob! 2 online: alice, Bob\r\n*** Type /help for commands.\r\n");
    a.expect("*** Bob joined\r\n");
    // A third member makes the room bigger than the limit: count only, nobody told.
    let mut c = connect(&h, 3);
    h.join(c.id(), "carol").unwrap();
    c.expect("*** Welcome, carol! 3 online (type /who to list them)\r\n");
    a.quiet();
    assert_eq!(
        &h.who_lines(a.id())[..],
        b"*** 3 online: alice, Bob, carol\r\n"
    );
}

#[tokio::test]
async fn welcomes_list_the_room_in_order_through_renames_leaves_and_the_limit() {
    // The sorted names are kept from join to join (see `names::SortedNames`): each welcome must still
    // list exactly who is there, case-insensitively sorted, as `/who` does.
    let h = Arc::new(Hub::new(Config {
        presence_max_members: 4,
        ..Config::default()
    }));
    let conns = [member(&h, "bob", 1), member(&h, "Alice", 2)];
    let carol = member(&h, "carol", 3);
    h.rename(carol.id(), "Aaron").unwrap();
    h.close(conns[1].id(), LeaveReason::Closed, None);
    let mut dave = connect(&h, 4);
    h.join(dave.id(), "dave").unwrap();
    dave.expect("*** Welcome, dave! 3 online: Aaron, bob, dave\r\n");
    // Past the limit the list is dropped; back under it, it is made again from the seats.
    let eve = member(&h, "Eve", 5);
    let zed = member(&h, "zed", 6);
    h.close(zed.id(), LeaveReason::Closed, None);
    h.close(eve.id(), LeaveReason::Closed, None);
    let mut ann = connect(&h, 7);
    h.join(ann.id(), "ann").unwrap();
    ann.expect("*** Welcome, ann! 4 online: Aaron, ann, bob, dave\r\n");
    assert_eq!(
        &h.who_lines(ann.id())[..],
        b"*** 4 online: Aaron, ann, bob, dave\r\n"
    );
    drop((conns, carol, dave, eve, zed));
}

#[tokio::test]
async fn renames_are_announced_above_the_presence_limit() {
    // Finding: bob leaves unannounced in a big room, mallory silently becomes `bob`.
    let h = Arc::new(Hub::new(Config {
        presence_max_members: 1,
        ..Config::default()
    }));
    let mut a = member(&h, "alice", 1);
    let mut m = connect(&h, 2);
    h.join(m.id(), "mallory").unwrap();
    m.read_until("Type /help for commands.\r\n");
    h.rename(m.id(), "bob").unwrap();
    a.expect("*** mallory is now known as bob\r\n");
    m.expect("*** mallory is now known as bob\r\n");
}

#[tokio::test]
async fn nicknames_are_unique_without_regard_to_case_and_validated() {
    let h = Arc::new(Hub::new(Config::default()));
    let _alice = member(&h, "Alice", 1);
    let c = connect(&h, 2);
    assert_eq!(h.join(c.id(), "aLICE").err(), Some(NickRefused::Taken));
    assert!(matches!(
        h.join(c.id(), "server"),
        Err(NickRefused::Invalid(_))
    ));
    assert!(matches!(
        h.join(c.id(), "two words"),
        Err(NickRefused::Invalid(_))
    ));
    assert_eq!(h.join(c.id(), "小明").map(|j| j.0).as_deref(), Ok("小明"));
}

#[tokio::test]
async fn renames_tell_everyone_and_free_the_old_name() {
    let h = Arc::new(Hub::new(Config::default()));
    let mut a = member(&h, "alice", 1);
    let mut b = member(&h, "bob", 2);
    a.read_until("*** bob joined\r\n");
    assert_eq!(h.rename(b.id(), "ALICE"), Err(NickRefused::Taken));
    assert_eq!(h.rename(a.id(), "alice"), Err(NickRefused::Unchanged));
    h.rename(a.id(), "Alice").unwrap(); // a change of case only
    h.rename(a.id(), "alicia").unwrap();
    let both = "*** alice is now known as Alice\r\n*** Alice is now known as alicia\r\n";
    b.expect(both);
    a.expect(both);
    let c = connect(&h, 3);
    assert!(
        h.join(c.id(), "alice").is_ok(),
        "the old name is free again"
    );
}

/// Publishes 1000-byte lines from `from` until the hub says some member is congested (bounded).
fn publish_until_congested(h: &Arc<Hub>, from: &Conn) -> bool {
    (0..200).any(|_| say(h, from.id(), kilo_line(), 1))
}

#[tokio::test]
async fn kicks_resolve_ids_and_nicknames() {
    let h = Arc::new(Hub::new(Config::default()));
    let mut a = member(&h, "alice", 1);
    let mut b = member(&h, "bob", 2);
    a.read_until("*** bob joined\r\n");
    assert_eq!(h.kick("BOB", Some("spam")).unwrap().0, b.id());
    let kicked = LeaveReason::Kicked(Some("spam".into()));
    assert_eq!(b.flush(), Flushed::Done(Close::Flush(kicked)));
    b.expect("*** you were kicked: spam\r\n");
    a.expect("*** bob left (kicked: spam)\r\n");
    assert!(h.kick("bob", None).is_none());
    let pending = connect(&h, 3);
    assert_eq!(
        h.kick(&pending.id().to_string(), None),
        Some((pending.id(), None))
    );
}

#[tokio::test]
async fn shutdown_tells_every_connection_and_refuses_newcomers() {
    let h = Arc::new(Hub::new(Config::default()));
    let mut a = member(&h, "alice", 1);
    let mut pending = connect(&h, 2);
    h.shutdown();
    for c in [&mut a, &mut pending] {
        assert!(matches!(
            c.flush(),
            Flushed::Done(Close::Flush(LeaveReason::ShuttingDown))
        ));
        c.expect("*** server shutting down\r\n");
        c.quiet();
    }
    assert_eq!(connect_at(&h, 3, false).err(), Some(Refusal::ShuttingDown));
    assert_eq!(
        h.counts().0,
        0,
        "everyone is out of the room at once, without notices"
    );
}

/// Freezes `h`, playing each session's part (they give their input state between reads).
async fn freeze(h: &Arc<Hub>, conns: &[&Conn]) -> super::handover::Frozen {
    let hub = h.clone();
    let freezing = tokio::spawn(async move { hub.freeze(WAIT).await });
    let deadline = Instant::now() + WAIT;
    let mut given = 0;
    while given < conns.len() {
        assert!(
            Instant::now() < deadline,
            "freeze requests within the bound"
        );
        for c in conns {
            if let Some(request) = c.client.outbox.take_freeze() {
                request.give(c.id(), crate::session::InputState::default());
                given += 1;
            }
        }
        tokio::task::yield_now().await;
    }
    freezing.await.unwrap().expect("every session stopped")
}

/// Hands `h` over to a new hub with `config` as an upgrade does, through the snapshot's JSON
/// written as `version`; returns the new hub and `conns` in it, on new sockets.
async fn hand_over(
    h: &Arc<Hub>,
    conns: &[&Conn],
    config: Config,
    version: u32,
) -> (Arc<Hub>, Vec<Conn>) {
    use crate::upgrade::snapshot::{Origin, Snapshot};
    let mut frozen = freeze(h, conns).await;
    let (mut room, fds) = h.export(&mut frozen, 1, &Default::default());
    if version == 1 {
        room = room.without_chat_rooms();
    }
    let snap = Snapshot {
        version,
        from: Origin {
            pid: 1,
            version: "test".into(),
        },
        paused_at_ns: 0,
        listeners: 1,
        tls_listeners: 0,
        admin: false,
        http_listeners: Some(0),
        https_listeners: 0,
        admin_owned: false,
        room,
        cluster: None,
    };
    let snap = Snapshot::decode(&snap.encode(), 1 + fds.len()).expect("a consistent snapshot");
    let (streams, fars): (Vec<_>, Vec<_>) = snap
        .room
        .clients
        .iter()
        .map(|_| {
            let (near, far) = sockets(false);
            (crate::client::Stream::from(near), far)
        })
        .unzip();
    let mut new = Hub::new(config);
    let resumed = new.restore(snap.room, streams);
    let mut by_id: std::collections::HashMap<u64, Conn> = resumed
        .into_iter()
        .zip(fars)
        .map(|(r, far)| {
            let client = r.client;
            (client.id, Conn { client, far })
        })
        .collect();
    let conns = conns
        .iter()
        .map(|c| by_id.remove(&c.id()).expect("handed over"))
        .collect();
    (Arc::new(new), conns)
}

fn with_rooms(rooms: &[(&str, &str)]) -> Config {
    let rooms = rooms.iter().map(|(name, topic)| crate::config::RoomConfig {
        name: (*name).into(),
        topic: (*topic).into(),
        history_lines: None,
    });
    Config {
        rooms: rooms.collect(),
        ..Config::default()
    }
}

/// Every room: name, members, topic, predefined.
fn rooms(h: &Hub) -> Vec<(String, usize, String, bool)> {
    h.rooms()
        .into_iter()
        .map(|r| {
            (
                r.name.to_string(),
                r.members,
                r.topic.to_string(),
                r.predefined,
            )
        })
        .collect()
}
