//! Tests of the whole config module: file text in, `Config` or a one-line
//! `ConfigError` out. This file holds the shared helpers and the checks that
//! the shipped example and the defaults agree; `values` covers each key's
//! rule, `rooms` the room keys and `[[rooms]]` tables, `reporting` how errors
//! are located and worded.

mod reporting;
mod rooms;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{FileConfig, KEYS};
use super::rooms::ROOM_KEYS;
use super::*;

const SHIPPED: &str = include_str!("../../../config/groupchatd.toml");

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("groupchatd.toml"))
}

pub(super) fn parse_err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(c) => panic!("{text:?} was accepted: {c:?}"),
        Err(e) => e,
    }
}

pub(super) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub(super) fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub(super) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The shipped file with each `# key = value` default line uncommented, and the keys found:
/// those, and `rooms` for the `#   [[rooms]]` example (the tables have no default to uncomment).
/// Indented example lines (`#   key = ...`) stay comments.
fn uncommented_example() -> (String, Vec<String>) {
    let mut keys = Vec::new();
    if SHIPPED.lines().any(|line| line == "#   [[rooms]]") {
        keys.push("rooms".to_owned());
    }
    if SHIPPED.lines().any(|line| line == "#   [cluster]") {
        keys.push("cluster".to_owned());
    }
    let text = SHIPPED
        .lines()
        .map(|line| {
            let Some(rest) = line.strip_prefix("# ") else {
                return line.to_owned();
            };
            match rest.split_once(" = ") {
                Some((key, _)) if KEYS.iter().any(|(k, _)| *k == key) => {
                    keys.push(key.to_owned());
                    rest.to_owned()
                }
                _ => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    (text, keys)
}

#[test]
fn shipped_example_gives_the_defaults() {
    assert_eq!(parse(SHIPPED).unwrap(), Config::default());
}

#[test]
fn uncommented_example_gives_the_defaults() {
    let (text, mut keys) = uncommented_example();
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    // These have no default value; the example shows a typical setting.
    let expected = Config {
        admin_socket: Some(PathBuf::from("/run/groupchatd/admin.sock")),
        admin_group: Some("groupchatd".to_owned()),
        tls_cert_file: Some(PathBuf::from(
            "/etc/letsencrypt/live/chat.example.org/fullchain.pem",
        )),
        tls_key_file: Some(PathBuf::from(
            "/etc/letsencrypt/live/chat.example.org/privkey.pem",
        )),
        ..Config::default()
    };
    assert_eq!(config, expected);

    keys.sort();
    let mut all: Vec<String> = KEYS.iter().map(|(k, _)| (*k).to_owned()).collect();
    all.sort();
    assert_eq!(keys, all, "every key appears exactly once in the example");
}

#[test]
fn rooms_example_gives_the_rooms_it_shows() {
    // The indented lines from the first `#   [[rooms]]` on, uncommented below the defaults.
    let (mut text, _) = uncommented_example();
    let start = SHIPPED.find("#   [[rooms]]").unwrap();
    for line in SHIPPED[start..].lines() {
        text.push('\n');
        text.push_str(line.strip_prefix("#   ").unwrap_or(""));
    }
    let c = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let room = |name: &str, topic: &str, history_lines| RoomConfig {
        name: name.to_owned(),
        topic: topic.to_owned(),
        history_lines,
    };
    assert_eq!(
        c.rooms,
        [
            room("#lobby", "Say hello; /join #rust or #help", None),
            room("#rust", "The Rust programming language", Some(100)),
            room("#help", "", Some(0)),
        ]
    );
    assert_eq!(
        c.predefined_rooms(),
        c.rooms,
        "the default room is listed first"
    );
    // The [cluster] example comes after the rooms, as the file says it must.
    let cluster = c.cluster.expect("the [cluster] example");
    assert_eq!(cluster.nats_urls.len(), 2);
    assert_eq!(cluster.node_name, "chat-1");
    assert_eq!(cluster.replicas, 3);
}

#[test]
fn keys_table_lists_exactly_the_file_fields() {
    let err = toml::from_str::<FileConfig>("no_such_key = 1").unwrap_err();
    let (_, expected) = err.message().split_once("expected one of ").unwrap();
    let fields: Vec<&str> = expected.split(", ").map(|f| f.trim_matches('`')).collect();
    let keys: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
    assert_eq!(fields, keys);

    let err = toml::from_str::<FileConfig>("[[rooms]]\nno_such_key = 1").unwrap_err();
    let (_, expected) = err.message().split_once("expected one of ").unwrap();
    let fields: Vec<&str> = expected.split(", ").map(|f| f.trim_matches('`')).collect();
    let keys: Vec<&str> = ROOM_KEYS.iter().map(|(k, _)| *k).collect();
    assert_eq!(fields, keys);
}

#[test]
fn empty_file_gives_the_defaults() {
    assert_eq!(parse("").unwrap(), Config::default());
    assert_eq!(parse("# only a comment\n\n").unwrap(), Config::default());
}

#[test]
fn defaults_obey_their_own_rules() {
    let c = Config::default();
    assert!(c.max_queue_bytes >= 4 * c.max_line_bytes);
    assert!((1024..=c.max_queue_bytes / 2).contains(&c.history_bytes));
    assert_eq!(c.default_room, "#lobby");
    assert_eq!(
        (
            c.history_lines,
            c.history_bytes,
            c.allow_user_rooms,
            c.max_rooms
        ),
        (20, 65536, true, 1000)
    );
    assert_eq!(c.rooms, []);
    assert_eq!(
        c.predefined_rooms(),
        [RoomConfig {
            name: "#lobby".to_owned(),
            topic: String::new(),
            history_lines: None,
        }]
    );
    assert_eq!(c.per_ip_exempt, vec![net("127.0.0.0/8"), net("::1/128")]);
    assert_eq!(c.listen, vec![addr("127.0.0.1:7000")]);
    assert_eq!(EX_CONFIG, 78);
    assert_eq!(DEFAULT_PATH, "/etc/groupchatd/groupchatd.toml");
}
