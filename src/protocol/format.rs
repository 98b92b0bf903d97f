//! Wire formatting of outgoing lines: CRLF-terminated UTF-8, built once and shared by every recipient.
//!
//! Inputs are already sanitised (client text by [`super::sanitise`], nicknames by validation, operator
//! text by [`super::sanitise_str`]), so these functions only concatenate. Lines the server itself
//! originates start with `*** `; nothing a client sends can produce that prefix in another's view
//! because client text is always framed by `<nick> `, `* nick ` or `*nick* `.

use bytes::{BufMut, Bytes, BytesMut};

/// Prefix of every line the server itself originates.
pub const NOTICE_PREFIX: &str = "*** ";
/// Line terminator the server sends.
pub const EOL: &str = "\r\n";

/// Appends `<nick> text\r\n`.
pub fn push_say(out: &mut impl BufMut, nick: &str, text: &str) {
    put(out, &["<", nick, "> ", text, EOL]);
}

/// Appends `* nick text\r\n` (`/me`).
pub fn push_action(out: &mut impl BufMut, nick: &str, text: &str) {
    put(out, &["* ", nick, " ", text, EOL]);
}

/// Appends `*nick* text\r\n` (a private message as its recipient sees it).
pub fn push_private(out: &mut impl BufMut, from: &str, text: &str) {
    put(out, &["*", from, "* ", text, EOL]);
}

/// Appends `*** text\r\n`.
pub fn push_notice(out: &mut impl BufMut, text: &str) {
    put(out, &[NOTICE_PREFIX, text, EOL]);
}

/// One server notice as a shareable buffer.
pub fn notice(text: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(NOTICE_PREFIX.len() + text.len() + EOL.len());
    push_notice(&mut out, text);
    out.freeze()
}

/// Several server notices in one buffer, so they reach the socket together and in order.
pub fn notices<'a>(lines: impl IntoIterator<Item = &'a str>) -> Bytes {
    let mut out = BytesMut::new();
    for line in lines {
        push_notice(&mut out, line);
    }
    out.freeze()
}

/// Splits a list of names into notice lines of at most about `width` bytes each, comma-separated,
/// so a `/who` in a room of thousands is many readable lines rather than one enormous one.
pub fn push_name_lines<'a>(
    out: &mut BytesMut,
    names: impl IntoIterator<Item = &'a str>,
    width: usize,
) {
    let mut line = String::new();
    for name in names {
        if !line.is_empty() && line.len() + 2 + name.len() > width {
            push_notice(out, &line);
            line.clear();
        }
        if !line.is_empty() {
            line.push_str(", ");
        }
        line.push_str(name);
    }
    if !line.is_empty() {
        push_notice(out, &line);
    }
}

fn put(out: &mut impl BufMut, parts: &[&str]) {
    for p in parts {
        out.put_slice(p.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shapes() {
        let mut out = BytesMut::new();
        push_say(&mut out, "alice", "hi");
        push_action(&mut out, "alice", "waves");
        push_private(&mut out, "alice", "psst");
        push_notice(&mut out, "bob joined");
        assert_eq!(
            &out[..],
            b"<alice> hi\r\n* alice waves\r\n*alice* psst\r\n*** bob joined\r\n"
        );
        assert_eq!(&notice("x")[..], b"*** x\r\n");
        assert_eq!(&notices(["a", "b"])[..], b"*** a\r\n*** b\r\n");
    }

    #[test]
    fn name_lines_wrap_at_width_and_keep_every_name() {
        let names: Vec<String> = (0..50).map(|i| format!("user{i}")).collect();
        let mut out = BytesMut::new();
        push_name_lines(&mut out, names.iter().map(String::as_str), 40);
        let text = std::str::from_utf8(&out).unwrap();
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert!(lines.len() > 1);
        let mut seen = Vec::new();
        for l in &lines {
            let body = l.strip_prefix("*** ").unwrap();
            assert!(
                body.len() <= 40 || !body.contains(", "),
                "line too wide: {body}"
            );
            seen.extend(body.split(", ").map(str::to_owned));
        }
        assert_eq!(seen, names);
    }
}
