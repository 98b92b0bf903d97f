//! The sanitiser: whatever bytes a client sends, what it appends is safe on any terminal.
//!
//! The whole input is one raw line (terminator already removed). Properties: what is appended
//! holds no char that [`is_unsafe_on_terminal`] or `is_forbidden` names (so no ESC, C0 or C1
//! control, bidi control or lone CR) and no trailing whitespace; it does not depend on what the
//! buffer already held, and that prefix is left as it was; the result says exactly whether the
//! input was invalid UTF-8; the output is a fixed point; it equals sanitising the input's
//! `from_utf8_lossy` decoding; it is a subsequence of the input's chars (TAB read as a space); no
//! more than `MAX_MARKS` combining marks follow one another in it; its only default-ignorable
//! chars are those UTS #51's emoji grammar needs (a ZWJ between an emoji and a pictograph, VS15/VS16
//! after an emoji, tag chars only as a whole 🏴 flag tag sequence); and text that needs no
//! cleaning (no forbidden or default-ignorable char, no longer stack of marks) passes unchanged
//! apart from trailing whitespace.

use groupchatd::protocol::ucd;
use groupchatd::protocol::{MAX_MARKS, is_forbidden, sanitise_into, sanitise_str};

use crate::is_unsafe_on_terminal;

/// What the session and the admin server put in front of sanitised text, plus a prefix that
/// ends in whitespace and one that holds an ESC, neither of which may be touched.
const PREFIXES: &[&str] = &["<bob> ", "* \u{5c0f}\u{660e} ", "*** \t", "\u{1b}[31m"];

/// Checks one raw line.
pub fn check_sanitise(data: &[u8]) {
    let shown = data.escape_ascii();
    let mut plain = String::new();
    let invalid = sanitise_into(data, &mut plain);
    assert_eq!(
        invalid,
        std::str::from_utf8(data).is_err(),
        "invalid-UTF-8 result for \"{shown}\""
    );
    if let Some(c) = plain
        .chars()
        .find(|&c| is_unsafe_on_terminal(c) || is_forbidden(c))
    {
        panic!("{c:?} survived sanitising \"{shown}\" into {plain:?}");
    }
    assert!(
        !plain.ends_with(char::is_whitespace),
        "trailing whitespace in {plain:?} from \"{shown}\""
    );

    for prefix in PREFIXES {
        let mut out = (*prefix).to_owned();
        assert_eq!(sanitise_into(data, &mut out), invalid, "\"{shown}\"");
        assert_eq!(
            out.strip_prefix(prefix),
            Some(plain.as_str()),
            "after prefix {prefix:?}, \"{shown}\""
        );
    }

    assert_eq!(sanitise_str(&plain), plain, "not a fixed point");
    let lossy = String::from_utf8_lossy(data);
    assert_eq!(
        sanitise_str(&lossy),
        plain,
        "differs from sanitising the lossy decoding of \"{shown}\""
    );
    if let Some(c) = lossy
        .chars()
        .find(|&c| is_unsafe_on_terminal(c) && !is_forbidden(c))
    {
        panic!("is_forbidden({c:?}) is false");
    }
    let mut input = lossy.chars().map(|c| if c == '\t' { ' ' } else { c });
    for c in plain.chars() {
        assert!(
            input.any(|i| i == c),
            "{plain:?} is not a subsequence of \"{shown}\": {c:?} out of place"
        );
    }
    if let Err(why) = invisible_chars_allowed(&plain) {
        panic!("{why} in {plain:?} from \"{shown}\"");
    }
    let clean = !lossy
        .chars()
        .any(|c| is_forbidden(c) || ucd::is_default_ignorable(c))
        && invisible_chars_allowed(&lossy).is_ok();
    if clean {
        assert_eq!(plain, lossy.trim_end(), "clean text was altered");
    }
}

/// Checks the invisible chars and mark stacks of `s` against the rules, written from UTS #51's
/// emoji grammar rather than from the sanitiser's code.
fn invisible_chars_allowed(s: &str) -> Result<(), String> {
    let chars: Vec<char> = s.chars().collect();
    let mut marks = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let prev = |back: usize| i.checked_sub(back).map(|j| chars[j]);
        marks = if ucd::is_mark(c) { marks + 1 } else { 0 };
        if marks > MAX_MARKS {
            return Err(format!("{marks} marks in a row"));
        }
        if ucd::is_tag(c) {
            let end = chars[i..].iter().position(|&t| t == ucd::CANCEL_TAG);
            let spec = &chars[i..i + end.ok_or("a tag run without its cancel tag")?];
            let flag = prev(1) == Some(ucd::BLACK_FLAG)
                && (3..=7).contains(&spec.len())
                && spec
                    .iter()
                    .all(|t| matches!(t, '\u{e0030}'..='\u{e0039}' | '\u{e0061}'..='\u{e007a}'));
            if !flag {
                return Err(format!("tag chars {spec:?} outside a flag"));
            }
            i += spec.len() + 1;
            marks = 0;
            continue;
        }
        let allowed = match c {
            '\u{200d}' => {
                let from = prev(1).is_some_and(|p| {
                    ucd::is_extended_pictographic(p)
                        || ucd::is_emoji_modifier(p)
                        || (p == '\u{fe0f}' && prev(2).is_some_and(ucd::is_extended_pictographic))
                });
                from && chars
                    .get(i + 1)
                    .is_some_and(|&n| ucd::is_extended_pictographic(n))
            }
            '\u{fe0e}' | '\u{fe0f}' => prev(1).is_some_and(ucd::is_emoji),
            c => !ucd::is_default_ignorable(c),
        };
        if !allowed {
            return Err(format!("{c:?} out of place"));
        }
        i += 1;
    }
    Ok(())
}
