//! The byte-level alphabet of GPT-2 style BPE.
//!
//! Byte-level BPE vocabularies never store raw bytes: every byte 0..=255 is written as one
//! printable Unicode character. Bytes that are already printable Latin-1 characters (`!`..`~`,
//! `¡`..`¬`, `®`..`ÿ`) stand for themselves; the remaining 68 bytes (controls, space, and a few
//! others) are given the code points 256, 257, ... in increasing byte order. So a space becomes
//! `Ġ` (U+0120) and a newline `Ċ` (U+010A).

/// Highest code point used by the mapping, plus one.
const MAPPED_LIMIT: usize = 256 + 68;

/// Both directions of the byte <-> character mapping.
#[derive(Debug, Clone)]
pub(crate) struct ByteMap {
    byte_to_char: [char; 256],
    /// Indexed by code point (all mapped code points are below [`MAPPED_LIMIT`]).
    char_to_byte: [Option<u8>; MAPPED_LIMIT],
}

/// True for the bytes that represent themselves in the mapping.
fn is_self_mapped(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

impl ByteMap {
    /// Builds the mapping.
    pub(crate) fn new() -> ByteMap {
        let mut byte_to_char = ['\0'; 256];
        let mut char_to_byte = [None; MAPPED_LIMIT];
        let mut next_extra: u32 = 256;
        for b in 0..=255u8 {
            let cp = if is_self_mapped(b) {
                u32::from(b)
            } else {
                let cp = next_extra;
                next_extra += 1;
                cp
            };
            // Every value here is below 324, a valid scalar value.
            let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
            byte_to_char[usize::from(b)] = c;
            if let Some(slot) = char_to_byte.get_mut(cp as usize) {
                *slot = Some(b);
            }
        }
        ByteMap {
            byte_to_char,
            char_to_byte,
        }
    }

    /// The character standing for byte `b`.
    pub(crate) fn char_of(&self, b: u8) -> char {
        self.byte_to_char[usize::from(b)]
    }

    /// The byte a mapped character stands for, or `None` for characters outside the alphabet.
    pub(crate) fn byte_of(&self, c: char) -> Option<u8> {
        self.char_to_byte.get(c as usize).copied().flatten()
    }

    /// Appends the mapped form of `bytes` to `out`.
    pub(crate) fn encode_into(&self, bytes: &[u8], out: &mut String) {
        out.extend(bytes.iter().map(|&b| self.char_of(b)));
    }

    /// Appends the bytes a mapped string stands for. Characters outside the alphabet (which
    /// a well-formed byte-level vocabulary never contains) are kept as their own UTF-8.
    pub(crate) fn decode_into(&self, text: &str, out: &mut Vec<u8>) {
        for c in text.chars() {
            match self.byte_of(c) {
                Some(b) => out.push(b),
                None => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_gpt2_characters() {
        // Values from the GPT-2 paper's released encoder: space is U+0120 'Ġ', newline U+010A 'Ċ',
        // tab U+0109 'ĉ', byte 0 is U+0100 'Ā', byte 0xAD (soft hyphen) is U+0143 'Ń'.
        let m = ByteMap::new();
        assert_eq!(m.char_of(b' '), 'Ġ');
        assert_eq!(m.char_of(b'\n'), 'Ċ');
        assert_eq!(m.char_of(b'\t'), 'ĉ');
        assert_eq!(m.char_of(0), 'Ā');
        assert_eq!(m.char_of(0xAD), 'Ń');
        assert_eq!(m.char_of(b'a'), 'a');
        assert_eq!(m.char_of(0xFF), 'ÿ');
    }

    #[test]
    fn round_trip_all_bytes() {
        let m = ByteMap::new();
        let all: Vec<u8> = (0..=255).collect();
        let mut s = String::new();
        m.encode_into(&all, &mut s);
        assert_eq!(s.chars().count(), 256);
        let mut back = Vec::new();
        m.decode_into(&s, &mut back);
        assert_eq!(back, all);
    }
}
