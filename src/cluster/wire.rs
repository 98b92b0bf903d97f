//! What nodes say to one another through NATS, as plain data: subject and bucket names, the
//! headers of a room event, the values kept in the key-value buckets. No I/O here, so every
//! encoding is tested on its own and the link code only moves bytes.
//!
//! Names that come from users (rooms, nicknames) become subject tokens and keys as the hex of
//! their registry key (case and look-alikes folded): NATS gives `.`, `*`, `>` and spaces meaning
//! in subjects and takes only `[-/_=.a-zA-Z0-9]` in keys, and two spellings of one name must land
//! on one subject or key on every node.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Header: the node an event was published by.
pub(crate) const H_NODE: &str = "Gc-Node";
/// Header: that node's incarnation (a restarted node is another incarnation).
pub(crate) const H_INC: &str = "Gc-Inc";
/// Header: the publishing client's id on that node (0 for notices nobody said): it does not get
/// its own line back, as on a single node.
pub(crate) const H_CLIENT: &str = "Gc-Client";
/// Header: how many lines the payload holds.
pub(crate) const H_LINES: &str = "Gc-Lines";
/// Header: the room's name as spelt.
pub(crate) const H_ROOM: &str = "Gc-Room";
/// Header: present on a member's join (its seat is taken where this comes back).
pub(crate) const H_JOIN: &str = "Gc-Join";
/// Header: on a topic change, the new topic.
pub(crate) const H_TOPIC: &str = "Gc-Topic";
/// Header: on a leave, rename or move, the nickname that left the room.
pub(crate) const H_LEFT: &str = "Gc-Left";
/// Header: on a join, rename or move, the nickname that entered the room.
pub(crate) const H_JOINED: &str = "Gc-Joined";

/// What an event is, by the last token of its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Chat (and `/me`): kept as history.
    Chat,
    /// A notice (join, leave, rename, kick, announce).
    Note,
    /// A topic change: a notice that also sets the room's topic; the subject's last message is
    /// the topic now.
    Topic,
}

impl Kind {
    fn token(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Note => "note",
            Kind::Topic => "topic",
        }
    }

    fn from_token(t: &str) -> Option<Kind> {
        match t {
            "chat" => Some(Kind::Chat),
            "note" => Some(Kind::Note),
            "topic" => Some(Kind::Topic),
            _ => None,
        }
    }
}

/// Lower-case hex of `s`'s bytes.
pub(crate) fn hex(s: &str) -> String {
    let mut out = String::with_capacity(2 * s.len());
    for b in s.bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Header values are bytes NATS passes through, but a line break would end the header, so
/// text from users (room names, topics) travels hex-encoded.
pub(crate) fn header_safe(s: &str) -> String {
    hex(s)
}

/// The text a [`header_safe`] value holds; None if it is not one.
pub(crate) fn from_header(v: &str) -> Option<String> {
    if v.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..v.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(v.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The names one cluster uses, all under its prefix.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    pub(crate) fn new(prefix: &str) -> Names {
        Names {
            prefix: prefix.to_owned(),
        }
    }

    /// The stream holding every room's events.
    pub(crate) fn stream(&self) -> String {
        format!("{}_rooms", self.prefix)
    }

    /// The stream's subjects.
    pub(crate) fn stream_subjects(&self) -> String {
        format!("{}.room.>", self.prefix)
    }

    /// The subject of a room's events of one kind; `room_key` is the room's registry key.
    pub(crate) fn room_subject(&self, room_key: &str, kind: Kind) -> String {
        format!("{}.room.{}.{}", self.prefix, hex(room_key), kind.token())
    }

    /// The kind of event a subject carries, if it is one of this cluster's room subjects.
    pub(crate) fn kind_of(&self, subject: &str) -> Option<Kind> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".room.")?;
        let (_, kind) = rest.rsplit_once('.')?;
        Kind::from_token(kind)
    }

    /// The nickname claims bucket.
    pub(crate) fn nicks_bucket(&self) -> String {
        format!("{}_nicks", self.prefix)
    }

    /// The node heartbeats bucket.
    pub(crate) fn nodes_bucket(&self) -> String {
        format!("{}_nodes", self.prefix)
    }

    /// Where a node takes private messages and operator requests.
    pub(crate) fn node_inbox(&self, node: &str) -> String {
        format!("{}.node.{node}", self.prefix)
    }
}

/// A nickname claim's key: the hex of one of the nickname's registry keys.
pub(crate) fn nick_key(key: &str) -> String {
    hex(key)
}

/// The value of a nickname claim: who holds it, where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claim {
    pub(crate) node: String,
    pub(crate) inc: u64,
    /// The nickname as spelt.
    pub(crate) nick: String,
    /// The room its holder sits in (as spelt), for `/who` on other nodes.
    pub(crate) room: String,
}

/// A node's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Heartbeat {
    pub(crate) inc: u64,
    pub(crate) clients: usize,
    pub(crate) members: usize,
    pub(crate) started_ms: u64,
    pub(crate) at_ms: u64,
}

/// A request to a node's inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    /// Deliver a private line (already formatted) to the member called `to`.
    Msg { to: String, line: String },
    /// The operator kicks `target` (a nickname).
    Kick {
        target: String,
        reason: Option<String>,
    },
    /// The node's members, for `chatctl list --cluster`.
    List,
}

/// One member, as a node reports it for `chatctl list --cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Listed {
    pub(crate) id: u64,
    pub(crate) nick: Option<String>,
    pub(crate) room: Option<String>,
    pub(crate) peer: String,
    pub(crate) transport: String,
}

/// The reply to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub(crate) enum Reply {
    /// Done; `nick` as spelt there.
    Done { nick: String },
    /// No such member there.
    NotFound,
    /// The node's members.
    Members { members: Vec<Listed> },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_carry_hex_keys_and_kinds() {
        let n = Names::new("gc");
        let s = n.room_subject("#lobby", Kind::Chat);
        assert_eq!(s, "gc.room.236c6f626279.chat");
        assert_eq!(n.kind_of(&s), Some(Kind::Chat));
        assert_eq!(
            n.kind_of(&n.room_subject("#a.b*>", Kind::Topic)),
            Some(Kind::Topic)
        );
        assert!(!n.room_subject("#a.b*> c", Kind::Note)[8..].contains(['*', '>', ' ']));
        assert_eq!(n.kind_of("other.room.00.chat"), None);
        assert_eq!(n.kind_of("gc.room.00.bogus"), None);
        assert_eq!(n.stream(), "gc_rooms");
        assert_eq!(n.stream_subjects(), "gc.room.>");
    }

    #[test]
    fn header_text_round_trips() {
        for t in ["", "#lobby", "topic: ünïcode\r\nX: y"] {
            assert_eq!(from_header(&header_safe(t)).as_deref(), Some(t));
        }
        assert_eq!(from_header("zz"), None);
        assert_eq!(from_header("abc"), None);
    }

    #[test]
    fn keys_are_valid_kv_keys() {
        let k = nick_key("ælfrið");
        assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn requests_and_replies_round_trip() {
        for r in [
            Request::Msg {
                to: "bob".into(),
                line: "*alice* hi\n".into(),
            },
            Request::Kick {
                target: "bob".into(),
                reason: Some("spam".into()),
            },
            Request::List,
        ] {
            let j = serde_json::to_vec(&r).unwrap();
            assert_eq!(serde_json::from_slice::<Request>(&j).unwrap(), r);
        }
        let j = serde_json::to_vec(&Reply::NotFound).unwrap();
        assert_eq!(
            serde_json::from_slice::<Reply>(&j).unwrap(),
            Reply::NotFound
        );
    }
}
