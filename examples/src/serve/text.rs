//! Generated tokens to text deltas: whole UTF-8 characters only (llama-model's
//! [`StreamDecoder`]), cut at the first stop string, and holding back any tail that could still
//! become a stop string so no delta ever shows text a stop would have removed. Streamed and
//! non-streamed answers are built from the same deltas.

use llama_model::tokenizer::{StreamDecoder, Tokenizer};

/// Cuts text at the first occurrence of any stop string, fed piece by piece.
#[derive(Debug, Clone, Default)]
pub struct StopCutter {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopCutter {
    /// A cutter for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        StopCutter {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// True once a stop string has been seen (everything after it is dropped).
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Adds `piece`; returns the text that is now certainly part of the answer.
    pub fn push(&mut self, piece: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.held.push_str(piece);
        // The earliest stop occurrence wins (ties: the first listed).
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            self.stopped = true;
            let out = self.held[..at].to_owned();
            self.held.clear();
            return out;
        }
        // Hold back the longest tail that is a proper prefix of some stop string.
        let keep = self.partial_tail();
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_owned();
        self.held.drain(..cut);
        out
    }

    /// Ends the text: whatever was held back (it did not become a stop string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Bytes at the end of `held` that begin some stop string (on a character boundary).
    fn partial_tail(&self) -> usize {
        let h = self.held.as_str();
        let mut best = 0;
        for s in &self.stops {
            let max = s.len().saturating_sub(1).min(h.len());
            for n in (best + 1..=max).rev() {
                let start = h.len() - n;
                if h.is_char_boundary(start) && s.starts_with(&h[start..]) {
                    best = n;
                    break;
                }
            }
        }
        best
    }
}

/// One sequence's detokenizer: tokens in, answer text deltas out.
#[derive(Debug)]
pub struct TextStream<'t> {
    decoder: StreamDecoder<'t>,
    cutter: StopCutter,
}

impl<'t> TextStream<'t> {
    /// Decodes with `tokenizer` (special tokens render as nothing, as OpenAI servers do), cutting
    /// at `stops`.
    pub fn new(tokenizer: &'t Tokenizer, stops: &[String]) -> Self {
        TextStream {
            decoder: StreamDecoder::with_special(tokenizer, false),
            cutter: StopCutter::new(stops),
        }
    }

    /// Adds a token; returns the new answer text (possibly empty).
    pub fn push(&mut self, token: u32) -> String {
        let piece = self.decoder.push(token);
        self.cutter.push(&piece)
    }

    /// True once a stop string ended the answer.
    pub fn stopped(&self) -> bool {
        self.cutter.stopped()
    }

    /// Ends the answer: held-back bytes and text (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let rest = self.decoder.finish();
        let mut out = self.cutter.push(&rest);
        out.push_str(&self.cutter.finish());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference, as generation sees it: the first piece (token) after which the text
    /// holds a stop string ends the answer, which is that text cut before its earliest stop
    /// occurrence.
    fn reference(pieces: &[String], stops: &[String]) -> (String, bool) {
        let mut text = String::new();
        for p in pieces {
            text.push_str(p);
            let at = stops
                .iter()
                .filter(|s| !s.is_empty())
                .filter_map(|s| text.find(s.as_str()))
                .min();
            if let Some(i) = at {
                return (text[..i].to_owned(), true);
            }
        }
        (text, false)
    }

    fn run(pieces: &[String], stops: &[String]) -> (String, bool, Vec<String>) {
        let mut c = StopCutter::new(stops);
        let mut deltas = Vec::new();
        for p in pieces {
            deltas.push(c.push(p));
        }
        deltas.push(c.finish());
        (deltas.concat(), c.stopped(), deltas)
    }

    #[test]
    fn stop_split_across_pieces_is_cut_and_never_shown() {
        let stops = vec!["\nUser:".to_owned()];
        let pieces: Vec<String> = ["Hello", " there\n", "Us", "er:", " more"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (text, stopped, deltas) = run(&pieces, &stops);
        assert_eq!(text, "Hello there");
        assert!(stopped);
        assert!(deltas.iter().all(|d| !d.contains('\n')));
    }

    #[test]
    fn held_tail_that_does_not_become_a_stop_comes_out() {
        let stops = vec!["END".to_owned()];
        let pieces = vec!["abc E".to_owned(), "N".to_owned(), "x".to_owned()];
        let (text, stopped, deltas) = run(&pieces, &stops);
        assert_eq!(text, "abc ENx");
        assert!(!stopped);
        assert_eq!(deltas[0], "abc ");
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        let stops = vec!["é!".to_owned()];
        let pieces = vec!["caf".to_owned(), "é".to_owned(), "?".to_owned()];
        let (text, _, deltas) = run(&pieces, &stops);
        assert_eq!(text, "café?");
        assert_eq!(deltas[1], "");
    }

    proptest! {
        #[test]
        fn pieces_joined_equal_the_whole_text_reference(
            pieces in proptest::collection::vec("[ab\n é]{0,4}", 0..12),
            stops in proptest::collection::vec("[ab\né]{0,3}", 0..4),
        ) {
            let (text, stopped, _) = run(&pieces, &stops);
            let (want, want_stopped) = reference(&pieces, &stops);
            prop_assert_eq!(text, want);
            prop_assert_eq!(stopped, want_stopped);
        }
    }
}
