//! Turns one client line into text that is safe to show on anyone's terminal.
//!
//! Invariants of everything appended by [`sanitise_into`]: no char for which [`is_forbidden`]
//! holds (so no C0/C1 control, no ESC, no bidi override), no trailing whitespace, and nothing the
//! caller already had in the buffer is altered. Invalid UTF-8 is replaced by U+FFFD exactly as
//! `String::from_utf8_lossy` does, rather than rejecting the line, so one bad byte does not
//! swallow a whole message. Escape sequences are removed whole, so their parameters do not leak
//! into the text as garbage.
//!
//! Invisible text is removed too: no Default_Ignorable_Code_Point (zero-width space and joiners,
//! word joiner, BOM, Hangul fillers, variation selectors, tag characters, …) is kept except inside
//! an emoji sequence that needs it (UTS #51): a zero-width joiner between an emoji (pictograph,
//! skin tone, or pictograph with VS16) and a pictograph (👨‍👩‍👧); VS15/VS16 right after a char
//! with an emoji form (❤️, keycaps such as 1️⃣); tag characters only as a whole flag tag sequence
//! (🏴, 3 to 7 tag letters or digits, cancel tag: the England, Scotland and Wales flags). At most
//! [`MAX_MARKS`] combining marks follow one another; the rest of a stack (Zalgo text) is dropped.
//! The output is a subsequence of the input and sanitises to itself.

use super::ucd;

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

/// Most combining marks kept in a row on one base char. Four is more than living scripts stack in
/// practice (Vietnamese two, pointed Hebrew with a cantillation mark three or four, Indic and
/// Tibetan stacks two or three, a keycap emoji two) and keeps a stack within about one line
/// above and below its base; Zalgo text stacks dozens to draw over the lines around it.
pub const MAX_MARKS: usize = 4;

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
                let plain = rest.find(needs_care).unwrap_or(rest.len());
                out.push_str(&rest[..plain]);
                rest = &rest[plain..];
            }
            let Some(c) = rest.chars().next() else { break };
            rest = &rest[c.len_utf8()..];
            state = step(state, c, &mut rest, out, start);
        }
        if !chunk.invalid().is_empty() {
            invalid = true;
            state = step(state, char::REPLACEMENT_CHARACTER, &mut "", out, start);
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

/// True if `c` cannot be copied as it is: a char [`text`] removes, interprets or counts.
fn needs_care(c: char) -> bool {
    is_forbidden(c) || (!c.is_ascii() && (ucd::is_default_ignorable(c) || ucd::is_mark(c)))
}

/// Feeds one char to the parser, appending to `out` whatever survives. `rest` is the valid text
/// after `c`, for the emoji rules that look ahead; they may consume from it.
fn step(state: State, c: char, rest: &mut &str, out: &mut String, start: usize) -> State {
    match state {
        State::Text => text(c, rest, out, start),
        State::Esc => match c {
            '[' => State::Csi,
            ']' => State::Osc,
            'P' | 'X' | '^' | '_' => State::Str,
            ' '..='/' => State::EscInter,
            '0'..='~' => State::Text,
            // ESC before a control, a non-ASCII char or the end of line is simply dropped.
            _ => text(c, rest, out, start),
        },
        State::EscInter => match c {
            ' '..='/' => State::EscInter,
            '0'..='~' => State::Text,
            _ => text(c, rest, out, start),
        },
        State::Csi => match c {
            '0'..='?' => State::Csi,
            ' '..='/' => State::CsiInter,
            '@'..='~' => State::Text,
            // A malformed CSI ends here and the char counts as text, as ECMA-48 parsers do.
            _ => text(c, rest, out, start),
        },
        State::CsiInter => match c {
            ' '..='/' => State::CsiInter,
            '@'..='~' => State::Text,
            _ => text(c, rest, out, start),
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
        State::StrEsc => step(State::Esc, c, rest, out, start),
    }
}

/// Handles a char outside any escape sequence.
fn text(c: char, rest: &mut &str, out: &mut String, start: usize) -> State {
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
                drop_dangling(out, start);
            }
            State::Text
        }
        c if is_forbidden(c) => State::Text,
        c if ucd::is_default_ignorable(c) => {
            ignorable(c, rest, out, start);
            State::Text
        }
        c if ucd::is_mark(c) => {
            let stacked = out[start..]
                .chars()
                .rev()
                .take_while(|&m| ucd::is_mark(m))
                .take(MAX_MARKS)
                .count();
            if stacked < MAX_MARKS {
                out.push(c);
            }
            State::Text
        }
        c => {
            out.push(c);
            State::Text
        }
    }
}

/// Keeps a default-ignorable `c` only where an emoji sequence needs it (see the module docs).
/// A flag's tag run is taken from `rest` whole, kept or dropped as one.
fn ignorable(c: char, rest: &mut &str, out: &mut String, start: usize) {
    let mut before = out[start..].chars().rev();
    let (last, second) = (before.next(), before.next());
    if c == ucd::ZWJ {
        let joins_from = last.is_some_and(|p| {
            ucd::is_extended_pictographic(p)
                || ucd::is_emoji_modifier(p)
                || (p == '\u{fe0f}' && second.is_some_and(ucd::is_extended_pictographic))
        });
        let joins_to = rest
            .chars()
            .next()
            .is_some_and(ucd::is_extended_pictographic);
        if joins_from && joins_to {
            out.push(c);
        }
    } else if ucd::is_presentation_selector(c) {
        if last.is_some_and(ucd::is_emoji) {
            out.push(c);
        }
    } else if ucd::is_tag(c) {
        // The run of tag chars starting at `c`, up to and including a cancel tag.
        let tail = rest.find(|t| !ucd::is_tag(t)).unwrap_or(rest.len());
        let run = match rest[..tail].find(ucd::CANCEL_TAG) {
            Some(end) if c != ucd::CANCEL_TAG => end + ucd::CANCEL_TAG.len_utf8(),
            _ => tail,
        };
        let spec = std::iter::once(c).chain(rest[..run].chars());
        let flag = c != ucd::CANCEL_TAG
            && last == Some(ucd::BLACK_FLAG)
            && rest[..run].ends_with(ucd::CANCEL_TAG)
            && (3..=7).contains(&rest[..run].chars().count())
            && spec
                .take_while(|&t| t != ucd::CANCEL_TAG)
                .all(|t| matches!(t, '\u{e0030}'..='\u{e0039}' | '\u{e0061}'..='\u{e007a}'));
        if flag {
            out.push(c);
            out.push_str(&rest[..run]);
        }
        *rest = &rest[run..];
    }
}

/// After an erase, drops what the erased char left without meaning: a zero-width joiner with
/// nothing to join, or the tags of a flag whose cancel tag is gone.
fn drop_dangling(out: &mut String, start: usize) {
    while let Some(last) = out[start..].chars().next_back() {
        let dangling = last == ucd::ZWJ || (ucd::is_tag(last) && last != ucd::CANCEL_TAG);
        if !dangling {
            break;
        }
        out.pop();
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
            // Invisible chars are dropped...
            ("a\u{200b}b".as_bytes(), "ab", false),
            ("a\u{200c}b\u{200d}c".as_bytes(), "abc", false),
            ("a\u{2060}b\u{feff}c\u{ad}d\u{34f}e".as_bytes(), "abcde", false),
            ("alice\u{1160}".as_bytes(), "alice", false),
            ("\u{115f}\u{1160}\u{3164}\u{ffa0}\u{180e}".as_bytes(), "", false),
            ("a\u{fe0f}b\u{fe0e}".as_bytes(), "ab", false),
            ("\x1b\u{200b}x".as_bytes(), "x", false),
            // ...hidden text in tags too (here "Ignore")...
            (
                "hi\u{e0049}\u{e0067}\u{e006e}\u{e006f}\u{e0072}\u{e0065}".as_bytes(),
                "hi",
                false,
            ),
            ("\u{e0001}\u{e0065}\u{e006e}x".as_bytes(), "x", false),
            // ...and data smuggled in variation selectors after an emoji.
            (
                "\u{1f600}\u{e0100}\u{e0142}\u{fe00}".as_bytes(),
                "\u{1f600}",
                false,
            ),
            // Emoji sequences keep what they need: ZWJ sequences (family, skin tone, flag), a
            // presentation selector, a keycap, a subdivision flag.
            (
                "\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}".as_bytes(),
                "\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}",
                false,
            ),
            (
                "\u{1f469}\u{1f3fd}\u{200d}\u{1f4bb}".as_bytes(),
                "\u{1f469}\u{1f3fd}\u{200d}\u{1f4bb}",
                false,
            ),
            (
                "\u{1f3f3}\u{fe0f}\u{200d}\u{1f308}".as_bytes(),
                "\u{1f3f3}\u{fe0f}\u{200d}\u{1f308}",
                false,
            ),
            ("I \u{2764}\u{fe0f} it".as_bytes(), "I \u{2764}\u{fe0f} it", false),
            ("\u{2764}\u{fe0e}".as_bytes(), "\u{2764}\u{fe0e}", false),
            ("\u{2764}\u{fe0f}\u{fe0f}".as_bytes(), "\u{2764}\u{fe0f}", false),
            ("1\u{fe0f}\u{20e3}".as_bytes(), "1\u{fe0f}\u{20e3}", false),
            (
                "\u{1f3f4}\u{e0067}\u{e0062}\u{e0065}\u{e006e}\u{e0067}\u{e007f}!".as_bytes(),
                "\u{1f3f4}\u{e0067}\u{e0062}\u{e0065}\u{e006e}\u{e0067}\u{e007f}!",
                false,
            ),
            // Broken sequences lose their invisible parts.
            ("\u{1f468}\u{200d}".as_bytes(), "\u{1f468}", false),
            ("\u{1f468}\u{200d}a".as_bytes(), "\u{1f468}a", false),
            ("a\u{200d}\u{1f468}".as_bytes(), "a\u{1f468}", false),
            ("1\u{200d}2".as_bytes(), "12", false),
            (
                "\u{1f468}\u{200d}\u{200d}\u{1f469}".as_bytes(),
                "\u{1f468}\u{200d}\u{1f469}",
                false,
            ),
            (
                "\u{1f468}\u{200d}\u{200b}\u{1f469}".as_bytes(),
                "\u{1f468}\u{1f469}",
                false,
            ),
            // A flag's tags: no cancel, too long, capitals, no flag, a lone cancel.
            (
                "\u{1f3f4}\u{e0067}\u{e0062}\u{e0065}x".as_bytes(),
                "\u{1f3f4}x",
                false,
            ),
            (
                "\u{1f3f4}\u{e0067}\u{e0062}\u{e0065}\u{e006e}\u{e0067}\u{e0067}\u{e0067}\u{e0067}\u{e007f}"
                    .as_bytes(),
                "\u{1f3f4}",
                false,
            ),
            (
                "\u{1f3f4}\u{e0047}\u{e0042}\u{e0045}\u{e007f}".as_bytes(),
                "\u{1f3f4}",
                false,
            ),
            (
                "x\u{e0067}\u{e0062}\u{e0065}\u{e007f}".as_bytes(),
                "x",
                false,
            ),
            ("\u{e007f}x".as_bytes(), "x", false),
            // Erasing the end of a sequence takes its dangling invisible parts with it.
            (
                "\u{1f468}\u{200d}\u{1f469}\x08".as_bytes(),
                "\u{1f468}",
                false,
            ),
            (
                "\u{1f3f4}\u{e0067}\u{e0062}\u{e0065}\u{e007f}\x08".as_bytes(),
                "\u{1f3f4}",
                false,
            ),
            // Combining marks: at most four in a row, whatever comes between them unseen.
            (
                "Z\u{336}\u{336}\u{336}\u{336}\u{336}\u{336}\u{336}a".as_bytes(),
                "Z\u{336}\u{336}\u{336}\u{336}a",
                false,
            ),
            (
                "e\u{301}\u{301}\u{200b}\u{301}\u{301}\u{301}".as_bytes(),
                "e\u{301}\u{301}\u{301}\u{301}",
                false,
            ),
            (
                "Vi\u{1ec7}t e\u{323}\u{302} \u{5e9}\u{5bc}\u{5c1}\u{5b8}".as_bytes(),
                "Vi\u{1ec7}t e\u{323}\u{302} \u{5e9}\u{5bc}\u{5c1}\u{5b8}",
                false,
            ),
            ("\u{301}\u{301}\u{301}\u{301}\u{301}x".as_bytes(), "\u{301}\u{301}\u{301}\u{301}x", false),
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

    /// True if every invisible char in `s` is one the module docs allow, in its place, and no
    /// more than MAX_MARKS marks follow one another: written from UTS #51's grammar, apart from
    /// the code.
    fn invisible_chars_allowed(s: &str) -> bool {
        let chars: Vec<char> = s.chars().collect();
        let mut i = 0;
        let mut marks = 0;
        while i < chars.len() {
            let c = chars[i];
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let prev2 = i.checked_sub(2).map(|j| chars[j]);
            marks = if ucd::is_mark(c) { marks + 1 } else { 0 };
            if marks > MAX_MARKS {
                return false;
            }
            if ucd::is_tag(c) {
                // Only a whole flag tag sequence, taken in one step.
                let end = chars[i..].iter().position(|&t| t == ucd::CANCEL_TAG);
                let Some(end) = end else { return false };
                let spec = &chars[i..i + end];
                let ok = prev == Some(ucd::BLACK_FLAG)
                    && (3..=7).contains(&spec.len())
                    && spec.iter().all(
                        |t| matches!(t, '\u{e0030}'..='\u{e0039}' | '\u{e0061}'..='\u{e007a}'),
                    );
                if !ok {
                    return false;
                }
                i += end + 1;
                marks = 0;
                continue;
            }
            if ucd::is_default_ignorable(c) {
                let ok = match c {
                    '\u{200d}' => {
                        let from = prev.is_some_and(|p| {
                            ucd::is_extended_pictographic(p)
                                || ucd::is_emoji_modifier(p)
                                || (p == '\u{fe0f}'
                                    && prev2.is_some_and(ucd::is_extended_pictographic))
                        });
                        from && chars
                            .get(i + 1)
                            .is_some_and(|&n| ucd::is_extended_pictographic(n))
                    }
                    '\u{fe0e}' | '\u{fe0f}' => prev.is_some_and(ucd::is_emoji),
                    _ => false,
                };
                if !ok {
                    return false;
                }
            }
            i += 1;
        }
        true
    }

    #[test]
    fn random_input_oracle() {
        const ALPHABET: &[&str] = &[
            "\x1b",
            "\x1b",
            "[",
            "]",
            "\x07",
            "\u{9b}",
            "\u{9d}",
            "\u{90}",
            "\u{9c}",
            "\\",
            "\r",
            "\0",
            "\x08",
            "\x7f",
            "\t",
            " ",
            "\u{3000}",
            "\u{202e}",
            "\u{2066}",
            "\u{2028}",
            "\u{200f}",
            "P",
            "1",
            ";",
            "m",
            "a",
            "b",
            "\u{e9}",
            "\u{5c0f}",
            "\u{200b}",
            "\u{200d}",
            "\u{200d}",
            "\u{fe0f}",
            "\u{fe0e}",
            "\u{1160}",
            "\u{301}",
            "\u{301}",
            "\u{20e3}",
            "\u{1f468}",
            "\u{1f3fd}",
            "\u{2764}",
            "\u{1f3f4}",
            "\u{1f3f4}",
            "\u{e0067}",
            "\u{e0062}",
            "\u{e0065}",
            "\u{e007f}",
            "\u{e0047}",
            "\u{e0100}",
        ];
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as usize
        };
        for _ in 0..30_000 {
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
            assert!(invisible_chars_allowed(added), "{raw:?} -> {added:?}");
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
