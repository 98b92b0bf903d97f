//! What the read-only commands `list` (every connection) and `stats` (daemon-wide numbers)
//! report, built from the hub's snapshot and counters. `rooms` and `list --room` are in `rooms.rs`.

use std::time::SystemTime;

use super::AdminCtx;
use super::proto::{ClientEntry, StatsReply};
use crate::hub::Hub;

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
    }
}
