//! The room keys that go beyond one value: `[[rooms]]` tables (names, topics, per-room history,
//! duplicates), the default room among them, and the limits that tie them to `max_rooms`.

use super::{parse, parse_err};
use crate::config::{Config, RoomConfig};

fn room(name: &str, topic: &str, history_lines: Option<usize>) -> RoomConfig {
    RoomConfig {
        name: name.to_owned(),
        topic: topic.to_owned(),
        history_lines,
    }
}

#[test]
fn tables_are_read_in_order_with_topic_and_history() {
    let text = "history_lines = 50\n\
        \n\
        [[rooms]]\n\
        name = \"Rust\"\n\
        topic = \"All about \\u001b[1mRust\\u001b[0m, \\u200bsafely\"\n\
        history_lines = 100\n\
        \n\
        [[rooms]]\n\
        name = \"#go\"\n\
        \n\
        [[rooms]]\n\
        name = \"quiet\"\n\
        history_lines = 0\n";
    let c = parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.rooms,
        [
            // Escape sequences and invisible characters are sanitised out of the topic.
            room("#Rust", "All about Rust, safely", Some(100)),
            room("#go", "", None),
            room("#quiet", "", Some(0)),
        ]
    );
    assert_eq!(c.history_lines, 50);
    assert_eq!(
        c.predefined_rooms(),
        [
            room("#lobby", "", None),
            room("#Rust", "All about Rust, safely", Some(100)),
            room("#go", "", None),
            room("#quiet", "", Some(0)),
        ]
    );
}

#[test]
fn other_spellings_of_tables_are_accepted() {
    assert_eq!(parse("rooms = []").unwrap(), Config::default());
    let c = parse(r#"rooms = [{ name = "a" }, { name = "b", topic = "t", history_lines = 3 }]"#)
        .unwrap();
    assert_eq!(c.rooms, [room("#a", "", None), room("#b", "t", Some(3))]);
}

#[test]
fn the_default_room_may_be_listed_in_any_spelling() {
    let text = "default_room = \"LOBBY\"\n\
        [[rooms]]\nname = \"rust\"\n\
        [[rooms]]\nname = \"#lobby\"\ntopic = \"Say hello\"\nhistory_lines = 5\n";
    let c = parse(text).unwrap();
    assert_eq!(c.default_room, "#lobby", "the listed spelling wins");
    assert_eq!(
        c.predefined_rooms(),
        [
            room("#lobby", "Say hello", Some(5)),
            room("#rust", "", None)
        ],
        "the default room first, once"
    );
    // Look-alike spellings are the same room too.
    let c = parse("default_room = \"l0bby\"\n[[rooms]]\nname = \"Lobby\"\n").unwrap();
    assert_eq!(c.default_room, "#Lobby");
    assert_eq!(c.predefined_rooms(), [room("#Lobby", "", None)]);
}

#[test]
fn the_default_room_cannot_be_two_listed_rooms() {
    // `#AI` looks like `#ai` (case) and like `#Al` (capital I like l); those two do not look
    // alike, so both may be listed, but then the default room would be two rooms.
    let both = "default_room = \"AI\"\n[[rooms]]\nname = \"ai\"\n[[rooms]]\nname = \"Al\"\n";
    let e = parse_err(both);
    assert_eq!((e.key.as_deref(), e.line), (Some("default_room"), Some(1)));
    assert_eq!(
        e.reason,
        "'#AI' is the same room as both '#ai' on line 3 and '#Al' on line 5 (room names are compared ignoring case and letters that look alike); choose one"
    );
    let c = parse("[[rooms]]\nname = \"ai\"\n[[rooms]]\nname = \"Al\"\n").unwrap();
    assert_eq!(c.predefined_rooms().len(), 3);
}

#[test]
fn topic_edges() {
    let at_most = format!("[[rooms]]\nname = \"a\"\ntopic = \"{}\"", "x".repeat(300));
    assert_eq!(parse(&at_most).unwrap().rooms[0].topic.len(), 300);
    // 300 bytes once the escape sequence is gone.
    let sanitised = format!(
        "[[rooms]]\nname = \"a\"\ntopic = \"{}\\u001b[31m\"",
        "x".repeat(300)
    );
    assert_eq!(parse(&sanitised).unwrap().rooms[0].topic, "x".repeat(300));
    // Multi-byte characters count in bytes: 100 × 3 bytes.
    let cjk = format!(
        "[[rooms]]\nname = \"a\"\ntopic = \"{}\"",
        "\u{5c0f}".repeat(100)
    );
    assert_eq!(parse(&cjk).unwrap().rooms[0].topic.len(), 300);
    let only_escapes = "[[rooms]]\nname = \"a\"\ntopic = \"\\u001b[2J\"";
    assert_eq!(parse(only_escapes).unwrap().rooms[0].topic, "");
}

#[test]
fn rejected_tables_name_key_and_line() {
    let long_topic = format!("[[rooms]]\nname = \"a\"\ntopic = \"{}\"", "x".repeat(301));
    let long_cjk = format!(
        "[[rooms]]\nname = \"a\"\ntopic = \"{}y\"",
        "\u{5c0f}".repeat(100)
    );
    // (file text, key named, line named, part of the reason)
    #[rustfmt::skip]
    let cases: &[(&str, &str, usize, &str)] = &[
        ("x = 1", "x", 1, "valid keys: listen,"),
        ("\n[[rooms]]\ntopic = \"no name\"", "rooms.name", 2,
            "every [[rooms]] table needs a name (e.g. name = \"rust\")"),
        ("[[rooms]]\nname = \"\"", "rooms.name", 2,
            "'' is not a valid room name: room names are # plus 1 to 32 letters, digits, - or _"),
        ("[[rooms]]\nname = \"rust lang\"", "rooms.name", 2,
            "'rust lang' is not a valid room name: ' ' is not allowed in a room name"),
        ("[[rooms]]\nname = \"#ru\u{455}t\"", "rooms.name", 2, "cannot mix scripts"),
        ("[[rooms]]\nname = \"#\\u001b[2J\"", "rooms.name", 2, "'\\u{1b}' is not allowed"),
        // Duplicates, named with the line of the first.
        ("[[rooms]]\nname = \"rust\"\n\n[[rooms]]\nname = \"#Rust\"", "rooms.name", 5,
            "'#Rust' is the same room as '#rust' on line 2 (room names are compared ignoring case and letters that look alike)"),
        ("[[rooms]]\nname = \"rust\"\n[[rooms]]\nname = \"\u{ff52}\u{ff55}\u{ff53}\u{ff54}\"", "rooms.name", 4,
            "'#rust' is the same room as '#rust' on line 2"),
        ("[[rooms]]\nname = \"cope\"\n[[rooms]]\nname = \"\u{441}\u{43e}\u{440}\u{435}\"", "rooms.name", 4,
            "is the same room as '#cope'"),
        ("[[rooms]]\nname = \"mary\"\n[[rooms]]\nname = \"rnary\"", "rooms.name", 4,
            "'#rnary' is the same room as '#mary'"),
        ("[[rooms]]\nname = \"caf\u{e9}\"\n[[rooms]]\nname = \"cafe\u{301}\"", "rooms.name", 4,
            "is the same room as '#caf\u{e9}'"),
        ("[[rooms]]\nname = \"Al\"\n[[rooms]]\nname = \"AI\"", "rooms.name", 4,
            "'#AI' is the same room as '#Al'"),
        // Unknown keys in a table, and a top-level key written below a [[rooms]] header.
        ("[[rooms]]\nname = \"a\"\ncolour = \"red\"", "rooms.colour", 3,
            "unknown key in a [[rooms]] table (valid keys: name, topic, history_lines)"),
        ("rooms = [{ name = \"a\", bad = 1 }]", "rooms.bad", 1, "unknown key in a [[rooms]] table"),
        ("[[rooms]]\nname = \"a\"\nmax_clients = 5", "rooms.max_clients", 3,
            "; max_clients is a top-level key: move it above the first [[rooms]] table, since TOML puts every key below a [[rooms]] header into that table"),
        // A later top-level table is not part of the rooms.
        ("[[rooms]]\nname = \"a\"\n[server]\nx = 1", "server", 3, "unknown key (valid keys: listen,"),
        (&long_topic, "rooms.topic", 3,
            "is 301 bytes long (after removing control and invisible characters); at most 300 are allowed"),
        (&long_cjk, "rooms.topic", 3, "is 301 bytes long"),
        ("[[rooms]]\nname = \"a\"\ntopic = \"one\\ntwo\"", "rooms.topic", 3, "must be one line"),
        ("[[rooms]]\nname = \"a\"\nhistory_lines = 1001", "rooms.history_lines", 3,
            "must be between 0 and 1000 (got 1001)"),
        ("[[rooms]]\nname = \"a\"\nhistory_lines = -1", "rooms.history_lines", 3,
            "must be between 0 and 1000 (got -1)"),
        // Wrong types inside a table, in a later table, and beside a top-level key of that name.
        ("[[rooms]]\nname = 3", "rooms.name", 2,
            "expected a room name string like \"rust\", found an integer"),
        ("history_lines = 5\n[[rooms]]\nname = \"a\"\n[[rooms]]\nname = \"b\"\nhistory_lines = \"x\"",
            "rooms.history_lines", 6, "expected an integer, found a string"),
        ("[[rooms]]\nname = \"a\"\ntopic = true", "rooms.topic", 3, "expected a string, found a boolean"),
        ("rooms = [{ name = \"a\", topic = 1 }]", "rooms.topic", 1, "expected a string, found an integer"),
        ("history_lines = \"x\"\n[[rooms]]\nname = \"a\"", "history_lines", 1, "expected an integer, found a string"),
        // The tables themselves.
        ("[rooms]\nname = \"a\"", "rooms", 1,
            "expected [[rooms]] tables (note the double brackets), found a table"),
        ("rooms = 3", "rooms", 1, "found an integer"),
        ("rooms = [3]", "rooms", 1, "found an integer in the array"),
    ];
    for &(text, key, line, needle) in cases {
        let e = parse_err(text);
        assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        assert_eq!(e.line, Some(line), "{text}: {e}");
        assert!(e.reason.contains(needle), "{text}: {e}");
        assert!(!e.to_string().contains(['\n', '\u{1b}']), "{text}: {e}");
    }
}

#[test]
fn predefined_rooms_fit_max_rooms() {
    let two = "[[rooms]]\nname = \"a\"\n[[rooms]]\nname = \"b\"\n";
    // Two tables and the default room: three rooms.
    assert_eq!(
        parse(&format!("max_rooms = 3\n{two}")).unwrap().max_rooms,
        3
    );
    let e = parse_err(&format!("max_rooms = 2\n{two}"));
    assert_eq!((e.key.as_deref(), e.line), (Some("max_rooms"), Some(1)));
    assert_eq!(
        e.reason,
        "must be at least the number of predefined rooms, 3 (2 [[rooms]] tables plus default_room #lobby) (got 2)"
    );
    // A listed default room is counted once.
    let listed = "max_rooms = 2\n[[rooms]]\nname = \"a\"\n[[rooms]]\nname = \"Lobby\"\n";
    assert_eq!(parse(listed).unwrap().predefined_rooms().len(), 2);
    let e = parse_err("max_rooms = 1\n[[rooms]]\nname = \"a\"\n[[rooms]]\nname = \"lobby\"\n");
    assert!(
        e.reason
            .contains("number of predefined rooms, 2 (2 [[rooms]] tables) (got 1)"),
        "{e}"
    );

    // Past the default limit without setting it: blame the tables.
    let many: String = (0..1000)
        .map(|i| format!("[[rooms]]\nname = \"r{i}\"\n"))
        .collect();
    let e = parse_err(&format!("\n{many}"));
    assert_eq!((e.key.as_deref(), e.line), (Some("rooms"), Some(2)));
    assert_eq!(
        e.reason,
        "1001 predefined rooms (1000 [[rooms]] tables plus default_room #lobby) are more than max_rooms = 1000 (the default); set max_rooms too"
    );
    assert_eq!(
        parse(&format!("max_rooms = 1001\n{many}"))
            .unwrap()
            .predefined_rooms()
            .len(),
        1001
    );
}

#[test]
fn a_room_with_history_needs_room_for_it() {
    // History off globally but on in one room: history_bytes must still fit.
    let text =
        "history_lines = 0\nhistory_bytes = 100\n[[rooms]]\nname = \"a\"\nhistory_lines = 5\n";
    let e = parse_err(text);
    assert_eq!((e.key.as_deref(), e.line), (Some("history_bytes"), Some(2)));
    assert_eq!(
        e.reason,
        "must be at least 1024 while rooms keep history (a [[rooms]] table's history_lines) (got 100); history_lines = 0 keeps none"
    );
    let off =
        "history_lines = 0\nhistory_bytes = 100\n[[rooms]]\nname = \"a\"\nhistory_lines = 0\n";
    assert_eq!(parse(off).unwrap().history_bytes, 100);
    // A queue lowered without setting history_bytes lowers it too, down to the least history.
    let fitted = "max_line_bytes = 64\nmax_queue_bytes = 4096\nhistory_lines = 0\n[[rooms]]\nname = \"a\"\nhistory_lines = 5\n";
    assert_eq!(parse(fitted).unwrap().history_bytes, 2048);
    let e = parse_err(
        "max_line_bytes = 64\nmax_queue_bytes = 2000\nhistory_lines = 0\n[[rooms]]\nname = \"a\"\nhistory_lines = 5\n",
    );
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("max_queue_bytes"), Some(2))
    );
    assert_eq!(
        e.reason,
        "leaves 1000 bytes (half the queue) for replaying a room's history to a joiner (a [[rooms]] table's history_lines), less than the 1024 history needs; max_queue_bytes = 2000 is too small for any history: raise it to at least 2048, or set history_lines = 0"
    );
}
