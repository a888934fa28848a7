//! Turns a parsed row into a tokenized sample with its loss mask: text and
//! `input_ids` rows are fully trained and end with EOS (added unless present); conversations go
//! through the V4 chat encoding and train only assistant tokens.

use crate::bad_rows::{BadRow, BadRowKind};
use crate::chat_encoding::encode_chat;
use crate::chat_message::ChatOptions;
use crate::loss_mask::tokenize_chat;
use crate::row::{RawRow, RowPayload};
use crate::tokenizer::V4Tokenizer;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A tokenized document or conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Token ids.
    pub ids: Vec<u32>,
    /// 1 = trained token.
    pub loss_mask: Vec<u8>,
    /// Index of the source it came from.
    pub source: usize,
    /// Domain tag of the row.
    pub domain: Option<String>,
}

/// Tokenizes rows.
#[derive(Debug, Clone)]
pub struct SampleBuilder {
    tokenizer: Arc<V4Tokenizer>,
    chat: Vec<ChatOptions>,
}

impl SampleBuilder {
    /// Uses `chat[source]` for `messages` rows of each source (default options
    /// for sources beyond the list).
    pub fn new(tokenizer: Arc<V4Tokenizer>, chat: Vec<ChatOptions>) -> Self {
        SampleBuilder { tokenizer, chat }
    }

    /// Tokenizes `row` from source `source`.
    pub fn build(&self, source: usize, row: RawRow) -> Result<Sample, BadRow> {
        let bad = |kind| BadRow {
            location: row.location.clone(),
            kind,
        };
        let tokenize_err = |e: crate::error::DataError| bad(BadRowKind::Tokenize(e.to_string()));
        let (ids, loss_mask) = match &row.payload {
            RowPayload::Text(text) => {
                let mut ids = self.tokenizer.encode(text).map_err(tokenize_err)?;
                ids.push(self.tokenizer.eos_id());
                let mask = vec![1; ids.len()];
                (ids, mask)
            }
            RowPayload::InputIds(ids) => {
                let mut ids = ids.clone();
                if ids.last() != Some(&self.tokenizer.eos_id()) {
                    ids.push(self.tokenizer.eos_id());
                }
                let mask = vec![1; ids.len()];
                (ids, mask)
            }
            RowPayload::Messages(messages) => {
                let default = ChatOptions::default();
                let options = self.chat.get(source).unwrap_or(&default);
                let enc = encode_chat(messages, options).map_err(|e| bad(e.into()))?;
                let t = tokenize_chat(&self.tokenizer, &enc).map_err(tokenize_err)?;
                (t.ids, t.loss_mask)
            }
        };
        Ok(Sample {
            ids,
            loss_mask,
            source,
            domain: row.domain,
        })
    }
}
