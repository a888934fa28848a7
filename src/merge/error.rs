//! Errors of `v4train merge`; each names the directory, file or tensor at fault.

use std::path::PathBuf;
use thiserror::Error;
use v4_checkpoints::CheckpointError;

/// Everything that stops a merge.
#[derive(Debug, Error)]
pub enum MergeError {
    /// `adapter.json` names another base than the one given.
    #[error(transparent)]
    BaseMismatch(Box<BaseMismatch>),
    /// An adapter tensor adapts a projection the base does not have.
    #[error(
        "{}: adapter tensor `{tensor}` adapts `{projection}`, which the base model does not have",
        file.display()
    )]
    UnknownProjection {
        /// `adapters.safetensors`.
        file: PathBuf,
        /// The adapter tensor.
        tensor: String,
        /// The projection its name points to.
        projection: String,
    },
    /// An adapter tensor of a projection that `adapter.json` does not target (the trained model
    /// never used it).
    #[error(
        "{}: adapter tensor `{tensor}` adapts `{projection}`, which `lora.targets` of adapter.json \
         does not target (the trained model never used it)",
        file.display()
    )]
    Untargeted {
        /// `adapters.safetensors`.
        file: PathBuf,
        /// The adapter tensor.
        tensor: String,
        /// The projection it adapts.
        projection: String,
    },
    /// A targeted projection has no adapter tensor.
    #[error(
        "{}: no adapter tensor `{tensor}`, but `lora.targets` of adapter.json targets `{projection}`",
        file.display()
    )]
    Missing {
        /// `adapters.safetensors`.
        file: PathBuf,
        /// The missing tensor.
        tensor: String,
        /// The projection it should adapt.
        projection: String,
    },
    /// An adapter tensor's shape disagrees with its projection in the base.
    #[error(transparent)]
    Shape(Box<ShapeMismatch>),
    /// An adapter file or configuration that cannot be used (dtype, header, spec values).
    #[error("{}: {message}", file.display())]
    Adapter {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A merged weight holds a NaN or infinity.
    #[error("tensor `{tensor}`: merged value at flat index {index} is not finite")]
    NonFinite {
        /// The release tensor.
        tensor: String,
        /// First bad element.
        index: usize,
    },
    /// The output directory would overwrite an input.
    #[error("{}: {message}", dir.display())]
    Usage {
        /// The output directory.
        dir: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Reading the base or writing the output.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Reading `adapter.json`, hashing the base, writing the report.
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

/// The base given is not the one the adapters were trained on.
#[derive(Debug, Error)]
#[error(
    "{}: the adapters were trained on base `{recorded_path}` with content hash {recorded}, \
     but {} hashes to {actual}; merging them into another base gives a wrong model \
     (pass --force-base to merge anyway)",
    adapter.display(),
    base.display()
)]
pub struct BaseMismatch {
    /// The adapter directory.
    pub adapter: PathBuf,
    /// The base path recorded in `adapter.json`.
    pub recorded_path: String,
    /// The content hash recorded in `adapter.json`.
    pub recorded: String,
    /// The base directory given.
    pub base: PathBuf,
    /// Its content hash.
    pub actual: String,
}

/// An adapter tensor whose shape disagrees with its projection.
#[derive(Debug, Error)]
#[error(
    "{}: adapter tensor `{tensor}` has shape {found:?}, but `{projection}` of the base at \
     rank {rank} needs {expected:?}",
    file.display()
)]
pub struct ShapeMismatch {
    /// `adapters.safetensors`.
    pub file: PathBuf,
    /// The adapter tensor.
    pub tensor: String,
    /// The projection it adapts.
    pub projection: String,
    /// Rank from adapter.json.
    pub rank: usize,
    /// Shape the base implies.
    pub expected: Vec<usize>,
    /// Shape stored.
    pub found: Vec<usize>,
}
