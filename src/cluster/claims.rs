//! Nicknames unique across the cluster, and who is where.
//!
//! A member's nickname keys (case and look-alikes folded, as on one node) are claimed in the
//! nicknames bucket with `create`, which succeeds only for an absent key, so of two nodes
//! claiming one name at once exactly one wins. One task owns this node's claims and does every
//! operation on them in order (claim, follow a member between rooms, release): each claim is
//! updated with the revision it last wrote, so a claim that lapsed and was taken by someone else
//! is never overwritten. Claims are refreshed every third of `presence_ttl`; the bucket's age
//! limit frees the claims of a node that died. A claim found taken by someone else on refresh
//! (this node was cut off longer than the limit) costs its holder here the connection, with a
//! line saying why: two people must never answer to one name.
//!
//! The watch of the bucket keeps [`Directory`](super::directory::Directory), every other node's
//! claims, up to date.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::Cluster;
use super::link::Conn;
use super::wire::{self, Claim};
use crate::client::ClientId;
use crate::hub::relay::Membership;
use std::sync::atomic::Ordering;

/// Longest a newcomer's nickname waits for the link to come up before it is refused.
const CLAIM_WAIT: Duration = Duration::from_secs(5);

/// Why a nickname could not be claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClaimRefused {
    /// Someone on some node holds it.
    Taken,
    /// The broker cannot be asked now.
    LinkDown,
}

impl std::fmt::Display for ClaimRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaimRefused::Taken => f.write_str("that nickname is taken"),
            ClaimRefused::LinkDown => f.write_str(
                "cannot check nicknames across the cluster now (link lost); try again shortly",
            ),
        }
    }
}

/// Work for the claims task.
#[derive(Debug)]
pub(super) enum Cmd {
    /// Claim `keys` (all or none).
    Claim {
        owner: ClientId,
        keys: Vec<Arc<str>>,
        nick: Arc<str>,
        room: Arc<str>,
        reply: oneshot::Sender<Result<(), ClaimRefused>>,
    },
    /// A member moved, renamed or left.
    Change(Membership),
}

/// One claim this node holds.
#[derive(Debug, Clone)]
struct Held {
    claim: Claim,
    revision: u64,
    /// The client here that holds it (0: taken over after an upgrade, owner unknown).
    owner: ClientId,
}

impl Cluster {
    /// Claims `keys` for `nick` in `room` across the cluster (see [`claims`](super::claims)).
    pub(crate) async fn claim(
        &self,
        owner: ClientId,
        keys: Vec<Arc<str>>,
        nick: Arc<str>,
        room: Arc<str>,
    ) -> Result<(), ClaimRefused> {
        // A node just starting (or a link just dropped) may be up in a moment: the newcomer waits
        // a little rather than being sent away.
        if !self.wait_up(CLAIM_WAIT).await {
            return Err(ClaimRefused::LinkDown);
        }
        let (tx, rx) = oneshot::channel();
        let cmd = Cmd::Claim {
            owner,
            keys,
            nick,
            room,
            reply: tx,
        };
        if !self.send_claims(cmd) {
            return Err(ClaimRefused::LinkDown);
        }
        rx.await.unwrap_or(Err(ClaimRefused::LinkDown))
    }

    pub(super) fn send_claims(&self, cmd: Cmd) -> bool {
        self.claims_pending.fetch_add(1, Ordering::AcqRel);
        let sent = self.claims_tx.send(cmd).is_ok();
        if !sent {
            self.claims_pending.fetch_sub(1, Ordering::AcqRel);
        }
        sent
    }
}

/// The claims task: every change to this node's claims, in order, and their refreshing.
pub(super) async fn run(cluster: Arc<Cluster>, conn: Conn) {
    let Some(mut rx) = cluster
        .claims_rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    else {
        return;
    };
    let mut held: HashMap<String, Held> = HashMap::new();
    adopt(&cluster, &conn, &mut held).await;
    let every = (cluster.cfg.presence_ttl / 3).max(Duration::from_millis(500));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd.inspect(|_| done(&cluster)) {
                Some(Cmd::Claim { owner, keys, nick, room, reply }) => {
                    let r = claim(&cluster, &conn, &mut held, owner, &keys, &nick, &room).await;
                    let _ = reply.send(r);
                }
                Some(Cmd::Change(change)) => change_one(&cluster, &conn, &mut held, change).await,
                None => return,
            },
            _ = tick.tick() => refresh(&cluster, &conn, &mut held).await,
        }
    }
}

/// One command taken (counted when it was sent, so a stop can wait for the rest).
fn done(cluster: &Cluster) {
    cluster.claims_pending.fetch_sub(1, Ordering::AcqRel);
}

fn value(claim: &Claim) -> Bytes {
    Bytes::from(serde_json::to_vec(claim).unwrap_or_default())
}

/// After an upgrade the claims exist already, written by this node's incarnation: take them
/// over with their revisions.
async fn adopt(cluster: &Cluster, conn: &Conn, held: &mut HashMap<String, Held>) {
    let Some(hub) = cluster.hub() else { return };
    for (keys, _) in hub.member_keys() {
        for k in keys {
            let key = wire::nick_key(&k);
            if let Ok(Some(entry)) = conn.nicks.entry(key.clone()).await
                && entry.operation == Operation::Put
                && let Ok(claim) = serde_json::from_slice::<Claim>(&entry.value)
                && claim.node == cluster.cfg.node_name
                && claim.inc == cluster.inc
            {
                held.insert(
                    key,
                    Held {
                        claim,
                        revision: entry.revision,
                        owner: 0,
                    },
                );
            }
        }
    }
}

async fn claim(
    cluster: &Cluster,
    conn: &Conn,
    held: &mut HashMap<String, Held>,
    owner: ClientId,
    keys: &[Arc<str>],
    nick: &str,
    room: &str,
) -> Result<(), ClaimRefused> {
    let claim = Claim {
        node: cluster.cfg.node_name.clone(),
        inc: cluster.inc,
        nick: nick.to_owned(),
        room: room.to_owned(),
    };
    let mut made: Vec<String> = Vec::new();
    let mut refused = None;
    for k in keys {
        let key = wire::nick_key(k);
        if let Some(h) = held.get(&key) {
            if h.owner == owner {
                continue; // its own already (a rename that keeps a key: a change of case)
            }
            refused = Some(ClaimRefused::Taken);
            break;
        }
        match conn.nicks.create(&key, value(&claim)).await {
            Ok(revision) => {
                held.insert(
                    key.clone(),
                    Held {
                        claim: claim.clone(),
                        revision,
                        owner,
                    },
                );
                made.push(key);
            }
            Err(e) => {
                refused = Some(match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => ClaimRefused::Taken,
                    _ => {
                        cluster.counters.errors.fetch_add(1, Ordering::Relaxed);
                        warn!(event = "cluster_claim_failed", error = %e, "cannot claim a nickname");
                        ClaimRefused::LinkDown
                    }
                });
                break;
            }
        }
    }
    let Some(refused) = refused else {
        return Ok(());
    };
    for key in made {
        release(cluster, conn, held, &key).await;
    }
    Err(refused)
}

async fn release(cluster: &Cluster, conn: &Conn, held: &mut HashMap<String, Held>, key: &str) {
    if let Some(h) = held.remove(key)
        && let Err(e) = conn
            .nicks
            .delete_expect_revision(key, Some(h.revision))
            .await
    {
        // It lapsed (someone else may hold it now): not ours to delete any more.
        debug!(event = "cluster_release", error = %e, "a released claim had changed");
        cluster.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
}

async fn change_one(
    cluster: &Cluster,
    conn: &Conn,
    held: &mut HashMap<String, Held>,
    change: Membership,
) {
    match change {
        Membership::In { keys, nick, room } => {
            for k in keys {
                let key = wire::nick_key(&k);
                let Some(h) = held.get_mut(&key) else {
                    continue;
                };
                if h.claim.nick == *nick && h.claim.room == *room {
                    continue;
                }
                h.claim.nick = nick.to_string();
                h.claim.room = room.to_string();
                match conn.nicks.update(&key, value(&h.claim), h.revision).await {
                    Ok(rev) => h.revision = rev,
                    Err(e) => {
                        cluster.counters.errors.fetch_add(1, Ordering::Relaxed);
                        debug!(event = "cluster_claim_update", error = %e, "claim update failed; the refresh will retry");
                    }
                }
            }
        }
        Membership::Released { keys } => {
            for k in keys {
                release(cluster, conn, held, &wire::nick_key(&k)).await;
            }
        }
    }
}

/// Writes every claim again (the bucket's age limit frees what is not refreshed).
async fn refresh(cluster: &Cluster, conn: &Conn, held: &mut HashMap<String, Held>) {
    if !cluster.is_up() {
        return;
    }
    let keys: Vec<String> = held.keys().cloned().collect();
    for key in keys {
        let Some(h) = held.get_mut(&key) else {
            continue;
        };
        match conn.nicks.update(&key, value(&h.claim), h.revision).await {
            Ok(rev) => h.revision = rev,
            Err(e) => {
                debug!(event = "cluster_claim_refresh", error = %e, "claim refresh failed; looking at the claim");
                match whose(cluster, conn, &key).await {
                    // Still ours (the update failed for another reason: a broker failing over,
                    // a revision the bucket renumbered): carry on from what is there.
                    Holder::Us(rev) => h.revision = rev,
                    // Lapsed while the link was down: take it again if nobody else did.
                    Holder::Nobody => match conn.nicks.create(&key, value(&h.claim)).await {
                        Ok(rev) => h.revision = rev,
                        Err(e) => {
                            cluster.counters.errors.fetch_add(1, Ordering::Relaxed);
                            debug!(event = "cluster_claim_refresh", error = %e, "retaking a lapsed claim failed");
                        }
                    },
                    Holder::Other => {
                        let nick = h.claim.nick.clone();
                        held.remove(&key);
                        lost_claim(cluster, &nick);
                    }
                    // Cannot tell now: the next refresh asks again.
                    Holder::Unknown => {
                        cluster.counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// Who holds a claim now.
enum Holder {
    /// This node's incarnation, at this revision.
    Us(u64),
    /// Someone else.
    Other,
    /// Nobody (it lapsed, or was deleted).
    Nobody,
    /// The bucket did not answer.
    Unknown,
}

async fn whose(cluster: &Cluster, conn: &Conn, key: &str) -> Holder {
    match conn.nicks.entry(key.to_owned()).await {
        Ok(Some(entry)) if entry.operation == Operation::Put => {
            match serde_json::from_slice::<Claim>(&entry.value) {
                Ok(c) if c.node == cluster.cfg.node_name && c.inc == cluster.inc => {
                    Holder::Us(entry.revision)
                }
                _ => Holder::Other,
            }
        }
        Ok(_) => Holder::Nobody,
        Err(_) => Holder::Unknown,
    }
}

/// Someone elsewhere holds a nickname a member here had: the member goes.
fn lost_claim(cluster: &Cluster, nick: &str) {
    info!(
        event = "cluster_claim_lost",
        nick, "nickname claimed elsewhere while this node was cut off"
    );
    if let Some(hub) = cluster.hub() {
        hub.kick(
            nick,
            Some("your nickname was claimed on another node while this one was cut off from the cluster; please reconnect"),
        );
    }
}

/// Follows every other node's claims into the directory.
pub(super) async fn watch(cluster: Arc<Cluster>, conn: Conn) {
    // Runs for the life of the process: a watch that ends (the link dropped) is started again.
    loop {
        // Claims are refreshed every third of the limit, so a watch silent for twice the limit
        // has most likely gone quiet (the server holding it died): it is started again, which
        // costs one delivery of every claim.
        let quiet = cluster.cfg.presence_ttl * 2;
        match conn.nicks.watch_all().await {
            Ok(mut entries) => {
                while let Ok(Some(Ok(entry))) = tokio::time::timeout(quiet, entries.next()).await {
                    on_entry(&cluster, &conn, entry).await;
                }
            }
            Err(e) => debug!(event = "cluster_watch", error = %e, "cannot watch claims yet"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn on_entry(cluster: &Cluster, conn: &Conn, entry: kv::Entry) {
    let dir = || cluster.directory.lock().unwrap_or_else(|e| e.into_inner());
    if entry.operation != Operation::Put {
        dir().remove(&entry.key);
        return;
    }
    let Ok(claim) = serde_json::from_slice::<Claim>(&entry.value) else {
        return;
    };
    if claim.node == cluster.cfg.node_name {
        dir().remove(&entry.key);
        if claim.inc != cluster.inc {
            // A claim of this node's previous run (it was restarted): nobody holds it now.
            let _ = conn
                .nicks
                .delete_expect_revision(&entry.key, Some(entry.revision))
                .await;
        }
        return;
    }
    if !cluster.is_lost(&claim.node, claim.inc) {
        dir().put(entry.key, claim);
    }
}
