//! The Unicode character properties the text and nickname rules need, from one copy of the
//! Unicode Character Database.
//!
//! The tables are regex-syntax's (generated from the UCD by ucd-generate, one Unicode version for
//! all of them): regex-syntax is already in the daemon through the log filter, and no other
//! maintained crate exposes Default_Ignorable_Code_Point and Extended_Pictographic. Each set is
//! built once, on first use, as sorted ranges; a lookup is a binary search. No table is written
//! by hand here.

use std::sync::OnceLock;

use regex_syntax::hir::{Class, HirKind};

/// A set of chars as sorted, non-overlapping inclusive ranges.
struct CharSet(Box<[(char, char)]>);

impl CharSet {
    /// The chars with the UCD property `property`, as regex-syntax names it (`\p{…}`).
    fn of(property: &str) -> CharSet {
        let pattern = format!(r"\p{{{property}}}");
        // The names are constants, checked by the unit tests; a failure here is a build mistake.
        let hir = regex_syntax::parse(&pattern).expect("a UCD property regex-syntax knows");
        let HirKind::Class(Class::Unicode(class)) = hir.kind() else {
            unreachable!("\\p{{…}} parses to a Unicode class")
        };
        CharSet(
            class
                .ranges()
                .iter()
                .map(|r| (r.start(), r.end()))
                .collect(),
        )
    }

    fn contains(&self, c: char) -> bool {
        self.0
            .binary_search_by(|&(lo, hi)| {
                if hi < c {
                    std::cmp::Ordering::Less
                } else if lo > c {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
    }
}

macro_rules! property {
    ($(#[$doc:meta])* $name:ident, $property:literal) => {
        $(#[$doc])*
        pub fn $name(c: char) -> bool {
            static SET: OnceLock<CharSet> = OnceLock::new();
            SET.get_or_init(|| CharSet::of($property)).contains(c)
        }
    };
}

property!(
    /// Default_Ignorable_Code_Point: chars that draw as nothing (zero-width space and joiners,
    /// word joiner, BOM, Hangul fillers, variation selectors, tag characters, soft hyphen, …),
    /// including the code points reserved for more of them.
    is_default_ignorable,
    "Default_Ignorable_Code_Point"
);
property!(
    /// Emoji: chars that have an emoji form, so a variation selector (VS15/VS16) may follow them
    /// (this includes the keycap bases `0`–`9`, `#` and `*`).
    is_emoji,
    "Emoji"
);
property!(
    /// Extended_Pictographic: emoji pictographs, and the code points reserved for future ones,
    /// what a zero-width joiner may join in an emoji ZWJ sequence.
    is_extended_pictographic,
    "Extended_Pictographic"
);
property!(
    /// Emoji_Modifier: the five skin-tone modifiers.
    is_emoji_modifier,
    "Emoji_Modifier"
);
property!(
    /// General_Category=Mark (Mn, Mc, Me): combining marks, which stack on the char before them.
    is_mark,
    "Mark"
);

/// The emoji tag sequence base (U+1F3F4 WAVING BLACK FLAG), the only one UTS #51 gives tags to.
pub const BLACK_FLAG: char = '\u{1f3f4}';
/// The tag block, U+E0000..=U+E007F (all default-ignorable).
pub fn is_tag(c: char) -> bool {
    ('\u{e0000}'..='\u{e007f}').contains(&c)
}
/// CANCEL TAG, the end of an emoji tag sequence.
pub const CANCEL_TAG: char = '\u{e007f}';
/// ZERO WIDTH JOINER, the glue of emoji ZWJ sequences.
pub const ZWJ: char = '\u{200d}';
/// VS15 and VS16: text and emoji presentation selectors.
pub fn is_presentation_selector(c: char) -> bool {
    matches!(c, '\u{fe0e}' | '\u{fe0f}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_table() {
        #[allow(clippy::type_complexity)]
        let table: &[(fn(char) -> bool, &[char], &[char])] = &[
            (
                is_default_ignorable,
                &[
                    '\u{200b}',
                    '\u{200c}',
                    '\u{200d}',
                    '\u{2060}',
                    '\u{feff}',
                    '\u{1160}',
                    '\u{3164}',
                    '\u{115f}',
                    '\u{180e}',
                    '\u{fe0f}',
                    '\u{e0001}',
                    '\u{e0067}',
                    '\u{e007f}',
                    '\u{e0100}',
                    '\u{ad}',
                    '\u{34f}',
                    '\u{ffa0}',
                ],
                &[
                    'a',
                    ' ',
                    '\u{e9}',
                    '\u{5c0f}',
                    '\u{1f600}',
                    '\u{301}',
                    '\u{2800}',
                ],
            ),
            (
                is_emoji,
                &['\u{1f600}', '1', '#', '*', '\u{a9}', '\u{2764}', BLACK_FLAG],
                &['a', '\u{5c0f}', '\u{fe0f}', '\u{200d}'],
            ),
            (
                is_extended_pictographic,
                &[
                    '\u{1f468}',
                    '\u{1f469}',
                    '\u{2764}',
                    BLACK_FLAG,
                    '\u{1f9b0}',
                ],
                &['1', '#', 'a', '\u{1f3fd}', '\u{1f1e6}'],
            ),
            (
                is_emoji_modifier,
                &['\u{1f3fb}', '\u{1f3ff}'],
                &['\u{1f600}', 'a'],
            ),
            (
                is_mark,
                &['\u{301}', '\u{20e3}', '\u{93f}', '\u{fe0f}', '\u{5b4}'],
                &['a', '\u{e9}', '\u{200d}', '1'],
            ),
        ];
        for (has, members, others) in table {
            for &c in *members {
                assert!(has(c), "{c:?} should have the property");
            }
            for &c in *others {
                assert!(!has(c), "{c:?} should not have the property");
            }
        }
        assert!(is_tag('\u{e0000}') && is_tag(CANCEL_TAG) && !is_tag('\u{e0080}'));
    }
}
