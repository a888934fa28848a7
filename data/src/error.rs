//! Typed errors of the data crate. Every variant names the file, the
//! `file:line` of a row, the config key or the message index it is about.

use crate::bad_rows::BadRow;
use std::path::PathBuf;

/// Why a conversation cannot be rendered with the V4 chat encoding.
/// `index` is the 0-based position of the message in the input list.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChatError {
    /// A role other than system/user/developer/assistant/tool/latest_reminder.
    #[error("message {index}: unknown role `{role}`")]
    UnknownRole {
        /// Message index.
        index: usize,
        /// The role found.
        role: String,
    },
    /// Developer messages must have non-empty text content.
    #[error("message {index}: a developer message needs non-empty content")]
    EmptyDeveloper {
        /// Message index.
        index: usize,
    },
    /// Content of a type the encoding cannot render for this role.
    #[error("message {index} ({role}): unsupported content: {detail}")]
    UnsupportedContent {
        /// Message index.
        index: usize,
        /// The message role.
        role: String,
        /// What was found.
        detail: String,
    },
    /// Tool-call arguments that parse as JSON but not as an object.
    #[error("message {index}: tool-call arguments must be a JSON object, got {got}")]
    BadToolArguments {
        /// Message index.
        index: usize,
        /// The parsed arguments.
        got: String,
    },
    /// A `task` value that has no task token.
    #[error("message {index}: invalid task `{task}`")]
    InvalidTask {
        /// Message index.
        index: usize,
        /// The task found.
        task: String,
    },
}

/// Errors of the data crate.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The tokenizer file could not be loaded.
    #[error("tokenizer {}: {message}", path.display())]
    TokenizerLoad {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Encoding or decoding text failed.
    #[error("tokenizer {}: {message}", path.display())]
    Tokenize {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A row that cannot be used (under the `error` policy, or in `chat-encode`).
    #[error("{0}")]
    BadRow(Box<BadRow>),
    /// A parquet file could not be read.
    #[error("{}: parquet: {message}", path.display())]
    Parquet {
        /// The parquet file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Invalid configuration value.
    #[error("config `{key}`: {message}")]
    Config {
        /// The offending key, e.g. `data.sources[1].weight`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A resume cursor that does not fit the configuration.
    #[error("data cursor `{key}`: {message}")]
    Cursor {
        /// The offending cursor field.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Every row for a long stretch was bad.
    #[error("{count} consecutive bad rows, last: {last}")]
    NoUsableRows {
        /// Consecutive bad rows.
        count: u64,
        /// The last one, with `file:line`.
        last: String,
    },
    /// The prefetch thread stopped unexpectedly.
    #[error("data prefetch thread: {0}")]
    Prefetch(String),
}

impl From<BadRow> for DataError {
    fn from(row: BadRow) -> Self {
        DataError::BadRow(Box::new(row))
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
