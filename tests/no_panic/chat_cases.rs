//! `chat-encode` input lines: random bytes (invalid UTF-8 included), damaged JSON, and
//! random-but-structured requests — unknown roles, content of every JSON type, tool calls with
//! odd arguments, deep nesting, long strings.

use serde_json::{json, Value};

use super::gen::Gen;
use super::model_dir::json_value;

const ROLES: [&str; 9] = [
    "system",
    "user",
    "assistant",
    "tool",
    "developer",
    "latest_reminder",
    "",
    "User",
    "function",
];

/// Nested arrays `depth` deep.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

fn content(g: &mut Gen) -> Value {
    match g.below(14) {
        0..=8 => json!(g.string(40)),
        9 => Value::Null,
        10 => json!([{"type": "text", "text": g.string(10)}, {"type": g.string(4)}, {}]),
        11 => json!("x".repeat(g.below(20_000))),
        _ => json_value(g),
    }
}

fn tool_call(g: &mut Gen) -> Value {
    let arguments = match g.below(8) {
        0 => json!({"a": g.int(), "b": g.string(5), "c": [g.float().to_string()]}),
        1 => json!(format!("{{\"q\": {}}}", g.int())),
        2 => json!(g.string(12)),
        3 => json!(nested(g.below(200))),
        4 => json!("[1, 2]"),
        5 | 6 => json!(format!(
            "{{\"a\": {}, \"s\": {}}}",
            g.int(),
            json!(g.string(6))
        )),
        _ => json_value(g),
    };
    let mut call = json!({"function": {"name": g.string(6), "arguments": arguments}});
    if g.chance(0.7) {
        call["id"] = json!(g.string(3));
    }
    if g.chance(0.05) {
        call["function"] = json_value(g);
    }
    call
}

fn message(g: &mut Gen) -> Value {
    let role = if g.chance(0.9) {
        ROLES[g.below(6)]
    } else {
        *g.pick(&ROLES)
    };
    let mut m = json!({"role": role, "content": content(g)});
    if g.chance(0.2) {
        m["reasoning_content"] = if g.chance(0.9) {
            json!(g.string(20))
        } else {
            json_value(g)
        };
    }
    if g.chance(0.2) {
        m["tool_calls"] = json!((0..g.below(4)).map(|_| tool_call(g)).collect::<Vec<_>>());
    }
    if g.chance(0.15) {
        m["tool_call_id"] = json!(g.string(3));
    }
    if g.chance(0.15) {
        m["task"] = json!(g.pick(&[
            "action",
            "query",
            "authority",
            "domain",
            "title",
            "read_url",
            "x",
            ""
        ]));
    }
    if g.chance(0.1) {
        m["wo_eos"] = json!(g.chance(0.5));
    }
    if g.chance(0.15) {
        m["tools"] = json!([{"function": {"name": g.string(4), "parameters": json_value(g)}}]);
    }
    if g.chance(0.1) {
        m["response_format"] = json_value(g);
    }
    if g.chance(0.02) {
        m[g.string(5)] = json_value(g);
    }
    m
}

/// One input line (without the newline).
pub fn line(g: &mut Gen) -> Vec<u8> {
    match g.below(16) {
        0 => g
            .bytes_upto(120)
            .into_iter()
            .filter(|b| *b != b'\n')
            .collect(),
        1 => {
            let valid = json!({"messages": [{"role": "user", "content": "hi"}]}).to_string();
            g.corrupt(valid.as_bytes())
                .into_iter()
                .filter(|b| *b != b'\n')
                .collect()
        }
        2 => format!("{{\"messages\": {}}}", nested(100 + g.below(1000))).into_bytes(),
        3 => json_value(g).to_string().into_bytes(),
        _ => {
            let messages: Vec<Value> = (0..g.below(7)).map(|_| message(g)).collect();
            let mut req = json!({"messages": messages});
            if g.chance(0.4) {
                req["thinking_mode"] = json!(g.pick(&["chat", "thinking", "thinking", "x"]));
            }
            if g.chance(0.2) {
                req["drop_thinking"] = json!(g.chance(0.5));
            }
            if g.chance(0.2) {
                req["reasoning_effort"] = json!(g.pick(&["high", "max", "max", "low"]));
            }
            if g.chance(0.05) {
                req["messages"] = json_value(g);
            }
            req.to_string().into_bytes()
        }
    }
}

/// A jsonl file of one line, sometimes a few.
pub fn file(g: &mut Gen) -> Vec<u8> {
    let mut out = Vec::new();
    let lines = if g.chance(0.8) { 1 } else { 2 + g.below(3) };
    for _ in 0..lines {
        out.extend(line(g));
        out.push(b'\n');
    }
    out
}
