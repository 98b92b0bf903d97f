//! The hub in a cluster, with a stand-in for the link: what members say is queued for the broker
//! and reaches sockets only once applied back, in the order applied, never echoed to its sender;
//! with the link down a line is refused to its sender and nothing is queued.

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use super::*;
use crate::config::ClusterConfig;
use crate::hub::Room;
use crate::hub::relay::{Incoming, Membership, Relay, RelayTotals, Remote, Roster, Said, Waiting};

#[derive(Debug, Default)]
struct Loop {
    down: AtomicBool,
    rung: Mutex<Vec<Arc<Room>>>,
    changes: Mutex<Vec<String>>,
    /// Who each notice echoed said left and joined.
    roster: Mutex<Vec<String>>,
}

impl Relay for Loop {
    fn up(&self) -> bool {
        !self.down.load(Ordering::SeqCst)
    }
    fn ring(&self, room: &Arc<Room>) {
        self.rung.lock().unwrap().push(room.clone());
    }
    fn membership(&self, change: Membership) {
        let text = match change {
            Membership::In { nick, room, .. } => format!("in {nick} {room}"),
            Membership::Released { keys } => format!("released {}", keys.len()),
        };
        self.changes.lock().unwrap().push(text);
    }
    fn remote_names(&self, _room_key: &str) -> Vec<Arc<str>> {
        vec![Arc::from("zed")]
    }
    fn remote_member(&self, _keys: &[Arc<str>]) -> Option<Remote> {
        None
    }
    fn send_private(&self, _node: &str, _nick: &str, _line: Bytes) {}
    fn claim(
        self: Arc<Self>,
        _owner: u64,
        _keys: Vec<Arc<str>>,
        _nick: Arc<str>,
        _room: Arc<str>,
    ) -> Waiting<Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn prepare_room(self: Arc<Self>, _name: String) -> Waiting<()> {
        Box::pin(async {})
    }
    fn totals(&self) -> RelayTotals {
        RelayTotals::default()
    }
}

impl Loop {
    /// Plays the broker: everything rung comes back, in order, as this node's own events.
    fn echo(&self, hub: &Arc<Hub>) -> usize {
        let rooms: Vec<_> = std::mem::take(&mut *self.rung.lock().unwrap());
        let mut n = 0;
        for room in rooms {
            for out in room.take_outgoing() {
                if out.moved != Roster::default() {
                    let name = |n: &Option<Arc<str>>| n.as_deref().unwrap_or("-").to_owned();
                    let (left, joined) = (name(&out.moved.left), name(&out.moved.joined));
                    self.roster.lock().unwrap().push(format!("{left} {joined}"));
                }
                let ev = Incoming {
                    said: out.said,
                    from: out.from,
                    bytes: out.bytes,
                    lines: out.lines,
                    at: SystemTime::now(),
                    topic: out.topic.map(|t| t.to_string()),
                };
                hub.apply(room.display_name(), ev);
                n += 1;
            }
        }
        n
    }
}

/// A member in a cluster: it takes its seat (and gets its welcome) when its join comes back.
fn arrive(hub: &Arc<Hub>, relay: &Loop, nick: &str, ip: u8) -> Conn {
    let mut c = connect(hub, ip);
    hub.join(c.client.id, nick).unwrap();
    assert!(
        hub.arrival(c.client.id).is_some(),
        "the session waits for the seat"
    );
    assert_eq!(relay.echo(hub), 1);
    c.read_until_contains("Type /help for commands.\r\n");
    c
}

fn clustered() -> (Arc<Hub>, Arc<Loop>) {
    let hub = Arc::new(Hub::new(Config {
        cluster: Some(ClusterConfig::new("n1".into())),
        ..Config::default()
    }));
    let relay = Arc::new(Loop::default());
    hub.set_relay(relay.clone());
    (hub, relay)
}

#[tokio::test]
async fn lines_reach_members_only_as_applied_and_never_echo() {
    let (hub, relay) = clustered();
    let mut alice = arrive(&hub, &relay, "alice", 1);
    let mut bob = arrive(&hub, &relay, "bob", 2);
    // A join is queued about its member: applied, the others see it and it does not.
    alice.read_until("*** bob joined\r\n");
    let room = hub.room_of(alice.id()).unwrap();
    hub.publish(&room, alice.id(), Bytes::from_static(b"<alice> hi\r\n"), 1)
        .unwrap();
    hub.announce(None, "marker").unwrap();
    // Nothing was appended here: the line waits for the broker.
    assert!(room.lock().outgoing.len() == 2);
    assert_eq!(relay.echo(&hub), 2);
    assert_eq!(
        bob.read_until("*** marker\r\n"),
        "<alice> hi\r\n*** marker\r\n"
    );
    // Alice's next line is the marker: her own line did not come back to her.
    assert_eq!(alice.read_until("*** marker\r\n"), "*** marker\r\n");
    assert!(
        relay
            .changes
            .lock()
            .unwrap()
            .contains(&"in bob #lobby".to_owned()),
        "claims follow the member"
    );
}

#[tokio::test]
async fn with_the_link_down_a_line_is_refused_to_its_sender() {
    let (hub, relay) = clustered();
    let mut alice = arrive(&hub, &relay, "alice", 1);
    relay.down.store(true, Ordering::SeqCst);
    let room = hub.room_of(alice.id()).unwrap();
    hub.publish(
        &room,
        alice.id(),
        Bytes::from_static(b"<alice> lost\r\n"),
        1,
    )
    .unwrap();
    alice.read_until("*** cluster link lost; your line was not sent\r\n");
    assert!(room.lock().outgoing.is_empty());
}

#[tokio::test]
async fn a_newcomer_sees_exactly_what_follows_its_join_in_the_order() {
    let (hub, relay) = clustered();
    let mut alice = arrive(&hub, &relay, "alice", 1);
    let mut c = connect(&hub, 2);
    hub.join(c.client.id, "bob").unwrap();
    // Said before bob's join reached the broker: before it in the order, so not for bob.
    let room = hub.room_of(alice.id()).unwrap();
    let early = Incoming {
        said: Said::Chat,
        from: crate::hub::log::NOBODY,
        bytes: Bytes::from_static(b"<zed> before you\r\n"),
        lines: 1,
        at: SystemTime::now(),
        topic: None,
    };
    hub.apply(room.display_name(), early);
    relay.echo(&hub);
    hub.announce(None, "after").unwrap();
    relay.echo(&hub);
    let got = c.read_until("*** after\r\n");
    // Only as history (stamped), never as a live line after the welcome.
    assert!(!got.contains("\n<zed> before you"), "{got:?}");
    assert!(
        got.contains("] <zed> before you\r\n*** End of history."),
        "{got:?}"
    );
    alice.read_until("<zed> before you\r\n*** bob joined\r\n*** after\r\n");
}

#[tokio::test]
async fn who_and_the_welcome_list_members_on_other_nodes() {
    let (hub, relay) = clustered();
    let alice = arrive(&hub, &relay, "alice", 1);
    let mut c = connect(&hub, 2);
    hub.join(c.client.id, "bob").unwrap();
    // Nothing until the join comes back: then the welcome, with everyone in the room.
    relay.echo(&hub);
    let got = c.read_until_contains("Type /help for commands.\r\n");
    assert!(
        got.contains("*** Welcome, bob! 3 online: alice, bob, zed\r\n"),
        "{got:?}"
    );
    let who = hub.who_lines(alice.id());
    assert_eq!(&who[..], b"*** 3 online: alice, bob, zed\r\n");
    alice.flush();
}

#[tokio::test]
async fn notices_of_coming_and_going_say_who_for_the_other_nodes() {
    let (hub, relay) = clustered();
    let mut alice = arrive(&hub, &relay, "alice", 1);
    let bob = arrive(&hub, &relay, "bob", 2);
    hub.rename(bob.id(), "bobby").unwrap();
    hub.close(bob.id(), LeaveReason::Closed, None);
    hub.announce(None, "marker").unwrap();
    relay.echo(&hub);
    alice.read_until("*** marker\r\n");
    // Each join, the rename (both names), the leave; the announcement says nobody.
    assert_eq!(
        *relay.roster.lock().unwrap(),
        ["- alice", "- bob", "bob bobby", "bobby -"]
    );
}
