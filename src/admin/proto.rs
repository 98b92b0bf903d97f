//! The admin socket's wire format, shared by the daemon and `chatctl`. No IO.
//!
//! Newline-delimited JSON: one request per line, one reply per line, in order, on one connection.
//! Every message carries `"version": 1`; a request without it is taken as version 1 so a person can
//! type `{"cmd":"list"}` into `socat`. Replies are `{"version":1,"ok":true,"result":{…}}` or
//! `{"version":1,"ok":false,"error":{"code":"not_found","message":"…"}}`; `result`'s shape depends on the
//! command and is given by the typed `*Reply` structs (`proto/replies.rs`). Fields added to a
//! command later are optional, so requests written for an older daemon mean the same to a newer one.

mod replies;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use replies::{
    AnnounceReply, ClientEntry, ClusterStats, KickReply, ListReply, MoveReply, NodesReply,
    ReloadReply, RoomEntry, RoomsReply, StatsReply, TopicReply, UpgradeReply,
};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// Longest request line accepted, in bytes (including its newline).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// What an operator asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Every connected client, or the members of one room.
    List {
        /// Only the members of this room (`#name` or `name`, compared as room names are:
        /// ignoring case and look-alike letters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
    },
    /// Disconnect a client by id or nickname.
    Kick {
        /// A client id (digits) or a nickname.
        target: String,
        /// Shown to the client and the room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Send `*** text` to every member of one room, or of every room.
    Announce {
        /// The announcement (sanitised like chat text).
        text: String,
        /// The room (`#name` or `name`); absent: every room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
    },
    /// Every room: members, topic, history kept.
    Rooms,
    /// Set a room's topic as the operator; the room sees `*** the operator set the topic: text`.
    Topic {
        /// The room (`#name` or `name`).
        room: String,
        /// The topic (sanitised like chat text); empty clears it.
        text: String,
    },
    /// Move a member to another room, made if it does not exist.
    Move {
        /// A client id (digits) or a nickname.
        target: String,
        /// The room (`#name` or `name`).
        room: String,
    },
    /// Daemon-wide numbers.
    Stats,
    /// Every member on every node of the cluster, with its node.
    ListCluster,
    /// The cluster's nodes: clients, last heartbeat, link.
    Nodes,
    /// Re-read the configuration file.
    Reload,
    /// Hand every connection to a new process running `binary` (default: the daemon's own path).
    Upgrade {
        /// The new binary.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binary: Option<String>,
        /// Seconds the new process has to be ready (default 10).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<f64>,
    },
}

impl Command {
    /// The command's name on the wire (`"kick"`), for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::List { .. } => "list",
            Command::Kick { .. } => "kick",
            Command::Announce { .. } => "announce",
            Command::Rooms => "rooms",
            Command::Topic { .. } => "topic",
            Command::Move { .. } => "move",
            Command::Stats => "stats",
            Command::ListCluster => "list_cluster",
            Command::Nodes => "nodes",
            Command::Reload => "reload",
            Command::Upgrade { .. } => "upgrade",
        }
    }

    /// True for commands that change the daemon's state (audited with the caller's credentials).
    pub fn mutates(&self) -> bool {
        matches!(
            self,
            Command::Kick { .. }
                | Command::Announce { .. }
                | Command::Topic { .. }
                | Command::Move { .. }
                | Command::Reload
                | Command::Upgrade { .. }
        )
    }
}

/// Machine-readable error kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line is not a valid request.
    BadRequest,
    /// The request's `version` is not one this daemon speaks.
    UnsupportedVersion,
    /// The request line is longer than [`MAX_REQUEST_BYTES`].
    TooLarge,
    /// The caller's uid is not allowed.
    PermissionDenied,
    /// Too many admin connections at once.
    Busy,
    /// No such client or room (or the client is in no room).
    NotFound,
    /// The new configuration is invalid; the old one stays.
    ReloadFailed,
    /// The upgrade was rolled back; this process still serves.
    UpgradeFailed,
}

/// The error half of a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What kind of error.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
}

/// One reply line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Always [`VERSION`].
    pub version: u32,
    /// True when `result` is present, false when `error` is.
    pub ok: bool,
    /// The command's result (see the `*Reply` structs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    /// A success carrying `result`.
    pub fn ok(result: &impl Serialize) -> Response {
        Response {
            version: VERSION,
            ok: true,
            // Serialising our own plain structs cannot fail.
            result: Some(serde_json::to_value(result).unwrap_or(Value::Null)),
            error: None,
        }
    }

    /// A failure.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response {
            version: VERSION,
            ok: false,
            result: None,
            error: Some(ErrorBody {
                code,
                message: message.into(),
            }),
        }
    }

    /// The reply as one line, newline included.
    pub fn encode(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }

    /// Parses a reply line.
    pub fn decode(line: &str) -> Result<Response, String> {
        serde_json::from_str(line.trim_end())
            .map_err(|e| format!("malformed reply from the daemon: {e}"))
    }

    /// The typed result, or the error.
    pub fn into_result<T: for<'de> Deserialize<'de>>(self) -> Result<T, ErrorBody> {
        match (self.ok, self.result, self.error) {
            (true, Some(v), _) => serde_json::from_value(v).map_err(|e| ErrorBody {
                code: ErrorCode::BadRequest,
                message: format!("unexpected reply shape: {e}"),
            }),
            (_, _, Some(e)) => Err(e),
            _ => Err(ErrorBody {
                code: ErrorCode::BadRequest,
                message: "empty reply".into(),
            }),
        }
    }
}

/// Encodes a request line (newline included).
pub fn encode_request(cmd: &Command) -> String {
    let mut value = serde_json::to_value(cmd).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("version".into(), VERSION.into());
    }
    let mut line = value.to_string();
    line.push('\n');
    line
}

/// Decodes a request line; the error is the reply to send.
pub fn decode_request(line: &[u8]) -> Result<Command, Response> {
    let bad = |m: String| Response::error(ErrorCode::BadRequest, m);
    let mut value: Value =
        serde_json::from_slice(line).map_err(|e| bad(format!("not a JSON request: {e}")))?;
    let Value::Object(map) = &mut value else {
        return Err(bad(
            "a request is a JSON object such as {\"cmd\":\"list\"}".into()
        ));
    };
    match map.remove("version") {
        None => {}
        Some(Value::Number(n)) if n.as_u64() == Some(u64::from(VERSION)) => {}
        Some(other) => {
            return Err(Response::error(
                ErrorCode::UnsupportedVersion,
                format!("unsupported version {other}; this daemon speaks version {VERSION}"),
            ));
        }
    }
    let fields: Vec<(String, bool)> = map.iter().map(|(k, v)| (k.clone(), v.is_null())).collect();
    let cmd: Command =
        serde_json::from_value(value).map_err(|e| bad(format!("invalid request: {e}")))?;
    // serde ignores unknown fields next to a unit variant's tag; a typo must still be an error.
    let known = serde_json::to_value(&cmd).unwrap_or(Value::Null);
    if let Some((field, _)) = fields
        .iter()
        .find(|(k, null)| !null && known.get(k).is_none())
    {
        return Err(bad(format!(
            "invalid request: unknown field `{field}` for cmd `{}`",
            cmd.name()
        )));
    }
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let cmds = [
            Command::List { room: None },
            Command::List {
                room: Some("#Rust".into()),
            },
            Command::Kick {
                target: "alice".into(),
                reason: Some("spam".into()),
            },
            Command::Kick {
                target: "42".into(),
                reason: None,
            },
            Command::Announce {
                text: "restart at 18:00 — 再见".into(),
                room: None,
            },
            Command::Announce {
                text: "pizza".into(),
                room: Some("rust".into()),
            },
            Command::Rooms,
            Command::Topic {
                room: "#rust".into(),
                text: "".into(),
            },
            Command::Move {
                target: "alice".into(),
                room: "#ｒｕｓｔ".into(),
            },
            Command::Stats,
            Command::Reload,
        ];
        for cmd in cmds {
            let line = encode_request(&cmd);
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert!(line.contains("\"version\":1"), "{line}");
            assert_eq!(decode_request(line.as_bytes()).unwrap(), cmd);
        }
    }

    #[test]
    fn hand_typed_requests() {
        let cases: &[(&str, Command)] = &[
            (r#"{"cmd":"list"}"#, Command::List { room: None }),
            (
                r#"{"cmd":"list","room":null}"#,
                Command::List { room: None },
            ),
            (
                r#"{"cmd":"list","room":"rust"}"#,
                Command::List {
                    room: Some("rust".into()),
                },
            ),
            (r#"{"cmd":"rooms"}"#, Command::Rooms),
            (
                r##"{"cmd":"topic","room":"#rust","text":"borrowck"}"##,
                Command::Topic {
                    room: "#rust".into(),
                    text: "borrowck".into(),
                },
            ),
            (
                r#"{"cmd":"move","target":"7","room":"rust"}"#,
                Command::Move {
                    target: "7".into(),
                    room: "rust".into(),
                },
            ),
            (r#"{"version":1,"cmd":"stats"}"#, Command::Stats),
            (
                r#"{"cmd":"kick","target":"bob"}"#,
                Command::Kick {
                    target: "bob".into(),
                    reason: None,
                },
            ),
            (
                r#" {"cmd":"announce","text":"hi"} "#,
                Command::Announce {
                    text: "hi".into(),
                    room: None,
                },
            ),
            (
                r##"{"cmd":"announce","text":"hi","room":"#rust"}"##,
                Command::Announce {
                    text: "hi".into(),
                    room: Some("#rust".into()),
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(&decode_request(line.as_bytes()).unwrap(), want, "{line}");
        }
    }

    #[test]
    fn bad_requests_get_error_replies() {
        let cases: &[(&[u8], ErrorCode)] = &[
            (b"garbage", ErrorCode::BadRequest),
            (b"\xff\xfe", ErrorCode::BadRequest),
            (b"[1,2]", ErrorCode::BadRequest),
            (br#"{"cmd":"frob"}"#, ErrorCode::BadRequest),
            (br#"{"cmd":"kick"}"#, ErrorCode::BadRequest),
            (br#"{"cmd":"list","extra":1}"#, ErrorCode::BadRequest),
            (br#"{"cmd":"list","room":7}"#, ErrorCode::BadRequest),
            (br#"{"cmd":"rooms","room":"x"}"#, ErrorCode::BadRequest),
            (br#"{"cmd":"topic","room":"x"}"#, ErrorCode::BadRequest),
            (br#"{"cmd":"topic","text":"x"}"#, ErrorCode::BadRequest),
            (br#"{"cmd":"move","target":"bob"}"#, ErrorCode::BadRequest),
            (br#"{"cmd":"move","room":"x"}"#, ErrorCode::BadRequest),
            (
                br#"{"cmd":"move","target":"a","room":"x","note":"y"}"#,
                ErrorCode::BadRequest,
            ),
            (
                br#"{"version":2,"cmd":"list"}"#,
                ErrorCode::UnsupportedVersion,
            ),
            (
                br#"{"version":"1","cmd":"list"}"#,
                ErrorCode::UnsupportedVersion,
            ),
        ];
        for (line, code) in cases {
            let err = decode_request(line).unwrap_err();
            assert!(!err.ok);
            assert_eq!(
                err.error.unwrap().code,
                *code,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn requests_without_the_new_fields_encode_as_before() {
        // An older daemon refuses unknown fields: a request that does not use rooms must not
        // mention them.
        assert_eq!(
            encode_request(&Command::List { room: None }),
            "{\"cmd\":\"list\",\"version\":1}\n"
        );
        let line = encode_request(&Command::Announce {
            text: "hi".into(),
            room: None,
        });
        assert!(!line.contains("room"), "{line}");
    }
}
