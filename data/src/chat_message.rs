//! OpenAI-format chat messages as read from datasets, plus the per-conversation
//! options of the DeepSeek-V4 encoding (`thinking_mode`, `drop_thinking`,
//! `reasoning_effort`).

use crate::json_py::PyJson;
use serde::{Deserialize, Serialize};

/// One message of a conversation (OpenAI format; unknown keys are ignored).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ChatMessage {
    /// `system`, `user`, `developer`, `assistant`, `tool` or `latest_reminder`.
    pub role: String,
    /// Text content (`tool` messages may also hold a list of `{type, text}` blocks).
    #[serde(default)]
    pub content: PyJson,
    /// The assistant's reasoning (rendered inside `<think>…</think>`).
    #[serde(default)]
    pub reasoning_content: Option<String>,
    /// Tool schemas (OpenAI `{"type": "function", "function": {...}}`).
    #[serde(default)]
    pub tools: Option<Vec<ToolDef>>,
    /// A JSON schema the reply must follow.
    #[serde(default)]
    pub response_format: PyJson,
    /// Tool calls made by an assistant message.
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// For `tool` messages: the id of the call this result answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// DeepSeek internal task token (`action`, `query`, `authority`, `domain`, `title`, `read_url`).
    #[serde(default)]
    pub task: Option<String>,
    /// Assistant turn without the closing end-of-sentence token.
    #[serde(default)]
    pub wo_eos: bool,
}

/// A tool schema entry; only `function` is rendered.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ToolDef {
    /// `{"name", "description", "parameters"}` in source key order.
    pub function: PyJson,
}

/// One tool call of an assistant message.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ToolCall {
    /// Call id, matched by `tool` messages' `tool_call_id`.
    #[serde(default)]
    pub id: Option<String>,
    /// The called function.
    pub function: ToolCallFunction,
}

/// Function name and arguments of a tool call.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ToolCallFunction {
    /// Function name.
    pub name: String,
    /// Arguments: normally a JSON-object string.
    pub arguments: PyJson,
    /// Alternative location of the call id used by some producers.
    #[serde(default)]
    pub id: Option<String>,
}

/// `chat` renders `</think>` and no reasoning; `thinking` renders reasoning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThinkingMode {
    /// Non-thinking mode.
    #[default]
    Chat,
    /// Thinking mode.
    Thinking,
}

/// Reasoning effort; only `max` changes the prompt (thinking mode only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningEffort {
    /// Accepted, renders identically to no effort.
    High,
    /// Prepends the "Reasoning Effort: Absolute maximum…" preamble.
    Max,
}

/// Options of one encoding call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatOptions {
    /// Chat or thinking mode.
    pub thinking_mode: ThinkingMode,
    /// Drop reasoning of assistant turns before the last user turn (thinking mode).
    pub drop_thinking: bool,
    /// Reasoning effort.
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Start with the begin-of-sentence token.
    pub add_bos: bool,
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions {
            thinking_mode: ThinkingMode::Chat,
            drop_thinking: true,
            reasoning_effort: None,
            add_bos: true,
        }
    }
}

/// One line of a `chat-encode` input: messages plus optional per-line options
/// (other keys such as `name`, `text`, `ids` are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Overrides [`ChatOptions::thinking_mode`].
    #[serde(default)]
    pub thinking_mode: Option<ThinkingMode>,
    /// Overrides [`ChatOptions::drop_thinking`].
    #[serde(default)]
    pub drop_thinking: Option<bool>,
    /// Overrides [`ChatOptions::reasoning_effort`].
    #[serde(default)]
    pub reasoning_effort: Option<ReasoningEffort>,
}

impl ChatRequest {
    /// The options for this request, starting from `defaults`.
    pub fn options(&self, defaults: &ChatOptions) -> ChatOptions {
        ChatOptions {
            thinking_mode: self.thinking_mode.unwrap_or(defaults.thinking_mode),
            drop_thinking: self.drop_thinking.unwrap_or(defaults.drop_thinking),
            reasoning_effort: self.reasoning_effort.or(defaults.reasoning_effort),
            add_bos: defaults.add_bos,
        }
    }
}
