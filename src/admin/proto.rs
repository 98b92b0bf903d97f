//! The admin socket's wire format, shared by the daemon and `chatctl`. No IO.
//!
//! Newline-delimited JSON: one request per line, one reply per line, in order, on one connection.
//! Every message carries `"version": 1`; a request without it is taken as version 1 so a person can
//! type `{"cmd":"list"}` into `socat`. Replies are `{"version":1,"ok":true,"result":{…}}` or
//! `{"version":1,"ok":false,"error":{"code":"not_found","message":"…"}}`; `result`'s shape depends on the
//! command and is given by the typed structs below.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// Longest request line accepted, in bytes (including its newline).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// What an operator asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Every connected client.
    List,
    /// Disconnect a client by id or nickname.
    Kick {
        /// A client id (digits) or a nickname.
        target: String,
        /// Shown to the client and the room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Send `*** text` to every joined client.
    Announce {
        /// The announcement (sanitised like chat text).
        text: String,
    },
    /// Daemon-wide numbers.
    Stats,
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
            Command::List => "list",
            Command::Kick { .. } => "kick",
            Command::Announce { .. } => "announce",
            Command::Stats => "stats",
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
    /// No such client.
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

/// One client in a `list` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientEntry {
    /// Connection id (what `kick` accepts besides the nickname).
    pub id: u64,
    /// Nickname, or null while the client is still choosing one.
    pub nick: Option<String>,
    /// Remote address.
    pub peer: String,
    /// Connection time, RFC 3339 UTC.
    pub connected_at: String,
    /// Seconds since connecting.
    pub connected_secs: f64,
    /// Seconds since the client last sent a line.
    pub idle_secs: f64,
    /// Lines received from the client.
    pub lines_in: u64,
    /// Bytes received from the client.
    pub bytes_in: u64,
    /// Lines queued for the client.
    pub lines_out: u64,
    /// Bytes written to the client.
    pub bytes_out: u64,
    /// Bytes waiting to be written to the client.
    pub queued_bytes: u64,
}

/// `list` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListReply {
    /// Every connection, by id.
    pub clients: Vec<ClientEntry>,
}

/// `kick` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KickReply {
    /// Who was kicked.
    pub id: u64,
    /// Their nickname, if they had joined.
    pub nick: Option<String>,
}

/// `announce` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceReply {
    /// Joined clients the announcement was queued for.
    pub reached: u64,
}

/// `stats` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReply {
    /// Daemon version.
    pub version: String,
    /// When the service started, RFC 3339 UTC: the first process of a line of upgrades.
    pub started_at: String,
    /// Seconds since the service started.
    pub uptime_secs: f64,
    /// This process.
    #[serde(default)]
    pub pid: u32,
    /// When this process started serving, RFC 3339 UTC.
    #[serde(default)]
    pub process_started_at: String,
    /// Upgrades since the service started.
    #[serde(default)]
    pub upgrades: u64,
    /// Chat listen addresses.
    pub listen: Vec<String>,
    /// Connections now (joined or not).
    pub clients: u64,
    /// Joined members now.
    pub members: u64,
    /// Most connections at once since start.
    pub peak_clients: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Chat lines relayed (each once, however many recipients).
    pub lines_relayed: u64,
    /// Bytes of relayed chat.
    pub bytes_relayed: u64,
    /// Operator kicks.
    pub kicks: u64,
    /// Clients disconnected as too slow.
    pub slow_consumer_drops: u64,
    /// Flood-control episodes (senders slowed down).
    pub throttled_senders: u64,
    /// Connections refused (full, per-IP, shutting down).
    pub rejected_connections: u64,
    /// Clients whose send queue is more than half full right now (senders are being paced).
    #[serde(default)]
    pub congested_clients: u64,
}

/// `upgrade` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeReply {
    /// The new process, now serving.
    pub pid: u32,
    /// Its version.
    pub version: String,
    /// Connections handed over.
    pub clients: u64,
}

/// `reload` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReply {
    /// The file that was read, or null for built-in defaults.
    pub config: Option<String>,
    /// Keys that changed in the file but only take effect on restart.
    pub ignored_until_restart: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let cmds = [
            Command::List,
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
            (r#"{"cmd":"list"}"#, Command::List),
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
                Command::Announce { text: "hi".into() },
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
    fn replies_round_trip() {
        let stats = StatsReply {
            version: "0.1.0".into(),
            started_at: "2026-11-22T00:00:00Z".into(),
            uptime_secs: 12.5,
            pid: 4242,
            process_started_at: "2026-11-22T00:00:10Z".into(),
            upgrades: 1,
            listen: vec!["127.0.0.1:7000".into()],
            clients: 3,
            members: 2,
            peak_clients: 4,
            connections_total: 9,
            lines_relayed: 100,
            bytes_relayed: 4000,
            kicks: 1,
            slow_consumer_drops: 0,
            throttled_senders: 2,
            rejected_connections: 0,
            congested_clients: 0,
        };
        let line = Response::ok(&stats).encode();
        assert!(line.ends_with('\n'));
        let back: StatsReply = Response::decode(&line).unwrap().into_result().unwrap();
        assert_eq!(back, stats);

        let list = ListReply {
            clients: vec![ClientEntry {
                id: 1,
                nick: None,
                peer: "[::1]:5000".into(),
                connected_at: "2026-11-22T00:00:00Z".into(),
                connected_secs: 1.0,
                idle_secs: 0.5,
                lines_in: 1,
                bytes_in: 2,
                lines_out: 3,
                bytes_out: 4,
                queued_bytes: 5,
            }],
        };
        let back: ListReply = Response::decode(&Response::ok(&list).encode())
            .unwrap()
            .into_result()
            .unwrap();
        assert_eq!(back, list);

        let err = Response::error(ErrorCode::NotFound, "no client 'bob'").encode();
        assert_eq!(
            err,
            "{\"version\":1,\"ok\":false,\"error\":{\"code\":\"not_found\",\"message\":\"no client 'bob'\"}}\n"
        );
        let e = Response::decode(&err)
            .unwrap()
            .into_result::<KickReply>()
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
    }
}
