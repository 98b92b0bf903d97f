//! Turns one client line into text that is safe to show on anyone's terminal.
//!
//! Invariants of everything appended by [`sanitise_into`]: no char for which [`is_forbidden`]
//! holds (so no C0/C1 control, no ESC, no bidi override), no trailing whitespace, and nothing the
//! caller already had in the buffer is altered. Invalid UTF-8 is replaced by U+FFFD exactly as
//! `String::from_utf8_lossy` does, rather than rejecting the line, so one bad byte does not
//! swallow a whole message. Escape sequences are removed whole, so their parameters do not leak
//! into the text as garbage.

/// Where the escape-sequence parser is within one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Text,
    /// After ESC.
    Esc,
    /// After ESC and one or more intermediate bytes.
    EscInter,
    /// In a CSI's parameter bytes.
    Csi,
    /// In a CSI's intermediate bytes.
    CsiInter,
    /// In an OSC string (ends with BEL or ST).
    Osc,
    /// In a DCS/SOS/PM/APC string (ends with ST).
    Str,
    /// After ESC inside a string: `\` completes ST, anything else starts a new escape.
    StrEsc,
}

/// Appends the sanitised form of `raw` (one line, terminator already removed) to `out`.
///
/// Returns true if invalid UTF-8 was found; each invalid sequence becomes U+FFFD. A line that
/// sanitises to nothing leaves `out` unchanged.
pub fn sanitise_into(raw: &[u8], out: &mut String) -> bool {
    let start = out.len();
    // Printable ASCII, what most chat lines are: nothing to remove, replace or interpret.
    if raw.iter().all(|&b| (0x20..0x7f).contains(&b))
        && let Ok(text) = std::str::from_utf8(raw)
    {
        out.push_str(text.trim_end());
        return false;
    }
    let mut state = State::Text;
    let mut invalid = false;
    for chunk in raw.utf8_chunks() {
        let mut rest = chunk.valid();
        loop {
            if state == State::Text {
                // Copy runs of ordinary text in one go; only special chars need the machine.
                let plain = rest.find(is_forbidden).unwrap_or(rest.len());
                out.push_str(&rest[..plain]);
                rest = &rest[plain..];
            }
            let Some(c) = rest.chars().next() else { break };
            rest = &rest[c.len_utf8()..];
            state = step(state, c, out, start);
        }
        if !chunk.invalid().is_empty() {
            invalid = true;
            state = step(state, char::REPLACEMENT_CHARACTER, out, start);
        }
    }
    let kept = out[start..].trim_end().len();
    out.truncate(start + kept);
    invalid
}

/// Sanitises operator-supplied text (MOTD, announcements, kick reasons) by the same rules.
///
/// The text is treated as one line: line breaks in it are removed, so split it first.
pub fn sanitise_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    sanitise_into(s.as_bytes(), &mut out);
    out
}

/// True if `c` may never appear in sanitised output: C0 controls (TAB included, since it is
/// converted to a space), DEL, C1 controls, bidi controls, and the Unicode line/paragraph
/// separators.
pub fn is_forbidden(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{61c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// Feeds one char to the parser, appending to `out` whatever survives.
fn step(state: State, c: char, out: &mut String, start: usize) -> State {
    match state {
        State::Text => text(c, out, start),
        State::Esc => match c {
            '[' => State::Csi,
            ']' => State::Osc,
            'P' | 'X' | '^' | '_' => State::Str,
            ' '..='/' => State::EscInter,
            '0'..='~' => State::Text,
            // ESC before a control, a non-ASCII char or the end of line is simply dropped.
            _ => text(c, out, start),
        },
        State::EscInter => match c {
            ' '..='/' => State::EscInter,
            '0'..='~' => State::Text,
            _ => text(c, out, start),
        },
        State::Csi => match c {
            '0'..='?' => State::Csi,
            ' '..='/' => State::CsiInter,
            '@'..='~' => State::Text,
            // A malformed CSI ends here and the char counts as text, as ECMA-48 parsers do.
            _ => text(c, out, start),
        },
        State::CsiInter => match c {
            ' '..='/' => State::CsiInter,
            '@'..='~' => State::Text,
            _ => text(c, out, start),
        },
        State::Osc => match c {
            '\u{7}' | '\u{9c}' => State::Text,
            '\u{1b}' => State::StrEsc,
            _ => State::Osc,
        },
        State::Str => match c {
            '\u{9c}' => State::Text,
            '\u{1b}' => State::StrEsc,
            _ => State::Str,
        },
        // Terminals abandon a string at an ESC that does not form ST and start a new sequence.
        State::StrEsc if c == '\\' => State::Text,
        State::StrEsc => step(State::Esc, c, out, start),
    }
}

/// Handles a char outside any escape sequence.
fn text(c: char, out: &mut String, start: usize) -> State {
    match c {
        '\u{1b}' => State::Esc,
        '\u{9b}' => State::Csi,
        '\u{9d}' => State::Osc,
        '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => State::Str,
        '\t' => {
            out.push(' ');
            State::Text
        }
        // Erase like a terminal would, but only what this call wrote.
        '\u{8}' | '\u{7f}' => {
            if out.len() > start {
                out.pop();
            }
            State::Text
        }
        c if is_forbidden(c) => State::Text,
        c => {
            out.push(c);
            State::Text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sanitised(raw: &[u8]) -> (String, bool) {
        let mut out = String::new();
        let invalid = sanitise_into(raw, &mut out);
        (out, invalid)
    }

    #[test]
    fn rules_table() {
        let table: &[(&[u8], &str, bool)] = &[
            (b"hello world", "hello world", false),
            (b"\x1b[31mred\x1b[0m", "red", false),
            (b"\x1b[1;32;40mbold\x1b[m", "bold", false),
            (b"\x1b]0;pwned\x07hi", "hi", false),
            (b"\x1b]0;pwned\x1b\\hi", "hi", false),
            (b"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link", false),
            ("\u{9d}0;t\u{9c}ok".as_bytes(), "ok", false),
            (b"\x1b]0;never ends", "", false),
            (b"\x1b]0;t\x1b[2Jx", "x", false),
            (b"a\x1b[2J\x1b[H\x1b[10;20Hb", "ab", false),
            (b"\x1b[?25l\x1b[?1049hx", "x", false),
            (b"\x1b[1 qx", "x", false),
            ("\u{9b}2Jcleared".as_bytes(), "cleared", false),
            (b"\x1b[3\x01x", "x", false),
            (b"\x1b[1 2x", "2x", false),
            (b"\x1bcreset", "reset", false),
            (b"\x1b(Bx", "x", false),
            (b"\x1b#8x", "x", false),
            (b"\x1bPq#0;2;0;0;0\x1b\\x", "x", false),
            (
                b"\x1b_apc\x1b\\x\x1b^pm\x1b\\y\x1bXsos\x1b\\z",
                "xyz",
                false,
            ),
            ("\u{90}dcs\u{9c}x".as_bytes(), "x", false),
            (b"\x1bPunterminated", "", false),
            (b"a\x1b", "a", false),
            (b"a\x1b\x1b[1mb", "ab", false),
            (b"a\x1b\rb", "ab", false),
            ("a\x1b\u{e9}".as_bytes(), "a\u{e9}", false),
            (b"ab\rcd", "abcd", false),
            (b"a\0b\x07c\x0bd", "abcd", false),
            (b"abc\x08\x08x", "ax", false),
            (b"abc\x7fd", "abd", false),
            (b"\x08\x08x", "x", false),
            ("\u{5c0f}\u{660e}\x08".as_bytes(), "\u{5c0f}", false),
            (b"a\tb", "a b", false),
            (b"\ta", " a", false),
            (b"  lead", "  lead", false),
            (b"trail \t ", "trail", false),
            (b" \t ", "", false),
            ("\u{202e}txt".as_bytes(), "txt", false),
            (
                "a\u{2066}b\u{2069}c\u{200f}\u{61c}".as_bytes(),
                "abc",
                false,
            ),
            ("a\u{2028}b\u{2029}".as_bytes(), "ab", false),
            ("a\u{85}b\u{9c}".as_bytes(), "ab", false),
            (b"\xff\xfehi", "\u{fffd}\u{fffd}hi", true),
            (b"a\xe4\xbdb", "a\u{fffd}b", true),
            (b"\x1b[\xffm", "\u{fffd}m", true),
            (b"\x1b]0;\xff\x07ok", "ok", true),
            (
                "\u{5c0f}\u{660e} \u{4f60}\u{597d} \u{1f44b}\u{1f3fd} e\u{301} \u{e9}".as_bytes(),
                "\u{5c0f}\u{660e} \u{4f60}\u{597d} \u{1f44b}\u{1f3fd} e\u{301} \u{e9}",
                false,
            ),
        ];
        for (raw, expected, invalid) in table {
            assert_eq!(sanitised(raw), (expected.to_string(), *invalid), "{raw:?}");
        }
    }

    #[test]
    fn prefix_is_preserved() {
        let table: &[(&[u8], &str)] = &[
            (b"\x08\x08\x08x", "<bob> x"),
            (b"ab\x7f\x7f\x7f", "<bob> "),
            (b"  ", "<bob> "),
            (b"hi  ", "<bob> hi"),
        ];
        for (raw, expected) in table {
            let mut out = String::from("<bob> ");
            sanitise_into(raw, &mut out);
            assert_eq!(out, *expected, "{raw:?}");
        }
    }

    #[test]
    fn operator_text() {
        assert_eq!(sanitise_str("Welcome\x1b[5m!\t"), "Welcome!");
        assert_eq!(sanitise_str("two\nlines"), "twolines");
    }

    #[test]
    fn forbidden_table() {
        let table = [
            ('\0', true),
            ('\t', true),
            ('\x1b', true),
            ('\x7f', true),
            ('\u{80}', true),
            ('\u{9f}', true),
            ('\u{202e}', true),
            ('\u{2028}', true),
            (' ', false),
            ('~', false),
            ('\u{a0}', false),
            ('\u{fffd}', false),
            ('\u{5c0f}', false),
        ];
        for (c, forbidden) in table {
            assert_eq!(is_forbidden(c), forbidden, "{c:?}");
        }
    }

    #[test]
    fn random_input_oracle() {
        const ALPHABET: &[&str] = &[
            "\x1b", "\x1b", "[", "]", "\x07", "\u{9b}", "\u{9d}", "\u{90}", "\u{9c}", "\\", "\r",
            "\0", "\x08", "\x7f", "\t", " ", "\u{3000}", "\u{202e}", "\u{2066}", "\u{2028}",
            "\u{200f}", "P", "1", ";", "m", "a", "b", "\u{e9}", "\u{5c0f}",
        ];
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as usize
        };
        for _ in 0..20_000 {
            let len = next() % 65;
            let mut raw = Vec::with_capacity(len + 4);
            while raw.len() < len {
                match next() % 12 {
                    0 => raw.push(0xff),
                    1 => raw.push(0xe4),
                    _ => raw.extend(ALPHABET[next() % ALPHABET.len()].as_bytes()),
                }
            }
            raw.truncate(len);
            let mut out = String::from("> ");
            let invalid = sanitise_into(&raw, &mut out);
            let added = out.strip_prefix("> ").expect("prefix was altered");
            assert!(!added.chars().any(is_forbidden), "{raw:?} -> {added:?}");
            assert!(
                !added.ends_with(char::is_whitespace),
                "{raw:?} -> {added:?}"
            );
            assert_eq!(invalid, std::str::from_utf8(&raw).is_err(), "{raw:?}");
            // Decoding must agree with from_utf8_lossy, and the output is a fixed point.
            assert_eq!(
                added,
                sanitise_str(&String::from_utf8_lossy(&raw)),
                "{raw:?}"
            );
            assert_eq!(sanitise_str(added), added, "{raw:?}");
        }
    }
}
