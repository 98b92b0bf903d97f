//! Who is where elsewhere: every other node's nickname claims, by key. It follows the nicknames
//! bucket (through the claims watch) and, a moment ahead of it, the notices of other nodes'
//! members coming and going (through the stream), so that `/who` agrees with the notices a
//! member has just read. `/who`, `/msg`, the welcome's member list and `chatctl kick` read it.
//! No I/O here.

use std::collections::HashMap;
use std::sync::Arc;

use super::Cluster;
use super::wire::{self, Claim};
use crate::hub::relay::Remote;
use crate::protocol::validate_room;

/// Claims of other nodes, by key.
#[derive(Debug, Default)]
pub(super) struct Directory {
    by_key: HashMap<String, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    claim: Claim,
    /// The registry key of the claim's room.
    room_key: Option<String>,
}

impl Directory {
    pub(super) fn put(&mut self, key: String, claim: Claim) {
        let room_key = validate_room(&claim.room).ok().map(|r| r.key().to_owned());
        self.by_key.insert(key, Entry { claim, room_key });
    }

    pub(super) fn remove(&mut self, key: &str) {
        self.by_key.remove(key);
    }

    /// What a notice from `node`'s incarnation `inc` says: `left` is no longer in `room`
    /// (whatever the bucket shows until its deletion comes through the watch), `joined` is.
    pub(super) fn follow(
        &mut self,
        node: &str,
        inc: u64,
        room: &str,
        left: Option<&str>,
        joined: Option<&str>,
    ) {
        let room_key = validate_room(room).ok().map(|r| r.key().to_owned());
        if let Some(nick) = left {
            self.by_key.retain(|_, e| {
                !(e.claim.node == node && e.claim.nick == nick && e.room_key == room_key)
            });
        }
        let Some(nick) = joined else { return };
        let Ok(valid) = crate::protocol::validate_nick(nick) else {
            return;
        };
        let claim = Claim {
            node: node.to_owned(),
            inc,
            nick: nick.to_owned(),
            room: room.to_owned(),
        };
        for k in valid.keys() {
            self.put(wire::nick_key(k), claim.clone());
        }
    }

    /// Nicknames in the room with registry key `room_key`, each once.
    pub(super) fn names_in(&self, room_key: &str) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self
            .by_key
            .values()
            .filter(|e| e.room_key.as_deref() == Some(room_key))
            .map(|e| Arc::from(e.claim.nick.as_str()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Who holds any of `keys`.
    pub(super) fn find(&self, keys: &[Arc<str>]) -> Option<Remote> {
        keys.iter()
            .find_map(|k| self.by_key.get(&wire::nick_key(k)))
            .map(|e| Remote {
                node: e.claim.node.clone(),
                nick: Arc::from(e.claim.nick.as_str()),
            })
    }

    /// (node, nickname, room) of every member elsewhere, each once.
    pub(super) fn members(&self) -> Vec<(String, String, String)> {
        let mut out: Vec<(String, String, String)> = self
            .by_key
            .values()
            .map(|e| {
                (
                    e.claim.node.clone(),
                    e.claim.nick.clone(),
                    e.claim.room.clone(),
                )
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Forgets the claims of `node`'s incarnation `inc` (it was lost) and returns the members
    /// they were, each once: (first key, nickname, room).
    pub(super) fn drop_node(&mut self, node: &str, inc: u64) -> Vec<(String, String, String)> {
        let mut gone: Vec<(String, String, String)> = Vec::new();
        self.by_key.retain(|key, e| {
            if e.claim.node == node && e.claim.inc == inc {
                if !gone.iter().any(|(_, n, _)| *n == e.claim.nick) {
                    gone.push((key.clone(), e.claim.nick.clone(), e.claim.room.clone()));
                }
                false
            } else {
                true
            }
        });
        gone
    }
}

impl Cluster {
    /// Members on other nodes: (node, nickname, room).
    pub fn remote_members(&self) -> Vec<(String, String, String)> {
        self.directory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .members()
    }

    /// Nicknames of members elsewhere in the room with registry key `room_key`.
    pub(crate) fn remote_names_in(&self, room_key: &str) -> Vec<Arc<str>> {
        self.directory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .names_in(room_key)
    }

    /// A notice from another node says who left `room` and who joined it: the directory
    /// follows at once (unless that node was declared lost).
    pub(super) fn follow_notice(
        &self,
        node: &str,
        inc: u64,
        room: &str,
        left: Option<String>,
        joined: Option<String>,
    ) {
        if !self.is_lost(node, inc) {
            self.directory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .follow(node, inc, room, left.as_deref(), joined.as_deref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(node: &str, nick: &str, room: &str) -> Claim {
        Claim {
            node: node.to_owned(),
            inc: 7,
            nick: nick.to_owned(),
            room: room.to_owned(),
        }
    }

    fn key(nick: &str) -> String {
        wire::nick_key(
            crate::protocol::validate_nick(nick)
                .unwrap()
                .keys()
                .next()
                .unwrap(),
        )
    }

    fn lobby(d: &Directory) -> Vec<String> {
        let k = validate_room("#lobby").unwrap().key().to_owned();
        d.names_in(&k).iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn notices_move_names_before_the_bucket_does() {
        let mut d = Directory::default();
        d.put(key("carol"), claim("b", "carol", "#lobby"));
        d.put(key("bob"), claim("b", "bob", "#lobby"));
        // A rename seen in the stream: the old name goes, the new one is listed at once.
        d.follow("b", 7, "#lobby", Some("carol"), Some("caroline"));
        assert_eq!(lobby(&d), ["bob", "caroline"]);
        assert_eq!(d.find(&[Arc::from("caroline")]).unwrap().node, "b");
        // The bucket catches up: deleting the old key and writing the new one change nothing.
        d.remove(&key("carol"));
        d.put(key("caroline"), claim("b", "caroline", "#lobby"));
        assert_eq!(lobby(&d), ["bob", "caroline"]);
        // A leave, in another spelling of the room's name.
        d.follow("b", 7, "#LOBBY", Some("bob"), None);
        assert_eq!(lobby(&d), ["caroline"]);
    }

    #[test]
    fn a_leave_takes_only_that_node_and_room() {
        let mut d = Directory::default();
        d.put(key("dan"), claim("c", "dan", "#lobby"));
        d.follow("b", 7, "#lobby", Some("dan"), None);
        d.follow("c", 7, "#rust", Some("dan"), None);
        assert_eq!(lobby(&d), ["dan"]);
        // A nickname that is not one joins nothing.
        d.follow("c", 7, "#lobby", None, Some("no spaces allowed"));
        assert_eq!(lobby(&d), ["dan"]);
    }
}
