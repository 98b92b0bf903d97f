//! Rooms' queued events to the stream, in rounds. A round takes every rung room's queue (under
//! the room's lock, so a room's events leave in the order they were queued), sends them all on
//! the one connection (which keeps their order on the way to JetStream) and then awaits their
//! acknowledgements; the next round starts once this one is settled, so rounds never overtake
//! one another.
//!
//! A publish the broker did not take for a reason that passes (a stream leader being elected
//! after a NATS server died, an acknowledgement that did not come in time) is sent again,
//! together with everything after it in its round, in order, until [`RETRY_FOR`] has passed.
//! Every event carries a message id (node, incarnation, counter), so JetStream's duplicate
//! window stores each at most once however often it is sent. Only after that is a chat line's
//! sender told it was not delivered; a notice that fails is logged and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::Cluster;
use super::link::Conn;
use super::wire::{
    self, H_CLIENT, H_INC, H_JOIN, H_JOINED, H_LEFT, H_LINES, H_NODE, H_ROOM, H_TOPIC, Kind,
};
use crate::client::ClientId;
use crate::hub::relay::{Outgoing, Said};

/// Most events in one round.
const MAX_ROUND: usize = 4096;
/// Longest wait for the acknowledgements of one attempt.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long events the broker did not take are sent again before their senders are told.
const RETRY_FOR: Duration = Duration::from_secs(10);
/// The pause between attempts, at first (it doubles, to at most a second).
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Told to a member whose line the broker did not take.
const NOT_DELIVERED: &str =
    "your last line was not delivered (the cluster's broker did not take it); please send it again";

/// One event ready to send.
struct Ready {
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
    from: ClientId,
    said: Said,
}

fn kind(said: Said) -> Kind {
    match said {
        Said::Chat => Kind::Chat,
        Said::Note | Said::Join => Kind::Note,
        Said::Topic => Kind::Topic,
    }
}

/// The headers of one event from this node.
pub(super) fn headers(cluster: &Cluster, room: &str, from: ClientId, lines: u32) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(H_NODE, cluster.cfg.node_name.as_str());
    h.insert(H_INC, cluster.inc.to_string().as_str());
    h.insert(H_CLIENT, from.to_string().as_str());
    h.insert(H_LINES, lines.to_string().as_str());
    h.insert(H_ROOM, wire::header_safe(room).as_str());
    h
}

fn ready(
    cluster: &Cluster,
    next: &AtomicU64,
    room_key: &str,
    room_name: &str,
    out: Outgoing,
) -> Ready {
    let mut h = headers(cluster, room_name, out.from, out.lines);
    if out.said == Said::Join {
        h.insert(H_JOIN, "1");
    }
    if let Some(topic) = &out.topic {
        h.insert(H_TOPIC, wire::header_safe(topic).as_str());
    }
    if let Some(nick) = &out.moved.left {
        h.insert(H_LEFT, wire::header_safe(nick).as_str());
    }
    if let Some(nick) = &out.moved.joined {
        h.insert(H_JOINED, wire::header_safe(nick).as_str());
    }
    // The process too: an upgraded node keeps its incarnation, and its successor's counter
    // starts again, but JetStream must not take its events for repeats of its predecessor's.
    let id = format!(
        "{}-{}-{}-{}",
        cluster.cfg.node_name,
        cluster.inc,
        cluster.process,
        next.fetch_add(1, Ordering::Relaxed)
    );
    h.insert("Nats-Msg-Id", id.as_str());
    Ready {
        subject: cluster.names.room_subject(room_key, kind(out.said)),
        headers: h,
        payload: out.bytes,
        from: out.from,
        said: out.said,
    }
}

pub(super) async fn run(cluster: Arc<Cluster>, conn: Conn) {
    let next = AtomicU64::new(1);
    loop {
        cluster.ring.notified().await;
        // Bounded: each round takes at most MAX_ROUND events; what is left waits for the next.
        loop {
            // Counted before the queues are taken, so an upgrade waiting for quiet never sees
            // events that are neither queued nor in flight.
            cluster.in_flight.fetch_add(1, Ordering::AcqRel);
            let rooms: Vec<_> =
                std::mem::take(&mut *cluster.rung.lock().unwrap_or_else(|e| e.into_inner()));
            if rooms.is_empty() {
                cluster.in_flight.fetch_sub(1, Ordering::AcqRel);
                break;
            }
            let mut round = Vec::new();
            for room in rooms {
                for out in room.take_outgoing() {
                    round.push(ready(
                        &cluster,
                        &next,
                        room.cluster_key(),
                        room.display_name(),
                        out,
                    ));
                }
            }
            debug!(
                event = "cluster_publish_round",
                events = round.len(),
                "publishing"
            );
            for chunk in round.chunks(MAX_ROUND) {
                settle(&cluster, &conn, chunk).await;
            }
            cluster.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Sends `round` and waits until every event in it is stored, or [`RETRY_FOR`] has passed.
async fn settle(cluster: &Cluster, conn: &Conn, round: &[Ready]) {
    cluster
        .in_flight
        .fetch_add(round.len() as u64, Ordering::AcqRel);
    let deadline = Instant::now() + RETRY_FOR;
    let mut pause = RETRY_PAUSE;
    let mut from = 0;
    // Bounded by the deadline: every attempt either settles more events or waits longer.
    while from < round.len() {
        let first_failed = attempt(cluster, conn, &round[from..]).await;
        match first_failed {
            None => break,
            Some((i, why)) => {
                let failed_at = from + i;
                if Instant::now() >= deadline {
                    for r in &round[failed_at..] {
                        failed(cluster, r.from, r.said, &why);
                    }
                    break;
                }
                debug!(event = "cluster_publish_retry", error = %why, pending = round.len() - failed_at, "the broker did not take every event; sending them again");
                from = failed_at;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
    cluster
        .in_flight
        .fetch_sub(round.len() as u64, Ordering::AcqRel);
}

/// Sends every event, then awaits their acknowledgements in order; the first one that failed,
/// with why (the caller sends it and what follows again).
async fn attempt(cluster: &Cluster, conn: &Conn, events: &[Ready]) -> Option<(usize, String)> {
    let mut acks = Vec::with_capacity(events.len());
    for (i, r) in events.iter().enumerate() {
        let msg = PublishMessage::build()
            .payload(r.payload.clone())
            .headers(r.headers.clone());
        cluster.counters.published.fetch_add(1, Ordering::Relaxed);
        match conn.js.send_publish(r.subject.clone(), msg).await {
            Ok(ack) => acks.push(ack),
            Err(e) => {
                cluster.counters.errors.fetch_add(1, Ordering::Relaxed);
                // What was sent before is awaited, so the caller knows where to start again.
                return first_unacked(cluster, acks)
                    .await
                    .or(Some((i, e.to_string())));
            }
        }
    }
    first_unacked(cluster, acks).await
}

async fn first_unacked(
    cluster: &Cluster,
    acks: Vec<async_nats::jetstream::context::PublishAckFuture>,
) -> Option<(usize, String)> {
    let mut first = None;
    // One deadline for the whole attempt: acknowledgements that do not come (a server that
    // died) must not cost a timeout each, one after another.
    let until = Instant::now() + ACK_TIMEOUT;
    for (i, ack) in acks.into_iter().enumerate() {
        let outcome = match tokio::time::timeout_at(until, ack).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no acknowledgement in time".to_owned()),
        };
        match outcome {
            Ok(()) => {
                cluster.counters.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => {
                cluster.counters.errors.fetch_add(1, Ordering::Relaxed);
                first.get_or_insert((i, why));
            }
        }
    }
    first
}

fn failed(cluster: &Cluster, from: ClientId, said: Said, error: &str) {
    warn!(
        event = "cluster_publish_failed",
        client = from,
        error,
        "publish to the cluster failed"
    );
    let Some(hub) = cluster.hub() else { return };
    match said {
        Said::Chat => hub.tell_member(from, NOT_DELIVERED),
        // The join will not come back: the member takes its seat here and now.
        Said::Join => hub.arrive_here(from),
        Said::Note | Said::Topic => {}
    }
}
