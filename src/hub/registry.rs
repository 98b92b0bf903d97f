//! The registry of rooms, under the hub's lock: every room by each of its name's keys, the
//! default room, and the log slots rooms use. A room's log positions carry its slot in their top
//! bits (see `log`), and a slot's next room starts where the last one ended, so a position never
//! means two places.

use std::collections::HashMap;
use std::sync::Arc;

use super::log::{MAX_SLOT, slot_start};
use super::room::{Kind, Room};
use crate::protocol::RoomName;
use crate::settings::Settings;

/// Every room, by key, and the log slots they use. Under the hub's lock.
#[derive(Debug, Default)]
pub(super) struct Rooms {
    by_key: HashMap<Arc<str>, Arc<Room>>,
    /// Every key of every room (a name has one or two, like a nickname) → its registry key.
    keys: HashMap<Arc<str>, Arc<str>>,
    /// The default room's key.
    default: Option<Arc<str>>,
    /// Slots given back by rooms that closed.
    free: Vec<u16>,
    /// Per slot (index = slot; 0 unused): where its next room's log starts.
    starts: Vec<u64>,
}

impl Rooms {
    /// The room whose name looks like `name` (shares a key with it).
    pub(super) fn get(&self, name: &RoomName) -> Option<&Arc<Room>> {
        name.keys()
            .find_map(|k| self.keys.get(k))
            .and_then(|key| self.by_key.get(key))
    }

    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Arc<Room>> {
        self.by_key.values()
    }

    /// The room newcomers enter. Always exists once the hub is built.
    pub(super) fn default_room(&self) -> &Arc<Room> {
        let key = self
            .default
            .as_ref()
            .expect("the default room is made with the hub");
        &self.by_key[key]
    }

    pub(super) fn has_default(&self) -> bool {
        self.default.is_some()
    }

    pub(super) fn set_default(&mut self, name: &RoomName) {
        if let Some(room) = self.get(name) {
            self.default = Some(room.key.clone());
        }
    }

    /// Makes a room; None only if every slot is taken (more rooms than `max_rooms` allows).
    pub(super) fn create(
        &mut self,
        name: &RoomName,
        kind: Kind,
        topic: &str,
        history_override: Option<usize>,
        s: &Settings,
    ) -> Option<Arc<Room>> {
        if self.starts.is_empty() {
            self.starts.push(0); // slot 0 is never a room's
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None if self.starts.len() <= usize::from(MAX_SLOT) => {
                let slot = self.starts.len() as u16;
                self.starts.push(slot_start(slot));
                slot
            }
            None => return None,
        };
        let start = self.starts[usize::from(slot)];
        let room = Arc::new(Room::new(name, slot, start, kind, topic, s));
        if history_override.is_some() {
            room.follow(s, history_override);
        }
        for k in &room.keys {
            self.keys.insert(k.clone(), room.key.clone());
        }
        self.by_key.insert(room.key.clone(), room.clone());
        Some(room)
    }

    /// Removes a room (it is empty, or its members were moved out); its slot's next log starts
    /// where this one ended.
    pub(super) fn remove(&mut self, room: &Room) {
        if self.by_key.remove(&room.key).is_some() {
            for k in &room.keys {
                if self.keys.get(k) == Some(&room.key) {
                    self.keys.remove(k);
                }
            }
            self.starts[usize::from(room.slot)] = room.log_end();
            self.free.push(room.slot);
        }
    }

    /// Removes `room` if users made it and nobody is left in it.
    pub(super) fn remove_if_abandoned(&mut self, room: &Room) {
        let abandoned = {
            let st = room.lock();
            st.kind == Kind::User && st.seats.is_empty()
        };
        if abandoned {
            self.remove(room);
        }
    }
}
