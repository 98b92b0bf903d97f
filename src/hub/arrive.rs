//! A member's seat in a room shared with other nodes (`[cluster]`): its join goes to the broker
//! like any other event, and the member takes its seat where that join comes back in the one
//! order ([`Hub::arrive`], called from [`Hub::apply`]), so on every node it sees exactly what
//! follows its join. Its session waits for that ([`Hub::arrival`]); if the link fails on the
//! way, it is seated where the log is then ([`Hub::arrive_here`]) rather than left without a
//! seat.

use std::sync::Arc;

use bytes::Bytes;

use super::Hub;
use super::deliver::Patience;
use super::room::Room;
use crate::client::ClientId;

impl Hub {
    /// Notes that member `id` waits for its join to come back.
    pub(super) fn arrivals_open(&self, id: ClientId) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        arrivals.insert(id, tx);
        self.arrival_waits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, rx);
    }

    /// What member `id`'s session waits on until its join has come back (None if it is not
    /// waiting for one).
    pub(crate) fn arrival(&self, id: ClientId) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.arrival_waits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }

    /// Seats member `id`, whose join is on its way, in `room` at this point of the room's log:
    /// its join notice (if any) first, then its welcome and the room's history. False if it is
    /// not waiting there (it left or moved meanwhile).
    pub(crate) fn arrive(
        self: &Arc<Self>,
        id: ClientId,
        room: &Arc<Room>,
        notice: Option<Bytes>,
    ) -> bool {
        let (client, notified) = {
            let st = self.lock();
            let Some(m) = st.members.get(&id) else {
                return false;
            };
            if !Arc::ptr_eq(&m.room, room) {
                return false;
            }
            let (client, nick) = (m.client.clone(), m.nick.clone());
            let mut rs = room.lock();
            let Some(at) = rs.arriving.iter().position(|x| *x == id) else {
                return false;
            };
            rs.arriving.swap_remove(at);
            rs.seat(id, nick.clone(), client.clone());
            let n = rs.seats.len();
            let listed = rs.announce_presence(n);
            let notified = notice.is_some();
            if let Some(line) = notice {
                room.append(&mut rs, id, line, 1);
            }
            self.welcome_here(room, &mut rs, &client, &nick, n, listed);
            (client, notified)
        };
        if let Some(tx) = self
            .arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
        {
            let _ = tx.send(());
        }
        // As for a join here: the welcome leaves at once, the notice may wait (`Patience`).
        self.flush_one(&client, room);
        if notified {
            let limit = self.config().max_queue_bytes;
            self.deliver_or_defer(room, 0, limit, Patience::Presence);
        }
        true
    }

    /// Seats member `id` where its room's log is now, if its join never came back (the link
    /// failed on the way): it is not left without a seat.
    pub fn arrive_here(self: &Arc<Self>, id: ClientId) {
        let room = self.lock().members.get(&id).map(|m| m.room.clone());
        if let Some(room) = room {
            self.arrive(id, &room, None);
        }
    }
}
