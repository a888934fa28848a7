//! Turns a parsed row into a tokenized sample with its loss mask and packing
//! mode: text and `input_ids` rows end with EOS (added unless present) and are
//! fully trained; conversations go through the V4 chat encoding and train only
//! assistant tokens.
//!
//! A text / `input_ids` row of an SFT-mode source does not train its first
//! token: in a packed window that label would be predicted from the previous
//! sample's EOS (an unrelated conversation), and at the start of a window it
//! is never a label anyway. In pretrain mode the stream is trained throughout,
//! document starts included (the usual pretraining objective).

use crate::bad_rows::{BadRow, BadRowKind};
use crate::chat_encoding::encode_chat;
use crate::chat_message::ChatOptions;
use crate::loss_mask::tokenize_chat;
use crate::packing::PackMode;
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
    /// How the packer windows it (its source's mode).
    pub mode: PackMode,
}

/// Tokenizes rows.
#[derive(Debug, Clone)]
pub struct SampleBuilder {
    tokenizer: Arc<V4Tokenizer>,
    chat: Vec<ChatOptions>,
    modes: Vec<PackMode>,
}

impl SampleBuilder {
    /// Uses `chat[source]` for `messages` rows and `modes[source]` for the
    /// packing of each source (default options and pretraining for sources
    /// beyond the lists).
    pub fn new(tokenizer: Arc<V4Tokenizer>, chat: Vec<ChatOptions>, modes: Vec<PackMode>) -> Self {
        SampleBuilder {
            tokenizer,
            chat,
            modes,
        }
    }

    /// Tokenizes `row` from source `source`.
    pub fn build(&self, source: usize, row: RawRow) -> Result<Sample, BadRow> {
        let bad = |kind| BadRow {
            location: row.location.clone(),
            kind,
        };
        let tokenize_err = |e: crate::error::DataError| bad(BadRowKind::Tokenize(e.to_string()));
        let mode = self
            .modes
            .get(source)
            .copied()
            .unwrap_or(PackMode::Pretrain);
        let sft = mode != PackMode::Pretrain;
        let (ids, loss_mask) = match &row.payload {
            RowPayload::Text(text) => {
                let mut ids = self.tokenizer.encode(text).map_err(tokenize_err)?;
                ids.push(self.tokenizer.eos_id());
                let mask = document_mask(ids.len(), sft);
                (ids, mask)
            }
            RowPayload::InputIds(ids) => {
                let mut ids = ids.clone();
                if ids.last() != Some(&self.tokenizer.eos_id()) {
                    ids.push(self.tokenizer.eos_id());
                }
                let mask = document_mask(ids.len(), sft);
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
            mode,
        })
    }
}

/// All ones, except the first token of a sample kept whole (SFT).
fn document_mask(len: usize, sft: bool) -> Vec<u8> {
    let mut mask = vec![1; len];
    if sft {
        if let Some(first) = mask.first_mut() {
            *first = 0;
        }
    }
    mask
}
