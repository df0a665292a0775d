//! Character classes used by the pre-tokenizers: letter (`\p{L}`), number (`\p{N}`) and
//! whitespace (`\s`, the Unicode `White_Space` property).

use unicode_general_category::{get_general_category, GeneralCategory as G};

/// The class of one position of a segment. Positions past the segment end are "out of range",
/// which no class test matches (like an end-of-input in a regex).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Class {
    /// The position exists.
    pub(crate) in_range: bool,
    /// General category L* (Lu, Ll, Lt, Lm, Lo).
    pub(crate) letter: bool,
    /// General category N* (Nd, Nl, No).
    pub(crate) number: bool,
    /// Unicode `White_Space` property.
    pub(crate) space: bool,
}

impl Class {
    /// Class of a character.
    pub(crate) fn of(c: char) -> Class {
        let (letter, number) = if c.is_ascii() {
            (c.is_ascii_alphabetic(), c.is_ascii_digit())
        } else {
            match get_general_category(c) {
                G::UppercaseLetter
                | G::LowercaseLetter
                | G::TitlecaseLetter
                | G::ModifierLetter
                | G::OtherLetter => (true, false),
                G::DecimalNumber | G::LetterNumber | G::OtherNumber => (false, true),
                _ => (false, false),
            }
        };
        Class {
            in_range: true,
            letter,
            number,
            space: is_white_space(c),
        }
    }

    /// Matches `[^\s\p{L}\p{N}]` (anything in range that is not space, letter or number).
    pub(crate) fn is_other(self) -> bool {
        self.in_range && !(self.space || self.letter || self.number)
    }
}

/// The Unicode `White_Space` property (PropList.txt): 25 code points.
pub(crate) fn is_white_space(c: char) -> bool {
    matches!(
        c,
        '\u{9}'..='\u{D}'
            | ' '
            | '\u{85}'
            | '\u{A0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200A}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{3000}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_of_known_characters() {
        assert!(Class::of('a').letter && Class::of('Ä').letter && Class::of('я').letter);
        assert!(Class::of('中').letter, "CJK ideographs are Lo");
        assert!(Class::of('7').number && Class::of('٣').number && Class::of('½').number);
        assert!(Class::of('\u{3000}').space && Class::of('\u{A0}').space && Class::of('\n').space);
        assert!(
            Class::of('\u{200B}').is_other(),
            "zero width space is Cf, not White_Space"
        );
        assert!(Class::of('🦙').is_other() && Class::of('!').is_other());
        assert!(
            Class::of('\u{301}').is_other(),
            "combining marks are not letters"
        );
        assert!(!Class::default().is_other());
    }
}
