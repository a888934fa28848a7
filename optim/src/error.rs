//! Typed errors of the optimizer crate.

use thiserror::Error;

/// Everything that can go wrong while configuring or stepping the optimizers.
#[derive(Debug, Error)]
pub enum OptimError {
    /// A parameter routed to Muon is not a matrix or a stack of matrices.
    #[error(
        "parameter `{name}` has rank {rank}; Muon needs a 2-D matrix or a 3-D stack of matrices"
    )]
    MuonRank {
        /// Parameter path.
        name: String,
        /// Its rank.
        rank: usize,
    },
    /// A tensor handed to Newton–Schulz / Muon math is not 2-D or 3-D.
    #[error("Newton–Schulz needs a 2-D matrix or a 3-D stack of matrices, got rank {0}")]
    NotAMatrix(usize),
    /// A parameter of rank > 3 (no V4 tensor has one).
    #[error("parameter `{name}` has unsupported rank {rank}")]
    UnsupportedRank {
        /// Parameter path.
        name: String,
        /// Its rank.
        rank: usize,
    },
    /// The parameter is not trained by a gradient optimizer (`gate.bias`, `tid2eid`).
    #[error("parameter `{0}` is excluded from gradient optimization")]
    Excluded(String),
    /// Parameter, gradient or stored state disagree in shape.
    #[error("shape mismatch for `{name}`: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// Parameter path.
        name: String,
        /// Shape the optimizer expected.
        expected: Vec<usize>,
        /// Shape it was given.
        got: Vec<usize>,
    },
    /// State exists for the name but under the other optimizer.
    #[error("state for `{0}` belongs to a different optimizer")]
    StateKind(String),
    /// An invalid configuration value.
    #[error("invalid optimizer config: {0}")]
    Config(String),
    /// A state file that cannot be read back.
    #[error("invalid optimizer state: {0}")]
    State(String),
    /// Error from the safetensors codec.
    #[error("safetensors: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    /// I/O error while reading or writing a state file.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A tensor could not be read back from the device.
    #[error("tensor data: {0}")]
    Data(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, OptimError>;
