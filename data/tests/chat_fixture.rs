//! Every case of the DeepSeek-V4 chat fixture reproduces `text` and `ids`
//! exactly, and loss masks cover exactly the assistant spans.

use serde::Deserialize;
use std::path::PathBuf;
use v4_data::{encode_chat, tokenize_chat, ChatOptions, ChatRequest, V4Tokenizer};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("data crate has a parent")
        .to_path_buf()
}

fn tokenizer() -> V4Tokenizer {
    V4Tokenizer::from_dir(repo_root().join("data/tokenizer/deepseek-v4")).expect("tokenizer")
}

#[derive(Deserialize)]
struct Case {
    name: String,
    text: String,
    ids: Vec<u32>,
    #[serde(flatten)]
    request: ChatRequest,
}

fn cases() -> Vec<Case> {
    let path = repo_root().join("tests/fixtures/chat/v4_chat_cases.jsonl");
    std::fs::read_to_string(&path)
        .expect("fixture")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("case"))
        .collect()
}

fn encode(tok: &V4Tokenizer, case: &Case) -> (String, v4_data::TokenizedChat) {
    let opts = case.request.options(&ChatOptions::default());
    let enc = encode_chat(&case.request.messages, &opts).expect("encode");
    let tokens = tokenize_chat(tok, &enc).expect("tokenize");
    (enc.text, tokens)
}

#[test]
fn every_case_matches_text_and_ids() {
    let tok = tokenizer();
    let cases = cases();
    assert_eq!(cases.len(), 15);
    for case in &cases {
        let (text, tokens) = encode(&tok, case);
        assert_eq!(text, case.text, "text of case {}", case.name);
        assert_eq!(tokens.ids, case.ids, "ids of case {}", case.name);
        assert_eq!(tokens.loss_mask.len(), tokens.ids.len());
    }
}

/// Decoded text of the trained tokens, one string per contiguous run.
fn trained_runs(tok: &V4Tokenizer, t: &v4_data::TokenizedChat) -> Vec<String> {
    let mut runs = Vec::new();
    let mut cur = Vec::new();
    for (&id, &m) in t.ids.iter().zip(&t.loss_mask) {
        if m == 1 {
            cur.push(id);
        } else if !cur.is_empty() {
            runs.push(tok.decode(&cur).expect("decode"));
            cur.clear();
        }
    }
    if !cur.is_empty() {
        runs.push(tok.decode(&cur).expect("decode"));
    }
    runs
}

fn case<'a>(cases: &'a [Case], name: &str) -> &'a Case {
    cases.iter().find(|c| c.name == name).expect("case present")
}

const EOS: &str = "<｜end▁of▁sentence｜>";

#[test]
fn loss_mask_covers_assistant_spans() {
    let tok = tokenizer();
    let cases = cases();

    // Chat mode: `</think>` belongs to the prompt, content + EOS are trained.
    let (_, t) = encode(&tok, case(&cases, "single_turn_chat"));
    assert_eq!(trained_runs(&tok, &t), vec![format!("2+2 equals 4.{EOS}")]);
    let first_trained = t.loss_mask.iter().position(|&m| m == 1).unwrap();
    assert_eq!(
        tok.decode(&t.ids[first_trained - 1..first_trained])
            .unwrap(),
        "</think>"
    );
    assert_eq!(t.loss_mask.last(), Some(&1));
    assert_eq!(t.ids.last(), Some(&tok.eos_id()));

    // Thinking mode: reasoning and `</think>` are trained, `<think>` is prompt.
    let (_, t) = encode(&tok, case(&cases, "thinking_single"));
    assert_eq!(
        trained_runs(&tok, &t),
        vec![format!("91 = 7 * 13.</think>No, 91 = 7 x 13.{EOS}")]
    );

    // Multi-turn with dropped thinking: both assistant turns trained, the first without reasoning.
    let (_, t) = encode(&tok, case(&cases, "thinking_multi_drop"));
    assert_eq!(
        trained_runs(&tok, &t),
        vec![format!("42{EOS}"), format!("42*2=84</think>84{EOS}")]
    );

    // Tool call block is trained; tool results and the system prompt are not.
    let (_, t) = encode(&tok, case(&cases, "tools_call_and_result"));
    let runs = trained_runs(&tok, &t);
    assert_eq!(runs.len(), 2);
    assert!(runs[0].starts_with("Call the tool.</think>\n\n<｜DSML｜tool_calls>"));
    assert!(runs[0].ends_with(&format!("</｜DSML｜tool_calls>{EOS}")));
    assert_eq!(runs[1], format!("Summarize.</think>18°C and cloudy.{EOS}"));

    // Latest reminder sits between the assistant opener and the reply: not
    // trained. Its final "." and the reply's "The" form one token ".The",
    // which overlaps the reply and is therefore trained.
    let (_, t) = encode(&tok, case(&cases, "latest_reminder"));
    let runs = trained_runs(&tok, &t);
    assert_eq!(runs, vec![format!(".The meeting covered budgets.{EOS}")]);

    // Empty assistant: only EOS is trained.
    let (_, t) = encode(&tok, case(&cases, "empty_assistant"));
    assert_eq!(t.loss_mask.iter().filter(|&&m| m == 1).count(), 1);
    assert_eq!(t.loss_mask.last(), Some(&1));

    // Generation prompt: nothing trained.
    let (_, t) = encode(&tok, case(&cases, "generation_prompt_thinking"));
    assert!(t.loss_mask.iter().all(|&m| m == 0));
}
