//! `[data]`: where training tokens come from — `kind = "synthetic"` (a seeded random bigram
//! chain), `kind = "tokens"` (a pre-tokenized safetensors / npy file), or the [`DataConfig`] form
//! of `v4-data` for text and chat sources (`kind = "text"`, or any table with
//! `[[data.sources]]`) — and whether packed samples are masked from each other
//! (`sample_masking`, V4's sample-level attention masking; default on).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::{Table, Value};
use v4_data::{DataConfig, DataError};

use super::de::{path, typed};
use super::error::Result;
use super::source::SourceMap;
use super::train::TrainConfig;

/// `kind = "synthetic"`: sequences following a seeded random bigram chain over `0..vocab` from
/// random starts (learnable, so the loss falls), reproducible from the seed and the step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticData {
    /// Seed of the token stream (default 0).
    pub seed: u64,
    /// Ids are drawn from `0..vocab` (default: the model's `vocab_size`; at most that).
    pub vocab: Option<usize>,
    /// Mean document length: rows pack documents of `doc_len/2 ..= 3·doc_len/2` tokens, each
    /// starting the chain afresh (default 0: one document per row).
    pub doc_len: usize,
}

/// `kind = "tokens"`: one flat array of token ids (I32 / I64 / U16 / U32; a 2-D `[n, L]` array
/// is read flattened), cut into windows of `seq_len + 1` tokens with stride `seq_len`, visited in
/// a seeded random order per epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    /// A `.safetensors` or `.npy` file (required).
    pub path: PathBuf,
    /// Tensor name inside a safetensors file (default: its only tensor).
    #[serde(default)]
    pub tensor: Option<String>,
    /// Seed of the window order (default: `[train] seed`).
    #[serde(default)]
    pub seed: Option<u64>,
    /// End-of-document token: a new sample starts after each one (default: none, every window
    /// is one sample).
    #[serde(default)]
    pub eos_id: Option<i64>,
}

/// On-disk format of a [`TokenFile`], from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFormat {
    /// `.safetensors`.
    Safetensors,
    /// `.npy`.
    Npy,
}

impl TokenFile {
    /// The format, or `None` for an unsupported extension.
    pub fn format(&self) -> Option<TokenFormat> {
        match self.path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => Some(TokenFormat::Safetensors),
            Some("npy") => Some(TokenFormat::Npy),
            _ => None,
        }
    }
}

/// The `[data]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct DataRecipe {
    /// Where the tokens come from.
    pub source: DataSource,
    /// V4's sample-level attention masking: each packed sample attends only to itself, labels
    /// and MTP targets never cross a sample boundary (default true; false keeps cross-document
    /// context, e.g. for continued pretraining).
    pub sample_masking: bool,
}

impl Default for DataRecipe {
    fn default() -> Self {
        Self {
            source: DataSource::default(),
            sample_masking: true,
        }
    }
}

/// Where training tokens come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// Seeded synthetic tokens (default when `[data]` is absent).
    Synthetic(SyntheticData),
    /// A tokenized file.
    Tokens(TokenFile),
    /// Text / chat sources read by `v4-data`.
    Text(DataConfig),
}

impl Default for DataSource {
    fn default() -> Self {
        DataSource::Synthetic(SyntheticData::default())
    }
}

impl DataRecipe {
    /// Reads `[data]`; text sources inherit `seq_len` / `batch_size` from `[train]`.
    pub(crate) fn parse(
        src: &SourceMap<'_>,
        mut table: Table,
        train: &TrainConfig,
    ) -> Result<Self> {
        let sample_masking = match table.remove("sample_masking") {
            None => true,
            Some(Value::Boolean(b)) => b,
            Some(other) => {
                return Err(src.error(
                    &path(&["data", "sample_masking"]),
                    format!(
                        "has the wrong type (expected true or false, got {})",
                        other.type_str()
                    ),
                ))
            }
        };
        Ok(Self {
            source: DataSource::parse(src, table, train)?,
            sample_masking,
        })
    }

    /// Checks the synthetic vocabulary fits the model's.
    pub(crate) fn check_vocab(&self, src: &SourceMap<'_>, model_vocab: usize) -> Result<()> {
        self.source.check_vocab(src, model_vocab)
    }
}

impl DataSource {
    fn parse(src: &SourceMap<'_>, mut table: Table, train: &TrainConfig) -> Result<Self> {
        let kind = match table.remove("kind") {
            None if table.contains_key("sources") => "text".to_string(),
            None => "synthetic".to_string(),
            Some(Value::String(s)) => s,
            Some(other) => {
                return Err(src.error(
                    &path(&["data", "kind"]),
                    format!(
                        "has the wrong type (expected a string, got {})",
                        other.type_str()
                    ),
                ))
            }
        };
        let value = Value::Table(table);
        match kind.as_str() {
            "synthetic" => Ok(DataSource::Synthetic(typed(src, &["data"], value)?)),
            "tokens" => {
                let file: TokenFile = typed(src, &["data"], value)?;
                if file.format().is_none() {
                    return Err(src.error(
                        &path(&["data", "path"]),
                        format!(
                            "must end in .safetensors or .npy, got {:?}",
                            file.path.display().to_string()
                        ),
                    ));
                }
                Ok(DataSource::Tokens(file))
            }
            "text" => Self::text(src, value, train),
            other => Err(src.error(
                &path(&["data", "kind"]),
                format!("must be \"synthetic\", \"tokens\" or \"text\", got {other:?}"),
            )),
        }
    }

    fn text(src: &SourceMap<'_>, mut value: Value, train: &TrainConfig) -> Result<Self> {
        if let Value::Table(t) = &mut value {
            t.entry("seq_len")
                .or_insert(Value::Integer(train.seq_len as i64));
            t.entry("batch_size")
                .or_insert(Value::Integer(train.micro_batch as i64));
        }
        let cfg: DataConfig = typed(src, &["data"], value)?;
        cfg.validate().map_err(|e| match e {
            DataError::Config { key, message } => src.error(
                &key.split('.').map(str::to_string).collect::<Vec<_>>(),
                message,
            ),
            other => src.error(&path(&["data"]), other.to_string()),
        })?;
        for (key, got, want) in [
            ("seq_len", cfg.seq_len, train.seq_len),
            ("batch_size", cfg.batch_size, train.micro_batch),
        ] {
            if got != want {
                return Err(src.error(
                    &path(&["data", key]),
                    format!("= {got} disagrees with [train] ({want}); set it in [train] only"),
                ));
            }
        }
        Ok(DataSource::Text(cfg))
    }

    fn check_vocab(&self, src: &SourceMap<'_>, model_vocab: usize) -> Result<()> {
        if let DataSource::Tokens(TokenFile {
            eos_id: Some(e), ..
        }) = self
        {
            if *e < 0 || *e >= model_vocab as i64 {
                return Err(src.error(
                    &path(&["data", "eos_id"]),
                    format!("must be in 0..{model_vocab} (the model's vocab_size), got {e}"),
                ));
            }
        }
        if let DataSource::Synthetic(SyntheticData { vocab: Some(v), .. }) = self {
            if *v == 0 || *v > model_vocab {
                return Err(src.error(
                    &path(&["data", "vocab"]),
                    format!("must be in 1..={model_vocab} (the model's vocab_size), got {v}"),
                ));
            }
        }
        Ok(())
    }
}
