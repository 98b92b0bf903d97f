//! `chatctl`'s logic: send one request, print the reply for people (aligned tables, readable units)
//! or for scripts (`--json`), and map the outcome to an exit status.

use std::time::Duration;

use nix::unistd::{User, geteuid, getuid};
use unicode_width::UnicodeWidthStr;

use crate::admin::client::{self, ClientError};
use crate::admin::path;
use crate::admin::proto::{
    AnnounceReply, ClientEntry, Command, ErrorCode, KickReply, ListReply, MoveReply, NodesReply,
    ReloadReply, Response, RoomEntry, RoomsReply, StatsReply, TopicReply, UpgradeReply,
};
use crate::cli::{CtlArgs, CtlCommand};

/// Success.
pub const EXIT_OK: u8 = 0;
/// The daemon refused, or the target does not exist.
pub const EXIT_REFUSED: u8 = 1;
/// The daemon is not reachable (sysexits EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Permission denied, or the socket is served by an unexpected uid (sysexits EX_NOPERM).
pub const EXIT_NOPERM: u8 = 77;
/// The system user the packaged unit runs the daemon as.
const DAEMON_USER: &str = "groupchatd";

/// Runs one chatctl invocation and returns its exit status.
pub fn run(args: &CtlArgs) -> u8 {
    let cmd = match &args.command {
        CtlCommand::List {
            room: _,
            cluster: true,
        } => Command::ListCluster,
        CtlCommand::List { room, .. } => Command::List { room: room.clone() },
        CtlCommand::Nodes => Command::Nodes,
        CtlCommand::Kick { target, reason } => Command::Kick {
            target: target.clone(),
            reason: reason.clone(),
        },
        CtlCommand::Announce { room, text } => Command::Announce {
            text: text.join(" "),
            room: room.clone(),
        },
        CtlCommand::Rooms => Command::Rooms,
        CtlCommand::Topic { room, text } => Command::Topic {
            room: room.clone(),
            text: text.join(" "),
        },
        CtlCommand::Move { target, room } => Command::Move {
            target: target.clone(),
            room: room.clone(),
        },
        CtlCommand::Stats => Command::Stats,
        CtlCommand::Reload => Command::Reload,
        CtlCommand::Upgrade {
            binary,
            ready_timeout,
        } => Command::Upgrade {
            // The daemon's working directory is not ours: resolve a relative path here.
            binary: binary.as_ref().map(|p| {
                std::path::absolute(p)
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string()
            }),
            timeout_secs: Some(*ready_timeout),
        },
    };
    let socket = path::resolve_for_client(args.socket.as_deref());
    let mut timeout = Duration::try_from_secs_f64(args.timeout).unwrap_or(Duration::from_secs(5));
    if let CtlCommand::Upgrade { ready_timeout, .. } = &args.command {
        // The daemon answers once the new process is ready or the upgrade is rolled back.
        let upgrade = Duration::try_from_secs_f64(*ready_timeout).unwrap_or_default();
        timeout = timeout.max(upgrade + Duration::from_secs(5));
    }
    let reply = match client::request(&socket, &cmd, timeout, &expected_uids(&args.expect_uid)) {
        Ok(reply) => reply,
        Err(e) => {
            eprintln!("chatctl: {e}");
            return match e {
                ClientError::PermissionDenied { .. } | ClientError::UntrustedPeer { .. } => {
                    EXIT_NOPERM
                }
                ClientError::Unreachable { .. } => EXIT_UNAVAILABLE,
                ClientError::Protocol(_) => EXIT_REFUSED,
            };
        }
    };
    if args.json {
        print!("{}", reply.encode());
        return status(&reply);
    }
    let code = status(&reply);
    match render(&cmd, reply) {
        Ok(text) => print!("{text}"),
        Err(message) => eprintln!("chatctl: {message}"),
    }
    code
}

/// Who may be listening on the admin socket: root, us (real and effective uid), the packaged
/// daemon's user `groupchatd` if it exists, and whatever `--expect-uid` adds.
fn expected_uids(extra: &[u32]) -> Vec<u32> {
    let mut uids = vec![0, getuid().as_raw(), geteuid().as_raw()];
    if let Ok(Some(user)) = User::from_name(DAEMON_USER) {
        uids.push(user.uid.as_raw());
    }
    uids.extend_from_slice(extra);
    uids.sort_unstable();
    uids.dedup();
    uids
}

fn status(reply: &Response) -> u8 {
    match &reply.error {
        None if reply.ok => EXIT_OK,
        Some(e) if e.code == ErrorCode::PermissionDenied => EXIT_NOPERM,
        _ => EXIT_REFUSED,
    }
}

/// The human rendering of a reply, or the error message.
fn render(cmd: &Command, reply: Response) -> Result<String, String> {
    let fail = |e: crate::admin::proto::ErrorBody| e.message;
    Ok(match cmd {
        Command::Nodes => nodes_table(&reply.into_result::<NodesReply>().map_err(fail)?.nodes),
        Command::List { .. } | Command::ListCluster => {
            let r: ListReply = reply.into_result().map_err(fail)?;
            match (r.clients.is_empty(), r.room) {
                (true, Some(room)) => format!("nobody in {room}\n"),
                (true, None) => "no clients connected\n".to_owned(),
                (false, _) => list_table(&r.clients),
            }
        }
        Command::Kick { .. } => {
            let r: KickReply = reply.into_result().map_err(fail)?;
            match r.nick {
                Some(nick) => format!("kicked {nick} (id {})\n", r.id),
                None => format!(
                    "kicked connection {} (it had not chosen a nickname)\n",
                    r.id
                ),
            }
        }
        Command::Announce { .. } => {
            let r: AnnounceReply = reply.into_result().map_err(fail)?;
            let room = r.room.map(|room| format!(" in {room}")).unwrap_or_default();
            format!(
                "announced to {} client{}{room}\n",
                r.reached,
                if r.reached == 1 { "" } else { "s" }
            )
        }
        Command::Rooms => rooms_table(&reply.into_result::<RoomsReply>().map_err(fail)?.rooms),
        Command::Topic { .. } => {
            let r: TopicReply = reply.into_result().map_err(fail)?;
            if r.topic.is_empty() {
                format!("topic of {} cleared\n", r.room)
            } else {
                format!("topic of {} set: {}\n", r.room, r.topic)
            }
        }
        Command::Move { .. } => {
            let r: MoveReply = reply.into_result().map_err(fail)?;
            format!(
                "moved {} (id {}) from {} to {}\n",
                r.nick, r.id, r.from, r.room
            )
        }
        Command::Stats => stats_table(&reply.into_result::<StatsReply>().map_err(fail)?),
        Command::Upgrade { .. } => {
            let r: UpgradeReply = reply.into_result().map_err(fail)?;
            format!(
                "upgraded: pid {} (version {}), {} connection{} handed over\n",
                r.pid,
                r.version,
                r.clients,
                if r.clients == 1 { "" } else { "s" }
            )
        }
        Command::Reload => {
            let r: ReloadReply = reply.into_result().map_err(fail)?;
            let from = r.config.unwrap_or_else(|| "built-in defaults".into());
            let mut out = format!("configuration reloaded from {from}\n");
            if !r.ignored_until_restart.is_empty() {
                out += &format!(
                    "changed but ignored until restart: {}\n",
                    r.ignored_until_restart.join(", ")
                );
            }
            out
        }
    })
}

fn nodes_table(nodes: &[crate::cluster::NodeInfo]) -> String {
    let mut rows = vec![[
        "NODE".to_owned(),
        "CLIENTS".to_owned(),
        "LAST-HEARTBEAT".to_owned(),
        "LINK".to_owned(),
    ]];
    for n in nodes {
        let name = if n.this {
            format!("{} (this node)", n.node)
        } else {
            n.node.clone()
        };
        let beat = if n.this {
            "-".to_owned()
        } else {
            format!("{:.1}s ago", n.heartbeat_age_ms as f64 / 1000.0)
        };
        rows.push([name, n.clients.to_string(), beat, n.link.clone()]);
    }
    let mut widths = [0; 4];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn list_table(clients: &[ClientEntry]) -> String {
    if clients.iter().any(|c| c.node.is_some()) {
        // The cluster-wide list: other nodes report who and where, not their counters.
        let rows: Vec<Vec<String>> = clients
            .iter()
            .map(|c| {
                vec![
                    c.node.clone().unwrap_or_else(|| "-".into()),
                    c.id.to_string(),
                    c.nick.clone().unwrap_or_else(|| "-".into()),
                    c.room.clone().unwrap_or_else(|| "-".into()),
                    c.peer.clone(),
                ]
            })
            .collect();
        return table(&["NODE", "ID", "NICK", "ROOM", "PEER"], &rows);
    }
    let header = [
        "ID",
        "NICK",
        "ROOM",
        "PEER",
        "CONNECTED",
        "FOR",
        "IDLE",
        "IN",
        "OUT",
        "QUEUED",
    ];
    let rows: Vec<Vec<String>> = clients
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.nick.clone().unwrap_or_else(|| "-".into()),
                c.room.clone().unwrap_or_else(|| "-".into()),
                c.peer.clone(),
                c.connected_at.replace('T', " "),
                duration(c.connected_secs),
                duration(c.idle_secs),
                format!("{}, {}", lines(c.lines_in), bytes(c.bytes_in)),
                format!("{}, {}", lines(c.lines_out), bytes(c.bytes_out)),
                bytes(c.queued_bytes),
            ]
        })
        .collect();
    table(&header, &rows)
}

fn rooms_table(rooms: &[RoomEntry]) -> String {
    let rows: Vec<Vec<String>> = rooms
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.members.to_string(),
                if r.topic.is_empty() {
                    "-".to_owned()
                } else {
                    r.topic.clone()
                },
                lines(r.history),
            ]
        })
        .collect();
    table(&["ROOM", "MEMBERS", "TOPIC", "HISTORY"], &rows)
}

fn stats_table(s: &StatsReply) -> String {
    let rows = [
        ("version", s.version.clone()),
        (
            "uptime",
            format!("{} (since {})", duration(s.uptime_secs), s.started_at),
        ),
        (
            "process",
            format!(
                "pid {} since {}, {} upgrade{} since the service started",
                s.pid,
                s.process_started_at,
                s.upgrades,
                if s.upgrades == 1 { "" } else { "s" }
            ),
        ),
        ("listening on", s.listen.join(", ")),
        (
            "clients",
            format!(
                "{} connected, {} joined, peak {}",
                s.clients, s.members, s.peak_clients
            ),
        ),
        ("rooms", s.rooms.to_string()),
        (
            "connections",
            format!(
                "{} accepted, {} rejected",
                s.connections_total, s.rejected_connections
            ),
        ),
        (
            "lines relayed",
            format!("{} ({})", s.lines_relayed, bytes(s.bytes_relayed)),
        ),
        ("kicks", s.kicks.to_string()),
        (
            "slow consumers",
            format!("{} disconnected", s.slow_consumer_drops),
        ),
        ("throttled", format!("{} senders", s.throttled_senders)),
    ];
    let tls = [
        ("TLS listening on", s.tls_listen.join(", ")),
        (
            "TLS handshakes",
            format!("{} failed", s.tls_handshake_failures),
        ),
    ];
    // Shown only where TLS is on (an older daemon reports neither).
    let tls = if s.tls_listen.is_empty() {
        &tls[..0]
    } else {
        &tls[..]
    };
    let cluster: Vec<(&str, String)> = s
        .cluster
        .iter()
        .flat_map(|c| {
            [
                (
                    "cluster link",
                    format!("{} (node {}, {} nodes known)", c.link, c.node, c.nodes),
                ),
                (
                    "broker rtt",
                    c.rtt_ms
                        .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2} ms")),
                ),
                (
                    "cluster events",
                    format!(
                        "{} published, {} acknowledged, {} applied, {} errors",
                        c.published, c.acked, c.applied, c.errors
                    ),
                ),
            ]
        })
        .collect();
    let rows: Vec<(&str, String)> = rows
        .into_iter()
        .chain(tls.iter().cloned())
        .chain(cluster)
        .collect();
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// Left-aligned columns separated by two spaces, measured in terminal columns (a CJK nickname is
/// two columns per character).
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.width());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                out += cell;
            } else {
                out += &format!("{cell}{}  ", " ".repeat(w - cell.width()));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out += &line(&mut row.iter().map(String::as_str));
    }
    out
}

fn lines(n: u64) -> String {
    format!("{n} line{}", if n == 1 { "" } else { "s" })
}

/// `42s`, `3m12s`, `2h05m`, `3d04h`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// `512 B`, `1.2 KiB`, `3.4 MiB`, `1.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (secs, want) in [
            (0.4, "0s"),
            (42.0, "42s"),
            (192.0, "3m12s"),
            (3600.0, "1h00m"),
            (7500.0, "2h05m"),
            (273_600.0, "3d04h"),
        ] {
            assert_eq!(duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn byte_units() {
        for (n, want) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1229, "1.2 KiB"),
            (3_565_158, "3.4 MiB"),
            (1 << 30, "1.0 GiB"),
        ] {
            assert_eq!(bytes(n), want, "{n}");
        }
    }

    #[test]
    fn tables_align_by_display_width() {
        let rows = vec![
            vec!["1".to_owned(), "小明".to_owned(), "x".to_owned()],
            vec!["10".to_owned(), "alice".to_owned(), "y".to_owned()],
        ];
        let t = table(&["ID", "NICK", "Z"], &rows);
        assert_eq!(t, "ID  NICK   Z\n1   小明   x\n10  alice  y\n");
        // 小明 is 4 columns wide, so it is padded with 1 space (+2 separator) to alice's 5.
    }

    #[test]
    fn room_replies_for_people() {
        let rooms = RoomsReply {
            rooms: vec![
                RoomEntry {
                    name: "#lobby".into(),
                    members: 12,
                    topic: String::new(),
                    history: 1,
                    predefined: true,
                },
                RoomEntry {
                    name: "#日本".into(),
                    members: 3,
                    topic: "ラーメン".into(),
                    history: 20,
                    predefined: false,
                },
            ],
        };
        let text = render(&Command::Rooms, Response::ok(&rooms)).unwrap();
        assert_eq!(
            text,
            "ROOM    MEMBERS  TOPIC     HISTORY\n\
             #lobby  12       -         1 line\n\
             #日本   3        ラーメン  20 lines\n"
        );

        let list = |room: Option<&str>| Command::List {
            room: room.map(str::to_owned),
        };
        let empty = ListReply {
            clients: Vec::new(),
            room: Some("#Rust".into()),
        };
        assert_eq!(
            render(&list(Some("rust")), Response::ok(&empty)).unwrap(),
            "nobody in #Rust\n"
        );

        let topic = |text: &str| TopicReply {
            room: "#rust".into(),
            topic: text.into(),
        };
        let cmd = Command::Topic {
            room: "rust".into(),
            text: String::new(),
        };
        assert_eq!(
            render(&cmd, Response::ok(&topic("tips"))).unwrap(),
            "topic of #rust set: tips\n"
        );
        assert_eq!(
            render(&cmd, Response::ok(&topic(""))).unwrap(),
            "topic of #rust cleared\n"
        );

        let announce = Command::Announce {
            text: "x".into(),
            room: Some("rust".into()),
        };
        let reached = |room: Option<&str>| AnnounceReply {
            reached: 1,
            room: room.map(str::to_owned),
        };
        assert_eq!(
            render(&announce, Response::ok(&reached(Some("#rust")))).unwrap(),
            "announced to 1 client in #rust\n"
        );
        assert_eq!(
            render(&announce, Response::ok(&reached(None))).unwrap(),
            "announced to 1 client\n"
        );

        let refused = Response::error(ErrorCode::NotFound, "no room #nope");
        assert_eq!(
            render(&list(Some("nope")), refused),
            Err("no room #nope".into())
        );
    }

    #[test]
    fn exit_status_follows_the_reply() {
        assert_eq!(
            status(&Response::ok(&AnnounceReply {
                reached: 1,
                room: None
            })),
            EXIT_OK
        );
        assert_eq!(
            status(&Response::error(ErrorCode::NotFound, "x")),
            EXIT_REFUSED
        );
        assert_eq!(
            status(&Response::error(ErrorCode::ReloadFailed, "x")),
            EXIT_REFUSED
        );
        assert_eq!(
            status(&Response::error(ErrorCode::PermissionDenied, "x")),
            EXIT_NOPERM
        );
    }
}
