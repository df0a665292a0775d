//! Tokenizer behaviour on the real Llama 3 vocabulary: special tokens, decoding, streaming
//! across split UTF-8 characters, metadata errors. Expected ids come from llama.cpp's `.out`
//! file and the vocabulary's own metadata.

mod tokenizer_common;

use gguf::{Metadata, Value};
use llama_model::tokenizer::{StreamDecoder, Tokenizer, TokenizerError};
use tokenizer_common::*;

#[test]
fn special_tokens_are_parsed_only_when_asked() {
    let tok = llama3_vocab();
    let bos = tok.bos_id().expect("Llama 3 has a BOS");
    let eot = tok.token_id("<|eot_id|>").expect("<|eot_id|>");
    assert_eq!(tok.token_text(bos), Some("<|begin_of_text|>"));
    // "Hello" is 9906 in llama.cpp's .out (input 23).
    let ids = tok
        .encode("<|begin_of_text|>Hello<|eot_id|>", true)
        .unwrap();
    assert_eq!(ids, [bos, 9906, eot]);
    let plain = tok
        .encode("<|begin_of_text|>Hello<|eot_id|>", false)
        .unwrap();
    assert!(!plain.contains(&bos) && !plain.contains(&eot));
    assert_eq!(tok.decode(&plain), "<|begin_of_text|>Hello<|eot_id|>");
}

#[test]
fn llama3_metadata_and_end_tokens() {
    let tok = llama3_vocab();
    // The vocab file has no tokenizer.ggml.add_bos_token; llama.cpp's default for `llama-bpe`
    // is to add BOS (128000, tokenizer.ggml.bos_token_id).
    assert!(tok.add_bos());
    assert_eq!(tok.encode_prompt("Hello").unwrap(), [128_000, 9906]);
    for text in ["<|end_of_text|>", "<|eot_id|>"] {
        let id = tok.token_id(text).unwrap();
        assert!(tok.is_eog(id), "{text} ends generation");
    }
    assert_eq!(tok.eos_id(), tok.token_id("<|end_of_text|>"));
    assert_eq!(tok.eot_id(), tok.token_id("<|eot_id|>"));
    // This is Llama 3.0's vocabulary: 128008 is still a reserved token, not `<|eom_id|>`.
    assert_eq!(
        tok.token_text(128_008),
        Some("<|reserved_special_token_4|>")
    );
    assert_eq!(tok.eom_id(), None);
    assert!(!tok.is_eog(128_008));
    assert!(!tok.is_eog(9906));
}

#[test]
fn decode_round_trips_every_vocab_test_input() {
    let tok = llama3_vocab();
    let inp = std::fs::read_to_string(fixture("vocab/ggml-vocab-llama-bpe.gguf.inp")).unwrap();
    let out = std::fs::read_to_string(fixture("vocab/ggml-vocab-llama-bpe.gguf.out")).unwrap();
    for (text, line) in vocab_test_inputs(&inp).iter().zip(out.lines()) {
        // Decode llama.cpp's ids (not ours): byte-level BPE is lossless.
        let ids = parse_out_line(line);
        assert_eq!(&tok.decode(&ids), text);
        // Streaming gives the same text and never a broken character.
        let mut stream = StreamDecoder::new(&tok);
        let mut s = String::new();
        for &id in &ids {
            let piece = stream.push(id);
            assert!(
                !piece.contains('\u{FFFD}'),
                "broken character streamed for {text:?}"
            );
            s.push_str(&piece);
        }
        s.push_str(&stream.finish());
        assert_eq!(&s, text);
    }
}

#[test]
fn stream_holds_back_split_characters() {
    let tok = llama3_vocab();
    // llama.cpp's .out input 18: " this is 🦙.cpp" -> 420 374 11410 99 247 13 11055, where the
    // llama emoji (4 bytes) is spread over 11410 (" " + 2 bytes), 99 and 247.
    let ids = [420u32, 374, 11410, 99, 247, 13, 11055];
    assert_eq!(tok.token_bytes(11410), b" \xF0\x9F");
    let mut stream = StreamDecoder::new(&tok);
    let outs: Vec<String> = ids.iter().map(|&id| stream.push(id)).collect();
    assert_eq!(outs, [" this", " is", " ", "", "🦙", ".", "cpp"]);
    assert_eq!(stream.finish(), "");
    // A stream cut inside the character finishes with a replacement character.
    let mut stream = StreamDecoder::new(&tok);
    assert_eq!(stream.push(11410), " ");
    assert_eq!(stream.finish(), "\u{FFFD}");
    // Hiding special tokens (llama.cpp's default rendering).
    let mut stream = StreamDecoder::with_special(&tok, false);
    assert_eq!(stream.push(tok.bos_id().unwrap()), "");
    assert_eq!(stream.push(9906), "Hello");
    assert_eq!(tok.token_bytes(u32::MAX), b"");
}

fn minimal_meta(model: &str, pre: &str) -> Metadata {
    let strings = |v: &[&str]| {
        Value::Array(gguf::Array {
            elem_type: gguf::MetadataValueType::String,
            values: v.iter().map(|s| Value::String(s.to_string())).collect(),
        })
    };
    let mut m = Metadata::new();
    m.insert("tokenizer.ggml.model", Value::String(model.into()));
    m.insert("tokenizer.ggml.pre", Value::String(pre.into()));
    m.insert("tokenizer.ggml.tokens", strings(&["a", "b", "ab"]));
    m.insert("tokenizer.ggml.merges", strings(&["a b"]));
    m
}

#[test]
fn metadata_errors_name_the_problem() {
    let err = Tokenizer::from_gguf(&minimal_meta("llama", "default")).unwrap_err();
    assert!(
        matches!(err, TokenizerError::UnsupportedModel(ref m) if m == "llama"),
        "{err}"
    );
    assert!(err.to_string().contains("`llama`"));

    let err = Tokenizer::from_gguf(&minimal_meta("gpt2", "qwen2")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("qwen2") && msg.contains("llama-bpe") && msg.contains("smollm"),
        "{msg}"
    );

    let mut m = minimal_meta("gpt2", "gpt2");
    m.insert("tokenizer.ggml.bos_token_id", Value::U32(7));
    let err = Tokenizer::from_gguf(&m).unwrap_err();
    assert!(
        matches!(
            err,
            TokenizerError::IdOutOfRange {
                id: 7,
                vocab_size: 3,
                ..
            }
        ),
        "{err}"
    );

    let mut m = minimal_meta("gpt2", "gpt2");
    m.insert("tokenizer.ggml.tokens", Value::U32(1));
    let err = Tokenizer::from_gguf(&m).unwrap_err();
    assert!(err.to_string().contains("tokenizer.ggml.tokens"), "{err}");

    // The minimal vocabulary works: "ab" merges by the single rule.
    let tok = Tokenizer::from_gguf(&minimal_meta("gpt2", "gpt2")).unwrap();
    assert_eq!(tok.encode("ab", false).unwrap(), [2]);
    assert_eq!(tok.encode("ba", false).unwrap(), [1, 0]);
}

mod round_trip {
    use std::sync::OnceLock;

    use llama_model::tokenizer::{StreamDecoder, Tokenizer};
    use proptest::prelude::*;

    fn tok() -> &'static Tokenizer {
        static TOK: OnceLock<Tokenizer> = OnceLock::new();
        TOK.get_or_init(super::llama3_vocab)
    }

    /// Strings mixing what the pre-tokenizer treats differently: letters, digits, spaces,
    /// newlines, tabs, apostrophes, punctuation, accents, CJK, emoji (4-byte), combining marks,
    /// non-ASCII spaces and digits, and special-token text.
    fn text() -> impl Strategy<Value = String> {
        let atoms = prop::sample::select(vec![
            "a",
            "Z",
            "hello",
            " ",
            "  ",
            "\n",
            "\r\n",
            "\t",
            "'s",
            "'RE",
            "'",
            "7",
            "123456",
            ".",
            "!!",
            "é",
            "Ä",
            "я",
            "中文",
            "🦙",
            "😶\u{200d}🌫\u{fe0f}",
            "\u{301}",
            "\u{a0}",
            "\u{3000}",
            "٣",
            "½",
            "<|eot_id|>",
            "<|begin_of_text|>",
            "``",
            "\u{10ffff}",
        ]);
        prop::collection::vec(atoms, 0..24).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn decode_inverts_encode(s in text()) {
            let ids = tok().encode(&s, false).unwrap();
            prop_assert_eq!(tok().decode(&ids), s.clone());
            let mut stream = StreamDecoder::new(tok());
            let mut streamed: String = ids.iter().map(|&id| stream.push(id)).collect();
            streamed.push_str(&stream.finish());
            prop_assert_eq!(streamed, s);
        }
    }
}
