//! The admin socket's request decoder, on any line a local caller could send.
//!
//! Properties: decoding never panics; a decoded command re-encodes to one line carrying
//! `"version":1` and its name, which decodes to the same command; a refusal is a well-formed error
//! reply (`ok` false, an error body, no result, code `bad_request` or `unsupported_version`) that
//! encodes to one line and decodes back to itself.

use groupchatd::admin::proto::{ErrorCode, Response, decode_request, encode_request};

/// Checks one request line (the daemon strips nothing but the newline before decoding).
pub fn check_admin_request(data: &[u8]) {
    let shown = data.escape_ascii();
    match decode_request(data) {
        Ok(cmd) => {
            let line = encode_request(&cmd);
            assert_one_line(&line);
            assert!(line.contains("\"version\":1"), "{line:?}");
            let name = format!("\"cmd\":\"{}\"", cmd.name());
            assert!(line.contains(&name), "{line:?} lacks {name}");
            assert_eq!(
                decode_request(line.as_bytes()).ok(),
                Some(cmd),
                "re-encoded as {line:?} from \"{shown}\""
            );
        }
        Err(reply) => {
            assert!(!reply.ok && reply.result.is_none(), "{reply:?}");
            let code = reply.error.as_ref().map(|e| e.code);
            assert!(
                matches!(
                    code,
                    Some(ErrorCode::BadRequest | ErrorCode::UnsupportedVersion)
                ),
                "\"{shown}\" refused with {reply:?}"
            );
            let line = reply.encode();
            assert_one_line(&line);
            assert_eq!(Response::decode(&line).ok(), Some(reply), "{line:?}");
        }
    }
}

fn assert_one_line(line: &str) {
    let body = line.strip_suffix('\n');
    assert!(
        body.is_some_and(|b| !b.contains(['\n', '\r'])),
        "not one line: {line:?}"
    );
}
