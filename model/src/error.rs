//! Typed errors of the model crate.

use thiserror::Error;

/// Everything that can go wrong while configuring, building or running the model.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A `config.json` (or preset override) breaks an invariant of the architecture.
    #[error("{source_name}: invalid config: {message}")]
    Config {
        /// The file or preset the config came from.
        source_name: String,
        /// What is wrong, naming the key.
        message: String,
    },
    /// The config file could not be read or parsed.
    #[error("{path}: {message}")]
    ConfigFile {
        /// Path of the file.
        path: String,
        /// Reader / JSON error.
        message: String,
    },
    /// A weight was missing, had the wrong shape, or was unexpected.
    #[error("tensor `{name}`: {message}")]
    Weight {
        /// Checkpoint name of the tensor.
        name: String,
        /// What is wrong (expected vs actual shape, missing, ...).
        message: String,
    },
    /// Bad input to the forward pass (token ids out of range, empty sequence, ...).
    #[error("invalid input: {0}")]
    Input(String),
}
