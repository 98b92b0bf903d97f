//! Wire formatting of outgoing lines: CRLF-terminated UTF-8, built once and shared by every recipient.
//!
//! Inputs are already sanitised (client text by [`super::sanitise`], nicknames by validation, operator
//! text by [`super::sanitise_str`]), so these functions concatenate and wrap. Lines the server itself
//! originates start with `*** `; nothing a client sends can produce that prefix in another's view
//! because client text is always framed by `<nick> `, `* nick ` or `*nick* `.
//!
//! **Wrapping** keeps it that way on screen. A terminal wraps a long line by itself, and then the
//! next visual row starts at column 0 with whatever the sender put there: pad a message to the
//! terminal's width and the following row reads `*** bob left (quit: bye)`. Collapsing runs of
//! spaces would not stop that (any visible character pads as well). So every line that carries
//! someone's text is broken by the server at [`Wrap`] columns, at a space where there is one in the
//! row and inside a word where there is not, and every continuation row starts with
//! [`CONTINUATION`]. On a terminal at least that wide, no row the sender controls starts at
//! column 0. Widths are counted generously (East Asian ambiguous characters as two columns, an
//! emoji with a presentation selector as two), because only counting too few lets the terminal
//! wrap by itself. Lines no longer in bytes than the width cannot be wider, so chat of ordinary
//! length is not looked at twice.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use unicode_width::UnicodeWidthChar;

/// Prefix of every line the server itself originates.
pub const NOTICE_PREFIX: &str = "*** ";
/// Line terminator the server sends.
pub const EOL: &str = "\r\n";

/// What starts every row after the first of a wrapped line.
pub const CONTINUATION: &str = "    ";

/// Longest quit or kick reason, in chars: a reason is a few words, not a place for a message.
pub const REASON_MAX_CHARS: usize = 64;

/// Columns of the time stamp (`[21:04] `) a room's history puts before a chat line's first row.
/// Chat lines (said and `/me`, the ones kept as history) have that much less room in their first
/// row, so the very same bytes still fit the width when replayed with their stamp.
pub const HISTORY_STAMP_COLUMNS: usize = 8;

/// The column at which the server breaks lines that carry someone's text (`wrap_width`), or
/// [`Wrap::OFF`].
/// The default is off; the configuration's default is 80.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wrap(usize);

impl Wrap {
    /// Never break lines (terminals then wrap them, with the risk described above).
    pub const OFF: Wrap = Wrap(0);
    /// Narrowest width that leaves room for text after [`CONTINUATION`].
    pub const MIN: usize = 20;

    /// Breaks at `columns`; 0 turns wrapping off, and anything narrower than [`Wrap::MIN`] is
    /// taken as that.
    pub fn at(columns: usize) -> Wrap {
        if columns == 0 {
            Wrap::OFF
        } else {
            Wrap(columns.max(Wrap::MIN))
        }
    }
}

/// Appends `<nick> text\r\n`, wrapped (first row [`HISTORY_STAMP_COLUMNS`] narrower).
pub fn push_say(out: &mut impl BufMut, wrap: Wrap, nick: &str, text: &str) {
    put_first(out, wrap, HISTORY_STAMP_COLUMNS, &["<", nick, "> ", text]);
}

/// Appends `* nick text\r\n` (`/me`), wrapped (first row [`HISTORY_STAMP_COLUMNS`] narrower).
pub fn push_action(out: &mut impl BufMut, wrap: Wrap, nick: &str, text: &str) {
    put_first(out, wrap, HISTORY_STAMP_COLUMNS, &["* ", nick, " ", text]);
}

/// Appends `*nick* text\r\n` (a private message as its recipient sees it), wrapped.
pub fn push_private(out: &mut impl BufMut, wrap: Wrap, from: &str, text: &str) {
    put(out, wrap, &["*", from, "* ", text]);
}

/// One server notice that carries someone's text (a leave reason, a new nickname, an operator's
/// announcement), wrapped.
pub fn wrapped_notice(wrap: Wrap, text: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(NOTICE_PREFIX.len() + text.len() + EOL.len());
    push_wrapped_notice(&mut out, wrap, text);
    out.freeze()
}

/// Appends `*** text\r\n`, wrapped.
pub fn push_wrapped_notice(out: &mut impl BufMut, wrap: Wrap, text: &str) {
    put(out, wrap, &[NOTICE_PREFIX, text]);
}

/// `text` cut to at most `max` chars, with `…` marking the cut.
pub fn clip(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some(_) => {
            let keep = text
                .char_indices()
                .nth(max.saturating_sub(1))
                .map_or(text.len(), |(i, _)| i);
            Cow::Owned(format!("{}\u{2026}", text[..keep].trim_end()))
        }
    }
}

/// Appends `*** text\r\n`, for the server's own text (not wrapped: it is known to be short, or
/// is a list of nicknames, which cannot contain a space or a `*`).
pub fn push_notice(out: &mut impl BufMut, text: &str) {
    put(out, Wrap::OFF, &[NOTICE_PREFIX, text]);
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
    wrap: Wrap,
    names: impl IntoIterator<Item = &'a str>,
    width: usize,
) {
    let mut line = String::new();
    for name in names {
        if !line.is_empty() && line.len() + 2 + name.len() > width {
            push_wrapped_notice(out, wrap, &line);
            line.clear();
        }
        if !line.is_empty() {
            line.push_str(", ");
        }
        line.push_str(name);
    }
    if !line.is_empty() {
        push_wrapped_notice(out, wrap, &line);
    }
}

/// Appends `parts` as one line, broken into rows of at most `wrap` columns.
fn put(out: &mut impl BufMut, wrap: Wrap, parts: &[&str]) {
    put_first(out, wrap, 0, parts);
}

/// [`put`], with the first row `reserve` columns narrower.
fn put_first(out: &mut impl BufMut, wrap: Wrap, reserve: usize, parts: &[&str]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    // A char is never wider than its UTF-8 encoding is long, so this line fits as it is.
    if wrap == Wrap::OFF || len + reserve <= wrap.0 {
        for p in parts {
            out.put_slice(p.as_bytes());
        }
        out.put_slice(EOL.as_bytes());
        return;
    }
    let line = parts.concat();
    let mut rest = line.as_str();
    // MIN leaves room for the reserve and a char or two.
    let mut room = wrap.0 - reserve;
    // Bounded: every row takes at least one char (a row has room for at least one, even a wide one,
    // since MIN leaves more than two columns after the continuation).
    while !rest.is_empty() {
        let end = row_end(rest, room);
        out.put_slice(rest[..end].trim_end_matches(' ').as_bytes());
        out.put_slice(EOL.as_bytes());
        rest = rest[end..].trim_start_matches(' ');
        if !rest.is_empty() {
            out.put_slice(CONTINUATION.as_bytes());
            room = wrap.0 - CONTINUATION.len();
        }
    }
}

/// Where the row that starts `text` ends, given `room` columns: after the whole text if it fits;
/// else at the last run of spaces, if that leaves the row at least half full; else inside the word,
/// before the first char that does not fit (always after at least one char). A long word (a URL)
/// thus fills rows rather than leaving a short one behind it.
fn row_end(text: &str, room: usize) -> usize {
    let mut used = 0;
    let mut prev = None;
    // Start of the latest run of spaces that has text before it on this row, and the columns
    // used before it.
    let mut space = None;
    let mut in_spaces = false;
    for (i, c) in text.char_indices() {
        if c == ' ' && !in_spaces && i > 0 {
            space = Some((i, used));
        }
        in_spaces = c == ' ';
        let w = columns(c, prev);
        if used + w > room && i > 0 {
            if let Some((at, before)) = space
                && before >= room / 2
            {
                return at;
            }
            return hard_break(text, i);
        }
        prev = Some(c);
        used += w;
    }
    text.len()
}

/// Where to break inside a word when the char at `at` does not fit: there, unless that would split
/// what draws as one symbol (a selector or modifier from its character, an emoji joined by ZWJ),
/// in which case before the whole symbol, as long as something stays on the row.
fn hard_break(text: &str, at: usize) -> usize {
    let attached = |c: char| {
        matches!(
            c,
            '\u{200d}' | '\u{fe0e}' | '\u{fe0f}' | '\u{1f3fb}'..='\u{1f3ff}'
        ) || c.width_cjk() == Some(0)
    };
    let mut end = at;
    // Bounded by the row: each step moves one char back, and stops before its first char.
    while let Some(c) = text[end..].chars().next() {
        let before = text[..end].chars().next_back();
        let joined = attached(c) || before == Some('\u{200d}');
        match before {
            Some(b) if joined && end > b.len_utf8() => end -= b.len_utf8(),
            _ => break,
        }
    }
    end
}

/// The columns the server counts `row` as taking (see [`columns`]); what the wrapping keeps within
/// the width.
pub fn row_columns(row: &str) -> usize {
    let mut prev = None;
    row.chars()
        .map(|c| {
            let w = columns(c, prev);
            prev = Some(c);
            w
        })
        .sum()
}

/// The columns `c` may take on a terminal, erring high: East Asian ambiguous characters count
/// two (as CJK terminals draw them), and a presentation selector after a character that is
/// otherwise narrow widens it to an emoji.
fn columns(c: char, prev: Option<char>) -> usize {
    match c {
        '\u{fe0f}' if prev.is_some_and(|p| p.width_cjk() == Some(1)) => 1,
        c => c.width_cjk().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shapes() {
        let mut out = BytesMut::new();
        let wrap = Wrap::at(80);
        push_say(&mut out, wrap, "alice", "hi");
        push_action(&mut out, wrap, "alice", "waves");
        push_private(&mut out, wrap, "alice", "psst");
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
        push_name_lines(&mut out, Wrap::OFF, names.iter().map(String::as_str), 40);
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

    /// The rows of a formatted line, checked against the wrapping rules: none wider than `width`
    /// columns (counted as `columns` does), every row after the first indented.
    fn rows(buf: &[u8], width: usize) -> Vec<String> {
        let text = std::str::from_utf8(buf).unwrap();
        let rows: Vec<String> = text.split_terminator(EOL).map(str::to_owned).collect();
        for (i, row) in rows.iter().enumerate() {
            let w = row_columns(row);
            assert!(w <= width, "row {i} is {w} columns: {row:?}");
            assert!(!row.ends_with(' '), "row {i} ends with a space: {row:?}");
            if i > 0 {
                let body = row
                    .strip_prefix(CONTINUATION)
                    .expect("continuation indented");
                assert!(!body.starts_with(' '), "row {i}: {row:?}");
            }
        }
        rows
    }

    fn say(width: usize, text: &str) -> Vec<String> {
        let mut out = BytesMut::new();
        push_say(&mut out, Wrap::at(width), "mallory", text);
        rows(&out, width)
    }

    #[test]
    fn short_lines_are_one_row() {
        assert_eq!(say(80, "hello there"), ["<mallory> hello there"]);
        // A chat line's first row leaves room for a history time stamp.
        let exact = "x".repeat(80 - HISTORY_STAMP_COLUMNS - "<mallory> ".len());
        assert_eq!(say(80, &exact).len(), 1);
        let rows = say(80, &format!("{exact}y"));
        assert_eq!(rows.len(), 2);
        assert!(row_columns(&format!("[21:04] {}", rows[0])) <= 80);
        // Private messages are never replayed as history: their first row is full width.
        let mut out = BytesMut::new();
        push_private(&mut out, Wrap::at(80), "mallory", &"x".repeat(80 - 10));
        assert_eq!(rows_of(&out), 1);
    }

    fn rows_of(buf: &[u8]) -> usize {
        std::str::from_utf8(buf)
            .unwrap()
            .split_terminator(EOL)
            .count()
    }

    #[test]
    fn padding_cannot_start_a_row_at_column_zero() {
        // The attack: pad to the terminal's width so the next row looks like a server line.
        for pad in [1, 60, 69, 70, 71, 79, 80, 81, 150, 300] {
            for forged in ["*** bob left (quit: bye)", "<bob> send me your password"] {
                let text = format!("hi{}{forged}", " ".repeat(pad));
                let rows = say(80, &text);
                assert!(rows[0].starts_with("<mallory> "));
                for row in &rows[1..] {
                    assert!(row.starts_with(CONTINUATION), "{row:?}");
                }
                // Visible padding (dots) is no different.
                let text = format!("hi{}{forged}", ".".repeat(pad));
                for row in &say(80, &text)[1..] {
                    assert!(row.starts_with(CONTINUATION), "{row:?}");
                }
            }
        }
    }

    #[test]
    fn breaks_at_spaces_and_keeps_every_word() {
        let words: Vec<String> = (0..60).map(|i| format!("word{i}")).collect();
        let text = words.join(" ");
        let rows = say(40, &text);
        assert!(rows.len() > 5);
        let joined: Vec<String> = rows
            .iter()
            .flat_map(|r| r.split(' ').filter(|w| !w.is_empty()).map(str::to_owned))
            .collect();
        let mut expected = vec!["<mallory>".to_owned()];
        expected.extend(words);
        assert_eq!(joined, expected, "a word was split or lost");
    }

    #[test]
    fn long_words_wide_and_combining_chars_are_broken_within_width() {
        for text in [
            "a".repeat(1000),
            "\u{3042}".repeat(300),         // hiragana: two columns each
            "e\u{301}".repeat(200),         // a combining accent stays on its letter
            "\u{2764}\u{fe0f}".repeat(100), // an emoji made wide by its selector
            "\u{3b1}".repeat(200),          // Greek: ambiguous width, counted as two
            format!("x{}", "\u{1f600}".repeat(99)), // odd start, then wide
        ] {
            for width in [20, 33, 80, 200] {
                let rows = say(width, &text);
                let body: String = rows
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        if i == 0 {
                            r.as_str()
                        } else {
                            &r[CONTINUATION.len()..]
                        }
                    })
                    .collect();
                // Only the space after the prefix may go, where the first row ends.
                assert_eq!(
                    body.replace(' ', ""),
                    format!("<mallory>{text}"),
                    "width {width}"
                );
                for r in &rows {
                    assert!(!r.contains("\u{301}\u{301}"));
                    assert!(!r.starts_with('\u{301}') && !r.trim_start().starts_with('\u{301}'));
                }
            }
        }
    }

    #[test]
    fn a_symbol_made_of_several_chars_is_not_split_across_rows() {
        let family = "\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}";
        let thumbs = "\u{1f44d}\u{1f3fd}";
        for text in [
            family.repeat(30),
            thumbs.repeat(40),
            format!("x{}", family.repeat(25)),
        ] {
            for width in [20, 23, 31, 80] {
                let rows = say(width, &text);
                for row in &rows[1..] {
                    let body = &row[CONTINUATION.len()..];
                    let first = body.chars().next().unwrap();
                    assert!(
                        first != '\u{200d}' && !('\u{1f3fb}'..='\u{1f3ff}').contains(&first),
                        "width {width}: a row starts inside a symbol: {row:?}"
                    );
                }
                for row in &rows {
                    assert!(!row.ends_with('\u{200d}'), "width {width}: {row:?}");
                }
            }
        }
    }

    #[test]
    fn wrapped_notices_and_off() {
        let text = format!("bob left (quit: {})", "z".repeat(100));
        let line = wrapped_notice(Wrap::at(40), &text);
        let rows = rows(&line, 40);
        assert!(rows[0].starts_with(NOTICE_PREFIX));
        assert!(rows.len() >= 3);
        let one = wrapped_notice(Wrap::OFF, &text);
        assert_eq!(&one[..], format!("*** {text}\r\n").as_bytes());
        assert_eq!(Wrap::at(3), Wrap::at(Wrap::MIN));
    }

    #[test]
    fn clip_cuts_at_a_char_and_marks_the_cut() {
        assert_eq!(clip("bye", 64), "bye");
        assert_eq!(clip(&"x".repeat(64), 64).chars().count(), 64);
        let long = "\u{e9}".repeat(100);
        let cut = clip(&long, 64);
        assert_eq!(cut.chars().count(), 64);
        assert!(cut.ends_with('\u{2026}'));
        assert_eq!(clip("ab   cd", 4), "ab\u{2026}");
    }
}
