//! The sanitiser: whatever bytes a client sends, what it appends is safe on any terminal.
//!
//! The whole input is one raw line (terminator already removed). Properties: what is appended
//! holds no char that [`is_unsafe_on_terminal`] or `is_forbidden` names (so no ESC, C0 or C1
//! control, bidi control or lone CR) and no trailing whitespace; it does not depend on what the
//! buffer already held, and that prefix is left as it was; the result says exactly whether the
//! input was invalid UTF-8; the output is a fixed point; it equals sanitising the input's
//! `from_utf8_lossy` decoding; it is a subsequence of the input's chars (TAB read as a space); and
//! text that needs no cleaning passes unchanged apart from trailing whitespace.

use groupchatd::protocol::{is_forbidden, sanitise_into, sanitise_str};

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
    if !lossy.chars().any(is_forbidden) {
        assert_eq!(plain, lossy.trim_end(), "clean text was altered");
    }
}
