//! Rooms' queued events to the stream. One task takes each rung room's queue (under the room's
//! lock, so a room's events leave in the order they were queued) and publishes every event on
//! the one connection, which keeps their order on the way to JetStream; a second task awaits the
//! acknowledgements in the same order. A chat line whose publish or acknowledgement fails is
//! reported to its sender (it may send it again); a notice that fails is logged and counted.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishAckFuture;
use tokio::sync::mpsc;
use tracing::warn;

use super::Cluster;
use super::link::Conn;
use super::wire::{self, H_CLIENT, H_INC, H_JOIN, H_LINES, H_NODE, H_ROOM, H_TOPIC, Kind};
use crate::client::ClientId;
use crate::hub::relay::{Outgoing, Said};

/// Acknowledgements awaited at once before the publisher waits for the oldest.
const MAX_IN_FLIGHT: usize = 4096;
/// Longest wait for one acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Told to a member whose line the broker did not take.
const NOT_DELIVERED: &str =
    "your last line was not delivered (the cluster's broker did not take it); please send it again";

/// One publish waiting for its acknowledgement.
struct Pending {
    ack: PublishAckFuture,
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

pub(super) async fn run(cluster: Arc<Cluster>, conn: Conn) {
    let (tx, rx) = mpsc::channel::<Pending>(MAX_IN_FLIGHT);
    tokio::spawn(acks(cluster.clone(), rx));
    loop {
        cluster.ring.notified().await;
        // Bounded: each round takes the rooms rung so far; more rings wake the next round.
        let rooms: Vec<_> =
            std::mem::take(&mut *cluster.rung.lock().unwrap_or_else(|e| e.into_inner()));
        for room in rooms {
            for out in room.take_outgoing() {
                publish_one(
                    &cluster,
                    &conn,
                    &tx,
                    room.cluster_key(),
                    room.display_name(),
                    out,
                )
                .await;
            }
        }
    }
}

async fn publish_one(
    cluster: &Arc<Cluster>,
    conn: &Conn,
    tx: &mpsc::Sender<Pending>,
    room_key: &str,
    room_name: &str,
    out: Outgoing,
) {
    let subject = cluster.names.room_subject(room_key, kind(out.said));
    let mut h = headers(cluster, room_name, out.from, out.lines);
    if out.said == Said::Join {
        h.insert(H_JOIN, "1");
    }
    if let Some(topic) = &out.topic {
        h.insert(H_TOPIC, wire::header_safe(topic).as_str());
    }
    cluster.in_flight.fetch_add(1, Ordering::AcqRel);
    cluster.counters.published.fetch_add(1, Ordering::Relaxed);
    match conn.js.publish_with_headers(subject, h, out.bytes).await {
        Ok(ack) => {
            let pending = Pending {
                ack,
                from: out.from,
                said: out.said,
            };
            if tx.send(pending).await.is_err() {
                cluster.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
        Err(e) => {
            cluster.in_flight.fetch_sub(1, Ordering::AcqRel);
            failed(cluster, out.from, out.said, &e.to_string());
        }
    }
}

async fn acks(cluster: Arc<Cluster>, mut rx: mpsc::Receiver<Pending>) {
    while let Some(p) = rx.recv().await {
        match tokio::time::timeout(ACK_TIMEOUT, p.ack).await {
            Ok(Ok(_)) => {
                cluster.counters.acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => failed(&cluster, p.from, p.said, &e.to_string()),
            Err(_) => failed(&cluster, p.from, p.said, "no acknowledgement in time"),
        }
        cluster.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn failed(cluster: &Cluster, from: ClientId, said: Said, error: &str) {
    cluster.counters.errors.fetch_add(1, Ordering::Relaxed);
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
