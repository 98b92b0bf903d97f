//! The versioned snapshot an old process hands its successor: the room and every connection's
//! state, as JSON (byte strings in hex), beside the descriptors passed over the link.
//!
//! **Compatibility rule.** A release reads its own [`VERSION`] and the previous release's (listed
//! in [`READS`]), and always writes its own. A snapshot of any other version is refused before
//! anything else is read, and the upgrade is rolled back: the old process keeps serving. Fields
//! are never renamed or given new meanings within a version; a change of shape is a new version.
//!
//! Descriptors travel in a fixed order the snapshot describes: the chat listeners (`listeners`
//! of them), then the admin socket if `admin` is set, then one per client in `clients` order.

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::session::InputState;

/// The version this release writes.
pub const VERSION: u32 = 1;

/// The versions this release reads: its own and the previous release's.
pub const READS: &[u32] = &[1];

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
    /// Whether the admin socket follows them.
    pub admin: bool,
    /// Whether the old process created the admin socket's file (else systemd did): the new one
    /// then owns it, and removes it when it stops.
    pub admin_owned: bool,
    /// The room.
    pub room: Room,
}

/// Who wrote a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    pub pid: u32,
    /// Its package version.
    pub version: String,
}

/// The room: daemon-wide state and every connection.
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
        let expected = self.listeners + usize::from(self.admin) + self.room.clients.len();
        if fds != expected {
            return bad(format!("{fds} descriptors for {expected} sockets"));
        }
        if self.listeners == 0 {
            return bad("no chat listener".into());
        }
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
            admin: true,
            admin_owned: true,
            room: Room {
                service_started_at_ms: 1_700_000_000_000,
                upgrades: 3,
                next_id: 10,
                peak: 2,
                counters: Totals::default(),
                clients: vec![],
                connect_rate: vec![],
            },
        }
    }

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
            Snapshot::decode(br#"{"version":2,"whatever":true}"#, 0),
            Err(SnapshotError::Version(2))
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
        assert!(matches!(
            Snapshot::decode(&s.encode(), 3),
            Err(SnapshotError::Inconsistent(_))
        ));
    }
}
