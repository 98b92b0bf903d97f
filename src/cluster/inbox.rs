//! Requests addressed to one node over core NATS (not the stream: they belong to no room's
//! order): private messages for its members, and the operator's kick and list from `chatctl` on
//! another node. Each request is answered with a [`Reply`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tracing::{debug, warn};

use super::Cluster;
use super::link::Conn;
use super::wire::{Listed, Reply, Request};

/// Longest wait for another node's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves this node's inbox.
pub(super) async fn run(cluster: Arc<Cluster>, conn: Conn) {
    let subject = cluster.names.node_inbox(&cluster.cfg.node_name);
    // Runs for the life of the process; a subscription survives reconnections by itself.
    loop {
        match conn.client.subscribe(subject.clone()).await {
            Ok(mut sub) => {
                while let Some(msg) = sub.next().await {
                    let reply = match serde_json::from_slice::<Request>(&msg.payload) {
                        Ok(req) => answer(&cluster, req),
                        Err(e) => {
                            warn!(event = "cluster_bad_request", error = %e, "unreadable request");
                            continue;
                        }
                    };
                    if let Some(to) = msg.reply {
                        let body = Bytes::from(serde_json::to_vec(&reply).unwrap_or_default());
                        let _ = conn.client.publish(to, body).await;
                    }
                }
            }
            Err(e) => debug!(event = "cluster_inbox", error = %e, "cannot subscribe yet"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn answer(cluster: &Cluster, req: Request) -> Reply {
    let Some(hub) = cluster.hub() else {
        return Reply::NotFound;
    };
    match req {
        Request::Msg { to, line } => match hub.send_private_here(&to, Bytes::from(line)) {
            Some(nick) => Reply::Done {
                nick: nick.to_string(),
            },
            None => Reply::NotFound,
        },
        Request::Kick { target, reason } => match hub.kick(&target, reason.as_deref()) {
            Some((_, nick)) => Reply::Done {
                nick: nick.map_or(target, |n| n.to_string()),
            },
            None => Reply::NotFound,
        },
        Request::List => Reply::Members {
            members: hub
                .list()
                .into_iter()
                .map(|c| Listed {
                    id: c.client.id,
                    nick: c.nick.map(|n| n.to_string()),
                    room: c.room.map(|r| r.to_string()),
                    peer: c.client.peer.to_string(),
                    transport: c.client.transport.label().to_owned(),
                })
                .collect(),
        },
    }
}

/// Asks `node`.
async fn ask(cluster: &Cluster, node: &str, req: &Request) -> Option<Reply> {
    let conn = cluster.conn.get()?;
    let body = Bytes::from(serde_json::to_vec(req).ok()?);
    let subject = cluster.names.node_inbox(node);
    let msg = tokio::time::timeout(ASK_TIMEOUT, conn.client.request(subject, body))
        .await
        .ok()?
        .ok()?;
    serde_json::from_slice(&msg.payload).ok()
}

/// Sends private lines to the nodes their recipients are on, in order.
pub(super) async fn send_private(cluster: Arc<Cluster>, _conn: Conn) {
    let Some(mut rx) = cluster
        .private_rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    else {
        return;
    };
    while let Some((node, nick, line)) = rx.recv().await {
        let req = Request::Msg {
            to: nick,
            line: String::from_utf8_lossy(&line).into_owned(),
        };
        if ask(&cluster, &node, &req).await.is_none() {
            debug!(
                event = "cluster_private",
                node, "a private message went unanswered"
            );
        }
    }
}

/// Kicks `nick` wherever it is; the nickname as spelt there.
pub(super) async fn kick_remote(
    cluster: &Cluster,
    nick: &str,
    reason: Option<&str>,
) -> Option<String> {
    let valid = crate::protocol::validate_nick(nick).ok()?;
    let keys: Vec<Arc<str>> = valid.keys().map(Arc::from).collect();
    let remote = cluster
        .directory
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .find(&keys)?;
    let req = Request::Kick {
        target: remote.nick.to_string(),
        reason: reason.map(str::to_owned),
    };
    match ask(cluster, &remote.node, &req).await? {
        Reply::Done { nick } => Some(nick),
        _ => None,
    }
}

/// Every node's members (`chatctl list --cluster`): (node, member) for each other node that
/// answered.
pub(crate) async fn list_remote(cluster: &Cluster) -> Vec<(String, Listed)> {
    let mut out = Vec::new();
    for n in cluster.nodes() {
        if n.this || n.link != "up" {
            continue;
        }
        if let Some(Reply::Members { members }) = ask(cluster, &n.node, &Request::List).await {
            out.extend(members.into_iter().map(|m| (n.node.clone(), m)));
        }
    }
    out
}
