//! The room keys beyond single values: the `[[rooms]]` tables, and the rules that tie the room
//! keys to one another and to `max_queue_bytes`.
//!
//! Each table's keys are read with their positions (`toml::Spanned`), so an error names the line
//! of the offending `name`, `topic` or `history_lines`, or the `[[rooms]]` header for a missing
//! name. Two tables name the same room when their names share any of `RoomName::keys` (the
//! case-folded confusable skeletons), so neither case nor look-alike letters make a second room.

use std::collections::HashMap;

use serde::Deserialize;
use toml::Spanned;

use super::document::Document;
use super::rules::{self, MIN_HISTORY_BYTES};
use super::{Config, ConfigError, RoomConfig};
use crate::protocol::validate_room;

/// Every key of a `[[rooms]]` table with the type it takes, as said in "expected …" messages.
/// Must list exactly the fields of `FileRoom` (a test checks this).
pub(super) const ROOM_KEYS: &[(&str, &str)] = &[
    ("name", "a room name string like \"rust\""),
    ("topic", "a string"),
    ("history_lines", "an integer"),
];

/// One `[[rooms]]` table, exactly as written, each value with its place in the text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRoom {
    name: Option<Spanned<String>>,
    topic: Option<Spanned<String>>,
    history_lines: Option<Spanned<i64>>,
}

/// Checks every table (`tables` carries each one's span: its `[[rooms]]` header) and that no two
/// name the same room, and puts them in `c.rooms`. If one is `c.default_room` (already checked),
/// that becomes its spelling, so the daemon sees one name for one room. Stops at the first
/// problem.
pub(super) fn rooms(
    tables: Vec<Spanned<FileRoom>>,
    c: &mut Config,
    doc: &Document<'_>,
) -> Result<(), ConfigError> {
    // Each key of each room so far → that room's display form and where its name is: up to
    // 65000 rooms, so no comparing every pair.
    let mut seen: HashMap<String, (String, usize)> = HashMap::with_capacity(2 * tables.len());
    let mut rooms = Vec::with_capacity(tables.len());
    for table in tables {
        let header = table.span().start;
        let table = table.into_inner();
        let Some(name) = table.name else {
            let reason = "every [[rooms]] table needs a name (e.g. name = \"rust\")".to_owned();
            return doc.check_at("rooms.name", header, Err(reason));
        };
        let at = name.span().start;
        let name = doc.check_at("rooms.name", at, rules::room_name(name.get_ref()))?;
        if let Some((first, first_at)) = name.keys().find_map(|k| seen.get(k)) {
            let reason = format!(
                "'{}' is the same room as '{first}' on line {} (room names are compared ignoring case and letters that look alike)",
                name.as_str(),
                doc.line_at(*first_at)
            );
            return doc.check_at("rooms.name", at, Err(reason));
        }
        let topic = match table.topic {
            Some(t) => doc.check_at("rooms.topic", t.span().start, rules::topic(t.get_ref()))?,
            None => String::new(),
        };
        let history_lines = match table.history_lines {
            Some(n) => {
                let v = rules::history_lines(*n.get_ref());
                Some(doc.check_at("rooms.history_lines", n.span().start, v)?)
            }
            None => None,
        };
        rooms.push(RoomConfig {
            name: name.as_str().to_owned(),
            topic,
            history_lines,
        });
        for key in name.keys() {
            seen.insert(key.to_owned(), (name.as_str().to_owned(), at));
        }
    }
    if let Ok(default) = validate_room(&c.default_room) {
        let mut listed: Vec<&(String, usize)> =
            default.keys().filter_map(|k| seen.get(k)).collect();
        listed.dedup();
        match listed[..] {
            [] => {}
            [(name, _)] => c.default_room.clone_from(name),
            // Look-alike is not transitive: `#AI` looks like both `#ai` and `#Al`, which do not
            // look like each other.
            [(a, a_at), (b, b_at), ..] => {
                let reason = format!(
                    "'{}' is the same room as both '{a}' on line {} and '{b}' on line {} (room names are compared ignoring case and letters that look alike); choose one",
                    c.default_room,
                    doc.line_at(*a_at),
                    doc.line_at(*b_at)
                );
                return doc.check("default_room", Err(reason));
            }
        }
    }
    c.rooms = rooms;
    Ok(())
}

/// The predefined rooms (the tables plus `default_room` if they do not list it) fit `max_rooms`.
/// Blamed on `max_rooms` if the file sets it, else on the tables.
pub(super) fn check_room_count(c: &Config, doc: &Document<'_>) -> Result<(), ConfigError> {
    let default_listed = c.rooms.iter().any(|r| r.name == c.default_room);
    let count = c.rooms.len() + usize::from(!default_listed);
    if count <= c.max_rooms {
        return Ok(());
    }
    let listed = if !default_listed {
        format!(
            "{} [[rooms]] tables plus default_room {}",
            c.rooms.len(),
            c.default_room
        )
    } else {
        format!("{} [[rooms]] tables", c.rooms.len())
    };
    if doc.has_key("max_rooms") {
        let reason = format!(
            "must be at least the number of predefined rooms, {count} ({listed}) (got {})",
            c.max_rooms
        );
        doc.check("max_rooms", Err(reason))
    } else {
        let reason = format!(
            "{count} predefined rooms ({listed}) are more than max_rooms = {} (the default); set max_rooms too",
            c.max_rooms
        );
        doc.check("rooms", Err(reason))
    }
}

/// While any room keeps history, `history_bytes` is at least [`MIN_HISTORY_BYTES`] and at most
/// half of `max_queue_bytes`. A joiner is sent the room's history at once, and a queue more than
/// half full is what the daemon treats as congested (senders pause, and a reader that does not
/// drain it is cut off as too slow): the replay alone must never put a new member there.
///
/// A file that does not set `history_bytes` gets the default or half its `max_queue_bytes`,
/// whichever is less, rather than an error: a file that lowered `max_queue_bytes` before rooms
/// had history stays valid. Only a queue too small for any history (under twice the minimum)
/// is then refused, blamed on `max_queue_bytes`.
pub(super) fn fit_history_to_queue(c: &mut Config, doc: &Document<'_>) -> Result<(), ConfigError> {
    let half = c.max_queue_bytes / 2;
    let set = doc.has_key("history_bytes");
    if !set {
        c.history_bytes = c.history_bytes.min(half);
    }
    let room_keeps = c
        .rooms
        .iter()
        .any(|r| r.history_lines.is_some_and(|n| n > 0));
    if c.history_lines == 0 && !room_keeps {
        return Ok(());
    }
    let kept_by = if c.history_lines > 0 {
        format!("history_lines = {}", c.history_lines)
    } else {
        "a [[rooms]] table's history_lines".to_owned()
    };
    let too_small = format!(
        "max_queue_bytes = {} is too small for any history: raise it to at least {}, or set history_lines = 0",
        c.max_queue_bytes,
        2 * MIN_HISTORY_BYTES
    );
    if !set {
        if c.history_bytes >= MIN_HISTORY_BYTES {
            return Ok(());
        }
        let reason = format!(
            "leaves {half} bytes (half the queue) for replaying a room's history to a joiner ({kept_by}), less than the {MIN_HISTORY_BYTES} history needs; {too_small}"
        );
        return doc.check("max_queue_bytes", Err(reason));
    }
    if c.history_bytes < MIN_HISTORY_BYTES {
        let reason = format!(
            "must be at least {MIN_HISTORY_BYTES} while rooms keep history ({kept_by}) (got {}); history_lines = 0 keeps none",
            c.history_bytes
        );
        return doc.check("history_bytes", Err(reason));
    }
    if c.history_bytes <= half {
        return Ok(());
    }
    let mut reason = format!(
        "must be at most {half}, half of max_queue_bytes = {} (got {}): a joiner is sent a room's history at once, and more than half its queue would make it look too slow",
        c.max_queue_bytes, c.history_bytes
    );
    if half < MIN_HISTORY_BYTES {
        reason = format!("{reason}; {too_small}");
    }
    doc.check("history_bytes", Err(reason))
}
