//! Typed errors of the checkpoint crate. Every variant names the file (or directory) and, where
//! one is involved, the tensor, so a user can find the bad byte without a debugger.

use std::path::PathBuf;
use thiserror::Error;

/// Everything that can go wrong while reading or writing a V4 checkpoint directory.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// An operating-system error on a file or directory.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A safetensors file whose header or layout is invalid (truncated, corrupt JSON, offsets that
    /// overlap or leave the file, header too large).
    #[error("{}: invalid safetensors file: {message}", file.display())]
    Format {
        /// The shard.
        file: PathBuf,
        /// What is wrong (names the tensor when the header does).
        message: String,
    },
    /// A tensor that cannot be used as stored: wrong dtype or shape, missing scale, NaN scale, ...
    #[error("{}: tensor `{tensor}`: {message}", file.display())]
    Tensor {
        /// The shard (or output shard) holding the tensor.
        file: PathBuf,
        /// Checkpoint name of the tensor.
        tensor: String,
        /// What is wrong (expected vs actual).
        message: String,
    },
    /// A tensor the caller asked for is not in the checkpoint.
    #[error("{}: tensor `{tensor}` is not in the checkpoint", dir.display())]
    NotFound {
        /// The model directory.
        dir: PathBuf,
        /// The requested name.
        tensor: String,
    },
    /// The directory is not a complete checkpoint (an interrupted export, a missing shard, ...).
    #[error("{}: incomplete checkpoint: {message}", dir.display())]
    Incomplete {
        /// The model directory.
        dir: PathBuf,
        /// What is missing.
        message: String,
    },
    /// A JSON file (`config.json`, the shard index) that cannot be parsed or is invalid.
    #[error("{}: {message}", file.display())]
    Json {
        /// The JSON file.
        file: PathBuf,
        /// Parser or validation message.
        message: String,
    },
    /// Export refused to write into a non-empty directory.
    #[error("{}: output directory is not empty (use --force to overwrite)", dir.display())]
    OutputNotEmpty {
        /// The output directory.
        dir: PathBuf,
    },
    /// A caller-side mistake while writing (unknown tensor, duplicate write, bad option).
    #[error("{}: {message}", dir.display())]
    Usage {
        /// The output directory.
        dir: PathBuf,
        /// What is wrong, naming the tensor.
        message: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// Wraps an I/O error with the path it happened on.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.into();
    move |source| CheckpointError::Io { path, source }
}
