//! The admin commands about rooms: the room list, topics, moving a member, announcements to one
//! room or to all, and limiting `list` to one room.
//!
//! The operator names a room with or without its `#` (a shell takes an unquoted `#rust` for a
//! comment) and in any case. Names are checked as users' are ([`validate_room`]), an invalid one
//! refused with the reason, and compared as the hub looks rooms up: by their keys
//! ([`RoomName::keys`]: case and look-alike letters folded), two names being one room when they
//! share one. Replies spell a room as everyone sees it, not as it was typed. Every change is logged with the caller's
//! uid and pid and a `room` field (`ROOM=` in the journal).

use std::collections::HashMap;
use std::sync::Arc;

use tracing::{field, info};

use super::proto::{
    AnnounceReply, ClientEntry, ErrorCode, ListReply, MoveReply, Response, RoomEntry, RoomsReply,
    TopicReply,
};
use crate::hub::{EnterRefused, Hub, TopicRefused};
use crate::protocol::{RoomName, sanitise_str, validate_room};

/// A reply either way: `Err` is the refusal, so that checks can use `?`.
pub(super) type Outcome = Result<Response, Response>;

fn bad(message: String) -> Response {
    Response::error(ErrorCode::BadRequest, message)
}

fn not_found(message: String) -> Response {
    Response::error(ErrorCode::NotFound, message)
}

/// The room name the operator gave, checked.
fn parse_room(name: &str) -> Result<RoomName, Response> {
    validate_room(name).map_err(|e| bad(format!("invalid room name '{}': {e}", name.trim())))
}

fn no_room(name: &RoomName) -> Response {
    not_found(format!("no room {}", name.as_str()))
}

/// True if `shown`, a room's name as the hub shows it, is the room `wanted` names. No two rooms
/// share a key, so a shared key is the hub's own test. A shown name is valid (it validates again
/// to itself); if it were not, it would match nothing.
fn is_room(wanted: &RoomName, shown: &str) -> bool {
    validate_room(shown).is_ok_and(|room| room.keys().any(|k| wanted.keys().any(|w| w == k)))
}

/// The room `wanted` names, spelt as everyone sees it, if it exists now.
fn spelt(hub: &Hub, wanted: &RoomName) -> Option<Arc<str>> {
    hub.rooms()
        .into_iter()
        .find(|r| is_room(wanted, &r.name))
        .map(|r| r.name)
}

/// `rooms`: every room, sorted by name.
pub(super) fn rooms(hub: &Hub) -> Response {
    let rooms = hub
        .rooms()
        .into_iter()
        .map(|r| RoomEntry {
            name: r.name.to_string(),
            members: r.members as u64,
            topic: r.topic.to_string(),
            history: r.history as u64,
            predefined: r.predefined,
        })
        .collect();
    Response::ok(&RoomsReply { rooms })
}

/// `list --room NAME`: of `clients`, the members of that room. A room nobody is in answers an
/// empty list if it exists, `not_found` if not.
pub(super) fn list_room(hub: &Hub, mut clients: Vec<ClientEntry>, name: &str) -> Outcome {
    let wanted = parse_room(name)?;
    // Members share a few rooms: each room's name is validated once.
    let mut verdicts: HashMap<String, bool> = HashMap::new();
    clients.retain(|c| {
        c.room.as_ref().is_some_and(|room| {
            *verdicts
                .entry(room.clone())
                .or_insert_with(|| is_room(&wanted, room))
        })
    });
    let room = match clients.first() {
        Some(member) => member.room.clone(),
        None => spelt(hub, &wanted).map(|r| r.to_string()),
    };
    let Some(room) = room else {
        return Err(no_room(&wanted));
    };
    Ok(Response::ok(&ListReply {
        clients,
        room: Some(room),
    }))
}

/// `announce`: `*** text` to every member of `room`, or of every room.
pub(super) fn announce(hub: &Hub, text: &str, room: Option<&str>, uid: u32, pid: i32) -> Outcome {
    let text = sanitise_str(text);
    if text.is_empty() {
        return Err(bad("the announcement is empty".into()));
    }
    let room = room.map(parse_room).transpose()?;
    // Only a named room can be missing; "every room" always has the default one.
    let reached = match (
        hub.announce(room.as_ref().map(RoomName::as_str), &text),
        &room,
    ) {
        (None, Some(name)) => return Err(no_room(name)),
        (reached, _) => reached.unwrap_or(0) as u64,
    };
    let room =
        room.map(|r| spelt(hub, &r).map_or_else(|| r.as_str().to_owned(), |name| name.to_string()));
    info!(
        event = "announce",
        uid,
        pid,
        reached,
        room = room.as_deref().map(field::display),
        text = %text,
        "admin announcement"
    );
    Ok(Response::ok(&AnnounceReply { reached, room }))
}

/// `topic`: sets (or, with empty text, clears) a room's topic as the operator; the room is told.
pub(super) fn topic(hub: &Hub, room: &str, text: &str, uid: u32, pid: i32) -> Outcome {
    let name = parse_room(room)?;
    let text = sanitise_str(text);
    let room = hub
        .set_topic(crate::hub::TopicOf::Room(name.as_str()), &text, None)
        .map_err(|why| match why {
            TopicRefused::NoSuchRoom => no_room(&name),
            TopicRefused::TooLong => bad(why.to_string()),
        })?;
    // The hub keeps it trimmed.
    let topic = text.trim();
    info!(
        event = "admin_topic",
        uid,
        pid,
        room = %room,
        topic,
        "admin set a topic"
    );
    Ok(Response::ok(&TopicReply {
        room: room.to_string(),
        topic: topic.to_owned(),
    }))
}

/// `move`: puts member `target` (an id or nickname) in `room`, made if it does not exist. The
/// member is told `The operator moved you to #room.` before the room's name, topic, who is there
/// and its history; the old room sees it leave for the new one and the new one sees it join.
pub(super) fn move_member(hub: &Arc<Hub>, target: &str, room: &str, uid: u32, pid: i32) -> Outcome {
    let target = target.trim();
    let name = parse_room(room)?;
    let id = hub
        .resolve(target)
        .ok_or_else(|| not_found(format!("no client with id or nickname '{target}'")))?;
    let (nick, from) = hub.membership(id).ok_or_else(|| {
        not_found(format!(
            "client {id} has not chosen a nickname yet, so it is in no room"
        ))
    })?;
    let shown = spelt(hub, &name).unwrap_or_else(|| Arc::from(name.as_str()));
    let note = format!("The operator moved you to {shown}.");
    let room = hub
        .enter(id, name.as_str(), Some(&note), true)
        .map_err(|why| refused(&nick, &name, why))?;
    info!(
        event = "admin_move",
        uid,
        pid,
        client = id,
        nick = %nick,
        from = %from,
        room = %room.name,
        "admin moved a member"
    );
    Ok(Response::ok(&MoveReply {
        id,
        nick: nick.to_string(),
        from: from.to_string(),
        room: room.name.to_string(),
    }))
}

/// The reply to a move the hub refused.
fn refused(nick: &str, name: &RoomName, why: EnterRefused) -> Response {
    match why {
        EnterRefused::Invalid(e) => bad(format!("invalid room name '{}': {e}", name.as_str())),
        EnterRefused::AlreadyThere(room) => bad(format!("{nick} is in {room} already")),
        EnterRefused::NoSuchRoom(room) => not_found(format!("no room {room}")),
        EnterRefused::TooManyRooms(max) => bad(format!(
            "cannot make {}: the server has reached its limit of {max} rooms (max_rooms)",
            name.as_str()
        )),
        EnterRefused::Gone => not_found(format!(
            "{nick} is no longer connected (or the daemon is stopping)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_is_found_by_any_spelling_the_hub_takes_for_it() {
        let named = |name: &str| validate_room(name).unwrap();
        for (wanted, shown) in [
            ("rust", "#Rust"),
            ("#RUST", "#rust"),
            ("ＲＵＳＴ", "#Rust"),
            // Capitals that look alike: one room, as for nicknames.
            ("#Al", "#AI"),
        ] {
            assert!(is_room(&named(wanted), shown), "{wanted} names {shown}");
        }
        for (wanted, shown) in [("#rusty", "#rust"), ("#rust", "#rust-lang")] {
            assert!(!is_room(&named(wanted), shown), "{wanted} is not {shown}");
        }
    }

    #[test]
    fn an_invalid_room_name_is_refused_with_the_reason() {
        let refusal = parse_room(" a.b ").unwrap_err();
        let error = refusal.error.unwrap();
        assert_eq!(error.code, ErrorCode::BadRequest);
        assert!(
            error
                .message
                .starts_with("invalid room name 'a.b': '.' is not allowed"),
            "{}",
            error.message
        );
    }
}
