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
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull, push};
use bytes::Bytes;
use futures_util::StreamExt;
use tracing::{debug, warn};

use super::Cluster;
use super::link::Conn;
use super::wire::{
    self, H_CLIENT, H_INC, H_JOIN, H_JOINED, H_LEFT, H_LINES, H_NODE, H_ROOM, H_TOPIC, Kind,
};
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

/// One stream message: the room, the event, and (from another node's process) who it says came
/// or went there.
struct Event {
    room: String,
    ev: Incoming,
    elsewhere: Option<Elsewhere>,
}

/// Members of another node's process coming and going, as a notice says.
struct Elsewhere {
    node: String,
    inc: u64,
    left: Option<String>,
    joined: Option<String>,
}

/// What one stream message says, or None if it is not one of ours.
fn event(
    cluster: &Cluster,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: Bytes,
    at: SystemTime,
) -> Option<Event> {
    let said = match cluster.names.kind_of(subject)? {
        Kind::Chat => Said::Chat,
        Kind::Note if header(headers, H_JOIN).is_some() => Said::Join,
        Kind::Note => Said::Note,
        Kind::Topic => Said::Topic,
    };
    let room = wire::from_header(header(headers, H_ROOM)?)?;
    let node = header(headers, H_NODE)?;
    let inc: u64 = header(headers, H_INC)?.parse().ok()?;
    let client: ClientId = header(headers, H_CLIENT)?.parse().ok()?;
    let lines: u32 = header(headers, H_LINES)?.parse().ok()?;
    // Only this process's own members skip their own lines; ids mean nothing elsewhere.
    let mine = node == cluster.cfg.node_name && inc == cluster.inc;
    let from = if mine {
        client
    } else {
        crate::hub::log::NOBODY
    };
    let left = header(headers, H_LEFT).and_then(wire::from_header);
    let joined = header(headers, H_JOINED).and_then(wire::from_header);
    let elsewhere = (!mine && (left.is_some() || joined.is_some())).then(|| Elsewhere {
        node: node.to_owned(),
        inc,
        left,
        joined,
    });
    let topic = header(headers, H_TOPIC).and_then(wire::from_header);
    let ev = Incoming {
        said,
        from,
        bytes: payload,
        lines,
        at,
        topic,
    };
    Some(Event {
        room,
        ev,
        elsewhere,
    })
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
    cluster.mark_ready();
    // Runs for the life of the process: each round is one consumer, replaced when it fails, goes
    // quiet (no heartbeat), or is found to have skipped something.
    let mut gap = Gap::default();
    loop {
        let start = cluster.last_seq.load(Ordering::Acquire) + 1;
        let deliver_to = conn.client.new_inbox();
        let messages = match conn.stream.create_consumer(pusher(start, deliver_to)).await {
            Ok(consumer) => consumer.messages().await.map(|m| (m, consumer)),
            Err(e) => Err(async_nats::jetstream::consumer::StreamError::with_source(
                async_nats::jetstream::consumer::StreamErrorKind::Other,
                e,
            )),
        };
        let (mut messages, consumer) = match messages {
            Ok(m) => {
                debug!(event = "cluster_consumer", start, "consumer started");
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
        // A consumer whose server died may go quiet without an error: every few seconds without
        // progress, the stream is asked how far it is, and a consumer behind it starts again.
        let mut watchdog = tokio::time::interval(STALL_CHECK);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        watchdog.tick().await;
        let mut seen_at_tick = cluster.last_seq.load(Ordering::Acquire);
        loop {
            if cluster.held.load(Ordering::Acquire) {
                // An upgrade is handing the rooms over at the sequence applied so far: what
                // arrives waits (the next process starts after that sequence; a rollback reads
                // on from here).
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            tokio::select! {
                m = messages.next() => match m {
                    Some(Ok(msg)) => {
                        if !gap.accept(&cluster, &msg) {
                            break;
                        }
                        apply(&cluster, msg);
                    }
                    Some(Err(e)) => {
                        debug!(event = "cluster_consumer", error = %e, "consumer error; starting a new one");
                        break;
                    }
                    None => break,
                },
                _ = watchdog.tick() => {
                    let now = cluster.last_seq.load(Ordering::Acquire);
                    if now == seen_at_tick {
                        // Briefly: messages wait meanwhile, and a broker without a leader may
                        // not answer at all.
                        match tokio::time::timeout(STALL_ASK, conn.stream.get_info()).await {
                            Ok(Ok(info)) if info.state.last_sequence > now => {
                                debug!(event = "cluster_consumer", applied = now, stored = info.state.last_sequence, "consumer stalled; starting a new one");
                                break;
                            }
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => debug!(event = "cluster_consumer", applied = now, error = %e, "cannot read the stream's state to check the consumer"),
                            Err(_) => debug!(event = "cluster_consumer", applied = now, "no answer about the stream's state in time"),
                        }
                    }
                    seen_at_tick = now;
                }
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
        drop(messages);
        let _ = conn
            .stream
            .delete_consumer(&consumer.cached_info().name)
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Delivery from stream sequence `start` (1: everything the stream holds).
fn from_sequence(start: u64) -> DeliverPolicy {
    if start <= 1 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: start,
        }
    }
}

/// How often a consumer that made no progress is checked against the stream.
const STALL_CHECK: Duration = Duration::from_secs(2);
/// Longest the consumer waits for the stream's state in that check.
const STALL_ASK: Duration = Duration::from_millis(500);

/// How often the server tells a quiet consumer it is still there; two missed mean it is gone.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The node's consumer of the rooms' stream from sequence `start`, pushed to `deliver_to` as
/// fast as events are stored (no request per batch, so nothing waits between batches), with flow
/// control and heartbeats; nothing to acknowledge (the node keeps its own place).
fn pusher(start: u64, deliver_to: String) -> push::Config {
    push::Config {
        deliver_subject: deliver_to,
        deliver_policy: from_sequence(start),
        ack_policy: AckPolicy::None,
        flow_control: true,
        idle_heartbeat: HEARTBEAT,
        inactive_threshold: INACTIVE,
        ..Default::default()
    }
}

/// Messages asked for by one pull request (reading a room's history).
const PULL_MESSAGES: usize = 1024;
/// A consumer nobody pulls from for this long is removed by the server (a node that died).
const INACTIVE: Duration = Duration::from_secs(30);

/// A consumer of the rooms' stream (or of one subject) from sequence `start`: nothing to
/// acknowledge (the node keeps its own place), so it is cheap for the server.
fn reader(start: u64, subject: Option<String>) -> pull::Config {
    pull::Config {
        deliver_policy: from_sequence(start),
        ack_policy: AckPolicy::None,
        filter_subject: subject.unwrap_or_default(),
        inactive_threshold: INACTIVE,
        ..Default::default()
    }
}

/// Checks that the stream's messages arrive without a hole. A message after a hole is taken
/// only if a new consumer, started right after the last one applied, begins with it too (the
/// messages in the hole were removed from the stream); otherwise the consumer lost them and a
/// new one reads them again.
#[derive(Debug, Default)]
struct Gap {
    /// The first message after a hole, seen once.
    seen: Option<u64>,
}

impl Gap {
    fn accept(&mut self, cluster: &Cluster, msg: &async_nats::jetstream::Message) -> bool {
        let Ok(info) = msg.info() else { return true };
        let seq = info.stream_sequence;
        let next = cluster.last_seq.load(Ordering::Acquire) + 1;
        if seq <= next {
            self.seen = None;
            return true;
        }
        if self.seen == Some(seq) {
            self.seen = None;
            return true;
        }
        debug!(
            event = "cluster_gap",
            expected = next,
            got = seq,
            "stream messages missing; reading again"
        );
        self.seen = Some(seq);
        false
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
        Some(Event {
            room,
            ev,
            elsewhere,
        }) => {
            // The list of members first: someone who reads the notice and asks `/who` gets an
            // answer that agrees with it.
            if let Some(e) = elsewhere {
                cluster.follow_notice(&e.node, e.inc, &room, e.left, e.joined);
            }
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

/// The last `want` messages of `subject` at or before sequence `upto`, oldest first, with their
/// times. The stream keeps many more per subject than history needs (it is the delivery log
/// too), so this reads backwards in growing steps: the last `8 × want` sequences first (enough in
/// a busy room), then eight times as many, and so on; bounded by what the stream keeps.
async fn last_lines(
    conn: &Conn,
    subject: &str,
    upto: u64,
    want: usize,
) -> Vec<(SystemTime, Bytes)> {
    if want == 0 {
        return Vec::new();
    }
    let Ok(last) = conn.stream.get_last_raw_message_by_subject(subject).await else {
        return Vec::new();
    };
    let target = last.sequence.min(upto);
    let mut back = 8 * want as u64;
    // Bounded: `back` grows eightfold each round until it covers the whole stream.
    loop {
        let start = target.saturating_sub(back - 1).max(1);
        let mut got = read_range(conn, subject, start, target).await;
        if got.len() >= want || start == 1 {
            let skip = got.len().saturating_sub(want);
            got.drain(..skip);
            return got;
        }
        back = back.saturating_mul(8);
    }
}

/// The messages of `subject` from sequence `start` to `end`.
async fn read_range(conn: &Conn, subject: &str, start: u64, end: u64) -> Vec<(SystemTime, Bytes)> {
    let mut out = Vec::new();
    let Ok(consumer) = conn
        .stream
        .create_consumer(reader(start, Some(subject.to_owned())))
        .await
    else {
        return out;
    };
    // Bounded by the range (what the stream keeps of it) and by the wait for each pull.
    'pulls: for _ in 0..=(end.saturating_sub(start) / PULL_MESSAGES as u64) + 1 {
        let Ok(mut messages) = consumer
            .batch()
            .max_messages(PULL_MESSAGES)
            .expires(HISTORY_WAIT)
            .messages()
            .await
        else {
            break;
        };
        let mut any = false;
        while let Ok(Some(Ok(msg))) = tokio::time::timeout(HISTORY_WAIT, messages.next()).await {
            any = true;
            let Ok(info) = msg.info() else { break 'pulls };
            let seq = info.stream_sequence;
            if seq > end {
                break 'pulls;
            }
            out.push((to_system(info), msg.message.payload.clone()));
            if seq == end {
                break 'pulls;
            }
        }
        if !any {
            break;
        }
    }
    let _ = conn
        .stream
        .delete_consumer(&consumer.cached_info().name)
        .await;
    out
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
    let want = hub.config().history_lines_most();
    let lines = last_lines(conn, &chat, upto, want).await;
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
