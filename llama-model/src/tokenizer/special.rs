//! Splitting text at special tokens written literally in it (`<|eot_id|>`, `<|im_start|>` ...).
//!
//! As in llama.cpp, special tokens are tried longest first; each one splits every remaining
//! plain-text fragment at all of its (non-overlapping, left to right) occurrences.

/// A piece of input text: either plain text for the BPE, or a special token already resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment<'a> {
    /// Text to pre-tokenize and merge.
    Text(&'a str),
    /// A special token found in the text.
    Token(u32),
}

/// Splits `text` at the given special tokens (`(text, id)`, already in the order to try).
pub(crate) fn partition<'a, S: AsRef<str>>(
    text: &'a str,
    specials: &[(S, u32)],
) -> Vec<Fragment<'a>> {
    let mut fragments = vec![Fragment::Text(text)];
    for (special, id) in specials {
        let (special, id) = (special.as_ref(), *id);
        if special.is_empty() {
            continue;
        }
        if !fragments
            .iter()
            .any(|f| matches!(f, Fragment::Text(t) if t.contains(special)))
        {
            continue;
        }
        let mut next = Vec::with_capacity(fragments.len() + 2);
        for f in fragments {
            match f {
                Fragment::Token(_) => next.push(f),
                Fragment::Text(t) => {
                    let mut rest = t;
                    while let Some(p) = rest.find(special) {
                        if p > 0 {
                            next.push(Fragment::Text(&rest[..p]));
                        }
                        next.push(Fragment::Token(id));
                        rest = &rest[p + special.len()..];
                    }
                    if !rest.is_empty() {
                        next.push(Fragment::Text(rest));
                    }
                }
            }
        }
        fragments = next;
    }
    fragments
}

#[cfg(test)]
mod tests {
    use super::*;
    use Fragment::{Text, Token};

    #[test]
    fn splits_all_occurrences_longest_first() {
        let specials = [("<|im_start|>", 1), ("<|im_end|>", 2), ("<a>", 3)];
        let f = partition("<|im_start|>user\nhi<a><|im_end|>\n<a>", &specials);
        assert_eq!(
            f,
            [
                Token(1),
                Text("user\nhi"),
                Token(3),
                Token(2),
                Text("\n"),
                Token(3)
            ]
        );
        assert_eq!(partition("plain", &specials), [Text("plain")]);
        assert_eq!(partition("", &specials), [Text("")]);
    }
}
