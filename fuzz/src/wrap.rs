//! Wrapping: whatever a client says, no row the server sends is wider than `wrap_width`, every row
//! after the first is indented, and nothing but spaces at the breaks is lost.
//!
//! The first byte picks the width (0: off; else 20 to 275 columns), the second the nickname, the
//! rest is one raw line, sanitised as the session does before formatting it. Properties: the output
//! is CRLF-terminated rows with no CR or LF inside; with wrapping on, each row is at most the width
//! as the server counts columns, does not end in a space, and rows after the first start with the
//! continuation indent followed by something other than a space; the first row leaves room for a
//! history time stamp (it is at most the width less `HISTORY_STAMP_COLUMNS`, so the line replayed
//! with its stamp still fits); the non-space chars of the rows (indents removed) are exactly those
//! of the formatted line, in order; with wrapping off, or for a line that fits with the stamp in
//! bytes, the output is the line itself.

use groupchatd::protocol::format::{
    CONTINUATION, EOL, HISTORY_STAMP_COLUMNS, Wrap, push_say, row_columns,
};
use groupchatd::protocol::sanitise_into;

const NICKS: &[&str] = &[
    "bob",
    "\u{5c0f}\u{660e}",
    "a-very-long-nickname-xyz",
    "\u{e9}lo\u{ef}se",
];

/// Checks one input.
pub fn check_wrap(data: &[u8]) {
    let [w, n, raw @ ..] = data else { return };
    let width = if *w == 0 { 0 } else { 20 + usize::from(*w) };
    let nick = NICKS[usize::from(*n) % NICKS.len()];
    let mut text = String::new();
    sanitise_into(raw, &mut text);
    let mut out = Vec::new();
    push_say(&mut out, Wrap::at(width), nick, &text);
    let out = std::str::from_utf8(&out).expect("UTF-8 in, UTF-8 out");
    let whole = format!("<{nick}> {text}");
    assert!(out.ends_with(EOL), "{out:?}");
    if width == 0 || whole.len() + HISTORY_STAMP_COLUMNS <= width {
        assert_eq!(out, format!("{whole}{EOL}"));
        return;
    }
    let rows: Vec<&str> = out.split_terminator(EOL).collect();
    let mut kept = String::new();
    for (i, row) in rows.iter().enumerate() {
        assert!(!row.contains(['\r', '\n']), "row {i}: {row:?}");
        assert!(
            row_columns(row) <= width,
            "row {i} wider than {width}: {row:?}"
        );
        if i == 0 {
            let stamped = row_columns(row) + HISTORY_STAMP_COLUMNS;
            assert!(
                stamped <= width,
                "row 0 with a stamp wider than {width}: {row:?}"
            );
        }
        assert!(!row.ends_with(' '), "row {i} ends in a space: {row:?}");
        let body = if i == 0 {
            row
        } else {
            let body = row
                .strip_prefix(CONTINUATION)
                .unwrap_or_else(|| panic!("row {i} not indented: {row:?}"));
            assert!(
                !body.starts_with(' ') && !body.is_empty(),
                "row {i}: {row:?}"
            );
            body
        };
        kept.extend(body.chars().filter(|&c| c != ' '));
    }
    let expected: String = whole.chars().filter(|&c| c != ' ').collect();
    assert_eq!(kept, expected, "text lost or reordered at width {width}");
}
