//! What the read-only commands `list` (every connection) and `stats` (daemon-wide numbers)
//! report, built from the hub's snapshot and counters. `rooms` and `list --room` are in `rooms.rs`.

use std::time::SystemTime;

use super::AdminCtx;
use super::proto::{ClientEntry, StatsReply};
use crate::hub::Hub;

use super::proto::ClusterStats;
use crate::cluster::Cluster;

/// `2026-11-22T00:05:55Z`.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Every connection, by id.
pub(super) fn list(hub: &Hub) -> Vec<ClientEntry> {
    use std::sync::atomic::Ordering::Relaxed;
    hub.list()
        .into_iter()
        .map(|info| {
            let c = &info.client;
            ClientEntry {
                id: c.id,
                nick: info.nick.map(|n| n.to_string()),
                room: info.room.map(|r| r.to_string()),
                peer: c.peer.to_string(),
                connected_at: rfc3339(c.connected_at),
                connected_secs: c.connected.elapsed().as_secs_f64(),
                idle_secs: c.idle_for().as_secs_f64(),
                lines_in: c.stats.lines_in.load(Relaxed),
                bytes_in: c.stats.bytes_in.load(Relaxed),
                lines_out: c.stats.lines_out.load(Relaxed),
                bytes_out: c.stats.bytes_out.load(Relaxed),
                queued_bytes: info.unsent,
                node: None,
            }
        })
        .collect()
}

/// The daemon-wide numbers.
pub(super) fn stats(ctx: &AdminCtx) -> StatsReply {
    use std::sync::atomic::Ordering::Relaxed;
    let hub = &ctx.hub;
    let (clients, members, peak) = hub.counts();
    let n = &hub.counters;
    let process_started_at = SystemTime::now()
        .checked_sub(hub.started.elapsed())
        .unwrap_or(hub.started_at);
    StatsReply {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: rfc3339(hub.started_at),
        uptime_secs: SystemTime::now()
            .duration_since(hub.started_at)
            .unwrap_or_default()
            .as_secs_f64(),
        pid: std::process::id(),
        process_started_at: rfc3339(process_started_at),
        upgrades: n.upgrades.load(Relaxed),
        listen: ctx.listen.iter().map(ToString::to_string).collect(),
        tls_listen: ctx.tls_listen.iter().map(ToString::to_string).collect(),
        clients: clients as u64,
        members: members as u64,
        peak_clients: peak as u64,
        connections_total: n.connections.load(Relaxed),
        lines_relayed: n.lines_relayed.load(Relaxed),
        bytes_relayed: n.bytes_relayed.load(Relaxed),
        kicks: n.kicks.load(Relaxed),
        slow_consumer_drops: n.slow_drops.load(Relaxed),
        throttled_senders: n.throttled.load(Relaxed),
        rejected_connections: n.rejected.load(Relaxed),
        congested_clients: hub.congested_count() as u64,
        rooms: hub.rooms().len() as u64,
        tls_handshake_failures: n.tls_handshake_failures.load(Relaxed),
        cluster: ctx.cluster.as_ref().map(|c| cluster_stats(c)),
    }
}

fn cluster_stats(c: &Cluster) -> ClusterStats {
    use std::sync::atomic::Ordering::Relaxed;
    let n = &c.counters;
    let rtt = n.rtt_us.load(Relaxed);
    ClusterStats {
        node: c.node().to_owned(),
        link: if c.is_up() { "up" } else { "down" }.to_owned(),
        rtt_ms: (rtt > 0).then(|| rtt as f64 / 1000.0),
        published: n.published.load(Relaxed),
        acked: n.acked.load(Relaxed),
        errors: n.errors.load(Relaxed),
        applied: n.applied.load(Relaxed),
        nodes: c.nodes().len() as u64,
    }
}

/// Every member on every node: this node's clients, then each other node's, with their node.
pub(super) async fn list_cluster(hub: &Hub, cluster: &Cluster) -> Vec<ClientEntry> {
    let mut out: Vec<ClientEntry> = list(hub)
        .into_iter()
        .map(|mut e| {
            e.node = Some(cluster.node().to_owned());
            e
        })
        .collect();
    for (node, m) in cluster.list_remote().await {
        out.push(ClientEntry {
            id: m.id,
            nick: m.nick,
            room: m.room,
            peer: m.peer,
            connected_at: String::new(),
            connected_secs: 0.0,
            idle_secs: 0.0,
            lines_in: 0,
            bytes_in: 0,
            lines_out: 0,
            bytes_out: 0,
            queued_bytes: 0,
            node: Some(node),
        });
    }
    out
}
