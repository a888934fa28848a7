//! Encoding rules of `encoding_dsv4` that the fixture does not exercise:
//! consecutive user merging, tool results with text, non-JSON tool arguments,
//! developer dropping in thinking mode, `wo_eos`, task tokens and errors.

use serde_json::json;
use v4_data::{encode_chat, ChatError, ChatMessage, ChatOptions, ThinkingMode};

const BOS: &str = "<｜begin▁of▁sentence｜>";
const EOS: &str = "<｜end▁of▁sentence｜>";

fn messages(v: serde_json::Value) -> Vec<ChatMessage> {
    serde_json::from_value(v).expect("messages")
}

fn thinking() -> ChatOptions {
    ChatOptions {
        thinking_mode: ThinkingMode::Thinking,
        ..ChatOptions::default()
    }
}

fn spans(text: &str, spans: &[std::ops::Range<usize>]) -> Vec<String> {
    spans.iter().map(|r| text[r.clone()].to_owned()).collect()
}

#[test]
fn users_merge_and_tool_arguments_render_as_dsml() {
    let msgs = messages(json!([
        {"role": "user", "content": "A"},
        {"role": "user", "content": "B"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "x", "function": {"name": "f", "arguments": "not json"}},
            {"function": {"name": "g", "arguments": "{\"n\": [1, 2], \"s\": \"t\", \"f\": 1.0}"}}
        ]},
        {"role": "tool", "tool_call_id": "x", "content": "r1"},
        {"role": "user", "content": "C"},
        {"role": "assistant", "content": "done"}
    ]));
    let enc = encode_chat(&msgs, &ChatOptions::default()).unwrap();
    let calls = "\n\n<｜DSML｜tool_calls>\n\
<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"arguments\" string=\"true\">not json</｜DSML｜parameter>\n</｜DSML｜invoke>\n\
<｜DSML｜invoke name=\"g\">\n<｜DSML｜parameter name=\"n\" string=\"false\">[1, 2]</｜DSML｜parameter>\n\
<｜DSML｜parameter name=\"s\" string=\"true\">t</｜DSML｜parameter>\n\
<｜DSML｜parameter name=\"f\" string=\"false\">1.0</｜DSML｜parameter>\n</｜DSML｜invoke>\n\
</｜DSML｜tool_calls>";
    let want = format!(
        "{BOS}<｜User｜>A\n\nB<｜Assistant｜></think>{calls}{EOS}\
<｜User｜><tool_result>r1</tool_result>\n\nC<｜Assistant｜></think>done{EOS}"
    );
    assert_eq!(enc.text, want);
    assert_eq!(
        spans(&enc.text, &enc.trained_spans),
        vec![format!("{calls}{EOS}"), format!("done{EOS}")]
    );
}

#[test]
fn thinking_drop_removes_history_reasoning_and_developer() {
    let msgs = messages(json!([
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "reasoning_content": "r1", "content": "a1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "reasoning_content": "r2", "content": "a2", "wo_eos": true}
    ]));
    let mut opts = thinking();
    opts.reasoning_effort = Some(v4_data::ReasoningEffort::High);
    let enc = encode_chat(&msgs, &opts).unwrap();
    assert_eq!(
        enc.text,
        format!("{BOS}<｜User｜>Q1<｜Assistant｜></think>a1{EOS}<｜User｜>Q2<｜Assistant｜><think>r2</think>a2")
    );
    assert_eq!(
        spans(&enc.text, &enc.trained_spans),
        vec![format!("a1{EOS}"), "r2</think>a2".to_owned()]
    );
}

#[test]
fn action_task_opens_the_assistant_with_the_task_token() {
    let msgs = messages(json!([{"role": "user", "content": "do it", "task": "action"}]));
    let enc = encode_chat(&msgs, &thinking()).unwrap();
    assert_eq!(
        enc.text,
        format!("{BOS}<｜User｜>do it<｜Assistant｜><think><｜action｜>")
    );
    assert!(enc.trained_spans.is_empty());
}

#[test]
fn invalid_conversations_are_typed_errors() {
    let err = |v| encode_chat(&messages(v), &ChatOptions::default()).unwrap_err();
    assert_eq!(
        err(json!([{"role": "user", "content": "x"}, {"role": "wizard", "content": "y"}])),
        ChatError::UnknownRole {
            index: 1,
            role: "wizard".into()
        }
    );
    assert_eq!(
        err(json!([{"role": "developer", "content": ""}])),
        ChatError::EmptyDeveloper { index: 0 }
    );
    assert!(matches!(
        err(
            json!([{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}])
        ),
        ChatError::BadToolArguments { index: 0, .. }
    ));
    assert!(matches!(
        err(json!([{"role": "user", "content": ["not", "text"]}])),
        ChatError::UnsupportedContent { index: 0, .. }
    ));
}
