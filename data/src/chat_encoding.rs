//! The DeepSeek-V4 chat encoding (`encoding_dsv4.encode_messages`): renders a
//! conversation to text and records the byte spans the assistant produces
//! (reasoning, `</think>`, content, DSML tool calls, end-of-sentence), which
//! become the trained tokens of the loss mask.

use crate::chat_message::{ChatMessage, ChatOptions, ReasoningEffort, ThinkingMode};
use crate::chat_preprocess::{
    drop_thinking, last_user_index, merge_tool_messages, sort_tool_results, Block, Role, Turn,
};
use crate::chat_templates as t;
use crate::error::ChatError;
use crate::json_py::PyJson;
use std::ops::Range;

/// A rendered conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatEncoding {
    /// The full prompt text.
    pub text: String,
    /// Byte ranges of `text` produced by the assistant (sorted, disjoint).
    pub trained_spans: Vec<Range<usize>>,
}

/// Renders `messages` exactly like `encode_messages(messages, thinking_mode,
/// drop_thinking=…, reasoning_effort=…)` of DeepSeek's `encoding_dsv4.py`.
pub fn encode_chat(
    messages: &[ChatMessage],
    options: &ChatOptions,
) -> Result<ChatEncoding, ChatError> {
    let mut turns = merge_tool_messages(messages)?;
    sort_tool_results(&mut turns);
    let has_tools = turns.iter().any(|t| {
        t.msg
            .and_then(|m| m.tools.as_ref())
            .is_some_and(|v| !v.is_empty())
    });
    let drop = options.drop_thinking && !has_tools;
    let thinking = options.thinking_mode == ThinkingMode::Thinking;
    if thinking && drop {
        turns = drop_thinking(turns);
    }
    let renderer = Renderer {
        turns: &turns,
        thinking,
        drop,
        max_effort: options.reasoning_effort == Some(ReasoningEffort::Max),
        last_user: last_user_index(&turns),
    };
    let mut out = ChatEncoding {
        text: String::new(),
        trained_spans: Vec::new(),
    };
    if options.add_bos {
        out.text.push_str(t::BOS);
    }
    for i in 0..turns.len() {
        renderer.render(i, &mut out)?;
    }
    Ok(out)
}

struct Renderer<'a> {
    turns: &'a [Turn<'a>],
    thinking: bool,
    drop: bool,
    max_effort: bool,
    last_user: Option<usize>,
}

/// A string content or nothing (`content or ""`).
fn text_content(msg: &ChatMessage, index: usize) -> Result<&str, ChatError> {
    match &msg.content {
        PyJson::Str(s) => Ok(s),
        PyJson::Null => Ok(""),
        other => Err(unsupported(msg, index, other)),
    }
}

fn unsupported(msg: &ChatMessage, index: usize, found: &PyJson) -> ChatError {
    ChatError::UnsupportedContent {
        index,
        role: msg.role.clone(),
        detail: format!("expected a string, got {}", found.dumps()),
    }
}

/// Content of a tool result: a string, or `text` blocks joined by blank lines.
/// `null` renders as empty (the Python reference would print `None`).
fn tool_result_text(content: &PyJson, index: usize) -> Result<String, ChatError> {
    match content {
        PyJson::Str(s) => Ok(s.clone()),
        PyJson::Null => Ok(String::new()),
        PyJson::Array(blocks) => {
            let parts: Vec<String> = blocks
                .iter()
                .map(|b| match b.get("type").and_then(PyJson::as_str) {
                    Some("text") => b
                        .get("text")
                        .and_then(PyJson::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    Some(other) => format!("[Unsupported {other}]"),
                    None => "[Unsupported None]".to_owned(),
                })
                .collect();
            Ok(parts.join("\n\n"))
        }
        other => Err(ChatError::UnsupportedContent {
            index,
            role: "tool".into(),
            detail: format!("expected a string or text blocks, got {}", other.dumps()),
        }),
    }
}

impl Renderer<'_> {
    fn is_after_last_user(&self, i: usize) -> bool {
        self.last_user.is_none_or(|l| i > l)
    }

    fn render(&self, i: usize, out: &mut ChatEncoding) -> Result<(), ChatError> {
        let turn = &self.turns[i];
        if i == 0 && self.thinking && self.max_effort {
            out.text.push_str(t::REASONING_EFFORT_MAX);
        }
        match (turn.role, turn.msg) {
            (Role::User, _) => self.render_user(turn, out)?,
            (_, None) => {}
            (Role::System, Some(msg)) => {
                out.text.push_str(text_content(msg, turn.index)?);
                push_extras(msg, &mut out.text);
            }
            (Role::Developer, Some(msg)) => {
                let content = match &msg.content {
                    PyJson::Str(s) if !s.is_empty() => s,
                    PyJson::Str(_) | PyJson::Null => {
                        return Err(ChatError::EmptyDeveloper { index: turn.index })
                    }
                    other => return Err(unsupported(msg, turn.index, other)),
                };
                out.text.push_str(t::USER);
                out.text.push_str(content);
                push_extras(msg, &mut out.text);
            }
            (Role::LatestReminder, Some(msg)) => {
                let content = match &msg.content {
                    PyJson::Str(s) => s,
                    other => return Err(unsupported(msg, turn.index, other)),
                };
                out.text.push_str(t::LATEST_REMINDER);
                out.text.push_str(content);
            }
            (Role::Assistant, Some(msg)) => self.render_assistant(i, msg, turn, out)?,
            (Role::Tool, Some(_)) => {}
        }
        self.render_transition(i, out)
    }

    fn render_user(&self, turn: &Turn, out: &mut ChatEncoding) -> Result<(), ChatError> {
        out.text.push_str(t::USER);
        for (k, block) in turn.blocks.iter().enumerate() {
            if k > 0 {
                out.text.push_str("\n\n");
            }
            match block {
                Block::Text(s) => out.text.push_str(s),
                Block::ToolResult { content, index, .. } => {
                    out.text.push_str("<tool_result>");
                    out.text.push_str(&tool_result_text(content, *index)?);
                    out.text.push_str("</tool_result>");
                }
            }
        }
        Ok(())
    }

    fn render_assistant(
        &self,
        i: usize,
        msg: &ChatMessage,
        turn: &Turn,
        out: &mut ChatEncoding,
    ) -> Result<(), ChatError> {
        let start = out.text.len();
        let prev_has_task = i > 0 && self.turns[i - 1].task().is_some();
        if self.thinking && !prev_has_task && (!self.drop || self.is_after_last_user(i)) {
            if turn.keep_reasoning {
                out.text
                    .push_str(msg.reasoning_content.as_deref().unwrap_or(""));
            }
            out.text.push_str(t::THINK_END);
        }
        out.text.push_str(text_content(msg, turn.index)?);
        if let Some(calls) = msg.tool_calls.as_deref().filter(|c| !c.is_empty()) {
            out.text.push_str(&t::render_tool_calls(calls, turn.index)?);
        }
        if !msg.wo_eos {
            out.text.push_str(t::EOS);
        }
        if out.text.len() > start {
            out.trained_spans.push(start..out.text.len());
        }
        Ok(())
    }

    /// What follows a message when the next one is not a user-side message:
    /// a task token, or the assistant opener with `<think>` / `</think>`.
    fn render_transition(&self, i: usize, out: &mut ChatEncoding) -> Result<(), ChatError> {
        let turn = &self.turns[i];
        if let Some(next) = self.turns.get(i + 1) {
            if !matches!(next.role, Role::Assistant | Role::LatestReminder) {
                return Ok(());
            }
        }
        if let Some(task) = turn.task() {
            let token = t::task_token(task).ok_or_else(|| ChatError::InvalidTask {
                index: turn.index,
                task: task.to_owned(),
            })?;
            if task == "action" {
                out.text.push_str(t::ASSISTANT);
                out.text.push_str(if self.thinking {
                    t::THINK_START
                } else {
                    t::THINK_END
                });
            }
            out.text.push_str(token);
        } else if matches!(turn.role, Role::User | Role::Developer) {
            out.text.push_str(t::ASSISTANT);
            let open_thinking =
                self.thinking && (!self.drop || self.last_user.is_none_or(|l| i >= l));
            out.text.push_str(if open_thinking {
                t::THINK_START
            } else {
                t::THINK_END
            });
        }
        Ok(())
    }
}

/// Tool schemas and response format appended to system / developer content.
fn push_extras(msg: &ChatMessage, text: &mut String) {
    if let Some(tools) = msg.tools.as_deref().filter(|v| !v.is_empty()) {
        text.push_str("\n\n");
        text.push_str(&t::render_tools(tools));
    }
    if msg.response_format.is_truthy() {
        text.push_str("\n\n");
        text.push_str(&t::render_response_format(&msg.response_format));
    }
}
