//! Pre-tokenizers: split text into words before BPE, exactly as llama.cpp splits them.
//!
//! Each split is written by hand as a left-to-right scanner equivalent to the regular expression
//! quoted above it, including the way llama.cpp treats segment ends (the end of a segment acts
//! like the end of the input, so `\s+(?!\S)` keeps trailing spaces whole).

use std::ops::Range;

use super::unicode::Class;

/// Which splitting rules a vocabulary uses (GGUF key `tokenizer.ggml.pre`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreTokenizer {
    /// Llama 3 (`llama-bpe`): case-insensitive contractions, letters with one leading
    /// non-letter, numbers in groups of up to three digits, punctuation runs with trailing
    /// newlines, newline runs, spaces.
    #[default]
    Llama3,
    /// SmolLM (`smollm`): every number character is its own word; the GPT-2 rules split the
    /// text between them.
    SmolLm,
    /// The original GPT-2 rules (`gpt2`, `gpt-2`).
    Gpt2,
}

impl PreTokenizer {
    /// Names accepted in `tokenizer.ggml.pre`, for error messages.
    pub const SUPPORTED: &'static [&'static str] =
        &["llama-bpe", "llama3", "smollm", "gpt2", "gpt-2"];

    /// Looks up a `tokenizer.ggml.pre` name.
    pub fn from_name(name: &str) -> Option<PreTokenizer> {
        match name {
            "llama-bpe" | "llama3" | "llama-v3" => Some(PreTokenizer::Llama3),
            "smollm" => Some(PreTokenizer::SmolLm),
            "gpt2" | "gpt-2" => Some(PreTokenizer::Gpt2),
            _ => None,
        }
    }

    /// Splits `cps` (the code points of one piece of text) into words, pushing code point index
    /// ranges to `out` in order. The ranges cover `cps` exactly.
    pub(crate) fn split(self, cps: &[char], out: &mut Vec<Range<usize>>) {
        match self {
            PreTokenizer::Llama3 => split_llama3(cps, 0, out),
            PreTokenizer::Gpt2 => split_gpt2(cps, 0, out),
            PreTokenizer::SmolLm => {
                // First rule: `\p{N}` alone; each match and each gap between matches becomes a
                // segment, and the GPT-2 rules then run inside each segment separately.
                let mut gap_start = 0;
                for (i, &c) in cps.iter().enumerate() {
                    if Class::of(c).number {
                        if gap_start < i {
                            split_gpt2(&cps[gap_start..i], gap_start, out);
                        }
                        out.push(i..i + 1);
                        gap_start = i + 1;
                    }
                }
                if gap_start < cps.len() {
                    split_gpt2(&cps[gap_start..], gap_start, out);
                }
            }
        }
    }
}

/// Cursor over one segment that emits words as index ranges offset by `base`.
struct Scanner<'a> {
    cps: &'a [char],
    base: usize,
    word_start: usize,
    out: &'a mut Vec<Range<usize>>,
}

impl Scanner<'_> {
    fn len(&self) -> usize {
        self.cps.len()
    }

    fn at(&self, i: usize) -> Option<char> {
        self.cps.get(i).copied()
    }

    fn class(&self, i: usize) -> Class {
        self.at(i).map(Class::of).unwrap_or_default()
    }

    /// Ends the current word at `end` (nothing is pushed for an empty word).
    fn emit(&mut self, end: usize) {
        if end > self.word_start {
            self.out.push(self.base + self.word_start..self.base + end);
        }
        self.word_start = end;
    }

    /// Counts the whitespace run starting at `pos`; also returns the index just after the last
    /// `\r` or `\n` inside the run, if any.
    fn space_run(&self, pos: usize) -> (usize, Option<usize>) {
        let mut n = 0;
        let mut after_newline = None;
        while self.class(pos + n).space {
            if matches!(self.at(pos + n), Some('\r' | '\n')) {
                after_newline = Some(pos + n + 1);
            }
            n += 1;
        }
        (n, after_newline)
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d` at `pos` (ASCII case folded when `fold`): the word's end.
    fn contraction(&self, pos: usize, fold: bool) -> Option<usize> {
        if self.at(pos) != Some('\'') || pos + 1 >= self.len() {
            return None;
        }
        let lower = |c: Option<char>| c.map(|c| if fold { c.to_ascii_lowercase() } else { c });
        let c1 = lower(self.at(pos + 1));
        if matches!(c1, Some('s' | 't' | 'm' | 'd')) {
            return Some(pos + 2);
        }
        if pos + 2 < self.len() {
            let c2 = lower(self.at(pos + 2));
            if matches!(
                (c1, c2),
                (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l'))
            ) {
                return Some(pos + 3);
            }
        }
        None
    }
}

/// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
fn split_gpt2(cps: &[char], base: usize, out: &mut Vec<Range<usize>>) {
    let mut s = Scanner {
        cps,
        base,
        word_start: 0,
        out,
    };
    let n = s.len();
    let mut pos = 0;
    while pos < n {
        if let Some(end) = s.contraction(pos, false) {
            pos = end;
            s.emit(pos);
            continue;
        }
        let c = cps[pos];
        let space_prefix = c == ' ';
        // The class that decides the alternative: the next character after an optional space.
        let decider = if space_prefix {
            s.class(pos + 1)
        } else {
            s.class(pos)
        };
        if decider.letter || decider.number || decider.is_other() {
            if space_prefix {
                pos += 1;
            }
            let same = |k: Class| {
                if decider.letter {
                    k.letter
                } else if decider.number {
                    k.number
                } else {
                    k.is_other()
                }
            };
            while same(s.class(pos)) {
                pos += 1;
            }
            s.emit(pos);
            continue;
        }
        let (n_space, _) = s.space_run(pos);
        if n_space > 1 && pos + n_space < n {
            // `\s+(?!\S)`: leave the last space to prefix the next word.
            pos += n_space - 1;
        } else if n_space > 0 {
            pos += n_space;
        } else {
            pos += 1;
        }
        s.emit(pos);
    }
}

/// Llama 3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
/// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
fn split_llama3(cps: &[char], base: usize, out: &mut Vec<Range<usize>>) {
    let mut s = Scanner {
        cps,
        base,
        word_start: 0,
        out,
    };
    let n = s.len();
    let mut pos = 0;
    while pos < n {
        if let Some(end) = s.contraction(pos, true) {
            pos = end;
            s.emit(pos);
            continue;
        }
        let c = cps[pos];
        let class = s.class(pos);

        // `[^\r\n\p{L}\p{N}]?\p{L}+`
        if !(c == '\r' || c == '\n' || class.number) && (class.letter || s.class(pos + 1).letter) {
            pos += 1;
            while s.class(pos).letter {
                pos += 1;
            }
            s.emit(pos);
            continue;
        }

        // `\p{N}{1,3}`
        if class.number {
            let mut group_start = pos;
            while s.class(pos).number {
                pos += 1;
                if pos - group_start >= 3 {
                    s.emit(pos);
                    group_start = pos;
                }
            }
            s.emit(pos);
            continue;
        }

        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        let decider = if c == ' ' { s.class(pos + 1) } else { class };
        if !(decider.space || decider.letter || decider.number) {
            if c == ' ' {
                pos += 1;
            }
            while s.class(pos).is_other() {
                pos += 1;
            }
            while matches!(s.at(pos), Some('\r' | '\n')) {
                pos += 1;
            }
            s.emit(pos);
            continue;
        }

        let (n_space, after_newline) = s.space_run(pos);
        if let Some(end) = after_newline {
            // `\s*[\r\n]+`
            pos = end;
        } else if n_space > 1 && pos + n_space < n {
            // `\s+(?!\S)`
            pos += n_space - 1;
        } else if n_space > 0 {
            // `\s+`
            pos += n_space;
        } else {
            pos += 1;
        }
        s.emit(pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: PreTokenizer, text: &str) -> Vec<String> {
        let cps: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        pre.split(&cps, &mut out);
        let mut covered = 0;
        for r in &out {
            assert_eq!(r.start, covered, "ranges must tile the input");
            covered = r.end;
        }
        assert_eq!(covered, cps.len());
        out.into_iter().map(|r| cps[r].iter().collect()).collect()
    }

    // Expected splits below follow the regular expressions by hand (what Python's `regex`
    // module returns for the same pattern and input).
    #[test]
    fn llama3_splits() {
        let w = words(
            PreTokenizer::Llama3,
            "Hello, y'all! I'VE 12345 apples\n\n  ok   ",
        );
        assert_eq!(
            w,
            [
                "Hello", ",", " y", "'all", "!", " I", "'VE", " ", "123", "45", " apples", "\n\n",
                " ", " ok", "   "
            ]
        );
        let w = words(PreTokenizer::Llama3, "a...\n\nb \t\nc");
        assert_eq!(w, ["a", "...\n\n", "b", " \t\n", "c"]);
    }

    #[test]
    fn gpt2_splits() {
        let w = words(PreTokenizer::Gpt2, "Hello, y'all! I'VE 12345  x");
        assert_eq!(
            w,
            ["Hello", ",", " y", "'", "all", "!", " I", "'", "VE", " 12345", " ", " x"]
        );
    }

    #[test]
    fn smollm_splits_digits() {
        let w = words(PreTokenizer::SmolLm, "in 2024 we");
        assert_eq!(w, ["in", " ", "2", "0", "2", "4", " we"]);
        // A segment end acts as end of input: the two spaces before a digit stay together.
        let w = words(PreTokenizer::SmolLm, "a  3");
        assert_eq!(w, ["a", "  ", "3"]);
    }
}
