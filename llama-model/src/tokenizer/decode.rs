//! Streaming detokenization that never splits a UTF-8 character between two outputs.

use super::Tokenizer;

/// Turns generated tokens into text one token at a time.
///
/// A byte-level token may end in the middle of a multi-byte character (an emoji is often two
/// or three tokens). The decoder holds back such an incomplete tail until the bytes that
/// complete it arrive, so every returned `String` is whole characters. Bytes that can never
/// become valid UTF-8 come out as U+FFFD.
#[derive(Debug)]
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    pending: Vec<u8>,
    render_special: bool,
}

impl<'t> StreamDecoder<'t> {
    /// A decoder that renders special tokens as their text (like [`Tokenizer::token_bytes`]).
    pub fn new(tokenizer: &'t Tokenizer) -> Self {
        StreamDecoder {
            tokenizer,
            pending: Vec::new(),
            render_special: true,
        }
    }

    /// A decoder that renders special/control tokens as nothing when `render_special` is false
    /// (what llama.cpp's command line shows by default).
    pub fn with_special(tokenizer: &'t Tokenizer, render_special: bool) -> Self {
        StreamDecoder {
            tokenizer,
            pending: Vec::new(),
            render_special,
        }
    }

    /// Adds one token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        if self.render_special || !self.tokenizer.is_special(id) {
            let bytes = self.tokenizer.token_bytes(id);
            self.pending.extend_from_slice(&bytes);
        }
        self.take_complete()
    }

    /// Returns whatever is still held back (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }

    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is valid UTF-8 by construction.
                    out.push_str(&String::from_utf8_lossy(valid));
                    match e.error_len() {
                        // Invalid bytes: replace them and go on.
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            rest = after.get(bad..).unwrap_or(&[]);
                        }
                        // Incomplete character at the end: keep it for the next token.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }
}
