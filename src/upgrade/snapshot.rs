//! The versioned snapshot an old process hands its successor: the room and every connection's
//! state, as JSON (byte strings in hex), beside the descriptors passed over the link.
//!
//! **Compatibility rule.** A release reads its own [`VERSION`] and the previous release's (listed
//! in [`READS`]), and always writes its own. A snapshot of any other version is refused before
//! anything else is read, and the upgrade is rolled back: the old process keeps serving. Fields
//! are never renamed or given new meanings within a version; a change of shape is a new version.
//!
//! Version 2 adds the chat rooms: [`Room::rooms`] (name, topic, kind, history) and each client's
//! [`ClientState::room`]. Both default to empty, so version 1 (written before rooms existed)
//! still parses, and restores everyone into the new process's default room.
//!
//! Within version 2, fields were added for TLS (`tls_listeners`, the `tls_handshake_failures`
//! total). Both are optional and written only when not zero, so a daemon without TLS writes
//! exactly what the first version 2 release wrote (and that release reads it: a downgrade works);
//! a snapshot with them is refused by that release (it denies unknown fields), and the upgrade
//! rolls back. TLS sessions themselves are never in a snapshot: their clients are told to
//! reconnect before the hand-over (see `upgrade::upgrader::part_relayed`).
//!
//! Also within version 2, later: [`Snapshot::http_listeners`], read as absent (`None`) from a
//! writer before it; and [`Snapshot::https_listeners`], optional and written only when not zero,
//! like `tls_listeners` (so without HTTPS a downgrade works, and with it the older release refuses
//! the snapshot and the upgrade rolls back).
//!
//! Also within version 2, later: [`ClientState::websocket`], a WebSocket client's relay, written
//! only for WebSocket clients (over plain HTTP; those over HTTPS never move). Without any, the
//! snapshot is what the previous release wrote; with one, that release refuses the snapshot (it
//! denies unknown fields), and the upgrade rolls back with every client still connected. No new
//! version: both releases read everything the other writes when there is nothing new to say, and
//! neither misreads what it cannot take.
//!
//! Descriptors travel in a fixed order the snapshot describes: the chat listeners (`listeners`
//! of them), then the TLS listeners (`tls_listeners`), then the admin socket if `admin` is set,
//! then the HTTP listeners (`http_listeners` of them), then the HTTPS listeners
//! (`https_listeners`), then each client's in `clients` order: its socket (for a WebSocket
//! client, the session's end of its socket pair), and for a WebSocket client then the relay's
//! end of the pair and the WebSocket's TCP connection.

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::session::InputState;
pub(crate) use crate::ws::WsState;

/// The version this release writes.
pub const VERSION: u32 = 2;

/// The versions this release reads: its own and the previous release's.
pub const READS: &[u32] = &[1, 2];

/// Largest snapshot accepted (its JSON), so a broken predecessor cannot exhaust our memory.
pub const MAX_BYTES: usize = 4 << 30;

/// Everything handed over besides the descriptors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// [`VERSION`] of the writer.
    pub version: u32,
    /// The old process.
    pub from: Origin,
    /// When the old process stopped relaying (CLOCK_MONOTONIC, nanoseconds: one clock for every
    /// process on the machine), to report the pause.
    pub paused_at_ns: u64,
    /// Chat listeners among the descriptors.
    pub listeners: usize,
    /// TLS chat listeners among the descriptors, after the chat listeners.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tls_listeners: usize,
    /// Whether the admin socket follows them.
    pub admin: bool,
    /// HTTP listeners after the admin socket. None from a writer that had no HTTP listeners at
    /// all (before `http_listen` existed): the new process binds its own `http_listen` then.
    /// `Some(0)` means HTTP was off, and stays off.
    #[serde(default)]
    pub http_listeners: Option<usize>,
    /// HTTPS listeners after the HTTP listeners (0 from a writer before `https_listen`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub https_listeners: usize,
    /// Whether the old process created the admin socket's file (else systemd did): the new one
    /// then owns it, and removes it when it stops.
    pub admin_owned: bool,
    /// The room.
    pub room: Room,
    /// Where the cluster link was (a node in a cluster only): its incarnation and the last
    /// stream sequence applied, so the new process neither repeats nor skips an event and keeps
    /// its nickname claims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::Resume>,
}

/// Who wrote a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    pub pid: u32,
    /// Its package version.
    pub version: String,
}

/// The daemon-wide state and every connection (named before chat rooms existed: those are
/// [`ChatRoom`]s, in `rooms`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Room {
    /// When the service (not the process) started, Unix milliseconds.
    pub service_started_at_ms: u64,
    /// Upgrades before this one.
    pub upgrades: u64,
    /// The next client id: ids are never reused, across upgrades too.
    pub next_id: u64,
    pub peak: usize,
    pub counters: Totals,
    pub clients: Vec<ClientState>,
    /// The connection-rate table (`connect_rate`), so an upgrade gives no network a fresh burst.
    #[serde(default)]
    pub connect_rate: Vec<NetworkRate>,
    /// Every chat room (version 2; none in version 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<ChatRoom>,
}

impl Room {
    /// Leaves out the chat rooms, as a version 1 writer did (for tests of reading one).
    pub(crate) fn without_chat_rooms(mut self) -> Room {
        self.rooms.clear();
        self.clients.iter_mut().for_each(|c| c.room = None);
        self
    }
}

/// One chat room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRoom {
    /// `#name`, in its display form.
    pub name: String,
    /// The topic now; empty if none.
    pub topic: String,
    /// The topic the old process's configuration gave it (what a user's `/topic` overrides).
    pub config_topic: String,
    /// Predefined by the old process's configuration, or made by a user.
    pub kind: RoomKind,
    /// Its history, oldest first.
    pub history: Vec<HistoryLine>,
    /// Chat lines published in it so far (`groupchatd_room_lines_total`): a counter carried like
    /// the daemon-wide totals, so an upgrade does not reset it. 0 from a writer before it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lines: u64,
}

/// How a chat room came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomKind {
    /// From the old process's configuration.
    Predefined,
    /// Made by a user's `/join`.
    User,
}

/// One line of a room's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryLine {
    /// When it was said, Unix seconds.
    pub at: i64,
    /// The line as it went out (wrapped rows included), CR LF at the end.
    #[serde(with = "crate::hex")]
    pub line: Vec<u8>,
}

/// One network's connection-rate bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkRate {
    /// `a.b.c.d/n` or `x::/n`.
    pub network: String,
    pub tokens: f64,
    /// Milliseconds since it was last filled.
    pub since_ms: u64,
    /// Refused since its last admission (the log says so once per episode).
    pub limited: bool,
}

/// The totals `chatctl stats` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    pub connections: u64,
    pub rejected: u64,
    pub lines_relayed: u64,
    pub bytes_relayed: u64,
    pub kicks: u64,
    pub slow_drops: u64,
    pub throttled: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tls_handshake_failures: u64,
}

/// For the optional counts: not written while zero.
fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

/// One connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientState {
    pub id: u64,
    pub peer: SocketAddr,
    /// Unix milliseconds.
    pub connected_at_ms: u64,
    /// How long it had been connected when the snapshot was taken (monotonic).
    pub connected_for_ms: u64,
    /// The nickname, once joined.
    pub nick: Option<String>,
    /// The network its per-network slot is counted under (`a.b.c.d/n`), if counted.
    pub counted_as: Option<String>,
    pub lines_in: u64,
    pub bytes_in: u64,
    pub lines_out: u64,
    pub bytes_out: u64,
    /// When it last sent a line, in milliseconds after it connected.
    pub last_active_ms: u64,
    /// The unread part of its input: a half-typed line, input held back by flood control.
    pub input: InputState,
    /// Output owed to it and not yet written, in order.
    #[serde(with = "crate::hex")]
    pub unsent: Vec<u8>,
    /// The name of the chat room it sits in, once joined (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// A WebSocket client over plain HTTP: its relay's state (its descriptors follow its
    /// socket). None, and not written, for a TCP client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WsState>,
}

/// Why a snapshot was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    /// Written by a release whose format this one does not read.
    #[error("snapshot version {0} is not one this release reads ({READS:?})")]
    Version(u32),
    /// Not a snapshot, or not a well-formed one.
    #[error("malformed snapshot: {0}")]
    Malformed(String),
    /// Well-formed, but its parts contradict each other.
    #[error("inconsistent snapshot: {0}")]
    Inconsistent(String),
}

impl Snapshot {
    /// The bytes to send.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a snapshot always serializes")
    }

    /// Reads and checks a snapshot; `fds` is how many descriptors came with it.
    pub fn decode(bytes: &[u8], fds: usize) -> Result<Snapshot, SnapshotError> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let v: Version =
            serde_json::from_slice(bytes).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        if !READS.contains(&v.version) {
            return Err(SnapshotError::Version(v.version));
        }
        let snap: Snapshot =
            serde_json::from_slice(bytes).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        snap.check(fds)?;
        Ok(snap)
    }

    fn check(&self, fds: usize) -> Result<(), SnapshotError> {
        let bad = |why: String| Err(SnapshotError::Inconsistent(why));
        let expected = self.listeners
            + self.tls_listeners
            + usize::from(self.admin)
            + self.http_listeners.unwrap_or(0)
            + self.https_listeners
            + self.room.clients.len()
            + 2 * self
                .room
                .clients
                .iter()
                .filter(|c| c.websocket.is_some())
                .count();
        if fds != expected {
            return bad(format!("{fds} descriptors for {expected} sockets"));
        }
        if self.listeners == 0 {
            return bad("no chat listener".into());
        }
        if self.version == 1 && !self.room.rooms.is_empty() {
            return bad("rooms in a version 1 snapshot".into());
        }
        let mut keys = HashSet::new();
        for r in &self.room.rooms {
            // Stored names are in their display form, and the registry holds one room per key.
            match crate::protocol::validate_room(&r.name) {
                Ok(valid) if valid.as_str() == r.name => {
                    if !keys.insert(valid.key().to_owned()) {
                        return bad(format!("room {} is there twice", r.name));
                    }
                }
                _ => return bad(format!("invalid room name '{}'", r.name)),
            }
            if r.history.iter().any(|l| !l.line.ends_with(b"\r\n")) {
                return bad(format!("history of {} holds a partial line", r.name));
            }
        }
        let rooms: HashSet<&str> = self.room.rooms.iter().map(|r| r.name.as_str()).collect();
        let mut ids = HashSet::new();
        let mut nicks = HashSet::new();
        for c in &self.room.clients {
            if c.id == 0 || c.id >= self.room.next_id || !ids.insert(c.id) {
                return bad(format!("client id {} repeated or out of range", c.id));
            }
            if let Some(nick) = &c.nick {
                // Stored nicknames are in their display form already, and never share a key.
                match crate::protocol::validate_nick(nick) {
                    Ok(valid) if valid.as_str() == nick => {
                        for key in valid.keys() {
                            if !nicks.insert(key.to_owned()) {
                                return bad(format!("nickname of client {} is taken twice", c.id));
                            }
                        }
                    }
                    _ => return bad(format!("client {} has an invalid nickname", c.id)),
                }
            }
            if let Some(net) = &c.counted_as
                && net.parse::<crate::config::IpNet>().is_err()
            {
                return bad(format!("client {} is counted under '{net}'", c.id));
            }
            match (&c.nick, &c.room) {
                (None, Some(_)) => return bad(format!("client {} sits in a room unjoined", c.id)),
                (Some(_), Some(room)) if !rooms.contains(room.as_str()) => {
                    return bad(format!("client {} sits in {room}, which is missing", c.id));
                }
                (Some(_), None) if self.version >= 2 => {
                    return bad(format!("client {} has joined but sits in no room", c.id));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Snapshot {
        Snapshot {
            version: VERSION,
            from: Origin {
                pid: 42,
                version: "0.1.0".into(),
            },
            paused_at_ns: 1,
            listeners: 1,
            tls_listeners: 0,
            admin: true,
            http_listeners: Some(0),
            https_listeners: 0,
            admin_owned: true,
            room: Room {
                service_started_at_ms: 1_700_000_000_000,
                upgrades: 3,
                next_id: 10,
                peak: 2,
                counters: Totals::default(),
                clients: vec![],
                connect_rate: vec![],
                rooms: vec![],
            },
            cluster: Some(crate::cluster::Resume {
                inc: 7,
                last_seq: 1234,
            }),
        }
    }

    fn client(id: u64, nick: Option<&str>, room: Option<&str>) -> ClientState {
        ClientState {
            id,
            peer: "192.0.2.1:4000".parse().unwrap(),
            connected_at_ms: 1_700_000_000_000,
            connected_for_ms: 5,
            nick: nick.map(Into::into),
            counted_as: Some("192.0.2.1/32".into()),
            lines_in: 1,
            bytes_in: 2,
            lines_out: 3,
            bytes_out: 4,
            last_active_ms: 5,
            input: InputState::default(),
            unsent: b"owed\r\n".to_vec(),
            room: room.map(Into::into),
            websocket: None,
        }
    }

    fn chat_room(name: &str, kind: RoomKind, said: &[&str]) -> ChatRoom {
        ChatRoom {
            lines: said.len() as u64,
            name: name.into(),
            topic: format!("about {name}"),
            config_topic: String::new(),
            kind,
            history: said
                .iter()
                .enumerate()
                .map(|(i, l)| HistoryLine {
                    at: 1_700_000_000 + i as i64,
                    line: format!("{l}\r\n").into_bytes(),
                })
                .collect(),
        }
    }

    /// Two rooms and three clients: alice in #x, bob in #lobby, one still choosing a nickname.
    fn with_rooms() -> Snapshot {
        let mut s = sample();
        s.room.rooms = vec![
            chat_room("#lobby", RoomKind::Predefined, &["<bob> hi"]),
            chat_room("#x", RoomKind::User, &["<alice> one", "<alice> two"]),
        ];
        s.room.clients = vec![
            client(1, Some("alice"), Some("#x")),
            client(2, Some("bob"), Some("#lobby")),
            client(3, None, None),
        ];
        s
    }

    /// Descriptors for [`with_rooms`]: a listener, the admin socket, three clients.
    const FDS: usize = 5;

    #[test]
    fn round_trip_and_version_rule() {
        let s = sample();
        assert_eq!(Snapshot::decode(&s.encode(), 2).unwrap(), s);
        let mut future = s.clone();
        future.version = 999;
        assert_eq!(
            Snapshot::decode(&future.encode(), 2),
            Err(SnapshotError::Version(999))
        );
        // A version this release does not know is refused before the rest is even parsed.
        assert_eq!(
            Snapshot::decode(br#"{"version":3,"whatever":true}"#, 0),
            Err(SnapshotError::Version(3))
        );
        assert!(matches!(
            Snapshot::decode(b"not json", 0),
            Err(SnapshotError::Malformed(_))
        ));
        // Written before the connection-rate table was carried: it is simply empty.
        let mut json: serde_json::Value = serde_json::from_slice(&s.encode()).unwrap();
        json["room"].as_object_mut().unwrap().remove("connect_rate");
        let older = Snapshot::decode(json.to_string().as_bytes(), 2).unwrap();
        assert!(older.room.connect_rate.is_empty());
        // Written before HTTP listeners were carried: None (the new process binds its own), and
        // no descriptors for them.
        let mut json: serde_json::Value = serde_json::from_slice(&s.encode()).unwrap();
        json.as_object_mut().unwrap().remove("http_listeners");
        let older = Snapshot::decode(json.to_string().as_bytes(), 2).unwrap();
        assert_eq!(older.http_listeners, None);
        // Each HTTP listener is one more descriptor.
        let mut http = s.clone();
        http.http_listeners = Some(2);
        assert_eq!(Snapshot::decode(&http.encode(), 4).unwrap(), http);
        assert!(matches!(
            Snapshot::decode(&http.encode(), 2),
            Err(SnapshotError::Inconsistent(_))
        ));
        assert!(matches!(
            Snapshot::decode(&s.encode(), 3),
            Err(SnapshotError::Inconsistent(_))
        ));
    }

    #[test]
    fn tls_fields_are_written_only_when_used() {
        // Without TLS the snapshot is what the first version 2 release wrote, and reads back.
        let s = sample();
        let text = String::from_utf8(s.encode()).unwrap();
        assert!(!text.contains("tls_"), "{text}");
        assert_eq!(Snapshot::decode(text.as_bytes(), 2).unwrap(), s);
        assert!(!text.contains("https_listeners"), "{text}");
        // With TLS listeners, their descriptors come after the chat listeners and are counted.
        let mut tls = sample();
        tls.tls_listeners = 2;
        tls.https_listeners = 1;
        tls.room.counters.tls_handshake_failures = 7;
        let bytes = tls.encode();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["tls_listeners"], 2);
        assert_eq!(json["https_listeners"], 1);
        assert_eq!(json["room"]["counters"]["tls_handshake_failures"], 7);
        assert_eq!(Snapshot::decode(&bytes, 5).unwrap(), tls);
        assert!(matches!(
            Snapshot::decode(&bytes, 4),
            Err(SnapshotError::Inconsistent(_))
        ));
    }

    #[test]
    fn a_websocket_client_brings_its_relay_and_two_more_descriptors() {
        let mut s = with_rooms();
        // Without one the snapshot says nothing of WebSockets at all.
        assert!(!String::from_utf8(s.encode()).unwrap().contains("websocket"));
        s.room.clients[1].websocket = Some(WsState {
            inbound: vec![0x81, 0x85],
            to_client: b"\x81\x02hi".to_vec(),
            to_session: b"half\n".to_vec(),
            row: b"<bob> par".to_vec(),
        });
        let bytes = s.encode();
        assert_eq!(Snapshot::decode(&bytes, FDS + 2).unwrap(), s);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["room"]["clients"][1]["websocket"]["inbound"], "8185");
        assert_eq!(
            json["room"]["clients"][1]["websocket"]["to_session"],
            "68616c660a"
        );
        for fds in [FDS, FDS + 1, FDS + 3] {
            assert!(
                matches!(
                    Snapshot::decode(&bytes, fds),
                    Err(SnapshotError::Inconsistent(_))
                ),
                "{fds} descriptors"
            );
        }
    }

    #[test]
    fn rooms_round_trip_with_history_in_hex() {
        let s = with_rooms();
        let bytes = s.encode();
        assert_eq!(Snapshot::decode(&bytes, FDS).unwrap(), s);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let x = &json["room"]["rooms"][1];
        assert_eq!(x["kind"], "user");
        assert_eq!(x["history"][0]["at"], 1_700_000_000);
        // "<alice> one\r\n"
        assert_eq!(x["history"][0]["line"], "3c616c6963653e206f6e650d0a");
        assert_eq!(json["room"]["clients"][0]["room"], "#x");
        // Nothing is written for a client in no room.
        assert!(json["room"]["clients"][2].get("room").is_none());
    }

    #[test]
    fn version_1_without_rooms_still_decodes() {
        // As the previous release wrote it: no `rooms`, and no `room` for any client.
        let mut json: serde_json::Value = serde_json::from_slice(&with_rooms().encode()).unwrap();
        json["version"] = 1.into();
        json["room"].as_object_mut().unwrap().remove("rooms");
        for c in json["room"]["clients"].as_array_mut().unwrap() {
            c.as_object_mut().unwrap().remove("room");
        }
        let v1 = Snapshot::decode(json.to_string().as_bytes(), FDS).unwrap();
        assert_eq!(v1.version, 1);
        assert!(v1.room.rooms.is_empty());
        assert!(v1.room.clients.iter().all(|c| c.room.is_none()));
        assert_eq!(v1.room.clients[0].nick.as_deref(), Some("alice"));
        // And what this release writes for a snapshot without rooms has exactly that shape.
        let mut bare = sample();
        bare.version = 1;
        bare.room.clients = vec![client(1, Some("alice"), None)];
        let text = String::from_utf8(bare.encode()).unwrap();
        assert!(
            !text.contains("\"rooms\"") && !text.contains("\"room\":\""),
            "{text}"
        );
        // A version 1 snapshot with rooms was not written by a version 1 release.
        let mut odd = with_rooms();
        odd.version = 1;
        assert!(matches!(
            Snapshot::decode(&odd.encode(), FDS),
            Err(SnapshotError::Inconsistent(_))
        ));
    }

    #[test]
    fn inconsistent_rooms_are_refused() {
        type Spoil = fn(&mut Room);
        let cases: [(Spoil, &str); 8] = [
            (|r| r.rooms[1].name = "x".into(), "invalid room name 'x'"),
            (|r| r.rooms[1].name = "#a b".into(), "invalid room name"),
            (
                |r| r.rooms[1].name = "#LOBBY".into(),
                "#LOBBY is there twice",
            ),
            (|r| r.rooms[0].history[0].line.truncate(3), "partial line"),
            (
                |r| r.clients[0].room = Some("#y".into()),
                "in #y, which is missing",
            ),
            // Written as the room's own name, so another spelling is not it.
            (
                |r| r.clients[0].room = Some("#X".into()),
                "in #X, which is missing",
            ),
            (
                |r| r.clients[1].room = None,
                "client 2 has joined but sits in no room",
            ),
            (
                |r| r.clients[2].room = Some("#x".into()),
                "client 3 sits in a room unjoined",
            ),
        ];
        for (spoil, why) in cases {
            let mut s = with_rooms();
            spoil(&mut s.room);
            match Snapshot::decode(&s.encode(), FDS) {
                Err(SnapshotError::Inconsistent(got)) => assert!(got.contains(why), "{got}"),
                other => panic!("{why}: {other:?}"),
            }
        }
    }
}
