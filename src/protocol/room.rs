//! Room names: which are allowed, the form that is stored and shown, and when two are the same.
//!
//! A room name is `#` plus 1 to [`ROOM_MAX_CHARS`] letters, digits, `_` or `-`, checked by the
//! same rules as nicknames (`ident.rs`): PRECIS width mapping and NFC (`＃ｒｕｓｔ` is `#rust`, `é`
//! typed decomposed is `é`), no styled, invisible, restricted or too-new characters, no mix of
//! look-alike scripts, right-to-left names in reading order. As in nicknames a letter may carry up
//! to two combining marks (an accent, an Indic vowel sign): scripts such as Devanagari cannot be
//! written without them. Unlike a nickname a room name needs no letter (`#2024` is fine: the `#`
//! already tells it from a client id) and nothing is reserved.
//!
//! Rooms are unique under [`RoomName::key`], the case-folded confusable skeleton, so `#Rust`,
//! `#RUST` and `#ｒｕｓｔ` are one room and `#l0bby` is `#lobby`. Invariant: a valid name's display
//! form is valid again with the same display form and keys.

use std::fmt;

use super::ident::{self, Refusal, Shown};

/// Longest room name, in chars of its display form after the `#` (marks count as chars).
pub const ROOM_MAX_CHARS: usize = 32;

/// The one prefix every room name is shown with.
const PREFIX: char = '#';

/// FULLWIDTH NUMBER SIGN, what a CJK input method types for `#`: taken as the prefix too, as the
/// rest of the name is width-mapped.
const FULLWIDTH_PREFIX: char = '\u{ff03}';

/// The rule as a user reads it, in every refusal that is about the shape of the name.
const RULE: &str = "room names are # plus 1 to 32 letters, digits, - or _";

/// Why a room name was refused. `Display` gives a message meant for the user; it shows a refused
/// char as it is only when it is visible, and as `\u{…}` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomNameError {
    /// Nothing after the `#` (or nothing at all).
    Empty,
    /// More than [`ROOM_MAX_CHARS`] chars after the `#`.
    TooLong,
    /// A char other than a letter, digit, `_`, `-` or a combining mark on a letter (after width
    /// mapping and NFC), or one PRECIS refuses (invisible, unassigned, symbol, space, a second
    /// `#`, …).
    InvalidChar(char),
    /// A styled or compatibility form of a letter or digit (𝐚, Ⓢ, ﬁ, ²), refused rather than
    /// silently mapped so the name shown is the one typed.
    Compatibility(char),
    /// A letter that the UTS #39 General Security Profile keeps out of identifiers.
    Restricted(char),
    /// A letter or digit newer than Unicode 6.3, the version of PRECIS's tables.
    TooNew(char),
    /// More than two combining marks in a row.
    TooManyMarks,
    /// Letters of scripts that do not belong together (Latin with Cyrillic or Greek, …).
    MixedScripts,
    /// Right-to-left letters mixed with others in a way that would display out of order.
    Direction,
}

impl From<Refusal> for RoomNameError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Empty => RoomNameError::Empty,
            Refusal::TooLong => RoomNameError::TooLong,
            Refusal::InvalidChar(c) => RoomNameError::InvalidChar(c),
            Refusal::Compatibility(c) => RoomNameError::Compatibility(c),
            Refusal::Restricted(c) => RoomNameError::Restricted(c),
            Refusal::TooNew(c) => RoomNameError::TooNew(c),
            Refusal::TooManyMarks => RoomNameError::TooManyMarks,
            Refusal::MixedScripts => RoomNameError::MixedScripts,
            Refusal::Direction => RoomNameError::Direction,
        }
    }
}

impl fmt::Display for RoomNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoomNameError::Empty => f.write_str(RULE),
            RoomNameError::TooLong => write!(
                f,
                "room names are at most {ROOM_MAX_CHARS} characters after the #"
            ),
            RoomNameError::InvalidChar(c) => write!(
                f,
                "'{}' is not allowed in a room name ({RULE})",
                Shown(*c)
            ),
            RoomNameError::Compatibility(c) => write!(
                f,
                "'{}' is a styled or compatibility form; type the plain letter or digit",
                Shown(*c)
            ),
            RoomNameError::Restricted(c) => write!(
                f,
                "'{}' is not used in room names (a historic, technical or rarely used character)",
                Shown(*c)
            ),
            RoomNameError::TooNew(c) => write!(
                f,
                "'{}' is too recent a character for room names here (Unicode 6.3 and older only)",
                Shown(*c)
            ),
            RoomNameError::TooManyMarks => write!(
                f,
                "at most {} accents or other combining marks per letter",
                ident::MAX_MARKS
            ),
            RoomNameError::MixedScripts => f.write_str(
                "a room name cannot mix scripts such as Latin with Cyrillic or Greek (letters that look alike)",
            ),
            RoomNameError::Direction => f.write_str(
                "a right-to-left room name must start and end with a right-to-left letter or digit",
            ),
        }
    }
}

impl std::error::Error for RoomNameError {}

/// A valid room name: its display form and its comparison keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomName {
    display: String,
    key: String,
    /// The skeleton of the name as typed, where it differs from `key` (see [`RoomName::keys`]).
    shape: Option<String>,
}

impl RoomName {
    /// The form stored and shown to everyone, with its `#`: width-mapped, NFC, case as typed
    /// (`#Rust`).
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The key under which room names are unique: full case folding, the UTS #39 confusable
    /// skeleton, and case folding again, so `#Rust`, `#RUST`, `#ｒｕｓｔ` and a whole-script
    /// Cyrillic look-alike share it.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Every key the name holds: [`RoomName::key`], and the skeleton of the name as typed when
    /// that differs. Case folding first loses what capitals look like (`#AI` like `#Al`, Cyrillic
    /// `#ВОВ` like `#BOB`); the second key keeps that, as for nicknames. Checking all of them
    /// before creating a room keeps out those look-alikes too.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.key.as_str()).chain(self.shape.as_deref())
    }
}

/// Checks a room name as typed (`rust`, `#rust`, ` #Rust `: surrounding whitespace and one leading
/// `#` are optional) against the rules in the module docs, and returns its display form and keys.
/// Uniqueness is the caller's job: compare keys.
pub fn validate_room(raw: &str) -> Result<RoomName, RoomNameError> {
    let raw = raw.trim();
    let body = raw
        .strip_prefix(PREFIX)
        .or_else(|| raw.strip_prefix(FULLWIDTH_PREFIX))
        .unwrap_or(raw);
    let body = ident::prepare(body, ROOM_MAX_CHARS)?;
    ident::check_scripts(&body)?;
    // Nothing composes with `#` under NFC and the body cannot start with a mark, so the whole is
    // still NFC and validates again to itself.
    let display = format!("{PREFIX}{body}");
    let key = ident::key(&display);
    let shape = Some(ident::shape_key(&display)).filter(|shape| *shape != key);
    Ok(RoomName {
        display,
        key,
        shape,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(raw: &str) -> Result<String, RoomNameError> {
        validate_room(raw).map(|r| r.as_str().to_owned())
    }

    #[test]
    fn room_table() {
        use RoomNameError::*;
        let a32 = format!("#{}", "a".repeat(32));
        let a33 = format!("#{}", "a".repeat(33));
        let e_acute_32 = format!("#{}", "\u{e9}".repeat(32));
        let e_nfd_32 = format!("#{}", "e\u{301}".repeat(32));
        let ok = |s: &str| Ok(s.to_owned());
        #[rustfmt::skip]
        let table: &[(&str, Result<String, RoomNameError>, &str)] = &[
            ("rust", ok("#rust"), "the # is optional"),
            ("#rust", ok("#rust"), "plain"),
            ("  #Rust \t", ok("#Rust"), "trimmed, case kept"),
            ("#rust-lang_fr", ok("#rust-lang_fr"), "- and _"),
            ("#2024", ok("#2024"), "no letter needed"),
            ("#_-_", ok("#_-_"), "punctuation of the rule only"),
            ("#a", ok("#a"), "one char"),
            (&a32, ok(&a32), "32 chars"),
            (&e_acute_32, ok(&e_acute_32), "32 chars, not bytes"),
            (&e_nfd_32, ok(&e_acute_32), "decomposed input is stored composed"),
            ("\u{ff52}\u{ff55}\u{ff53}\u{ff54}", ok("#rust"), "fullwidth letters width-mapped"),
            ("\u{ff03}rust", ok("#rust"), "fullwidth # is the prefix"),
            ("#\u{41c}\u{43e}\u{441}\u{43a}\u{432}\u{430}", ok("#\u{41c}\u{43e}\u{441}\u{43a}\u{432}\u{430}"), "Cyrillic alone"),
            ("#\u{3b1}\u{3b8}\u{3ae}\u{3bd}\u{3b1}", ok("#\u{3b1}\u{3b8}\u{3ae}\u{3bd}\u{3b1}"), "Greek alone"),
            ("#tokyo\u{6771}\u{4eac}", ok("#tokyo\u{6771}\u{4eac}"), "Latin with Han"),
            ("#\u{915}\u{93f}\u{930}\u{923}", ok("#\u{915}\u{93f}\u{930}\u{923}"), "Devanagari vowel sign (a mark)"),
            ("#\u{5e9}\u{5dc}\u{5d5}\u{5dd}", ok("#\u{5e9}\u{5dc}\u{5d5}\u{5dd}"), "right-to-left"),
            ("#x\u{301}\u{302}", ok("#x\u{301}\u{302}"), "two marks on a letter"),
            ("", Err(Empty), "nothing"),
            ("   ", Err(Empty), "only whitespace"),
            ("#", Err(Empty), "only the #"),
            (" # ", Err(Empty), "only the #, spaced"),
            (&a33, Err(TooLong), "33 chars"),
            ("##rust", Err(InvalidChar('#')), "one # only"),
            ("rust#", Err(InvalidChar('#')), "# inside"),
            ("# rust", Err(InvalidChar(' ')), "space after the #"),
            ("#rust lang", Err(InvalidChar(' ')), "space"),
            ("#rust!", Err(InvalidChar('!')), "symbol"),
            ("#rust.fr", Err(InvalidChar('.')), "dot"),
            ("#ru\u{200b}st", Err(InvalidChar('\u{200b}')), "zero-width space"),
            ("#\u{1b}[31mred", Err(InvalidChar('\u{1b}')), "escape code"),
            ("#\u{3164}", Err(InvalidChar('\u{3164}')), "Hangul filler"),
            ("#\u{1f980}", Err(InvalidChar('\u{1f980}')), "emoji"),
            ("#\u{301}rust", Err(InvalidChar('\u{301}')), "mark on nothing"),
            ("#_\u{301}", Err(InvalidChar('\u{301}')), "mark on punctuation"),
            ("#x\u{301}\u{302}\u{303}", Err(TooManyMarks), "three marks"),
            ("#\u{1d42b}\u{1d42e}\u{1d42c}\u{1d42d}", Err(Compatibility('\u{1d42b}')), "bold letters"),
            ("#x\u{b2}", Err(Compatibility('\u{b2}')), "superscript"),
            ("#x\u{316}", Err(Restricted('\u{316}')), "restricted mark"),
            ("#\u{9fcd}", Err(TooNew('\u{9fcd}')), "Unicode 8.0 ideograph"),
            ("#p\u{430}ypal", Err(MixedScripts), "Cyrillic a among Latin"),
            ("#ru\u{455}t", Err(MixedScripts), "Cyrillic s among Latin"),
            ("#b\u{3bf}b", Err(MixedScripts), "Greek o among Latin"),
            ("#\u{5e9}\u{5dc}\u{5d5}\u{5dd}_", Err(Direction), "right-to-left out of order"),
        ];
        let wrong: Vec<String> = table
            .iter()
            .filter(|(raw, expected, _)| verdict(raw) != *expected)
            .map(|(raw, expected, why)| {
                format!("{raw:?} ({why}): {:?}, not {expected:?}", verdict(raw))
            })
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn keys_unite_look_alikes() {
        // (a, b, why): both valid with the same key(), or the first refused.
        #[rustfmt::skip]
        let same: &[(&str, &str, &str)] = &[
            ("#Rust", "rust", "case"),
            ("#RUST", "#rust", "case"),
            ("#\u{ff32}ust", "#rust", "fullwidth"),
            ("#caf\u{e9}", "#cafe\u{301}", "NFC and NFD"),
            ("#\u{d55c}", "#\u{1112}\u{1161}\u{11ab}", "Hangul syllable and jamo"),
            ("#\u{441}\u{43e}\u{440}\u{435}", "#cope", "whole-script Cyrillic"),
            ("#\u{3bf}\u{3bf}", "#oo", "whole-script Greek"),
            ("#\u{3bb}\u{3cc}\u{3b3}\u{3bf}\u{3c2}", "#\u{39b}\u{38c}\u{393}\u{39f}\u{3a3}", "Greek case, final sigma"),
            ("#Stra\u{df}e", "#strasse", "full case folding"),
            ("#rnary", "#mary", "rn like m"),
            ("#l0bby", "#lobby", "0 like o"),
            ("#rust1", "#rustl", "1 like l"),
        ];
        let wrong: Vec<String> = same
            .iter()
            .filter(|(a, b, _)| match (validate_room(a), validate_room(b)) {
                (Ok(a), Ok(b)) => a.key() != b.key(),
                _ => true,
            })
            .map(|(a, b, why)| format!("{a:?} vs {b:?} ({why})"))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");

        // Capitals that look like other letters share the second key only.
        let shares_a_key = |a: &RoomName, b: &RoomName| a.keys().any(|k| b.keys().any(|l| k == l));
        for (a, b) in [("#AI", "#Al"), ("#\u{412}\u{41e}\u{412}", "#BOB")] {
            let (a, b) = (validate_room(a).unwrap(), validate_room(b).unwrap());
            assert!(shares_a_key(&a, &b), "{a:?} vs {b:?}");
        }

        // Look-alikes of another script inside a Latin name are refused, never a second room.
        for mixed in ["#ru\u{455}t", "#p\u{430}ypal", "#\u{3bf}ops"] {
            assert_eq!(validate_room(mixed), Err(RoomNameError::MixedScripts));
        }

        for (a, b) in [
            ("#rust", "#rust2"),
            ("#rust", "#ruby"),
            ("#go", "#og"),
            ("#lobby", "#lobby-"),
            ("#a_b", "#a-b"),
            ("#mary", "#nary"),
        ] {
            let (a, b) = (validate_room(a).unwrap(), validate_room(b).unwrap());
            assert!(!shares_a_key(&a, &b), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn valid_forms_are_fixed_points() {
        for raw in [
            "rust",
            " #Rust ",
            "\u{ff03}\u{ff52}\u{ff55}\u{ff53}\u{ff54}",
            "#e\u{301}t\u{e9}",
            "#\u{1112}\u{1161}\u{11ab}\u{ad6d}",
            "#\u{5e9}\u{5dc}\u{5d5}\u{5dd}",
            "#AI",
            "#2024",
        ] {
            let first = validate_room(raw).unwrap();
            assert!(first.as_str().starts_with('#'), "{first:?}");
            assert_eq!(validate_room(first.as_str()), Ok(first.clone()), "{raw:?}");
            assert_eq!(
                validate_room(&first.as_str()[1..]),
                Ok(first.clone()),
                "{raw:?} without its #"
            );
            assert!(first.keys().count() <= 2);
            assert_eq!(first.keys().next(), Some(first.key()));
        }
    }

    #[test]
    fn room_error_messages() {
        let table = [
            (
                RoomNameError::Empty,
                "room names are # plus 1 to 32 letters, digits, - or _",
            ),
            (
                RoomNameError::TooLong,
                "room names are at most 32 characters after the #",
            ),
            (
                RoomNameError::InvalidChar('!'),
                "'!' is not allowed in a room name (room names are # plus 1 to 32 letters, digits, - or _)",
            ),
            (
                RoomNameError::InvalidChar('\u{1b}'),
                "'\\u{1b}' is not allowed in a room name (room names are # plus 1 to 32 letters, digits, - or _)",
            ),
            (
                RoomNameError::InvalidChar('\u{200b}'),
                "'\\u{200b}' is not allowed in a room name (room names are # plus 1 to 32 letters, digits, - or _)",
            ),
            (
                RoomNameError::Compatibility('\u{1d42b}'),
                "'\u{1d42b}' is a styled or compatibility form; type the plain letter or digit",
            ),
            (
                RoomNameError::TooManyMarks,
                "at most 2 accents or other combining marks per letter",
            ),
            (
                RoomNameError::MixedScripts,
                "a room name cannot mix scripts such as Latin with Cyrillic or Greek (letters that look alike)",
            ),
        ];
        for (err, text) in table {
            assert_eq!(err.to_string(), text);
        }
    }
}
