//! The hub in a cluster, with a stand-in for the link: what members say is queued for the broker
//! and reaches sockets only once applied back, in the order applied, never echoed to its sender;
//! with the link down a line is refused to its sender and nothing is queued.

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use super::*;
use crate::config::ClusterConfig;
use crate::hub::Room;
use crate::hub::relay::{Incoming, Membership, Relay, RelayTotals, Remote, Waiting};

#[derive(Debug, Default)]
struct Loop {
    down: AtomicBool,
    rung: Mutex<Vec<Arc<Room>>>,
    changes: Mutex<Vec<String>>,
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
    let mut alice = member(&hub, "alice", 1);
    assert_eq!(relay.echo(&hub), 1);
    let mut bob = member(&hub, "bob", 2);
    // A join is queued about its member: applied, the others see it and it does not.
    assert_eq!(relay.echo(&hub), 1);
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
    let mut alice = member(&hub, "alice", 1);
    relay.echo(&hub);
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
async fn who_and_the_welcome_list_members_on_other_nodes() {
    let (hub, _relay) = clustered();
    let alice = member(&hub, "alice", 1);
    let mut c = connect(&hub, 2);
    hub.join(c.client.id, "bob").unwrap();
    let got = c.read_until_contains("Type /help for commands.\r\n");
    assert!(
        got.contains("*** Welcome, bob! 3 online: alice, bob, zed\r\n"),
        "{got:?}"
    );
    let who = hub.who_lines(alice.id());
    assert_eq!(&who[..], b"*** 3 online: alice, bob, zed\r\n");
    alice.flush();
}
