//! Which nodes are alive. Each node writes a heartbeat to the nodes bucket every third of
//! `presence_ttl` (measuring the broker's round trip on the way) and follows everyone's through a
//! watch, timing them by its own clock. A node not heard from for `presence_ttl`, or heard from
//! as a new incarnation (it restarted), is lost: its members are announced as left
//! (`*** bob left (node lost)`) in their rooms, through the stream so everyone sees it at the
//! same place in the order. Every surviving node publishes the same announcement with the same
//! message id, and JetStream's duplicate window keeps exactly one.
//!
//! What this node has seen of the others is also what `chatctl nodes` shows ([`NodeInfo`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::kv::Operation;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use super::link::Conn;
use super::wire::{Heartbeat, Kind};
use super::{Cluster, publish, unix_ms};
use crate::protocol::format::wrapped_notice;
use crate::protocol::validate_room;

/// How often lost nodes are looked for.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Another node, as its heartbeats show it.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) inc: u64,
    pub(super) clients: usize,
    pub(super) at: Instant,
    /// Announced as lost (no heartbeat for `presence_ttl`).
    pub(super) lost: bool,
}

/// One node for `chatctl nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its name.
    pub node: String,
    /// Its connections, as of its last heartbeat.
    pub clients: usize,
    /// Milliseconds since its last heartbeat arrived here.
    pub heartbeat_age_ms: u64,
    /// `up`, or `lost` for a node that stopped beating (for this node: its own link).
    pub link: String,
    /// This node.
    #[serde(rename = "self")]
    pub this: bool,
}

impl Cluster {
    /// Its own heartbeat came back through the watch: the watch (and link) work.
    pub(crate) fn seen_own_beat(&self) {
        *self.own_beat.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// True if this node's own heartbeats come back through its watch (within `presence_ttl`).
    pub(crate) fn sees_own_beats(&self) -> bool {
        self.is_up()
            && self
                .own_beat
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|t| t.elapsed() <= self.cfg.presence_ttl * 2 / 3)
    }

    /// While this node could not see heartbeats, nobody's silence counts.
    pub(crate) fn forgive_silence(&self) {
        // Everyone gets the whole limit again once this node can see, and as long again: the
        // others' links come back at their own pace after an outage they all shared.
        let floor = Instant::now() + self.cfg.presence_ttl;
        for seen in self
            .nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values_mut()
            .filter(|s| !s.lost)
        {
            seen.at = seen.at.max(floor);
        }
    }

    /// Every node this one has heard of, itself first.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let now = Instant::now();
        let clients = self.hub().map_or(0, |h| h.counts().0);
        let mut out = vec![NodeInfo {
            node: self.cfg.node_name.clone(),
            clients,
            heartbeat_age_ms: 0,
            link: if self.is_up() { "up" } else { "down" }.to_owned(),
            this: true,
        }];
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let mut others: Vec<NodeInfo> = nodes
            .iter()
            .filter(|(n, _)| **n != self.cfg.node_name)
            .map(|(n, s)| NodeInfo {
                node: n.clone(),
                clients: s.clients,
                heartbeat_age_ms: now.saturating_duration_since(s.at).as_millis() as u64,
                link: if s.lost { "lost" } else { "up" }.to_owned(),
                this: false,
            })
            .collect();
        others.sort_by(|a, b| a.node.cmp(&b.node));
        out.extend(others);
        out
    }

    /// True if `node`'s incarnation `inc` was declared lost: what it says or claims is no
    /// longer listed (its members were announced as gone).
    pub(super) fn is_lost(&self, node: &str, inc: u64) -> bool {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .is_some_and(|s| s.lost && s.inc == inc)
    }
}

pub(super) async fn run(cluster: Arc<Cluster>, conn: Conn) {
    let every = (cluster.cfg.presence_ttl / 3).max(Duration::from_millis(500));
    let mut beat = tokio::time::interval(every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = beat.tick() => heartbeat(&cluster, &conn).await,
            _ = check.tick() => find_lost(&cluster, &conn).await,
        }
    }
}

async fn heartbeat(cluster: &Cluster, conn: &Conn) {
    let Some(hub) = cluster.hub() else { return };
    let (clients, members, _) = hub.counts();
    let hb = Heartbeat {
        inc: cluster.inc,
        clients,
        members,
        started_ms: unix_ms(cluster.started),
        at_ms: unix_ms(SystemTime::now()),
    };
    let value = Bytes::from(serde_json::to_vec(&hb).unwrap_or_default());
    let t = Instant::now();
    match conn.nodes.put(&cluster.cfg.node_name, value).await {
        Ok(_) => {
            let rtt = t.elapsed().as_micros() as u64;
            cluster.counters.rtt_us.store(rtt.max(1), Ordering::Relaxed);
        }
        Err(e) => {
            cluster.counters.errors.fetch_add(1, Ordering::Relaxed);
            debug!(event = "cluster_heartbeat", error = %e, "heartbeat failed");
        }
    }
}

/// Follows every node's heartbeats.
pub(super) async fn watch(cluster: Arc<Cluster>, conn: Conn) {
    // This node's own heartbeats come through the same watch every third of the limit: when they
    // stop, the watch has gone quiet (the server holding it died), not every other node, so it is
    // started again, and nobody is declared lost meanwhile (see `find_lost`).
    let quiet = (cluster.cfg.presence_ttl / 2).max(Duration::from_secs(1));
    // Runs for the life of the process: a watch that ends or goes quiet is started again.
    loop {
        if let Ok(mut entries) = conn.nodes.watch_all().await {
            while let Ok(Some(Ok(entry))) = tokio::time::timeout(quiet, entries.next()).await {
                if entry.operation != Operation::Put {
                    continue;
                }
                if entry.key == cluster.cfg.node_name {
                    cluster.seen_own_beat();
                    continue;
                }
                let Ok(hb) = serde_json::from_slice::<Heartbeat>(&entry.value) else {
                    continue;
                };
                // An entry older than the limit (a watch started just now sees the last beat of
                // a node that may be long gone) is not a sign of life.
                let age = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH + Duration::from_millis(hb.at_ms))
                    .unwrap_or_default();
                if age > cluster.cfg.presence_ttl {
                    continue;
                }
                beat_from(&cluster, &conn, &entry.key, &hb).await;
            }
            debug!(
                event = "cluster_watch",
                "the heartbeat watch ended or went quiet; starting it again"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn beat_from(cluster: &Cluster, conn: &Conn, node: &str, hb: &Heartbeat) {
    let previous = {
        let mut nodes = cluster.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let seen = Seen {
            inc: hb.inc,
            clients: hb.clients,
            at: Instant::now(),
            lost: false,
        };
        nodes.insert(node.to_owned(), seen)
    };
    if let Some(p) = previous
        && p.inc != hb.inc
        && !p.lost
    {
        // Restarted: its earlier run's members are gone.
        announce_lost(cluster, conn, node, p.inc).await;
    }
}

async fn find_lost(cluster: &Cluster, conn: &Conn) {
    let ttl = cluster.cfg.presence_ttl;
    if !cluster.sees_own_beats() {
        // This node cannot see heartbeats now (its link or its watch is down): silence from the
        // others says nothing about them. Their clocks restart when the watch is back.
        cluster.forgive_silence();
        return;
    }
    let lost: Vec<(String, u64)> = {
        let mut nodes = cluster.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes
            .iter_mut()
            .filter(|(_, s)| !s.lost && s.at.elapsed() > ttl)
            .map(|(n, s)| {
                s.lost = true;
                (n.clone(), s.inc)
            })
            .collect()
    };
    for (node, inc) in lost {
        // The watch may have missed its beats (it restarted, or the node's link came back
        // later than ours): the bucket itself says whether it beat within the limit.
        if still_beating(cluster, conn, &node, inc).await {
            if let Some(seen) = cluster
                .nodes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&node)
            {
                seen.lost = false;
                seen.at = Instant::now();
            }
            continue;
        }
        announce_lost(cluster, conn, &node, inc).await;
    }
    if let Some(hub) = cluster.hub() {
        hub.sweep_empty_rooms(|key| !cluster.remote_names_in(key).is_empty());
    }
}

/// True if `node`'s incarnation `inc` has a heartbeat in the bucket younger than the limit, or
/// the bucket cannot be asked (silence is then no proof).
async fn still_beating(cluster: &Cluster, conn: &Conn, node: &str, inc: u64) -> bool {
    match conn.nodes.entry(node.to_owned()).await {
        Ok(Some(entry)) if entry.operation == Operation::Put => {
            match serde_json::from_slice::<Heartbeat>(&entry.value) {
                Ok(hb) if hb.inc == inc => {
                    let age = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH + Duration::from_millis(hb.at_ms))
                        .unwrap_or_default();
                    age <= cluster.cfg.presence_ttl
                }
                _ => false,
            }
        }
        Ok(_) => false,
        Err(_) => true,
    }
}

async fn announce_lost(cluster: &Cluster, conn: &Conn, node: &str, inc: u64) {
    let gone = cluster
        .directory
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drop_node(node, inc);
    info!(
        event = "cluster_node_lost",
        node,
        members = gone.len(),
        "node lost"
    );
    let Some(hub) = cluster.hub() else { return };
    let wrap = hub.config().wrap;
    for (key, nick, room) in gone {
        let Ok(valid) = validate_room(&room) else {
            continue;
        };
        let subject = cluster.names.room_subject(valid.key(), Kind::Note);
        let line = wrapped_notice(wrap, &format!("{nick} left (node lost)"));
        let headers = publish::headers(cluster, &room, crate::hub::log::NOBODY, 1);
        let msg = PublishMessage::build()
            .payload(line)
            .headers(headers)
            .message_id(format!("lost-{node}-{inc}-{key}"));
        cluster.counters.published.fetch_add(1, Ordering::Relaxed);
        match conn.js.send_publish(subject, msg).await {
            Ok(ack) => match ack.await {
                Ok(_) => {
                    cluster.counters.acked.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    cluster.counters.errors.fetch_add(1, Ordering::Relaxed);
                    debug!(event = "cluster_lost_notice", error = %e, "announcing a lost member failed");
                }
            },
            Err(e) => {
                cluster.counters.errors.fetch_add(1, Ordering::Relaxed);
                debug!(event = "cluster_lost_notice", error = %e, "announcing a lost member failed");
            }
        }
    }
}
