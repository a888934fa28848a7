//! The recipe `[data]` section: sources (file / directory / glob, field, kind,
//! weight, domain field), window and batch sizes, pretraining vs SFT (padded
//! or packed), mixing seed, bad-row policy, prefetch depth and chat options.

use crate::bad_rows::BadRowPolicy;
use crate::chat_message::ChatOptions;
use crate::error::DataError;
use crate::file_set::FileFormat;
use crate::packing::PackMode;
use crate::row::{FieldKind, RowSpec};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Pretraining or supervised fine-tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataMode {
    /// Documents concatenated (EOS-separated) and cut into windows.
    #[default]
    Pretrain,
    /// One conversation per window (or packed with `sft_packing`).
    Sft,
}

/// `[data]` of a recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `[[data.sources]]`.
    pub sources: Vec<SourceConfig>,
    /// Tokens per training sequence (inputs; windows hold `seq_len + 1`).
    pub seq_len: usize,
    /// Sequences per batch.
    pub batch_size: usize,
    /// `pretrain` (default) or `sft`.
    #[serde(default)]
    pub mode: DataMode,
    /// SFT: pack several conversations per window instead of padding each.
    #[serde(default)]
    pub sft_packing: bool,
    /// Seed of the source mixing.
    #[serde(default)]
    pub seed: u64,
    /// Start over when a source runs out (default true); false ends the data.
    #[serde(default = "default_true")]
    pub repeat: bool,
    /// `skip` (default) or `error`.
    #[serde(default)]
    pub bad_rows: BadRowPolicy,
    /// Batches the prefetch thread prepares ahead (at least 1).
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// Chat encoding options for `messages` sources.
    #[serde(default)]
    pub chat: ChatOptions,
    /// Tokenizer directory; the trainer defaults it to the model directory.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
}

/// `[[data.sources]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A file, a directory (its `.jsonl`/`.parquet` files) or a glob.
    pub path: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Overrides the format inferred from file extensions.
    #[serde(default)]
    pub format: Option<FileFormat>,
    /// Field / column with the payload (default `text`).
    #[serde(default = "default_field")]
    pub field: String,
    /// What the field holds; default from its name (`messages`, `input_ids`, else text).
    #[serde(default)]
    pub kind: Option<FieldKind>,
    /// Mixing weight (default 1).
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Field / column with a domain tag.
    #[serde(default)]
    pub domain_field: Option<String>,
    /// Chat options for this source; replaces `[data.chat]` when set.
    #[serde(default)]
    pub chat: Option<ChatOptions>,
}

fn default_true() -> bool {
    true
}
fn default_prefetch() -> usize {
    4
}
fn default_field() -> String {
    "text".into()
}
fn default_weight() -> f64 {
    1.0
}

impl SourceConfig {
    /// The field kind, explicit or inferred from the field name.
    pub fn kind(&self) -> FieldKind {
        self.kind.unwrap_or(match self.field.as_str() {
            "messages" | "conversations" => FieldKind::Messages,
            "input_ids" | "ids" | "tokens" => FieldKind::InputIds,
            _ => FieldKind::Text,
        })
    }

    /// The fields to read.
    pub fn row_spec(&self) -> RowSpec {
        RowSpec {
            field: self.field.clone(),
            kind: self.kind(),
            domain_field: self.domain_field.clone(),
        }
    }
}

impl DataConfig {
    /// Chat options of each source (its own, else `[data.chat]`).
    pub fn chat_options(&self) -> Vec<ChatOptions> {
        self.sources
            .iter()
            .map(|s| s.chat.clone().unwrap_or_else(|| self.chat.clone()))
            .collect()
    }

    /// How samples are packed.
    pub fn pack_mode(&self) -> PackMode {
        match (self.mode, self.sft_packing) {
            (DataMode::Pretrain, _) => PackMode::Pretrain,
            (DataMode::Sft, false) => PackMode::SftPad,
            (DataMode::Sft, true) => PackMode::SftPack,
        }
    }

    /// Checks values serde cannot; errors name the key.
    pub fn validate(&self) -> Result<(), DataError> {
        let err = |key: String, message: &str| DataError::Config {
            key,
            message: message.to_owned(),
        };
        if self.sources.is_empty() {
            return Err(err(
                "data.sources".into(),
                "at least one source is required",
            ));
        }
        if self.seq_len == 0 {
            return Err(err("data.seq_len".into(), "must be positive"));
        }
        if self.batch_size == 0 {
            return Err(err("data.batch_size".into(), "must be positive"));
        }
        for (i, s) in self.sources.iter().enumerate() {
            if !(s.weight.is_finite() && s.weight > 0.0) {
                return Err(err(
                    format!("data.sources[{i}].weight"),
                    "must be a positive number",
                ));
            }
            if s.field.is_empty() {
                return Err(err(format!("data.sources[{i}].field"), "must not be empty"));
            }
        }
        Ok(())
    }
}
