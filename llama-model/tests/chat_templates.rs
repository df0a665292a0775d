//! Chat templates: SmolLM2's own template (from the model GGUF) against the llama.cpp fixture
//! prompt, ChatML and a Llama-3.1-style template against hand-written expected strings, and
//! conversations that feed only the new text.

mod tokenizer_common;

use llama_model::chat::{
    ChatError, ChatMessage, ChatTemplate, Conversation, PromptDelta, CHATML_TEMPLATE,
    LLAMA3_TEMPLATE,
};
use tokenizer_common::*;

/// A template in the Llama 3.1 format (system header with the knowledge/today date lines,
/// trimmed contents, `<|eot_id|>` after each message), written for this test.
const LLAMA31_STYLE: &str = r#"{{- bos_token }}
{%- if messages[0].role == 'system' %}
    {%- set system_message = messages[0].content | trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{%- if date_string is not defined %}
    {%- set date_string = strftime_now("%d %b %Y") %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if message.role not in ['user', 'assistant'] %}
        {{- raise_exception("Unsupported role: " + message.role) }}
    {%- endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"#;

fn llama31() -> ChatTemplate {
    let t = ChatTemplate::new(LLAMA31_STYLE, "<|begin_of_text|>", "<|eot_id|>").unwrap();
    t.set_time(1_721_952_000); // 2024-07-26 00:00:00 UTC
    t
}

#[test]
fn llama31_format() {
    let msgs = [
        ChatMessage::system("  You are terse.  "),
        ChatMessage::user("Hi!"),
        ChatMessage::assistant("Hello."),
        ChatMessage::user(" Bye "),
    ];
    let want = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are terse.<|eot_id|>\
<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>\
<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>\
<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>\
<|start_header_id|>assistant<|end_header_id|>\n\n";
    assert_eq!(llama31().render(&msgs, true).unwrap(), want);
    // Without the generation prompt the text stops after the last message.
    let without = llama31().render(&msgs, false).unwrap();
    assert_eq!(
        without,
        want.strip_suffix("<|start_header_id|>assistant<|end_header_id|>\n\n")
            .unwrap()
    );
}

#[test]
fn llama31_raise_exception_is_an_error() {
    let err = llama31()
        .render(&[ChatMessage::new("tool", "x")], true)
        .unwrap_err();
    assert!(matches!(err, ChatError::Render(_)));
    assert!(err.to_string().contains("Unsupported role: tool"), "{err}");
}

#[test]
fn builtin_templates() {
    let chatml = ChatTemplate::new(CHATML_TEMPLATE, "", "<|im_end|>").unwrap();
    let got = chatml
        .render(&[ChatMessage::system("S"), ChatMessage::user("U")], true)
        .unwrap();
    assert_eq!(
        got,
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    );
    let llama3 = ChatTemplate::new(LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>").unwrap();
    let got = llama3.render(&[ChatMessage::user(" U ")], true).unwrap();
    assert_eq!(
        got,
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>\
<|start_header_id|>assistant<|end_header_id|>\n\n"
    );
}

#[test]
fn python_methods_and_filters() {
    let t = ChatTemplate::new(
        "{{ messages[0].content.strip().upper() }}|{{ messages[0].content.startswith(' h') }}|\
{% for k, v in {'a': 1}.items() %}{{ k }}={{ v }}{% endfor %}|{{ {'a': [1, 2]} | tojson }}",
        "",
        "",
    )
    .unwrap();
    let got = t.render(&[ChatMessage::user(" hi ")], false).unwrap();
    let (head, json) = got.rsplit_once('|').unwrap();
    assert_eq!(head, "HI|True|a=1"); // Jinja prints Python booleans
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(json).unwrap(),
        serde_json::json!({"a": [1, 2]})
    );
}

#[test]
fn syntax_errors_are_reported() {
    assert!(matches!(
        ChatTemplate::new("{% if %}", "", ""),
        Err(ChatError::Syntax(_))
    ));
}

#[test]
fn conversation_feeds_only_the_new_text() {
    let chatml = ChatTemplate::new(CHATML_TEMPLATE, "", "<|im_end|>").unwrap();
    let mut c = Conversation::with_system(chatml, "S");
    let d1 = c.add_user("Hi").unwrap();
    assert_eq!(
        d1,
        PromptDelta::Append("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n".into())
    );
    // The model generated "Hello" and stopped at <|im_end|> without feeding it.
    c.add_assistant("Hello", "Hello");
    let d2 = c.add_user("Bye").unwrap();
    assert_eq!(
        d2,
        PromptDelta::Append(
            "<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n".into()
        )
    );
    assert_eq!(c.messages().len(), 4);
    assert_eq!(
        c.fed_text(),
        c.template().render(c.messages(), true).unwrap()
    );
}

#[test]
fn conversation_restarts_when_the_template_rewrites_history() {
    // The Llama 3.1 format trims contents, so a reply fed with a trailing space no longer
    // matches the rendered history: the whole text must be fed again.
    let mut c = Conversation::new(llama31());
    c.add_user("Hi").unwrap();
    c.add_assistant("Hello. ", "Hello. ");
    let d = c.add_user("Bye").unwrap();
    let full = c.template().render(c.messages(), true).unwrap();
    assert_eq!(d, PromptDelta::Restart(full));
}

#[test]
fn smollm2_template_renders_the_fixture_prompt() {
    let Some(file) = smollm2_file() else {
        return;
    };
    // llama.cpp's fixture prompt chat.txt is SmolLM2's template applied to one user message
    // (the template adds its default system message).
    let want = std::fs::read_to_string(fixture("smollm2/prompts/chat.txt")).unwrap();
    let t = ChatTemplate::from_gguf(file.metadata()).unwrap();
    assert_eq!(
        t.render(&[ChatMessage::user("What is 2+2?")], true)
            .unwrap(),
        want
    );
    let tok = llama_model::tokenizer::Tokenizer::from_gguf(file.metadata()).unwrap();
    let t2 = ChatTemplate::from_tokenizer(&tok).unwrap();
    assert_eq!(t2.source(), t.source());
    assert_eq!(
        t2.render(&[ChatMessage::user("What is 2+2?")], true)
            .unwrap(),
        want
    );
}

#[test]
fn llama3_vocab_without_template_gets_the_builtin() {
    let tok = llama3_vocab();
    assert!(tok.chat_template().is_none());
    assert!(matches!(
        ChatTemplate::from_tokenizer(&tok),
        Err(ChatError::NoTemplate)
    ));
    let t = ChatTemplate::from_tokenizer_or_builtin(&tok).unwrap();
    assert_eq!(t.source(), LLAMA3_TEMPLATE);
    assert!(t
        .render(&[ChatMessage::user("x")], true)
        .unwrap()
        .starts_with("<|begin_of_text|><|start_header_id|>user"));
}
