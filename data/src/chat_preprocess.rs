//! Message preprocessing of `encoding_dsv4` before rendering: tool results are
//! merged into user turns (consecutive user messages too), tool results are
//! sorted by the order of the preceding assistant's calls, and in thinking mode
//! with `drop_thinking` the history before the last user turn loses its
//! reasoning (and its developer messages).

use crate::chat_message::ChatMessage;
use crate::error::ChatError;
use crate::json_py::PyJson;
use std::collections::HashMap;

/// Message roles of the V4 encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// System prompt (plain text after BOS).
    System,
    /// User turn.
    User,
    /// Developer turn (rendered as a user turn).
    Developer,
    /// Assistant turn (the trained part).
    Assistant,
    /// Tool result (merged into a user turn).
    Tool,
    /// Latest reminder (rendered after the assistant opener).
    LatestReminder,
}

impl Role {
    /// Parses a role name; `index` is used in the error.
    pub fn parse(role: &str, index: usize) -> Result<Role, ChatError> {
        Ok(match role {
            "system" => Role::System,
            "user" => Role::User,
            "developer" => Role::Developer,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            "latest_reminder" => Role::LatestReminder,
            _ => {
                return Err(ChatError::UnknownRole {
                    index,
                    role: role.to_owned(),
                })
            }
        })
    }
}

/// A piece of a merged user turn.
#[derive(Debug, Clone)]
pub enum Block<'a> {
    /// User text.
    Text(&'a str),
    /// A tool result for call `id`.
    ToolResult {
        /// `tool_call_id` of the tool message.
        id: &'a str,
        /// Its content.
        content: &'a PyJson,
        /// Index of the tool message (for errors).
        index: usize,
    },
}

/// A message after preprocessing.
#[derive(Debug, Clone)]
pub struct Turn<'a> {
    /// Role (never [`Role::Tool`]).
    pub role: Role,
    /// The source message; `None` for a user turn made of tool results only.
    pub msg: Option<&'a ChatMessage>,
    /// Content blocks of a user turn.
    pub blocks: Vec<Block<'a>>,
    /// False when `drop_thinking` removed this assistant turn's reasoning.
    pub keep_reasoning: bool,
    /// Index of the source message (for errors).
    pub index: usize,
}

impl Turn<'_> {
    /// The `task` key of the source message.
    pub fn task(&self) -> Option<&str> {
        self.msg.and_then(|m| m.task.as_deref())
    }
}

/// Text of a user message: a string, or nothing.
fn user_text(msg: &ChatMessage, index: usize) -> Result<&str, ChatError> {
    match &msg.content {
        PyJson::Str(s) => Ok(s),
        PyJson::Null => Ok(""),
        other => Err(ChatError::UnsupportedContent {
            index,
            role: msg.role.clone(),
            detail: format!("expected a string, got {}", other.dumps()),
        }),
    }
}

/// `merge_tool_messages`: tool results and following user text join the
/// preceding user turn.
pub fn merge_tool_messages(messages: &[ChatMessage]) -> Result<Vec<Turn<'_>>, ChatError> {
    let mut merged: Vec<Turn> = Vec::with_capacity(messages.len());
    for (index, msg) in messages.iter().enumerate() {
        let role = Role::parse(&msg.role, index)?;
        let last_is_user = merged.last().is_some_and(|t| t.role == Role::User);
        match role {
            Role::Tool => {
                let block = Block::ToolResult {
                    id: msg.tool_call_id.as_deref().unwrap_or(""),
                    content: &msg.content,
                    index,
                };
                match merged.last_mut() {
                    Some(last) if last_is_user => last.blocks.push(block),
                    _ => merged.push(Turn {
                        role: Role::User,
                        msg: None,
                        blocks: vec![block],
                        keep_reasoning: true,
                        index,
                    }),
                }
            }
            Role::User => {
                let block = Block::Text(user_text(msg, index)?);
                match merged.last_mut() {
                    Some(last) if last_is_user && last.task().is_none() => last.blocks.push(block),
                    _ => merged.push(Turn {
                        role,
                        msg: Some(msg),
                        blocks: vec![block],
                        keep_reasoning: true,
                        index,
                    }),
                }
            }
            _ => merged.push(Turn {
                role,
                msg: Some(msg),
                blocks: Vec::new(),
                keep_reasoning: true,
                index,
            }),
        }
    }
    Ok(merged)
}

/// `sort_tool_results_by_call_order`: within a user turn, tool results follow
/// the call order of the last assistant turn with tool calls (stable).
pub fn sort_tool_results(turns: &mut [Turn<'_>]) {
    let mut order: HashMap<String, usize> = HashMap::new();
    for turn in turns.iter_mut() {
        match turn.role {
            Role::Assistant => {
                let calls = turn
                    .msg
                    .and_then(|m| m.tool_calls.as_deref())
                    .unwrap_or(&[]);
                if calls.is_empty() {
                    continue;
                }
                order.clear();
                for (i, call) in calls.iter().enumerate() {
                    let id = call
                        .id
                        .as_deref()
                        .filter(|s| !s.is_empty())
                        .or(call.function.id.as_deref())
                        .unwrap_or("");
                    if !id.is_empty() {
                        order.insert(id.to_owned(), i);
                    }
                }
            }
            Role::User => {
                let is_tool = |b: &Block| matches!(b, Block::ToolResult { .. });
                if order.is_empty() || turn.blocks.iter().filter(|b| is_tool(b)).count() < 2 {
                    continue;
                }
                let mut tools: Vec<Block> =
                    turn.blocks.iter().filter(|b| is_tool(b)).cloned().collect();
                tools.sort_by_key(|b| match b {
                    Block::ToolResult { id, .. } => order.get(*id).copied().unwrap_or(0),
                    Block::Text(_) => 0,
                });
                let mut sorted = tools.into_iter();
                for block in turn.blocks.iter_mut() {
                    if is_tool(block) {
                        if let Some(next) = sorted.next() {
                            *block = next;
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// Index of the last user or developer turn.
pub fn last_user_index(turns: &[Turn<'_>]) -> Option<usize> {
    turns
        .iter()
        .rposition(|t| matches!(t.role, Role::User | Role::Developer))
}

/// `_drop_thinking_messages`: before the last user turn, assistant turns lose
/// their reasoning and developer turns are removed.
pub fn drop_thinking(turns: Vec<Turn<'_>>) -> Vec<Turn<'_>> {
    let last_user = last_user_index(&turns);
    turns
        .into_iter()
        .enumerate()
        .filter_map(|(i, mut turn)| {
            let before = last_user.is_some_and(|l| i < l);
            match turn.role {
                _ if !before => Some(turn),
                Role::User | Role::System | Role::LatestReminder | Role::Tool => Some(turn),
                Role::Assistant => {
                    turn.keep_reasoning = false;
                    Some(turn)
                }
                Role::Developer => None,
            }
        })
        .collect()
}
