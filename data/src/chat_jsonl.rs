//! The `chat-encode` pipeline: reads a jsonl file of chat requests line by line
//! and writes, per line, `{"text", "ids", "loss_mask"}`.

use crate::bad_rows::{BadRow, BadRowKind, RowLocation};
use crate::chat_encoding::encode_chat;
use crate::chat_message::{ChatOptions, ChatRequest};
use crate::error::DataError;
use crate::loss_mask::tokenize_chat;
use crate::tokenizer::V4Tokenizer;
use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

/// One output line.
#[derive(Debug, Serialize)]
pub struct EncodedLine<'a> {
    /// Rendered text.
    pub text: &'a str,
    /// Token ids.
    pub ids: &'a [u32],
    /// Per-token loss mask.
    pub loss_mask: &'a [u8],
}

/// Encodes every non-blank line of `input` into `output`; returns the line count.
/// The first bad line stops with an error naming `file:line`.
pub fn encode_chat_jsonl(
    tokenizer: &V4Tokenizer,
    input: &Path,
    defaults: &ChatOptions,
    output: &mut dyn Write,
) -> Result<usize, DataError> {
    let file = std::fs::File::open(input).map_err(|source| DataError::Io {
        path: input.to_path_buf(),
        source,
    })?;
    let mut count = 0;
    for (n, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(|source| DataError::Io {
            path: input.to_path_buf(),
            source,
        })?;
        let bad = |kind| BadRow {
            location: RowLocation {
                file: input.to_path_buf(),
                line: n as u64 + 1,
            },
            kind,
        };
        let line = String::from_utf8(line).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            bad(BadRowKind::Malformed(format!("invalid UTF-8 at byte {at}")))
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let request: ChatRequest =
            serde_json::from_str(&line).map_err(|e| bad(BadRowKind::Malformed(e.to_string())))?;
        let encoding = encode_chat(&request.messages, &request.options(defaults))
            .map_err(|e| bad(BadRowKind::Chat(e)))?;
        let tokens = tokenize_chat(tokenizer, &encoding)?;
        let out = EncodedLine {
            text: &encoding.text,
            ids: &tokens.ids,
            loss_mask: &tokens.loss_mask,
        };
        let json =
            serde_json::to_string(&out).map_err(|e| bad(BadRowKind::Malformed(e.to_string())))?;
        writeln!(output, "{json}").map_err(|source| DataError::Io {
            path: "<output>".into(),
            source,
        })?;
        count += 1;
    }
    Ok(count)
}
