//! Observability writers for the trainer: TensorBoard event files (`tensorboard`), a
//! line-per-step `metrics.jsonl` (`jsonl`), and a reader of event files (`reader`) used by
//! tests and on resume. `tfrecord` and `event` hold the on-disk framing and protobuf encoding.

pub mod event;
pub mod jsonl;
pub mod reader;
pub mod tensorboard;
pub mod tfrecord;

pub use jsonl::{MetricsJsonl, StepMetrics};
pub use reader::{read_events, read_scalars, read_scalars_latest, ScalarRecord};
pub use tensorboard::TensorBoardWriter;

use std::path::{Path, PathBuf};

/// Errors of the metrics writers and readers; each names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// An I/O operation on `path` failed.
    #[error("I/O error on {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A record or event in an event file is damaged.
    #[error("{}: corrupt record at byte offset {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A complete line of a metrics.jsonl file is not a JSON object with a `step`.
    #[error("{}: line {line}: {reason}", path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// A value the caller passed cannot be written to `path`.
    #[error("{}: {reason}", path.display())]
    InvalidInput { path: PathBuf, reason: String },
}

/// Result type of the metrics module.
pub type Result<T> = std::result::Result<T, MetricsError>;

/// Wraps an `io::Error` with the path it concerns.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MetricsError + '_ {
    move |source| MetricsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Seconds since the Unix epoch as a double (0 if the clock is before 1970).
pub(crate) fn unix_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
