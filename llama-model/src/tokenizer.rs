//! tokenizer (work in progress).
