//! The `result` of each admin command, by command. Fields added after the first release carry
//! `#[serde(default)]`, so a newer `chatctl` reads an older daemon's replies and an older one
//! ignores what it does not know.

use serde::{Deserialize, Serialize};

/// One client in a `list` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientEntry {
    /// Connection id (what `kick` accepts besides the nickname).
    pub id: u64,
    /// Nickname, or null while the client is still choosing one.
    pub nick: Option<String>,
    /// The room it is in (`#lobby`), or null while it is still choosing a nickname.
    #[serde(default)]
    pub room: Option<String>,
    /// Remote address.
    pub peer: String,
    /// Connection time, RFC 3339 UTC.
    pub connected_at: String,
    /// Seconds since connecting.
    pub connected_secs: f64,
    /// Seconds since the client last sent a line.
    pub idle_secs: f64,
    /// Lines received from the client.
    pub lines_in: u64,
    /// Bytes received from the client.
    pub bytes_in: u64,
    /// Lines queued for the client.
    pub lines_out: u64,
    /// Bytes written to the client.
    pub bytes_out: u64,
    /// Bytes waiting to be written to the client.
    pub queued_bytes: u64,
    /// The cluster node it is connected to (`list_cluster` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// `list` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListReply {
    /// Every connection, by id (only the members of `room` when the request named one).
    pub clients: Vec<ClientEntry>,
    /// The room the list was limited to, as it is spelt (`#Rust` for a request saying `rust`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

/// `kick` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KickReply {
    /// Who was kicked.
    pub id: u64,
    /// Their nickname, if they had joined.
    pub nick: Option<String>,
}

/// `announce` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceReply {
    /// Joined clients the announcement was queued for.
    pub reached: u64,
    /// The one room it went to, as it is spelt; absent when it went to every room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

/// `stats` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReply {
    /// Daemon version.
    pub version: String,
    /// When the service started, RFC 3339 UTC: the first process of a line of upgrades.
    pub started_at: String,
    /// Seconds since the service started.
    pub uptime_secs: f64,
    /// This process.
    #[serde(default)]
    pub pid: u32,
    /// When this process started serving, RFC 3339 UTC.
    #[serde(default)]
    pub process_started_at: String,
    /// Upgrades since the service started.
    #[serde(default)]
    pub upgrades: u64,
    /// Chat listen addresses.
    pub listen: Vec<String>,
    /// TLS chat listen addresses; empty when TLS is off.
    #[serde(default)]
    pub tls_listen: Vec<String>,
    /// Connections now (joined or not).
    pub clients: u64,
    /// Joined members now.
    pub members: u64,
    /// Most connections at once since start.
    pub peak_clients: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Chat lines relayed (each once, however many recipients).
    pub lines_relayed: u64,
    /// Bytes of relayed chat.
    pub bytes_relayed: u64,
    /// Operator kicks.
    pub kicks: u64,
    /// Clients disconnected as too slow.
    pub slow_consumer_drops: u64,
    /// Flood-control episodes (senders slowed down).
    pub throttled_senders: u64,
    /// Connections refused (full, per-IP, shutting down).
    pub rejected_connections: u64,
    /// Clients whose send queue is more than half full right now (senders are being paced).
    #[serde(default)]
    pub congested_clients: u64,
    /// Rooms now (the configuration's, and those users made that still have members).
    #[serde(default)]
    pub rooms: u64,
    /// TLS handshakes that failed or were not done in time.
    #[serde(default)]
    pub tls_handshake_failures: u64,
    /// The cluster link, when the daemon is in a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStats>,
}

/// The cluster link in `stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStats {
    /// This node's name.
    pub node: String,
    /// `up` or `down`.
    pub link: String,
    /// The last broker round trip, in milliseconds (null before the first).
    pub rtt_ms: Option<f64>,
    /// Events published to the stream.
    pub published: u64,
    /// Of those, acknowledged.
    pub acked: u64,
    /// Publishes, acknowledgements and key-value operations that failed.
    pub errors: u64,
    /// Events applied from the stream.
    pub applied: u64,
    /// Nodes known, this one included.
    pub nodes: u64,
}

/// `nodes` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodesReply {
    /// This node first, then the others by name.
    pub nodes: Vec<crate::cluster::NodeInfo>,
}

/// `upgrade` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeReply {
    /// The new process, now serving.
    pub pid: u32,
    /// Its version.
    pub version: String,
    /// Connections handed over.
    pub clients: u64,
}

/// `reload` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReply {
    /// The file that was read, or null for built-in defaults.
    pub config: Option<String>,
    /// Keys that changed in the file but only take effect on restart.
    pub ignored_until_restart: Vec<String>,
}

/// One room in a `rooms` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomEntry {
    /// `#name`, as it is spelt.
    pub name: String,
    /// Members in it now.
    pub members: u64,
    /// Its topic; empty if it has none.
    pub topic: String,
    /// Lines of history it keeps now (replayed to whoever enters).
    pub history: u64,
    /// True if the configuration defines it (it stays when empty); false for one a user made,
    /// which goes when its last member leaves.
    pub predefined: bool,
}

/// `rooms` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomsReply {
    /// Every room, sorted by name (case-insensitively).
    pub rooms: Vec<RoomEntry>,
}

/// `topic` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicReply {
    /// The room, as it is spelt.
    pub room: String,
    /// The topic now, as sanitised; empty if it was cleared.
    pub topic: String,
}

/// `move` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveReply {
    /// Who was moved.
    pub id: u64,
    /// Its nickname.
    pub nick: String,
    /// The room it was in.
    pub from: String,
    /// The room it is in now, as it is spelt (made for it if it did not exist).
    pub room: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::proto::{ErrorCode, Response};

    #[test]
    fn replies_round_trip() {
        let stats = StatsReply {
            version: "0.1.0".into(),
            started_at: "2026-11-22T00:00:00Z".into(),
            uptime_secs: 12.5,
            pid: 4242,
            process_started_at: "2026-11-22T00:00:10Z".into(),
            upgrades: 1,
            listen: vec!["127.0.0.1:7000".into()],
            tls_listen: vec!["127.0.0.1:7443".into()],
            clients: 3,
            members: 2,
            peak_clients: 4,
            connections_total: 9,
            lines_relayed: 100,
            bytes_relayed: 4000,
            kicks: 1,
            slow_consumer_drops: 0,
            throttled_senders: 2,
            rejected_connections: 0,
            congested_clients: 0,
            rooms: 3,
            tls_handshake_failures: 4,
            cluster: Some(ClusterStats {
                node: "a".into(),
                link: "up".into(),
                rtt_ms: Some(0.4),
                published: 5,
                acked: 5,
                errors: 0,
                applied: 7,
                nodes: 3,
            }),
        };
        let line = Response::ok(&stats).encode();
        assert!(line.ends_with('\n'));
        let back: StatsReply = Response::decode(&line).unwrap().into_result().unwrap();
        assert_eq!(back, stats);

        let list = ListReply {
            clients: vec![ClientEntry {
                id: 1,
                nick: None,
                room: None,
                peer: "[::1]:5000".into(),
                connected_at: "2026-11-22T00:00:00Z".into(),
                connected_secs: 1.0,
                idle_secs: 0.5,
                lines_in: 1,
                bytes_in: 2,
                lines_out: 3,
                bytes_out: 4,
                queued_bytes: 5,
                node: Some("b".into()),
            }],
            room: None,
        };
        let back: ListReply = Response::decode(&Response::ok(&list).encode())
            .unwrap()
            .into_result()
            .unwrap();
        assert_eq!(back, list);

        let err = Response::error(ErrorCode::NotFound, "no client 'bob'").encode();
        assert_eq!(
            err,
            "{\"version\":1,\"ok\":false,\"error\":{\"code\":\"not_found\",\"message\":\"no client 'bob'\"}}\n"
        );
        let e = Response::decode(&err)
            .unwrap()
            .into_result::<KickReply>()
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);

        let rooms = RoomsReply {
            rooms: vec![RoomEntry {
                name: "#lobby".into(),
                members: 2,
                topic: "welcome".into(),
                history: 10,
                predefined: true,
            }],
        };
        let back: RoomsReply = Response::decode(&Response::ok(&rooms).encode())
            .unwrap()
            .into_result()
            .unwrap();
        assert_eq!(back, rooms);
    }

    #[test]
    fn replies_of_a_daemon_without_rooms_still_read() {
        // What a daemon from before rooms answers: no `room` per client, no `rooms` count.
        let list = r#"{"version":1,"ok":true,"result":{"clients":[{"id":1,"nick":"alice","peer":"127.0.0.1:1","connected_at":"2026-11-22T00:00:00Z","connected_secs":1.0,"idle_secs":1.0,"lines_in":1,"bytes_in":6,"lines_out":2,"bytes_out":80,"queued_bytes":0}]}}"#;
        let list: ListReply = Response::decode(list).unwrap().into_result().unwrap();
        assert_eq!(list.clients[0].room, None);
        assert_eq!(list.room, None);
        let announce = r#"{"version":1,"ok":true,"result":{"reached":2}}"#;
        let announce: AnnounceReply = Response::decode(announce).unwrap().into_result().unwrap();
        assert_eq!(
            announce,
            AnnounceReply {
                reached: 2,
                room: None
            }
        );
        let stats = r#"{"version":1,"ok":true,"result":{"version":"0.1.0","started_at":"x","uptime_secs":1.0,"listen":[],"clients":0,"members":0,"peak_clients":0,"connections_total":0,"lines_relayed":0,"bytes_relayed":0,"kicks":0,"slow_consumer_drops":0,"throttled_senders":0,"rejected_connections":0}}"#;
        let stats: StatsReply = Response::decode(stats).unwrap().into_result().unwrap();
        assert_eq!(stats.rooms, 0);
    }
}
