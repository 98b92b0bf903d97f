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

/// Publishes 1000-byte lines from `from` until `gone` has left the room (bounded); `reader`
/// keeps up meanwhile. Returns the lines published and all `reader` received.
fn publish_until_gone(h: &Arc<Hub>, from: &Conn, gone: &str, reader: &mut Conn) -> (usize, String) {
    let mut seen = Vec::new();
    for round in 0..2000 {
        if h.resolve(gone).is_none() {
            return (round, String::from_utf8(seen).unwrap());
        }
        say(h, from.id(), kilo_line(), 1);
        reader.far.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 65536];
        while let Ok(n @ 1..) = reader.far.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
        reader.far.set_nonblocking(false).unwrap();
    }
    panic!("{gone} was never cut off");
}

#[tokio::test]
async fn a_full_queue_cuts_off_that_client_alone_and_announces_it_once() {
    let h = Arc::new(Hub::new(Config {
        max_queue_bytes: 8192,
        ..Config::default()
    }));
    let mut a = member(&h, "a", 1);
    let mut b = member(&h, "b", 2);
    let slow = connect_at(&h, 3, true).unwrap();
    h.join(slow.id(), "slow").unwrap();
    a.read_until("*** slow joined\r\n");
    b.read_until("*** slow joined\r\n");
    let (rounds, seen) = publish_until_gone(&h, &a, "slow", &mut b);
    assert!(rounds > 8, "cut off only once far behind ({rounds} lines)");
    assert!(slow.client.outbox.is_closing());
    assert!(
        matches!(
            slow.flush(),
            Flushed::Done(Close::Abort(LeaveReason::QueueFull))
        ),
        "abort: nothing more is written"
    );
    let left = "*** slow left (too slow: send queue full)\r\n";
    a.expect(left);
    if !seen.ends_with(left) {
        b.read_until(left);
    }
    assert_eq!(
        h.close(slow.id(), LeaveReason::Closed, None),
        None,
        "gone already: nothing happens"
    );
    a.quiet();
    b.quiet();
    assert_eq!(h.counters.slow_drops.load(Ordering::Relaxed), 1);
}

/// Publishes 1000-byte lines from `from` until the hub says some member is congested (bounded).
fn publish_until_congested(h: &Arc<Hub>, from: &Conn) -> bool {
    (0..200).any(|_| say(h, from.id(), kilo_line(), 1))
}

#[tokio::test]
async fn congestion_is_counted_while_a_queue_is_over_half_full() {
    let h = Arc::new(Hub::new(Config {
        max_queue_bytes: 64 * 1024,
        ..Config::default()
    }));
    let a = member(&h, "a", 1);
    let mut b = connect_at(&h, 2, true).unwrap();
    h.join(b.id(), "b").unwrap();
    assert!(
        publish_until_congested(&h, &a),
        "b fell more than half its queue behind"
    );
    assert_eq!(h.congested_count(), 1);
    assert!(
        b.client.outbox.is_parked(),
        "b's session owns its full socket"
    );
    // b reads everything; its session writes the rest as the socket drains, and b is relieved.
    b.far
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    for _ in 0..1000 {
        let room = h.room_of(b.id()).unwrap();
        let limits = room.limits(room.log_end(), 64 * 1024);
        let done = b.client.flush_own(limits) == Flushed::Idle;
        if done && h.congested_count() == 0 {
            break;
        }
        let _ = b.far.read(&mut buf);
    }
    assert_eq!(h.congested_count(), 0);
    // Closing while congested also clears it.
    assert!(publish_until_congested(&h, &a));
    assert_eq!(h.congested_count(), 1);
    h.close(b.id(), LeaveReason::Closed, None);
    assert_eq!(h.congested_count(), 0);
}

#[tokio::test]
async fn admission_limits_and_exemptions() {
    let h = Arc::new(Hub::new(Config {
        max_clients: 2,
        max_clients_per_ip: 1,
        ..Config::default()
    }));
    let first = connect(&h, 1);
    assert_eq!(connect_at(&h, 1, false).err(), Some(Refusal::PerIp));
    let (near, _far) = sockets(false);
    let lo = SocketAddr::from(([127, 0, 0, 1], 1));
    assert!(h.register(lo, near).is_ok(), "loopback is exempt");
    assert_eq!(connect_at(&h, 2, false).err(), Some(Refusal::Full));
    h.close(first.id(), LeaveReason::Closed, None);
    assert!(
        connect_at(&h, 1, false).is_ok(),
        "a slot and the address's count were released"
    );
    assert_eq!(h.counters.rejected.load(Ordering::Relaxed), 2);
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

/// Registers a connection that appears to come from `peer` (the socket itself is loopback).
fn register_as(hub: &Hub, peer: &str) -> Result<Arc<Client>, Refusal> {
    let (near, _far) = sockets(false);
    let peer: SocketAddr = peer.parse().unwrap();
    hub.register(peer, near).map_err(|(why, _)| why)
}

#[tokio::test]
async fn per_ip_limit_counts_per_prefix_network() {
    let h = hub(Config {
        max_clients_per_ip: 2,
        per_ip_exempt: vec![],
        ..Config::default()
    });
    // One IPv6 /64 is one network: two addresses in it fill it, a third is refused.
    let a = register_as(&h, "[2001:db8:0:1::1]:1").unwrap();
    register_as(&h, "[2001:db8:0:1:ffff::2]:1").unwrap();
    assert_eq!(
        register_as(&h, "[2001:db8:0:1:abcd::3]:1").err(),
        Some(Refusal::PerIp)
    );
    register_as(&h, "[2001:db8:0:2::1]:1").expect("the next /64 is another network");
    // IPv4-mapped IPv6 counts as the IPv4 address it carries.
    register_as(&h, "192.0.2.1:1").unwrap();
    register_as(&h, "[::ffff:192.0.2.1]:1").unwrap();
    assert_eq!(register_as(&h, "192.0.2.1:2").err(), Some(Refusal::PerIp));
    assert_eq!(
        register_as(&h, "[::ffff:192.0.2.1]:2").err(),
        Some(Refusal::PerIp)
    );
    // Closing releases the slot of the network it was counted under.
    h.close(a.id, LeaveReason::Closed, None);
    register_as(&h, "[2001:db8:0:1::9]:1").expect("a slot was released");
}

#[tokio::test]
async fn a_reload_that_changes_the_prefix_keeps_the_counts_consistent() {
    let h = hub(Config {
        max_clients_per_ip: 1,
        per_ip_exempt: vec![],
        per_ip_prefix_v4: 24,
        ..Config::default()
    });
    let a = register_as(&h, "192.0.2.1:1").unwrap();
    assert_eq!(register_as(&h, "192.0.2.2:1").err(), Some(Refusal::PerIp));
    // Reload: per address now. a stays counted under 192.0.2.0/24, where it was admitted.
    h.set_config(Config {
        max_clients_per_ip: 1,
        per_ip_exempt: vec![],
        per_ip_prefix_v4: 32,
        ..Config::default()
    });
    let b = register_as(&h, "192.0.2.2:1").unwrap();
    // a's close must release a's /24 entry, not b's /32 one: b's address stays full.
    h.close(a.id, LeaveReason::Closed, None);
    assert_eq!(register_as(&h, "192.0.2.2:2").err(), Some(Refusal::PerIp));
    register_as(&h, "192.0.2.1:2").expect("a's address is free again");
    drop(b);
    // A client admitted while its network was exempt was never counted, so its close must not
    // decrement the count of a client admitted after the exemption was removed.
    let exempt = Config {
        max_clients_per_ip: 1,
        per_ip_exempt: vec!["198.51.100.0/24".parse().unwrap()],
        ..Config::default()
    };
    h.set_config(exempt);
    let x = register_as(&h, "198.51.100.7:1").unwrap();
    h.set_config(Config {
        max_clients_per_ip: 1,
        per_ip_exempt: vec![],
        ..Config::default()
    });
    register_as(&h, "198.51.100.7:2").unwrap();
    h.close(x.id, LeaveReason::Closed, None);
    assert_eq!(
        register_as(&h, "198.51.100.7:3").err(),
        Some(Refusal::PerIp),
        "the counted client still holds the address's one slot"
    );
}

#[tokio::test]
async fn connect_rate_refuses_a_network_over_its_burst_but_not_exempt_ones() {
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let h = hub(Config {
        connect_rate: Some(crate::config::Rate {
            burst: 2,
            per_sec: 0.01,
        }),
        per_ip_exempt: vec!["203.0.113.0/24".parse().unwrap()],
        ..Config::default()
    });
    // Same /64, different addresses: one network, one bucket.
    assert_eq!(h.check_connect_rate(ip("2001:db8::1")), Ok(()));
    assert_eq!(h.check_connect_rate(ip("2001:db8::2")), Ok(()));
    assert_eq!(
        h.check_connect_rate(ip("2001:db8::3")),
        Err(Refusal::ConnectRate { retry_secs: 100 })
    );
    assert_eq!(
        Refusal::ConnectRate { retry_secs: 100 }.to_string(),
        "too many connections from your network; try again in 100 s"
    );
    assert_eq!(h.counters.rejected.load(Ordering::Relaxed), 1);
    for _ in 0..10 {
        assert_eq!(h.check_connect_rate(ip("203.0.113.9")), Ok(()), "exempt");
    }
    // Turned off by a reload: everyone passes at once.
    h.set_config(Config {
        connect_rate: None,
        ..Config::default()
    });
    assert_eq!(h.check_connect_rate(ip("2001:db8::3")), Ok(()));
}

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
