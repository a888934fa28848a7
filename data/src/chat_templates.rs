//! The literal strings of DeepSeek-V4's `encoding_dsv4`: special tokens, the
//! tool-use system prompt, the response-format section and the DSML tool-call
//! block rendering.

use crate::chat_message::{ToolCall, ToolDef};
use crate::error::ChatError;
use crate::json_py::PyJson;

/// Begin-of-sentence token.
pub const BOS: &str = "<｜begin▁of▁sentence｜>";
/// End-of-sentence token (closes every assistant turn).
pub const EOS: &str = "<｜end▁of▁sentence｜>";
/// Opens a user (or developer) turn.
pub const USER: &str = "<｜User｜>";
/// Opens an assistant turn.
pub const ASSISTANT: &str = "<｜Assistant｜>";
/// Opens a latest-reminder message.
pub const LATEST_REMINDER: &str = "<｜latest_reminder｜>";
/// Starts reasoning.
pub const THINK_START: &str = "<think>";
/// Ends reasoning (alone, it means "no reasoning").
pub const THINK_END: &str = "</think>";
/// Prefix of every DSML tag.
pub const DSML: &str = "｜DSML｜";

/// Prepended to the first message in thinking mode with `reasoning_effort = "max"`.
pub const REASONING_EFFORT_MAX: &str = "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n\
You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial scenarios.\n\
Explicitly write out your entire deliberation process, documenting every intermediate step, considered alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

/// Task special tokens (`task` key of a message).
pub fn task_token(task: &str) -> Option<&'static str> {
    Some(match task {
        "action" => "<｜action｜>",
        "query" => "<｜query｜>",
        "authority" => "<｜authority｜>",
        "domain" => "<｜domain｜>",
        "title" => "<｜title｜>",
        "read_url" => "<｜read_url｜>",
        _ => return None,
    })
}

/// The `## Tools` section for a list of OpenAI tool definitions.
pub fn render_tools(tools: &[ToolDef]) -> String {
    let schemas: Vec<String> = tools.iter().map(|t| t.function.dumps()).collect();
    format!(
        "## Tools\n\n\
You have access to a set of tools to help answer the user's question. You can invoke tools by writing a \"<{DSML}tool_calls>\" block like the following:\n\n\
<{DSML}tool_calls>\n\
<{DSML}invoke name=\"$TOOL_NAME\">\n\
<{DSML}parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</{DSML}parameter>\n\
...\n\
</{DSML}invoke>\n\
<{DSML}invoke name=\"$TOOL_NAME2\">\n\
...\n\
</{DSML}invoke>\n\
</{DSML}tool_calls>\n\n\
String parameters should be specified as is and set `string=\"true\"`. For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n\n\
If thinking_mode is enabled (triggered by {THINK_START}), you MUST output your complete reasoning inside {THINK_START}...{THINK_END} BEFORE any tool calls or final response.\n\n\
Otherwise, output directly after {THINK_END} with tool calls or final response.\n\n\
### Available Tool Schemas\n\n\
{}\n\n\
You MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n",
        schemas.join("\n")
    )
}

/// The `## Response Format` section.
pub fn render_response_format(schema: &PyJson) -> String {
    format!(
        "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n{}",
        schema.dumps()
    )
}

/// The DSML block for an assistant's tool calls, including its leading `"\n\n"`.
/// `index` is the message index used in errors.
pub fn render_tool_calls(calls: &[ToolCall], index: usize) -> Result<String, ChatError> {
    let mut invokes = Vec::with_capacity(calls.len());
    for call in calls {
        let params = render_arguments(&call.function.arguments, index)?;
        invokes.push(format!(
            "<{DSML}invoke name=\"{}\">\n{}\n</{DSML}invoke>",
            call.function.name, params
        ));
    }
    Ok(format!(
        "\n\n<{DSML}tool_calls>\n{}\n</{DSML}tool_calls>",
        invokes.join("\n")
    ))
}

/// One `<｜DSML｜parameter …>` line per argument. A string that is not JSON
/// becomes a single `arguments` parameter, as in the reference.
fn render_arguments(arguments: &PyJson, index: usize) -> Result<String, ChatError> {
    let parsed;
    let entries: Vec<(&str, &PyJson)> = match arguments {
        PyJson::Str(raw) => match PyJson::parse(raw) {
            Ok(value) => {
                parsed = value;
                match &parsed {
                    PyJson::Object(o) => o.iter().map(|(k, v)| (k.as_str(), v)).collect(),
                    other => {
                        return Err(ChatError::BadToolArguments {
                            index,
                            got: other.dumps(),
                        })
                    }
                }
            }
            Err(_) => vec![("arguments", arguments)],
        },
        other => vec![("arguments", other)],
    };
    let lines: Vec<String> = entries
        .into_iter()
        .map(|(key, value)| {
            let (is_str, text) = match value {
                PyJson::Str(s) => ("true", s.clone()),
                other => ("false", other.dumps()),
            };
            format!("<{DSML}parameter name=\"{key}\" string=\"{is_str}\">{text}</{DSML}parameter>")
        })
        .collect();
    Ok(lines.join("\n"))
}
