//! Bad-row handling: what can be wrong with a row, where it is (`file:line`),
//! the `skip` / `error` policy and the running counts reported to the trainer.

use crate::error::{ChatError, DataError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// Where a row comes from: a file and its 1-based line (jsonl) or row (parquet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowLocation {
    /// The data file.
    pub file: PathBuf,
    /// 1-based line (jsonl) or row (parquet) number.
    pub line: u64,
}

impl fmt::Display for RowLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// What is wrong with a row.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadRowKind {
    /// The line is not valid JSON or a field has the wrong type.
    #[error("malformed row: {0}")]
    Malformed(String),
    /// The configured field is absent or null.
    #[error("missing field `{0}`")]
    MissingField(String),
    /// The conversation cannot be encoded (unknown role, …).
    #[error("chat encoding: {0}")]
    Chat(#[from] ChatError),
    /// The sample does not fit in one training window.
    #[error("{tokens} tokens exceed the window of {max} tokens")]
    TooLong {
        /// Tokens in the sample.
        tokens: usize,
        /// Maximum allowed (`seq_len + 1`).
        max: usize,
    },
    /// The tokenizer rejected the text.
    #[error("tokenizer: {0}")]
    Tokenize(String),
    /// An SFT conversation without any assistant token to train on.
    #[error("no assistant tokens to train on")]
    Untrained,
}

impl BadRowKind {
    /// Short stable name used as a counter key.
    pub fn name(&self) -> &'static str {
        match self {
            BadRowKind::Malformed(_) => "malformed",
            BadRowKind::MissingField(_) => "missing_field",
            BadRowKind::Chat(ChatError::UnknownRole { .. }) => "unknown_role",
            BadRowKind::Chat(_) => "chat",
            BadRowKind::TooLong { .. } => "too_long",
            BadRowKind::Tokenize(_) => "tokenize",
            BadRowKind::Untrained => "untrained",
        }
    }
}

/// A rejected row and where it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{location}: {kind}")]
pub struct BadRow {
    /// File and line.
    pub location: RowLocation,
    /// The problem.
    pub kind: BadRowKind,
}

/// What to do with a bad row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BadRowPolicy {
    /// Count it, log it, continue.
    #[default]
    Skip,
    /// Stop with [`DataError::BadRow`].
    Error,
}

/// Counts of skipped rows by kind, and the first few examples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BadRowStats {
    /// Total skipped rows.
    pub total: u64,
    /// Skipped rows per [`BadRowKind::name`].
    pub by_kind: std::collections::BTreeMap<String, u64>,
    /// `file:line: problem` of the first [`BadRowStats::MAX_EXAMPLES`] rows.
    pub examples: Vec<String>,
}

impl BadRowStats {
    /// How many examples are kept.
    pub const MAX_EXAMPLES: usize = 16;

    /// Applies `policy` to `row`: counts and logs it (`skip`) or returns it as an error.
    pub fn handle(&mut self, policy: BadRowPolicy, row: BadRow) -> Result<(), DataError> {
        if policy == BadRowPolicy::Error {
            return Err(row.into());
        }
        self.total += 1;
        *self.by_kind.entry(row.kind.name().to_owned()).or_default() += 1;
        if self.examples.len() < Self::MAX_EXAMPLES {
            tracing::warn!("skipping bad row {row}");
            self.examples.push(row.to_string());
        } else {
            tracing::debug!("skipping bad row {row}");
        }
        Ok(())
    }
}

impl fmt::Display for BadRowStats {
    /// `N bad rows skipped (kind: n, …)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bad rows skipped", self.total)?;
        if !self.by_kind.is_empty() {
            let kinds: Vec<String> = self
                .by_kind
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            write!(f, " ({})", kinds.join(", "))?;
        }
        Ok(())
    }
}
