//! SmolLM2 prompts as llama.cpp tokenized them (`tests/fixtures/smollm2/<name>.json`:
//! `prompt_tokens` with special tokens parsed and no BOS, plus the text piece of every generated
//! token), and the model's end-of-generation and BOS settings.

mod tokenizer_common;

use llama_model::tokenizer::{StreamDecoder, Tokenizer};
use tokenizer_common::*;

fn fixture_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(&format!("smollm2/{name}.json")))
        .expect("read fixture json");
    serde_json::from_str(&text).expect("parse fixture json")
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn smollm2() -> Option<Tokenizer> {
    smollm2_file().map(|f| Tokenizer::from_gguf(f.metadata()).expect("SmolLM2 tokenizer"))
}

#[test]
fn prompt_tokens_equal_llama_cpp() {
    let Some(tok) = smollm2() else {
        return;
    };
    // The model says tokenizer.ggml.add_bos_token = false (the fixtures have no BOS).
    assert!(!tok.add_bos());
    for name in ["capital", "story", "chat"] {
        let text =
            std::fs::read_to_string(fixture(&format!("smollm2/prompts/{name}.txt"))).unwrap();
        let want = ids(&fixture_json(name)["prompt_tokens"]);
        assert_eq!(
            tok.encode(&text, true).unwrap(),
            want,
            "{name}: encode with special tokens"
        );
        assert_eq!(
            tok.encode_prompt(&text).unwrap(),
            want,
            "{name}: encode_prompt"
        );
    }
    // Without special parsing, `<|im_start|>` is plain text and is not token 1.
    let text = std::fs::read_to_string(fixture("smollm2/prompts/chat.txt")).unwrap();
    let plain = tok.encode(&text, false).unwrap();
    assert!(!plain.contains(&1) && !plain.contains(&2));
    assert_eq!(tok.decode(&plain), text);
}

#[test]
fn generated_pieces_equal_llama_cpp() {
    let Some(tok) = smollm2() else {
        return;
    };
    for name in ["capital", "story", "chat"] {
        let json = fixture_json(name);
        let steps = json["steps"].as_array().expect("steps");
        let mut stream = StreamDecoder::new(&tok);
        let mut streamed = String::new();
        let mut pieces = String::new();
        for step in steps {
            let id = step["token"].as_u64().expect("token") as u32;
            let piece = step["piece"].as_str().expect("piece");
            assert_eq!(
                String::from_utf8_lossy(&tok.token_bytes(id)),
                piece,
                "{name}: piece of token {id}"
            );
            pieces.push_str(piece);
            streamed.push_str(&stream.push(id));
        }
        streamed.push_str(&stream.finish());
        assert_eq!(streamed, pieces, "{name}: streamed text");
    }
}

#[test]
fn end_of_generation_tokens() {
    let Some(tok) = smollm2() else {
        return;
    };
    // The chat fixture ends with `<|im_end|>` (id 2, the model's EOS); `<|endoftext|>` is id 0.
    let chat = fixture_json("chat");
    let last = chat["steps"].as_array().unwrap().last().unwrap()["token"]
        .as_u64()
        .unwrap() as u32;
    assert!(tok.is_eog(last));
    assert_eq!(tok.eos_id(), Some(2));
    assert!(tok.is_eog(0));
    assert!(!tok.is_eog(504), "' Paris' is ordinary text");
    assert_eq!(tok.token_text(1), Some("<|im_start|>"));
}
