//! Nicknames: which are allowed, the form that is stored and shown, and when two are the same.
//!
//! [`validate_nick`] turns what a client typed into a [`Nick`] or says why not, in three layers:
//! - **PRECIS** (RFC 8264/8265, the UsernameCasePreserved profile, via `precis-profiles`):
//!   fullwidth and halfwidth forms are mapped to their ordinary forms, the string is put in NFC,
//!   and only the IdentifierClass is allowed, so compatibility forms (𝐚, Ⓢ, ﬁ), default-ignorable
//!   and other invisible code points, symbols and spaces are refused. The result is the display
//!   form: case is kept (`Alice` stays `Alice`), `ａｌｉｃｅ` is stored and shown as `alice`.
//!   PRECIS's tables are at Unicode 6.3 (the IANA registry's version), so letters added since
//!   are refused as too new.
//! - **Our own narrower rules** on that form: 1 to [`NICK_MAX_CHARS`] chars, each a letter, digit,
//!   `_` or `-`, or a combining mark on a letter (at most [`NICK_MAX_MARKS`] in a row), at least
//!   one letter, every char allowed by the UTS #39 General Security Profile, and the whole at the
//!   UTS #39 "highly restrictive" level: one script, or Latin with Han and Japanese kana, with Han
//!   and Bopomofo, or with Han and Hangul (so no `аlice` with a Cyrillic `а`).
//! - **Uniqueness and the reserved list** compare [`Nick::key`]: full Unicode case folding, then
//!   the UTS #39 confusable skeleton, then case folding again. Two nicknames with the same key look
//!   alike (`ς`/`σ`, `rn`/`m`, `0`/`O`, `l`/`I`/`1`), so only one of them can be online at a time,
//!   and no nickname may look like a reserved one.
//!
//! The first two layers and the keys are shared with room names (`ident.rs`); what is only about
//! nicknames (a letter, the reserved list, the wording of refusals) is here.
//!
//! Invariant: a valid nickname's display form is valid again with the same display form and key,
//! and has no default-ignorable, control or whitespace char.

use std::fmt;
use std::sync::OnceLock;

use super::ident::{self, Refusal, Shown};

pub use super::ident::fold_case;

/// Longest nickname, in chars of its display form (not bytes).
pub const NICK_MAX_CHARS: usize = 24;

/// Most combining marks in a row on one letter: two, as for room names (the reasoning is beside
/// the shared rules, in `ident.rs`).
pub const NICK_MAX_MARKS: usize = ident::MAX_MARKS;

/// Nicknames nobody may take, nor any nickname that looks like one (same [`Nick::key`]), so users
/// cannot pose as staff or the server itself. Each is its own key.
pub const RESERVED_NICKS: &[&str] = &[
    "server",
    "admin",
    "administrator",
    "root",
    "system",
    "operator",
    "sysop",
    "groupchatd",
    "chatctl",
    "nobody",
    "everyone",
    "all",
];

/// Why a nickname was refused. `Display` gives a message meant for the user; it shows a refused
/// char as it is only when it is visible, and as `\u{…}` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NickError {
    /// No characters at all.
    Empty,
    /// More than [`NICK_MAX_CHARS`] chars.
    TooLong,
    /// A char other than a letter, digit, `_`, `-` or a combining mark on a letter (after width
    /// mapping and NFC), or one PRECIS refuses (invisible, unassigned, symbol, space, …).
    InvalidChar(char),
    /// A styled or compatibility form of a letter or digit (𝐚, Ⓢ, ﬁ, ²), refused rather than
    /// silently mapped so the name shown is the one typed.
    Compatibility(char),
    /// A letter that the UTS #39 General Security Profile keeps out of identifiers (obsolete,
    /// technical or limited-use scripts and characters).
    Restricted(char),
    /// A letter or digit newer than the Unicode version of PRECIS's tables (6.3, the version the
    /// IANA PRECIS registry is at), which PRECIS treats as unassigned.
    TooNew(char),
    /// More than [`NICK_MAX_MARKS`] combining marks in a row.
    TooManyMarks,
    /// Only digits, `_` and `-`: it would look like a client id.
    NoLetter,
    /// Letters of scripts that do not belong together (Latin with Cyrillic or Greek, …).
    MixedScripts,
    /// Right-to-left letters mixed with others in a way that would display out of order (the
    /// PRECIS directionality rule, RFC 5893).
    Direction,
    /// One of [`RESERVED_NICKS`], or a name that looks like one.
    Reserved,
}

impl fmt::Display for NickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NickError::Empty => f.write_str("a nickname cannot be empty"),
            NickError::TooLong => write!(f, "nicknames are at most {NICK_MAX_CHARS} characters"),
            NickError::InvalidChar(c) => write!(
                f,
                "'{}' is not allowed in a nickname (use letters, digits, _ and -)",
                Shown(*c)
            ),
            NickError::Compatibility(c) => write!(
                f,
                "'{}' is a styled or compatibility form; type the plain letter or digit",
                Shown(*c)
            ),
            NickError::Restricted(c) => write!(
                f,
                "'{}' is not used in nicknames (a historic, technical or rarely used character)",
                Shown(*c)
            ),
            NickError::TooNew(c) => write!(
                f,
                "'{}' is too recent a character for nicknames here (Unicode 6.3 and older only)",
                Shown(*c)
            ),
            NickError::TooManyMarks => write!(
                f,
                "at most {NICK_MAX_MARKS} accents or other combining marks per letter"
            ),
            NickError::NoLetter => f.write_str("a nickname needs at least one letter"),
            NickError::MixedScripts => f.write_str(
                "a nickname cannot mix scripts such as Latin with Cyrillic or Greek (letters that look alike)",
            ),
            NickError::Direction => f.write_str(
                "a right-to-left nickname must start and end with a right-to-left letter or digit",
            ),
            NickError::Reserved => f.write_str("that nickname is reserved"),
        }
    }
}

impl std::error::Error for NickError {}

impl From<Refusal> for NickError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Empty => NickError::Empty,
            Refusal::TooLong => NickError::TooLong,
            Refusal::InvalidChar(c) => NickError::InvalidChar(c),
            Refusal::Compatibility(c) => NickError::Compatibility(c),
            Refusal::Restricted(c) => NickError::Restricted(c),
            Refusal::TooNew(c) => NickError::TooNew(c),
            Refusal::TooManyMarks => NickError::TooManyMarks,
            Refusal::MixedScripts => NickError::MixedScripts,
            Refusal::Direction => NickError::Direction,
        }
    }
}

/// A valid nickname: its display form and its comparison keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nick {
    display: String,
    key: String,
    /// The skeleton of the name as typed, where it differs from `key` (see [`Nick::keys`]).
    shape: Option<String>,
}

impl Nick {
    /// The form stored and shown to everyone: width-mapped, NFC, case as typed.
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The key under which nicknames are unique (see [`nick_key`]).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Every key the name holds: [`Nick::key`], and the skeleton of the name as typed when that
    /// differs. Case folding first makes `AI` and `ai` one name but loses what capitals look like
    /// (`I` like `l`, Cyrillic `ВОВ` like `BOB`); the second key keeps that. Two nicknames that
    /// share any key cannot be online together.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.key.as_str()).chain(self.shape.as_deref())
    }

    /// The display form.
    pub fn into_display(self) -> String {
        self.display
    }
}

/// Checks a nickname as typed against the rules (see the module docs) and returns its display
/// form and key. Uniqueness is the caller's job: compare keys.
pub fn validate_nick(raw: &str) -> Result<Nick, NickError> {
    let display = ident::prepare(raw, NICK_MAX_CHARS)?;
    if !display.chars().any(char::is_alphabetic) {
        return Err(NickError::NoLetter);
    }
    ident::check_scripts(&display)?;
    let key = nick_key(&display);
    let shape = Some(ident::shape_key(&display)).filter(|shape| *shape != key);
    let nick = Nick {
        display,
        key,
        shape,
    };
    if nick.keys().any(|k| reserved_keys().iter().any(|r| r == k)) {
        return Err(NickError::Reserved);
    }
    Ok(nick)
}

/// The keys of [`RESERVED_NICKS`].
fn reserved_keys() -> &'static [String] {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    KEYS.get_or_init(|| RESERVED_NICKS.iter().map(|n| nick_key(n)).collect())
}

/// The key under which a valid nickname's display form is unique: full case folding, the UTS #39
/// confusable skeleton, and case folding again (the skeleton maps some lowercase letters to
/// uppercase prototypes, such as `0` to `O`). Computed once per nickname, since the skeleton
/// costs a few normalisations; the hub stores it beside the display form.
pub fn nick_key(nick: &str) -> String {
    ident::key(nick)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(nick: &str) -> Result<String, NickError> {
        validate_nick(nick).map(Nick::into_display)
    }

    #[test]
    fn nick_table() {
        let e_acute_24 = "\u{e9}".repeat(24);
        let e_acute_25 = "\u{e9}".repeat(25);
        let e_nfd_24 = "e\u{301}".repeat(24);
        let a_25 = "a".repeat(25);
        let ok = |s: &str| Ok(s.to_owned());
        let table: &[(&str, Result<String, NickError>)] = &[
            ("\u{5c0f}\u{660e}", ok("\u{5c0f}\u{660e}")),
            ("bob_2", ok("bob_2")),
            ("Zo\u{eb}", ok("Zo\u{eb}")),
            ("a-b", ok("a-b")),
            ("x", ok("x")),
            ("2fast", ok("2fast")),
            ("Alice", ok("Alice")),
            (&e_acute_24, ok(&e_acute_24)),
            // Decomposed input is stored composed.
            (&e_nfd_24, ok(&e_acute_24)),
            ("\u{1112}\u{1161}\u{11ab}", ok("\u{d55c}")),
            ("rooted", ok("rooted")),
            // Width mapping: fullwidth letters are their ASCII forms.
            ("\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}", ok("alice")),
            ("\u{ff22}ob", ok("Bob")),
            // Halfwidth katakana become the ordinary ones.
            ("\u{ff71}\u{ff72}", ok("\u{30a2}\u{30a4}")),
            // Scripts that may go together, and single scripts.
            ("tanaka\u{7530}\u{4e2d}", ok("tanaka\u{7530}\u{4e2d}")),
            (
                "\u{3072}\u{3089}\u{30ab}\u{6f22}",
                ok("\u{3072}\u{3089}\u{30ab}\u{6f22}"),
            ),
            (
                "\u{43c}\u{430}\u{448}\u{430}",
                ok("\u{43c}\u{430}\u{448}\u{430}"),
            ),
            ("\u{3b6}\u{3c9}\u{3ae}", ok("\u{3b6}\u{3c9}\u{3ae}")),
            ("Vi\u{1ec7}t", ok("Vi\u{1ec7}t")),
            (
                "\u{5e9}\u{5dc}\u{5d5}\u{5dd}",
                ok("\u{5e9}\u{5dc}\u{5d5}\u{5dd}"),
            ),
            (
                "\u{5e9}\u{5dc}\u{5d5}\u{5dd}2",
                ok("\u{5e9}\u{5dc}\u{5d5}\u{5dd}2"),
            ),
            (
                "\u{627}\u{62d}\u{645}\u{62f}",
                ok("\u{627}\u{62d}\u{645}\u{62f}"),
            ),
            // Thaana writes its vowels as marks between letters (right-to-left, with marks).
            (
                "\u{78b}\u{7a8}\u{788}\u{7ac}\u{780}\u{7a8}",
                ok("\u{78b}\u{7a8}\u{788}\u{7ac}\u{780}\u{7a8}"),
            ),
            // Hebrew points are not in the UTS #39 identifier profile.
            (
                "\u{5e9}\u{5b8}\u{5dc}",
                Err(NickError::Restricted('\u{5b8}')),
            ),
            (
                "\u{915}\u{93f}\u{930}\u{923}",
                ok("\u{915}\u{93f}\u{930}\u{923}"),
            ),
            ("", Err(NickError::Empty)),
            (&a_25, Err(NickError::TooLong)),
            (&e_acute_25, Err(NickError::TooLong)),
            ("bob smith", Err(NickError::InvalidChar(' '))),
            ("bob!", Err(NickError::InvalidChar('!'))),
            ("bob.x", Err(NickError::InvalidChar('.'))),
            ("\u{1f44b}", Err(NickError::InvalidChar('\u{1f44b}'))),
            ("bo\u{200b}b", Err(NickError::InvalidChar('\u{200b}'))),
            // Invisible: a Hangul filler after a name, or alone.
            ("alice\u{1160}", Err(NickError::InvalidChar('\u{1160}'))),
            ("\u{1160}", Err(NickError::InvalidChar('\u{1160}'))),
            ("\u{3164}", Err(NickError::InvalidChar('\u{3164}'))),
            // The halfwidth filler is width-mapped to the other one first.
            ("\u{ffa0}", Err(NickError::InvalidChar('\u{3164}'))),
            ("a\u{200d}b", Err(NickError::InvalidChar('\u{200d}'))),
            ("a\u{feff}", Err(NickError::InvalidChar('\u{feff}'))),
            ("a\u{ad}b", Err(NickError::InvalidChar('\u{ad}'))),
            ("bob\u{e0041}", Err(NickError::InvalidChar('\u{e0041}'))),
            ("\u{3000}bob", Err(NickError::InvalidChar(' '))),
            // Letters added after Unicode 6.3 (a Han ideograph of Unicode 8.0).
            ("\u{9fcd}", Err(NickError::TooNew('\u{9fcd}'))),
            // Unassigned code points are not letters.
            ("a\u{378}", Err(NickError::InvalidChar('\u{378}'))),
            // Compatibility forms are refused, not mapped.
            (
                "\u{1d41a}\u{1d425}\u{1d422}\u{1d41c}\u{1d41e}",
                Err(NickError::Compatibility('\u{1d41a}')),
            ),
            ("\u{24c8}erver", Err(NickError::Compatibility('\u{24c8}'))),
            ("\u{fb01}sh", Err(NickError::Compatibility('\u{fb01}'))),
            ("x\u{b2}", Err(NickError::Compatibility('\u{b2}'))),
            // Kelvin sign: a canonical singleton, so NFC makes it K.
            ("\u{212a}elvin", ok("Kelvin")),
            // Combining marks: on a letter, at most two in a row.
            ("a\u{302}\u{301}", ok("\u{1ea5}")),
            ("x\u{301}\u{302}", ok("x\u{301}\u{302}")),
            ("x\u{301}\u{302}\u{303}", Err(NickError::TooManyMarks)),
            ("x\u{316}", Err(NickError::Restricted('\u{316}'))),
            (
                &format!("z{}", "\u{336}".repeat(23)),
                Err(NickError::TooManyMarks),
            ),
            ("\u{301}bob", Err(NickError::InvalidChar('\u{301}'))),
            ("_\u{301}bob", Err(NickError::InvalidChar('\u{301}'))),
            ("123", Err(NickError::NoLetter)),
            ("\u{ff11}\u{ff12}", Err(NickError::NoLetter)),
            ("_", Err(NickError::NoLetter)),
            ("-1", Err(NickError::NoLetter)),
            // Mixed scripts: Cyrillic а, Greek ο among Latin letters.
            ("\u{430}lice", Err(NickError::MixedScripts)),
            ("b\u{3bf}b", Err(NickError::MixedScripts)),
            ("s\u{435}rver", Err(NickError::MixedScripts)),
            ("\u{5c0f}\u{43c}", Err(NickError::MixedScripts)),
            // Right-to-left names must read in order.
            ("\u{5e9}\u{5dc}\u{5d5}\u{5dd}_", Err(NickError::Direction)),
            ("a\u{5e9}", Err(NickError::Direction)),
            ("Server", Err(NickError::Reserved)),
            ("ROOT", Err(NickError::Reserved)),
            ("All", Err(NickError::Reserved)),
            ("\u{ff52}\u{ff4f}\u{ff4f}\u{ff54}", Err(NickError::Reserved)),
            (
                "\u{ff21}\u{ff24}\u{ff2d}\u{ff29}\u{ff2e}",
                Err(NickError::Reserved),
            ),
            // Look-alikes of reserved names: digits for letters, rn for m, a whole-script
            // Cyrillic spelling.
            ("r00t", Err(NickError::Reserved)),
            ("adrnin", Err(NickError::Reserved)),
            ("\u{430}\u{4cf}\u{4cf}", Err(NickError::Reserved)),
            // Capitals that look like a reserved name's letters.
            ("ADMIN", Err(NickError::Reserved)),
            ("SYSTEM", Err(NickError::Reserved)),
            ("\u{410}\u{4c0}\u{4c0}", Err(NickError::Reserved)),
        ];
        let wrong: Vec<String> = table
            .iter()
            .filter(|(nick, expected)| verdict(nick) != *expected)
            .map(|(nick, expected)| format!("{nick:?}: {:?}, not {expected:?}", verdict(nick)))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn keys_unite_look_alikes() {
        let same: &[(&str, &str)] = &[
            ("Bob", "bob"),
            ("BOB", "bob"),
            ("Zo\u{cb}", "zo\u{eb}"),
            (
                "\u{394}\u{3ad}\u{3bb}\u{3c4}\u{3b1}",
                "\u{3b4}\u{3ad}\u{3bb}\u{3c4}\u{3b1}",
            ),
            // Final sigma beside sigma, and capital sigma.
            (
                "\u{3bb}\u{3bf}\u{3b3}\u{3bf}\u{3c2}",
                "\u{3bb}\u{3bf}\u{3b3}\u{3bf}\u{3c3}",
            ),
            (
                "\u{39b}\u{39f}\u{393}\u{39f}\u{3a3}",
                "\u{3bb}\u{3bf}\u{3b3}\u{3bf}\u{3c3}",
            ),
            ("Stra\u{df}e", "strasse"),
            // Latin look-alikes within ASCII.
            ("rnary", "mary"),
            ("bob1", "bobl"),
            ("O0", "oo"),
            // A whole-script Cyrillic spelling of a Latin name.
            ("\u{441}\u{43e}\u{440}\u{435}", "cope"),
            // Capitals: I like l, Cyrillic capitals like Latin ones.
            ("AI", "Al"),
            ("\u{412}\u{41e}\u{412}", "BOB"),
        ];
        let shares_a_key = |a: &Nick, b: &Nick| a.keys().any(|k| b.keys().any(|l| k == l));
        let wrong: Vec<String> = same
            .iter()
            .map(|(a, b)| (validate_nick(a), validate_nick(b)))
            .filter(|(a, b)| !matches!((a, b), (Ok(a), Ok(b)) if shares_a_key(a, b)))
            .map(|(a, b)| format!("{a:?} vs {b:?}"))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
        let different: &[(&str, &str)] = &[("bob", "rob"), ("alice", "alicia"), ("mary", "nary")];
        for (a, b) in different {
            let (a, b) = (validate_nick(a).unwrap(), validate_nick(b).unwrap());
            assert!(!shares_a_key(&a, &b), "{a:?} vs {b:?}");
        }
        // NFC and NFD spellings are one name.
        for (nfc, nfd) in [
            ("\u{d55c}", "\u{1112}\u{1161}\u{11ab}"),
            ("\u{e9}", "e\u{301}"),
        ] {
            assert_eq!(validate_nick(nfc), validate_nick(nfd));
        }
    }

    #[test]
    fn valid_forms_are_fixed_points() {
        for nick in [
            "Alice",
            "\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}",
            "e\u{301}t\u{e9}",
            "\u{1112}\u{1161}\u{11ab}\u{ad6d}",
            "\u{ff71}\u{ff72}",
            "\u{5e9}\u{5dc}\u{5d5}\u{5dd}",
            "\u{627}\u{62d}\u{645}\u{62f}",
            "AI",
        ] {
            let first = validate_nick(nick).unwrap();
            assert_eq!(validate_nick(first.as_str()), Ok(first.clone()), "{nick:?}");
            assert_eq!(first.key(), nick_key(first.as_str()));
            assert!(first.keys().count() <= 2);
        }
        for reserved in RESERVED_NICKS {
            assert_eq!(
                validate_nick(reserved),
                Err(NickError::Reserved),
                "{reserved}"
            );
        }
    }

    #[test]
    fn nick_error_messages() {
        let table = [
            (NickError::Empty, "a nickname cannot be empty"),
            (NickError::TooLong, "nicknames are at most 24 characters"),
            (
                NickError::InvalidChar('!'),
                "'!' is not allowed in a nickname (use letters, digits, _ and -)",
            ),
            (
                NickError::InvalidChar(' '),
                "' ' is not allowed in a nickname (use letters, digits, _ and -)",
            ),
            (
                NickError::InvalidChar('\u{200b}'),
                "'\\u{200b}' is not allowed in a nickname (use letters, digits, _ and -)",
            ),
            (
                NickError::InvalidChar('\u{3000}'),
                "'\\u{3000}' is not allowed in a nickname (use letters, digits, _ and -)",
            ),
            (
                NickError::InvalidChar('\u{1160}'),
                "'\\u{1160}' is not allowed in a nickname (use letters, digits, _ and -)",
            ),
            (
                NickError::InvalidChar('\u{301}'),
                "'\\u{301}' is not allowed in a nickname (use letters, digits, _ and -)",
            ),
            (
                NickError::InvalidChar('\u{e0041}'),
                "'\\u{e0041}' is not allowed in a nickname (use letters, digits, _ and -)",
            ),
            (
                NickError::InvalidChar('\u{1f44b}'),
                "'\u{1f44b}' is not allowed in a nickname (use letters, digits, _ and -)",
            ),
            (
                NickError::Compatibility('\u{1d41a}'),
                "'\u{1d41a}' is a styled or compatibility form; type the plain letter or digit",
            ),
            (
                NickError::TooManyMarks,
                "at most 2 accents or other combining marks per letter",
            ),
            (
                NickError::TooNew('\u{9fcd}'),
                "'\u{9fcd}' is too recent a character for nicknames here (Unicode 6.3 and older only)",
            ),
            (NickError::NoLetter, "a nickname needs at least one letter"),
            (NickError::Reserved, "that nickname is reserved"),
        ];
        for (err, text) in table {
            assert_eq!(err.to_string(), text);
        }
    }
}
