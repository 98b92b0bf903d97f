//! Oracles for groupchatd's fuzz targets, shared by the libFuzzer binaries and the replay test.
//!
//! Each `check_*` function takes the bytes of one fuzz input, runs them through one part of
//! groupchatd and panics if a documented property does not hold. The same files therefore serve
//! as libFuzzer corpus entries (`fuzz_targets/`, driven by `run.sh`) and as plain test cases
//! (`tests/regressions.rs`, run by `cargo test` on stable). No check does IO, keeps state between
//! calls or depends on time, so a saved input fails the same way every time.

mod admin;
mod config;
mod framer;
mod nick;
mod sanitise;
mod wrap;

pub use admin::check_admin_request;
pub use config::check_config;
pub use framer::check_framer;
pub use nick::check_nick_and_command;
pub use sanitise::check_sanitise;
pub use wrap::check_wrap;

/// A target's oracle: panics if the input breaks a property.
pub type Check = fn(&[u8]);

/// Every target: its name (also its directory under `seeds/` and `regressions/`) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("framer", check_framer),
    ("sanitise", check_sanitise),
    ("nick_and_command", check_nick_and_command),
    ("admin_request", check_admin_request),
    ("config", check_config),
    ("wrap", check_wrap),
];

/// Chars that must never reach another client's terminal, listed here independently of
/// groupchatd's own `is_forbidden` so that a mistake there cannot hide itself: C0 controls (TAB
/// included: it becomes a space), DEL, C1 controls, bidi marks, embeddings, overrides and isolates,
/// and the Unicode line and paragraph separators.
pub fn is_unsafe_on_terminal(c: char) -> bool {
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
