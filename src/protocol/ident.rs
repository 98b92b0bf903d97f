//! The rules nicknames and room names share: what a name may be made of, the form it is stored
//! and shown in, and the keys under which two names are the same.
//!
//! [`prepare`] is the PRECIS step (RFC 8264/8265 UsernameCasePreserved: width mapping, NFC, the
//! IdentifierClass) plus our narrower per-char rules (letters, digits, `_`, `-`, at most
//! [`MAX_MARKS`] combining marks on a letter, nothing styled, restricted or invisible) and the
//! right-to-left order rule; [`check_scripts`] is the UTS #39 "highly restrictive" level; [`key`]
//! and [`shape_key`] are the case-folded confusable skeletons. Each caller adds its own rules
//! (nicknames: a letter, the reserved list; rooms: the `#`) and words its own messages from a
//! [`Refusal`]. Invariant: a prepared name prepares again to itself.

use std::fmt;

use caseless::Caseless;
use precis_core::profile::PrecisFastInvocation;
use precis_core::{DerivedPropertyValue, Error as PrecisError, UnexpectedError};
use precis_profiles::UsernameCasePreserved;
use unicode_normalization::UnicodeNormalization;
use unicode_security::{GeneralSecurityProfile, RestrictionLevel, RestrictionLevelDetection};

use super::sanitise::is_forbidden;
use super::ucd;

/// Most combining marks in a row on one letter. Two covers the living scripts' need in NFC
/// (Vietnamese `ệ` composes to one char; Hebrew and Indic letters take one or two marks), and
/// keeps a name from growing a tower over the lines above and below it.
pub(super) const MAX_MARKS: usize = 2;

/// How many raw chars one display char may come from (a base and its marks decomposed, a Hangul
/// syllable typed as conjoining jamo): longer input is refused before any Unicode processing, so
/// a hostile megabyte-long name costs no more than a short one.
const RAW_CHARS_PER_CHAR: usize = 4;

/// Why a name breaks the shared rules; each caller maps it to its own error type, whose messages
/// say "nickname" or "room name".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// No characters at all.
    Empty,
    /// More chars than the caller's limit.
    TooLong,
    /// Not a letter, digit, `_`, `-` or a mark on a letter, or refused by PRECIS.
    InvalidChar(char),
    /// A styled or compatibility form (𝐚, Ⓢ, ﬁ, ²).
    Compatibility(char),
    /// Kept out of identifiers by the UTS #39 General Security Profile.
    Restricted(char),
    /// Newer than PRECIS's tables (Unicode 6.3).
    TooNew(char),
    /// More than [`MAX_MARKS`] combining marks in a row.
    TooManyMarks,
    /// Scripts that do not belong together.
    MixedScripts,
    /// Right-to-left text that would display out of order (RFC 5893).
    Direction,
}

/// Checks `raw` against the shared rules (all but the script mix, see [`check_scripts`]) and
/// returns its display form: width-mapped, NFC, case as typed, at most `max_chars` chars.
pub(super) fn prepare(raw: &str, max_chars: usize) -> Result<String, Refusal> {
    if raw.is_empty() {
        return Err(Refusal::Empty);
    }
    // nth() stops early: the work below is bounded whatever the input's length.
    if raw.chars().nth(max_chars * RAW_CHARS_PER_CHAR).is_some() {
        return Err(Refusal::TooLong);
    }
    // NFC first, so a name typed decomposed (e + U+0301, Hangul as conjoining jamo) is the same
    // name as the composed one, not refused for its parts.
    let composed: String = raw.nfc().collect();
    // PRECIS preparation (width mapping, then the IdentifierClass) and its normalization rule.
    let display: String = match UsernameCasePreserved::prepare(composed.as_str()) {
        Ok(prepared) => prepared.nfc().collect(),
        Err(e) => return Err(precis_refusal(e, &composed)),
    };
    if display.chars().nth(max_chars).is_some() {
        return Err(Refusal::TooLong);
    }
    check_chars(&display)?;
    // PRECIS's directionality rule (RFC 5893), checked on the name without its combining marks:
    // the RFC allows them anywhere, but precis-profiles 0.2.0 refuses a mark followed by a letter
    // in a right-to-left name (pointed Hebrew, vocalised Arabic). check_chars has made sure no
    // mark comes first, so dropping them cannot change the verdict otherwise.
    let bare: String = display.chars().filter(|&c| !ucd::is_mark(c)).collect();
    if let Err(e) = UsernameCasePreserved::enforce(bare.as_str()) {
        return Err(precis_refusal(e, &bare));
    }
    Ok(display)
}

/// The UTS #39 "highly restrictive" level: one script, or Latin with Han and Japanese kana, with
/// Han and Bopomofo, or with Han and Hangul (so no `аlice` with a Cyrillic `а`).
pub(super) fn check_scripts(display: &str) -> Result<(), Refusal> {
    if display.check_restriction_level(RestrictionLevel::HighlyRestrictive) {
        Ok(())
    } else {
        Err(Refusal::MixedScripts)
    }
}

/// Our rules for each char of the display form, in the order they are reported: first what may
/// appear at all and how marks stack, then whether each char is a plain, commonly used one.
fn check_chars(display: &str) -> Result<(), Refusal> {
    let mut marks = 0;
    let mut on_letter = false;
    for c in display.chars() {
        if ucd::is_default_ignorable(c) {
            return Err(Refusal::InvalidChar(c));
        }
        if ucd::is_mark(c) {
            if !on_letter {
                return Err(Refusal::InvalidChar(c));
            }
            marks += 1;
            if marks > MAX_MARKS {
                return Err(Refusal::TooManyMarks);
            }
            continue;
        }
        if !(c.is_alphanumeric() || c == '_' || c == '-') {
            return Err(Refusal::InvalidChar(c));
        }
        marks = 0;
        on_letter = c.is_alphabetic();
    }
    for c in display.chars() {
        if has_compatibility_form(c) {
            return Err(Refusal::Compatibility(c));
        }
        if !c.identifier_allowed() {
            return Err(Refusal::Restricted(c));
        }
    }
    Ok(())
}

/// True if `c` has a compatibility decomposition (NFKD differs from NFD): a styled, circled,
/// superscript or ligature form of something plainer.
fn has_compatibility_form(c: char) -> bool {
    let one = std::iter::once(c);
    !one.clone().nfkd().eq(one.nfd())
}

/// Says in our terms why PRECIS refused `composed`.
fn precis_refusal(e: PrecisError, composed: &str) -> Refusal {
    let info = match e {
        PrecisError::BadCodepoint(info)
        | PrecisError::Unexpected(UnexpectedError::ContextRuleNotApplicable(info))
        | PrecisError::Unexpected(UnexpectedError::MissingContextRule(info)) => info,
        // The directionality rule (or an empty result, which non-empty NFC input cannot give).
        PrecisError::Invalid => return Refusal::Direction,
        // Internal conditions without a code point: name the first char outside plain ASCII.
        PrecisError::Unexpected(_) => {
            let c = composed
                .chars()
                .find(|c| !c.is_ascii_alphanumeric())
                .unwrap_or('?');
            return Refusal::InvalidChar(c);
        }
    };
    match char::from_u32(info.cp) {
        Some(c) if info.property == DerivedPropertyValue::Unassigned && c.is_alphanumeric() => {
            Refusal::TooNew(c)
        }
        Some(c)
            if c.is_alphanumeric()
                && has_compatibility_form(c)
                && !ucd::is_default_ignorable(c) =>
        {
            Refusal::Compatibility(c)
        }
        Some(c) => Refusal::InvalidChar(c),
        None => Refusal::InvalidChar(char::REPLACEMENT_CHARACTER),
    }
}

/// The key under which a valid name's display form is unique: full case folding, the UTS #39
/// confusable skeleton, and case folding again (the skeleton maps some lowercase letters to
/// uppercase prototypes, such as `0` to `O`).
pub(super) fn key(name: &str) -> String {
    let folded: String = fold_case(name).collect();
    shape_key(&folded)
}

/// The case-folded UTS #39 skeleton of `name` as it is (capitals kept for the skeleton): the
/// second key, which keeps what capitals look like (`I` like `l`, Cyrillic `В` like `B`).
pub(super) fn shape_key(name: &str) -> String {
    let skeleton: String = unicode_security::skeleton(name).collect();
    fold_case(&skeleton).collect()
}

/// The chars of `nick` under full Unicode case folding (`ß` → `ss`, final `ς` → `σ`): the order
/// nickname lists are sorted in.
pub fn fold_case(nick: &str) -> impl Iterator<Item = char> + '_ {
    nick.chars().default_case_fold()
}

/// A refused char as the user will see it quoted: as it is if it is visible, escaped otherwise.
pub(super) struct Shown(pub(super) char);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        let visible = c == ' '
            || c.is_ascii_graphic()
            || (!c.is_ascii()
                && (c.is_alphanumeric() || ucd::is_emoji(c))
                && !c.is_whitespace()
                && !is_forbidden(c)
                && !ucd::is_default_ignorable(c)
                && !ucd::is_mark(c));
        if visible {
            write!(f, "{}", c.escape_debug())
        } else {
            write!(f, "{}", c.escape_unicode())
        }
    }
}
