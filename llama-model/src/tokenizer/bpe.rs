//! Byte-pair merging of one pre-tokenized word, by merge rank, as llama.cpp does it.
//!
//! A word (already in the byte-level alphabet) starts as one symbol per character. Every
//! adjacent pair that has a merge rule is queued; the pair with the lowest rank (leftmost on
//! ties) is merged, its neighbours' pairs are queued again, and stale queue entries (a side
//! already merged elsewhere) are skipped. Symbols that end up outside the vocabulary fall back
//! to their single-byte tokens.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use rayon::prelude::*;

use super::hash::{fast_map, FastMap};

/// Merge rules keyed by the token ids of both sides, plus the rare rules whose sides are not
/// vocabulary tokens, keyed by text.
#[derive(Debug, Default)]
pub(crate) struct MergeRanks {
    by_id: FastMap<(u32, u32), u32>,
    by_text: HashMap<(String, String), u32>,
}

/// A merge line split into its sides, with their token ids when they are tokens.
type ParsedMerge<'a> = (&'a str, &'a str, Option<u32>, Option<u32>);

impl MergeRanks {
    /// Builds the table from `tokenizer.ggml.merges` lines ("left right"; rank = line index).
    /// The first occurrence of a pair keeps its rank.
    pub(crate) fn new<S: AsRef<str> + Sync>(
        merges: &[S],
        vocab: &FastMap<String, u32>,
    ) -> MergeRanks {
        // The vocabulary look-ups dominate; do them in parallel, then insert in rank order.
        let sides: Vec<Option<ParsedMerge<'_>>> = merges
            .par_iter()
            .map(|line| {
                let line = line.as_ref();
                // Split at the first space after the first byte (a side may itself be " ").
                let split = line.as_bytes().iter().skip(1).position(|&b| b == b' ')? + 1;
                let (left, right) = (&line[..split], &line[split + 1..]);
                Some((
                    left,
                    right,
                    vocab.get(left).copied(),
                    vocab.get(right).copied(),
                ))
            })
            .collect();
        let mut ranks = MergeRanks {
            by_id: fast_map(merges.len()),
            by_text: HashMap::new(),
        };
        for (rank, entry) in sides.into_iter().enumerate() {
            let Some((left, right, l, r)) = entry else {
                continue;
            };
            let rank = u32::try_from(rank).unwrap_or(u32::MAX);
            match (l, r) {
                (Some(l), Some(r)) => {
                    ranks.by_id.entry((l, r)).or_insert(rank);
                }
                _ => {
                    ranks
                        .by_text
                        .entry((left.to_owned(), right.to_owned()))
                        .or_insert(rank);
                }
            }
        }
        ranks
    }

    /// Number of rules.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len() + self.by_text.len()
    }

    fn rank(&self, left: (Option<u32>, &str), right: (Option<u32>, &str)) -> Option<u32> {
        if let (Some(l), Some(r)) = (left.0, right.0) {
            return self.by_id.get(&(l, r)).copied();
        }
        if self.by_text.is_empty() {
            return None;
        }
        self.by_text
            .get(&(left.1.to_owned(), right.1.to_owned()))
            .copied()
    }
}

const NONE: usize = usize::MAX;

#[derive(Debug, Clone, Copy)]
struct Symbol {
    /// Byte offset in the word.
    start: usize,
    /// Byte length; 0 once merged into its left neighbour.
    len: usize,
    prev: usize,
    next: usize,
    id: Option<u32>,
}

/// Queue entry: (rank, left symbol, right symbol, left len, right len) at queue time.
type Candidate = Reverse<(u32, usize, usize, usize, usize)>;

/// Merges `word` (byte-level alphabet) and appends its token ids to `out`.
pub(crate) fn merge_word(
    word: &str,
    vocab: &FastMap<String, u32>,
    ranks: &MergeRanks,
    out: &mut Vec<u32>,
) {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
    for (i, (start, c)) in word.char_indices().enumerate() {
        let len = c.len_utf8();
        symbols.push(Symbol {
            start,
            len,
            prev: if i == 0 { NONE } else { i - 1 },
            next: if start + len == word.len() {
                NONE
            } else {
                i + 1
            },
            id: vocab.get(&word[start..start + len]).copied(),
        });
    }
    let text = |s: &Symbol| &word[s.start..s.start + s.len];
    let candidate = |symbols: &[Symbol], l: usize, r: usize| -> Option<Candidate> {
        let (ls, rs) = (symbols.get(l)?, symbols.get(r)?);
        let rank = ranks.rank((ls.id, text(ls)), (rs.id, text(rs)))?;
        Some(Reverse((rank, l, r, ls.len, rs.len)))
    };

    let mut queue: BinaryHeap<Candidate> = BinaryHeap::new();
    for i in 1..symbols.len() {
        queue.extend(candidate(&symbols, i - 1, i));
    }
    while let Some(Reverse((_, l, r, l_len, r_len))) = queue.pop() {
        let (left, right) = (symbols[l], symbols[r]);
        if left.len == 0 || right.len == 0 || left.len != l_len || right.len != r_len {
            continue; // stale: one side changed since this pair was queued
        }
        let merged_len = left.len + right.len;
        symbols[l].len = merged_len;
        symbols[l].next = right.next;
        symbols[l].id = vocab
            .get(&word[left.start..left.start + merged_len])
            .copied();
        symbols[r].len = 0;
        if right.next != NONE {
            symbols[right.next].prev = l;
        }
        if left.prev != NONE {
            queue.extend(candidate(&symbols, left.prev, l));
        }
        if right.next != NONE {
            queue.extend(candidate(&symbols, l, right.next));
        }
    }

    for s in symbols.iter().filter(|s| s.len > 0) {
        match s.id {
            Some(id) => out.push(id),
            None => {
                // Not in the vocabulary: one token per byte that is itself a token.
                for b in text(s).bytes() {
                    if b.is_ascii() {
                        if let Some(&id) = vocab.get(char::from(b).encode_utf8(&mut [0; 4]) as &str)
                        {
                            out.push(id);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(words: &[&str]) -> FastMap<String, u32> {
        let mut m = fast_map(words.len());
        m.extend(
            words
                .iter()
                .enumerate()
                .map(|(i, w)| (w.to_string(), i as u32)),
        );
        m
    }

    #[test]
    fn merges_follow_rank_not_position() {
        // Hand-worked: with rules [b c, a b, a bc], "abc" merges "b c" first (rank 0), then
        // "a bc" (rank 2); "a b" (rank 1) never applies because "b" is gone.
        let v = vocab(&["a", "b", "c", "bc", "ab", "abc"]);
        let r = MergeRanks::new(&["b c", "a b", "a bc"], &v);
        let mut out = Vec::new();
        merge_word("abc", &v, &r, &mut out);
        assert_eq!(out, [5]);
        // Without "a bc", the word stays "a" + "bc".
        let r = MergeRanks::new(&["b c", "a b"], &v);
        out.clear();
        merge_word("abc", &v, &r, &mut out);
        assert_eq!(out, [0, 3]);
    }

    #[test]
    fn equal_rank_prefers_leftmost() {
        // "aaa" with the single rule "a a": the left pair merges, giving "aa" + "a".
        let v = vocab(&["a", "aa"]);
        let r = MergeRanks::new(&["a a"], &v);
        let mut out = Vec::new();
        merge_word("aaa", &v, &r, &mut out);
        assert_eq!(out, [1, 0]);
        out.clear();
        merge_word("aaaa", &v, &r, &mut out);
        assert_eq!(out, [1, 1]);
    }

    #[test]
    fn merged_text_outside_vocab_falls_back_to_bytes() {
        // The rule "x y" makes "xy", which is not a token: output the single bytes.
        let v = vocab(&["x", "y"]);
        let r = MergeRanks::new(&["x y"], &v);
        let mut out = Vec::new();
        merge_word("xy", &v, &r, &mut out);
        assert_eq!(out, [0, 1]);
    }

    #[test]
    fn malformed_merge_lines_are_ignored() {
        let v = vocab(&["a"]);
        let r = MergeRanks::new(&["", "a", "nospace"], &v);
        assert_eq!(r.len(), 0);
        // Sides may be multi-byte characters or a lone space.
        let v = vocab(&["Ġ", "ĠĠ", " ", "  "]);
        let r = MergeRanks::new(&["Ġ Ġ", "   "], &v);
        assert_eq!(r.len(), 2);
        let mut out = Vec::new();
        merge_word("ĠĠ", &v, &r, &mut out);
        assert_eq!(out, [1]);
        out.clear();
        merge_word("  ", &v, &r, &mut out);
        assert_eq!(out, [3]);
    }
}
