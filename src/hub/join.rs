//! Taking a nickname: a registered client joins the default room under it, and a member
//! renames itself. Both check the nickname against everyone here (in a cluster the session has
//! claimed it across the cluster first: `session::commands`), announce the change in the
//! member's room, and tell the cluster's claims where the member now sits.

use std::sync::Arc;

use tracing::info;

use super::deliver::Patience;
use super::names::{NickKeys, NickRefused};
use super::{Hub, Member, Room, log, relay};
use crate::client::ClientId;
use crate::protocol::validate_nick;

impl Hub {
    /// Takes `nick` for a registered client and seats it in the default room: it gets the
    /// welcome (and the room's topic and history), the room `*** nick joined`. Returns the
    /// nickname as it will be shown and the room.
    pub fn join(
        self: &Arc<Self>,
        id: ClientId,
        nick: &str,
    ) -> Result<(Arc<str>, Arc<Room>), NickRefused> {
        let valid = validate_nick(nick).map_err(NickRefused::Invalid)?;
        let keys = NickKeys::of(&valid);
        let nick: Arc<str> = Arc::from(valid.as_str());
        let (client, room, notified) = {
            let mut st = self.lock();
            let Some(client) = st.clients.get(&id).cloned() else {
                return Err(NickRefused::Gone);
            };
            if st.stopping {
                return Err(NickRefused::Gone);
            }
            if keys.held_by_other(&st.nicks, id) {
                return Err(NickRefused::Taken);
            }
            keys.insert(&mut st.nicks, id);
            let room = st.rooms.default_room().clone();
            let member = Member {
                nick: nick.clone(),
                keys: keys.clone(),
                client: client.clone(),
                room: room.clone(),
            };
            st.members.insert(id, member);
            let mut rs = room.lock();
            if room.relayed {
                // In a cluster the member takes its seat where its join comes back in the
                // stream's order (`arrive`), so it sees exactly what follows its join there.
                let text = rs
                    .announce_presence(rs.seats.len() + 1)
                    .then(|| format!("{nick} joined"));
                room.queue_join(&mut rs, id, &nick, text.as_deref());
                drop(rs);
                drop(st);
                self.arrivals_open(id);
                info!(
                    client = id, peer = %client.peer, nick = %nick, room = %room.name,
                    event = "join", "joined (taking a seat in the cluster's order)"
                );
                self.claims_follow(&keys, &nick, &room);
                self.changed();
                self.forward(&room);
                return Ok((nick, room));
            }
            rs.seat(id, nick.clone(), client.clone());
            let n = rs.seats.len();
            // In a big room the welcome gives only the count, and nobody is told of the join.
            let listed = rs.announce_presence(n);
            if listed {
                let text = format!("{nick} joined");
                room.notice_from(&mut rs, id, relay::Said::Note, &text);
            }
            // The newcomer's output starts after the notice, with the welcome.
            self.welcome_here(&room, &mut rs, &client, &nick, n, listed);
            drop(rs);
            (client, room, listed)
        };
        info!(
            client = id, peer = %client.peer, nick = %nick, room = %room.name, event = "join",
            "joined"
        );
        self.claims_follow(&keys, &nick, &room);
        self.changed();
        // The newcomer's welcome leaves at once. The others' join notice waits for the end of
        // the worker's batch, longer than chat may (see `deliver`): in a join storm many joins
        // then cost one write per member, not one each.
        self.flush_one(&client, &room);
        if notified {
            let limit = self.config().max_queue_bytes;
            self.deliver_or_defer(&room, 0, limit, Patience::Presence);
        }
        Ok((nick, room))
    }

    /// Changes a member's nickname; everyone in its room (the member included) sees
    /// `*** old is now known as new`.
    pub fn rename(&self, id: ClientId, new: &str) -> Result<(Arc<str>, Arc<str>), NickRefused> {
        let valid = validate_nick(new).map_err(NickRefused::Invalid)?;
        let keys = NickKeys::of(&valid);
        let new: Arc<str> = Arc::from(valid.as_str());
        let (old, room, old_keys) = {
            let mut st = self.lock();
            let Some(member) = st.members.get(&id) else {
                return Err(NickRefused::Gone);
            };
            let old = member.nick.clone();
            let old_keys = member.keys.clone();
            if *old == *new {
                return Err(NickRefused::Unchanged);
            }
            if keys.held_by_other(&st.nicks, id) {
                return Err(NickRefused::Taken);
            }
            // Remove first: a change of case only (alice → Alice) holds the same keys.
            old_keys.remove(&mut st.nicks, id);
            keys.insert(&mut st.nicks, id);
            let Some(m) = st.members.get_mut(&id) else {
                return Err(NickRefused::Gone);
            };
            m.nick = new.clone();
            m.keys = keys.clone();
            let room = m.room.clone();
            let mut rs = room.lock();
            rs.rename(id, new.clone());
            // Announced at any room size, unlike joins and leaves: renames are rare, and a silent
            // one is how someone would take over a name that just left.
            let moved = relay::Roster::renamed(&old, &new);
            room.presence_notice(
                &mut rs,
                log::NOBODY,
                &format!("{old} is now known as {new}"),
                moved,
            );
            drop(rs);
            (old, room, old_keys)
        };
        info!(
            client = id, old = %old, nick = %new, room = %room.name, event = "rename",
            "changed nickname"
        );
        self.changed();
        self.claims_follow(&keys, &new, &room);
        if let Some(relay) = self.relay() {
            let kept = keys.to_vec();
            let released: Vec<Arc<str>> = old_keys
                .to_vec()
                .into_iter()
                .filter(|k| !kept.contains(k))
                .collect();
            if !released.is_empty() {
                relay.membership(relay::Membership::Released { keys: released });
            }
        }
        self.deliver(&room);
        Ok((old, new))
    }

    /// Tells the cluster (if any) where a member now sits under which nickname.
    pub(super) fn claims_follow(&self, keys: &NickKeys, nick: &Arc<str>, room: &Room) {
        if let Some(relay) = self.relay() {
            relay.membership(relay::Membership::In {
                keys: keys.to_vec(),
                nick: nick.clone(),
                room: room.name.clone(),
            });
        }
    }
}
