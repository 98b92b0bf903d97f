//! How a client's time on the server ends: the one entry point ([`Hub::close`]), kicks, slow
//! consumers, and the two phases of a stop.
//!
//! Removing the client from the room under the lock *is* the state change from open to closing:
//! whoever gets there first (its session after EOF or `/quit`, an operator's kick, a publisher that
//! found it too slow, the shutdown) decides the reason, queues the last line and announces the
//! leave; anyone later finds it gone. The outbox's close mark then tells the writer where the
//! client's output ends, and rings the session, which finishes writing and closes the socket.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tracing::{debug, info, warn};

use super::Hub;
use super::log::NOBODY;
use super::relay::{Membership, Roster};
use crate::client::{ClientId, Close, LeaveReason};
use crate::protocol::format::{self, REASON_MAX_CHARS, notice, wrapped_notice};

impl Hub {
    /// Ends a client's time in the room, once: queues `farewell` (if any) as its last line, marks
    /// its output closed with `reason`, and tells the others it left. Returns its nickname if it
    /// had joined; None if it had already been closed (nothing happens then).
    pub fn close(
        &self,
        id: ClientId,
        reason: LeaveReason,
        farewell: Option<Bytes>,
    ) -> Option<Arc<str>> {
        let mut work = vec![(id, reason, farewell)];
        let mut first_nick = None;
        let mut first = true;
        // Bounded: every round removes one client from the room or finds it gone.
        while let Some((id, reason, farewell)) = work.pop() {
            let closed = self.close_one(id, &reason, farewell);
            let Some((nick, slow)) = closed else {
                first = false;
                continue;
            };
            if std::mem::take(&mut first) {
                first_nick = nick;
            }
            work.extend(
                slow.into_iter()
                    .map(|id| (id, LeaveReason::QueueFull, None)),
            );
        }
        first_nick
    }

    /// One removal; returns the nickname it had and whoever became too slow hearing about it.
    fn close_one(
        &self,
        id: ClientId,
        reason: &LeaveReason,
        farewell: Option<Bytes>,
    ) -> Option<(Option<Arc<str>>, Vec<ClientId>)> {
        let (client, member, notified, end) = {
            let mut st = self.lock();
            let client = st.clients.remove(&id)?;
            // Under the network it was counted under at connect time, whatever the config now.
            if let Some(net) = st.counted_as.remove(&id)
                && let Some(n) = st.per_ip.get_mut(&net)
            {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.per_ip.remove(&net);
                }
            }
            let member = st.members.remove(&id);
            let how = Close::for_reason(reason.clone());
            let mut notified = false;
            let end = match &member {
                None => {
                    // In no room: only private lines are owed.
                    if let Some(line) = farewell {
                        client.outbox.push_private(0, line, 1);
                    }
                    client.outbox.close(0, how);
                    0
                }
                Some(m) => {
                    m.keys.remove(&mut st.nicks, id);
                    let room = &m.room;
                    let mut rs = room.lock();
                    rs.unseat(id);
                    rs.arriving.retain(|x| *x != id);
                    let end = rs.log.end();
                    if let Some(line) = farewell {
                        client.outbox.push_private(end, line, 1);
                    }
                    client.outbox.close(end, how);
                    // A node that stops still tells the rest of its cluster who went.
                    let stopping = st.stopping && !room.relayed;
                    if !stopping && rs.announce_presence(rs.seats.len() + 1) {
                        let moved = Roster::left(&m.nick);
                        let text = format!("{} left ({reason})", m.nick);
                        room.presence_notice(&mut rs, NOBODY, &text, moved);
                        notified = true;
                    }
                    drop(rs);
                    st.rooms.remove_if_abandoned(room);
                    end
                }
            };
            (client, member, notified, end)
        };
        self.changed();
        if let (Some(m), Some(relay)) = (&member, self.relay()) {
            relay.membership(Membership::Released {
                keys: m.keys.to_vec(),
            });
        }
        let nick = member.as_ref().map(|m| m.nick.clone());
        let room = member.as_ref().map_or("", |m| &*m.room.name);
        if matches!(reason, LeaveReason::QueueFull | LeaveReason::WriteTimeout) {
            self.counters.slow_drops.fetch_add(1, Ordering::Relaxed);
            warn!(
                client = id, peer = %client.peer, nick = nick.as_deref().unwrap_or(""), room,
                queued = client.outbox.lag(end), event = "slow_consumer",
                "send queue full; disconnected as too slow"
            );
        }
        match &nick {
            Some(nick) => info!(
                client = id, nick = %nick, room, event = "leave", reason = reason.kind(),
                detail = %reason, "left"
            ),
            None => debug!(
                client = id, peer = %client.peer, event = "disconnect", reason = reason.kind(),
                "disconnected before choosing a nickname"
            ),
        }
        let slow = match &member {
            Some(m) if notified => {
                self.forward(&m.room);
                m.room.deliver_collect()
            }
            _ => Vec::new(),
        };
        Some((nick, slow))
    }

    /// Disconnects clients whose lag overflowed during a delivery (and any that overflow while
    /// hearing about it).
    pub(super) fn drop_slow(&self, ids: Vec<ClientId>) {
        for id in ids {
            self.close(id, LeaveReason::QueueFull, None);
        }
    }

    /// Kicks a client by id (all digits) or nickname: it gets `*** you were kicked: reason`, then leaves.
    /// Returns the id and nickname (if joined) of who was kicked.
    pub fn kick(&self, target: &str, reason: Option<&str>) -> Option<(ClientId, Option<Arc<str>>)> {
        let id = self.resolve(target)?;
        let reason = reason.map(|r| format::clip(r, REASON_MAX_CHARS));
        let text = match &reason {
            Some(r) => format!("you were kicked: {r}"),
            None => "you were kicked".to_owned(),
        };
        let farewell = wrapped_notice(self.config().wrap, &text);
        let reason = LeaveReason::Kicked(reason.map(|r| r.into_owned()));
        let nick = self.close(id, reason, Some(farewell));
        self.counters.kicks.fetch_add(1, Ordering::Relaxed);
        Some((id, nick))
    }

    /// Closes every client an upgrade cannot hand to another process (TLS and `wss://`: see
    /// [`Client::moves`](crate::client::Client::moves)), with `farewell` as its last line.
    /// Returns how many.
    pub(crate) fn close_unmovable(&self, farewell: Bytes) -> usize {
        let relayed: Vec<ClientId> = {
            let st = self.lock();
            st.clients
                .values()
                .filter(|c| !c.moves())
                .map(|c| c.id)
                .collect()
        };
        for &id in &relayed {
            self.close(id, LeaveReason::Upgrading, Some(farewell.clone()));
        }
        relayed.len()
    }

    /// Stopping, phase one (after the listeners closed): every session is asked to read and relay
    /// what its client has already sent, so that lines written before the stop reach the room
    /// before `*** server shutting down`. Wait for it with [`drained`](Self::drained).
    pub fn begin_drain(&self) {
        let clients: Vec<_> = self.lock().clients.values().cloned().collect();
        for client in clients {
            client.outbox.request_drain(self.drain.ticket());
        }
    }

    /// Resolves once every session asked by [`begin_drain`](Self::begin_drain) has relayed its
    /// client's input or closed.
    pub async fn drained(&self) {
        self.drain.finished().await;
    }

    /// Begins a graceful stop: refuses newcomers, and closes every connection with `*** server
    /// shutting down` as its last line. Sessions then finish writing and end by themselves; nobody
    /// is told of anyone leaving, because everyone is.
    pub fn shutdown(&self) {
        let line = notice("server shutting down");
        let mut guard = self.lock();
        let st = &mut *guard;
        st.stopping = true;
        // In a cluster the other nodes hear who went, and the nicknames are given back.
        let mut released = Vec::new();
        for m in st.members.values() {
            if m.room.relayed {
                let mut rs = m.room.lock();
                let text = format!("{} left ({})", m.nick, LeaveReason::ShuttingDown);
                let moved = Roster::left(&m.nick);
                m.room.presence_notice(&mut rs, NOBODY, &text, moved);
                released.extend(m.keys.to_vec());
            }
        }
        // Everyone loses their seat first, so no publish can slip a line in after the notice.
        for room in st.rooms.iter() {
            room.lock().clear();
        }
        let rooms: Vec<_> = st.rooms.iter().cloned().collect();
        for (id, client) in st.clients.drain() {
            let end = st.members.get(&id).map_or(0, |m| m.room.log_end());
            client.outbox.push_private(end, line.clone(), 1);
            client
                .outbox
                .close(end, Close::Flush(LeaveReason::ShuttingDown));
        }
        st.members.clear();
        st.nicks.clear();
        st.per_ip.clear();
        st.counted_as.clear();
        drop(guard);
        self.changed();
        for room in &rooms {
            self.forward(room);
        }
        if let Some(relay) = self.relay()
            && !released.is_empty()
        {
            relay.membership(Membership::Released { keys: released });
        }
    }

    /// True once [`shutdown`](Self::shutdown) has begun.
    pub fn is_stopping(&self) -> bool {
        self.lock().stopping
    }
}
