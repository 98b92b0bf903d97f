//! The one order: this node's single ordered consumer of the rooms' stream, and the only code
//! that appends cluster events to rooms here (through `Hub::apply`). It remembers the last stream
//! sequence it applied; a new consumer (after the broker restarted, or in the next process after
//! an upgrade) starts right after it, and anything at or before it is skipped, so nothing is
//! applied twice and nothing acknowledged is skipped.
//!
//! Because it alone knows how far the rooms here have got, it also seeds rooms from the stream:
//! at start, every room here gets the history and topic the stream holds up to where the
//! consumer starts; later, a room that someone here is about to enter for the first time gets
//! them up to the sequence applied so far, with nothing applied meanwhile, so the history and
//! what follows it join without a gap or an overlap.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use bytes::Bytes;
use futures_util::StreamExt;
use tracing::{debug, warn};

use super::Cluster;
use super::link::Conn;
use super::wire::{self, H_CLIENT, H_INC, H_LINES, H_NODE, H_ROOM, H_TOPIC, Kind};
use crate::client::ClientId;
use crate::hub::relay::{Incoming, Said};

/// Longest wait for one message while reading a room's history.
const HISTORY_WAIT: Duration = Duration::from_secs(2);
/// Longest pause before a new consumer after the last one failed.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

fn header<'a>(h: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    h?.get(name).map(|v| v.as_str())
}

fn to_system(t: async_nats::jetstream::message::Info<'_>) -> SystemTime {
    let nanos = t.published.unix_timestamp_nanos();
    SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

/// What one stream message says, or None if it is not one of ours.
fn event(
    cluster: &Cluster,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: Bytes,
    at: SystemTime,
) -> Option<(String, Incoming)> {
    let said = match cluster.names.kind_of(subject)? {
        Kind::Chat => Said::Chat,
        Kind::Note => Said::Note,
        Kind::Topic => Said::Topic,
    };
    let room = wire::from_header(header(headers, H_ROOM)?)?;
    let node = header(headers, H_NODE)?;
    let inc: u64 = header(headers, H_INC)?.parse().ok()?;
    let client: ClientId = header(headers, H_CLIENT)?.parse().ok()?;
    let lines: u32 = header(headers, H_LINES)?.parse().ok()?;
    // Only this process's own members skip their own lines; ids mean nothing elsewhere.
    let from = if node == cluster.cfg.node_name && inc == cluster.inc {
        client
    } else {
        crate::hub::log::NOBODY
    };
    let topic = header(headers, H_TOPIC).and_then(wire::from_header);
    let ev = Incoming {
        said,
        from,
        bytes: payload,
        lines,
        at,
        topic,
    };
    Some((room, ev))
}

pub(super) async fn run(cluster: Arc<Cluster>, conn: Conn) {
    let Some(mut seeds) = cluster
        .seed_rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    else {
        return;
    };
    let mut backoff = Duration::from_millis(100);
    if cluster.last_seq.load(Ordering::Acquire) == 0 {
        // A fresh start: the rooms here begin with what the stream holds now.
        let last = loop {
            match conn.stream.get_info().await {
                Ok(info) => break info.state.last_sequence,
                Err(e) => {
                    warn!(event = "cluster_stream", error = %e, "cannot read the stream's state yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        };
        if let Some(hub) = cluster.hub() {
            for name in hub.room_names() {
                seed(&cluster, &conn, &name, last, true).await;
            }
        }
        cluster.last_seq.store(last, Ordering::Release);
    }
    // Runs for the life of the process: each round is one consumer, replaced when it fails.
    loop {
        let start = cluster.last_seq.load(Ordering::Acquire) + 1;
        let config = pull::OrderedConfig {
            filter_subject: cluster.names.stream_subjects(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        };
        let messages = match conn.stream.create_consumer(config).await {
            Ok(consumer) => consumer.messages().await,
            Err(e) => Err(async_nats::jetstream::consumer::StreamError::with_source(
                async_nats::jetstream::consumer::StreamErrorKind::Other,
                e,
            )),
        };
        let mut messages = match messages {
            Ok(m) => {
                backoff = Duration::from_millis(100);
                m
            }
            Err(e) => {
                debug!(event = "cluster_consumer", error = %e, "cannot start the consumer yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        loop {
            if cluster.held.load(Ordering::Acquire) {
                // An upgrade is handing the rooms over at the sequence applied so far.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            tokio::select! {
                m = messages.next() => match m {
                    Some(Ok(msg)) => apply(&cluster, msg),
                    Some(Err(e)) => {
                        debug!(event = "cluster_consumer", error = %e, "consumer error; starting a new one");
                        break;
                    }
                    None => break,
                },
                () = cluster.restart.notified() => {
                    debug!(event = "cluster_consumer", "link restored; starting a new consumer");
                    break;
                }
                req = seeds.recv() => {
                    let Some((name, done)) = req else { return };
                    let upto = cluster.last_seq.load(Ordering::Acquire);
                    seed(&cluster, &conn, &name, upto, false).await;
                    let _ = done.send(());
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn apply(cluster: &Cluster, msg: async_nats::jetstream::Message) {
    let Ok(info) = msg.info() else { return };
    let seq = info.stream_sequence;
    let at = to_system(info);
    if seq <= cluster.last_seq.load(Ordering::Acquire) {
        return; // applied already (a consumer that started again overlaps)
    }
    let msg = msg.message;
    match event(
        cluster,
        msg.subject.as_str(),
        msg.headers.as_ref(),
        msg.payload,
        at,
    ) {
        Some((room, ev)) => {
            if let Some(hub) = cluster.hub() {
                hub.apply(&room, ev);
            }
        }
        None => warn!(
            event = "cluster_bad_event",
            seq, "skipped a stream message that is not a room event"
        ),
    }
    cluster.last_seq.store(seq, Ordering::Release);
    cluster.counters.applied.fetch_add(1, Ordering::Relaxed);
}

/// Gives the room `name` (made here if it may be) the history and topic the stream holds up to
/// sequence `upto`: a room made now, or any room when `fresh` (the node is starting). A room that
/// was already here has them already.
async fn seed(cluster: &Cluster, conn: &Conn, name: &str, upto: u64, fresh: bool) {
    let Some(hub) = cluster.hub() else { return };
    let Some((key, made)) = hub.room_for_cluster(name) else {
        return;
    };
    if !made && !fresh {
        return;
    }
    let chat = cluster.names.room_subject(&key, Kind::Chat);
    let mut lines = Vec::new();
    if let Ok(last) = conn.stream.get_last_raw_message_by_subject(&chat).await {
        let target = last.sequence.min(upto);
        let config = pull::OrderedConfig {
            filter_subject: chat.clone(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        };
        if let Ok(consumer) = conn.stream.create_consumer(config).await
            && let Ok(mut messages) = consumer.messages().await
        {
            // Bounded by the subject's message limit (the history kept) and by the wait.
            while let Ok(Some(Ok(msg))) = tokio::time::timeout(HISTORY_WAIT, messages.next()).await
            {
                let Ok(info) = msg.info() else { break };
                let seq = info.stream_sequence;
                if seq > target {
                    break;
                }
                lines.push((to_system(info), msg.message.payload.clone()));
                if seq == target {
                    break;
                }
            }
        }
    }
    let topic_subject = cluster.names.room_subject(&key, Kind::Topic);
    let topic = match conn
        .stream
        .get_last_raw_message_by_subject(&topic_subject)
        .await
    {
        Ok(m) if m.sequence <= upto => {
            header(Some(&m.headers), H_TOPIC).and_then(wire::from_header)
        }
        _ => None,
    };
    hub.seed_room(name, lines, topic);
}
