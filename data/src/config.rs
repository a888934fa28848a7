//! The recipe `[data]` section: sources (file / directory / glob, field, kind,
//! weight, domain field, optional per-source mode and shuffle block), window
//! and batch sizes, pretraining vs SFT (padded or packed), the seed of mixing
//! and shuffling, the shuffle block, bad-row policy, prefetch depth and chat
//! options.

use crate::bad_rows::BadRowPolicy;
use crate::chat_message::ChatOptions;
use crate::error::DataError;
use crate::file_set::FileFormat;
use crate::packing::PackMode;
use crate::row::{FieldKind, RowSpec};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Pretraining or supervised fine-tuning, for the whole run (`[data] mode`)
/// or one source (`[[data.sources]] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataMode {
    /// Rows concatenated (each ending in EOS) and cut into windows of
    /// `seq_len + 1` tokens that overlap by one, so rows may span windows;
    /// text and `input_ids` rows train every token, conversations keep their
    /// assistant-only mask.
    #[default]
    Pretrain,
    /// Each row kept whole: one per window, or several with `sft_packing`; a
    /// row longer than a window is a bad row (`too_long`), one with nothing to
    /// train is `untrained`. Conversations train their assistant tokens, text
    /// and `input_ids` rows every token but the first (which would otherwise
    /// be predicted from the previous sample's EOS).
    Sft,
}

/// Default `[data] shuffle_block`.
pub const DEFAULT_SHUFFLE_BLOCK: usize = 1024;

/// Largest `shuffle_block` (a source holds one block of parsed rows in memory).
pub const MAX_SHUFFLE_BLOCK: usize = 1 << 20;

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
    /// `pretrain` (default) or `sft`; sources may override it.
    #[serde(default)]
    pub mode: DataMode,
    /// SFT: pack several conversations per window instead of padding each.
    #[serde(default)]
    pub sft_packing: bool,
    /// Seed of the source mixing and of the shuffling within sources.
    #[serde(default)]
    pub seed: u64,
    /// Rows per shuffle block (default 1024): each source reads this many rows
    /// and returns them in a seeded random order, and visits its files and
    /// parquet row groups in a seeded order each epoch. `0` or `1` disables
    /// shuffling (rows in file order). Sources may override it.
    #[serde(default = "default_shuffle_block")]
    pub shuffle_block: usize,
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
    /// Overrides `[data] mode` for this source (e.g. a `pretrain` text corpus
    /// in an SFT run: its rows are packed into their own EOS-separated windows
    /// with every token trained, while the conversations stay whole).
    #[serde(default)]
    pub mode: Option<DataMode>,
    /// Overrides `[data] shuffle_block` for this source.
    #[serde(default)]
    pub shuffle_block: Option<usize>,
}

fn default_true() -> bool {
    true
}
fn default_prefetch() -> usize {
    4
}
fn default_shuffle_block() -> usize {
    DEFAULT_SHUFFLE_BLOCK
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

    /// The mode of source `i` (its own, else `[data] mode`).
    pub fn source_mode(&self, i: usize) -> DataMode {
        self.sources
            .get(i)
            .and_then(|s| s.mode)
            .unwrap_or(self.mode)
    }

    /// How the samples of each source are packed.
    pub fn pack_modes(&self) -> Vec<PackMode> {
        (0..self.sources.len())
            .map(|i| match (self.source_mode(i), self.sft_packing) {
                (DataMode::Pretrain, _) => PackMode::Pretrain,
                (DataMode::Sft, false) => PackMode::SftPad,
                (DataMode::Sft, true) => PackMode::SftPack,
            })
            .collect()
    }

    /// The shuffle block of source `i` (its own, else `[data] shuffle_block`).
    pub fn shuffle_block(&self, i: usize) -> usize {
        self.sources
            .get(i)
            .and_then(|s| s.shuffle_block)
            .unwrap_or(self.shuffle_block)
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
        let block_message = format!(
            "must be at most {MAX_SHUFFLE_BLOCK} rows (a source holds one block in memory); \
             0 or 1 disables shuffling"
        );
        if self.shuffle_block > MAX_SHUFFLE_BLOCK {
            return Err(err("data.shuffle_block".into(), &block_message));
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
            if s.shuffle_block.is_some_and(|b| b > MAX_SHUFFLE_BLOCK) {
                return Err(err(
                    format!("data.sources[{i}].shuffle_block"),
                    &block_message,
                ));
            }
        }
        Ok(())
    }
}
