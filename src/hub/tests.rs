//! Hub unit tests: plain `#[test]`s, because every hub method is synchronous. Outboxes are read
//! directly (no sockets), so each test sees exactly what a client's writer would send.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{Hub, NickRefused, Refusal};
use crate::client::{Client, Close, LeaveReason, Taken};
use crate::config::Config;

fn hub(config: Config) -> Hub {
    Hub::new(Arc::new(config))
}

fn peer(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 5000))
}

/// Registers and joins a client, discarding its greeting/welcome.
fn member(hub: &Hub, nick: &str, ip: u8) -> Arc<Client> {
    let c = hub.register(peer(ip)).unwrap();
    hub.join(c.id, nick).unwrap();
    drain(&c);
    c
}

/// Everything queued for `c`, as text, marked as written.
fn drain(c: &Client) -> String {
    match c.outbox.take(Vec::new()) {
        Taken::Data(bufs) => {
            let text: String = bufs
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect();
            c.outbox.sent(text.len());
            text
        }
        Taken::Empty => String::new(),
        Taken::Done(close) => format!("<closed: {}>", close.reason()),
    }
}

fn line(text: &str) -> Bytes {
    Bytes::from(format!("{text}\r\n"))
}

#[test]
fn publish_reaches_everyone_but_the_sender_in_one_order() {
    let h = hub(Config::default());
    let (a, b, c) = (member(&h, "a", 1), member(&h, "b", 2), member(&h, "c", 3));
    drain(&a);
    drain(&b);
    h.publish(a.id, line("<a> one"), 1);
    h.publish(b.id, line("<b> two"), 1);
    h.publish(a.id, line("<a> three"), 1);
    assert_eq!(drain(&a), "<b> two\r\n");
    assert_eq!(drain(&b), "<a> one\r\n<a> three\r\n");
    assert_eq!(drain(&c), "<a> one\r\n<b> two\r\n<a> three\r\n");
    assert_eq!(h.counters.lines_relayed.load(Ordering::Relaxed), 3);
}

#[test]
fn joins_welcome_and_announce_within_the_presence_limit_only() {
    let h = hub(Config {
        presence_max_members: 2,
        ..Config::default()
    });
    let a = member(&h, "alice", 1);
    let b = h.register(peer(2)).unwrap();
    h.join(b.id, "Bob").unwrap();
    assert_eq!(
        drain(&b),
        "*** Welcome, Bob! 2 online: alice, Bob\r\n*** Type /help for commands.\r\n"
    );
    assert_eq!(drain(&a), "*** Bob joined\r\n");
    // A third member makes the room bigger than the limit: count only, nobody told.
    let c = h.register(peer(3)).unwrap();
    h.join(c.id, "carol").unwrap();
    assert!(drain(&c).starts_with("*** Welcome, carol! 3 online (type /who to list them)\r\n"));
    assert_eq!(drain(&a), "");
    assert_eq!(&h.who_lines()[..], b"*** 3 online: alice, Bob, carol\r\n");
}

#[test]
fn nicknames_are_unique_without_regard_to_case_and_validated() {
    let h = hub(Config::default());
    member(&h, "Alice", 1);
    let c = h.register(peer(2)).unwrap();
    assert_eq!(h.join(c.id, "aLICE"), Err(NickRefused::Taken));
    assert!(matches!(
        h.join(c.id, "server"),
        Err(NickRefused::Invalid(_))
    ));
    assert!(matches!(
        h.join(c.id, "two words"),
        Err(NickRefused::Invalid(_))
    ));
    assert_eq!(h.join(c.id, "小明").as_deref(), Ok("小明"));
}

#[test]
fn renames_tell_everyone_and_free_the_old_name() {
    let h = hub(Config::default());
    let a = member(&h, "alice", 1);
    let b = member(&h, "bob", 2);
    drain(&a);
    assert_eq!(h.rename(b.id, "ALICE"), Err(NickRefused::Taken));
    assert_eq!(h.rename(a.id, "alice"), Err(NickRefused::Unchanged));
    h.rename(a.id, "Alice").unwrap(); // a change of case only
    h.rename(a.id, "alicia").unwrap();
    assert_eq!(
        drain(&b),
        "*** alice is now known as Alice\r\n*** Alice is now known as alicia\r\n"
    );
    assert_eq!(
        drain(&a),
        "*** alice is now known as Alice\r\n*** Alice is now known as alicia\r\n"
    );
    let c = h.register(peer(3)).unwrap();
    assert!(h.join(c.id, "alice").is_ok(), "the old name is free again");
}

#[test]
fn a_full_queue_cuts_off_that_client_alone_and_announces_it_once() {
    let h = hub(Config {
        max_line_bytes: 64,
        max_queue_bytes: 256,
        ..Config::default()
    });
    let (a, b, slow) = (
        member(&h, "a", 1),
        member(&h, "b", 2),
        member(&h, "slow", 3),
    );
    drain(&a);
    drain(&b);
    let big = Bytes::from(vec![b'x'; 100]);
    h.publish(a.id, big.clone(), 1);
    h.publish(a.id, big.clone(), 1);
    drain(&b); // b keeps reading; slow does not
    h.publish(a.id, big.clone(), 1);
    assert!(h.client(slow.id).is_none(), "slow was removed");
    assert_eq!(
        drain(&slow),
        "<closed: too slow: send queue full>",
        "abort: its queue is dropped"
    );
    let left = "*** slow left (too slow: send queue full)\r\n";
    assert_eq!(drain(&b), format!("{}{left}", "x".repeat(100)));
    assert_eq!(drain(&a), left);
    assert_eq!(
        h.leave(slow.id, LeaveReason::Closed),
        None,
        "gone already: nothing happens"
    );
    assert_eq!(drain(&a), "");
    assert_eq!(h.counters.slow_drops.load(Ordering::Relaxed), 1);
}

#[test]
fn congestion_is_counted_while_a_queue_is_over_half_full() {
    let h = hub(Config {
        max_line_bytes: 64,
        max_queue_bytes: 256,
        ..Config::default()
    });
    let (a, b) = (member(&h, "a", 1), member(&h, "b", 2));
    assert!(!h.publish(a.id, Bytes::from(vec![b'x'; 100]), 1));
    assert!(
        h.publish(a.id, Bytes::from(vec![b'x'; 100]), 1),
        "b is past half its queue"
    );
    assert_eq!(h.congested_count(), 1);
    // b's writer drains it; its session reports the relief.
    let Taken::Data(bufs) = b.outbox.take(Vec::new()) else {
        panic!("queued output")
    };
    let n: usize = bufs.iter().map(Bytes::len).sum();
    assert_eq!(b.outbox.sent(n), crate::client::Drained::Relieved);
    h.relieved();
    assert!(!h.congested());
    // Leaving while congested also clears it.
    h.publish(a.id, Bytes::from(vec![b'x'; 200]), 1);
    assert!(h.congested());
    h.leave(b.id, LeaveReason::Closed);
    assert!(!h.congested());
}

#[test]
fn admission_limits_and_exemptions() {
    let h = hub(Config {
        max_clients: 2,
        max_clients_per_ip: 1,
        ..Config::default()
    });
    let first = h.register(peer(1)).unwrap();
    assert_eq!(h.register(peer(1)).unwrap_err(), Refusal::PerIp);
    let lo = SocketAddr::from(([127, 0, 0, 1], 1));
    h.register(lo).unwrap();
    assert_eq!(h.register(peer(2)).unwrap_err(), Refusal::Full);
    h.leave(first.id, LeaveReason::Closed);
    assert!(
        h.register(peer(1)).is_ok(),
        "a slot and the address's count were released"
    );
    assert_eq!(h.counters.rejected.load(Ordering::Relaxed), 2);
}

#[test]
fn kicks_resolve_ids_and_nicknames() {
    let h = hub(Config::default());
    let (a, b) = (member(&h, "alice", 1), member(&h, "bob", 2));
    drain(&a);
    assert_eq!(h.kick("BOB", Some("spam")).unwrap().0, b.id);
    assert_eq!(drain(&b), "*** you were kicked: spam\r\n");
    assert_eq!(drain(&b), "<closed: kicked: spam>");
    assert_eq!(drain(&a), "*** bob left (kicked: spam)\r\n");
    assert!(h.kick("bob", None).is_none());
    let pending = h.register(peer(3)).unwrap();
    assert_eq!(
        h.kick(&pending.id.to_string(), None),
        Some((pending.id, None))
    );
}

#[test]
fn shutdown_tells_every_connection_and_refuses_newcomers() {
    let h = hub(Config::default());
    let a = member(&h, "alice", 1);
    let pending = h.register(peer(2)).unwrap();
    drain(&pending);
    h.shutdown();
    for c in [&a, &pending] {
        assert_eq!(drain(c), "*** server shutting down\r\n");
        assert_eq!(drain(c), "<closed: server shutting down>");
    }
    assert_eq!(h.register(peer(3)).unwrap_err(), Refusal::ShuttingDown);
    // Everyone leaves at once: no leave notices are sent.
    h.leave(pending.id, LeaveReason::ShuttingDown);
    assert!(matches!(
        a.outbox.take(Vec::new()),
        Taken::Done(Close::Flush(_))
    ));
}
