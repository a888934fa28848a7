//! `[log]`: metric logging cadence and sinks. Both sinks live in the run directory
//! (`[checkpoint] dir`) by default, so moving the run moves its logs; a relative path is taken
//! inside the run directory, an absolute one as is, and `false` turns a sink off.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

/// Default `metrics.jsonl` name inside the run directory.
pub const DEFAULT_JSONL: &str = "metrics.jsonl";
/// Default TensorBoard directory inside the run directory.
pub const DEFAULT_TENSORBOARD: &str = "tb";

/// `[log]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Log metrics every this many optimizer steps (default 10).
    pub every: u64,
    /// TensorBoard event directory: a path, `true` (default: `tb` in the run directory) or
    /// `false` (off).
    #[serde(deserialize_with = "tensorboard_sink")]
    pub tensorboard: Option<PathBuf>,
    /// JSON-lines metrics file: a path, `true` (default: `metrics.jsonl` in the run directory)
    /// or `false` (off).
    #[serde(deserialize_with = "jsonl_sink")]
    pub jsonl: Option<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            every: 10,
            tensorboard: Some(PathBuf::from(DEFAULT_TENSORBOARD)),
            jsonl: Some(PathBuf::from(DEFAULT_JSONL)),
        }
    }
}

impl LogConfig {
    /// `metrics.jsonl` of a run in `run_dir`, when on.
    pub fn jsonl_path(&self, run_dir: &Path) -> Option<PathBuf> {
        self.jsonl.as_ref().map(|p| run_dir.join(p))
    }

    /// The TensorBoard directory of a run in `run_dir`, when on.
    pub fn tensorboard_path(&self, run_dir: &Path) -> Option<PathBuf> {
        self.tensorboard.as_ref().map(|p| run_dir.join(p))
    }
}

/// A sink written as a path, or as `true` / `false`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Sink {
    Flag(bool),
    Path(PathBuf),
}

fn sink<'de, D: Deserializer<'de>>(d: D, default: &str) -> Result<Option<PathBuf>, D::Error> {
    match Sink::deserialize(d)? {
        Sink::Flag(true) => Ok(Some(PathBuf::from(default))),
        Sink::Flag(false) => Ok(None),
        Sink::Path(p) if p.as_os_str().is_empty() => Err(serde::de::Error::custom(
            "must be a path, true or false, got \"\"",
        )),
        Sink::Path(p) => Ok(Some(p)),
    }
}

fn jsonl_sink<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    sink(d, DEFAULT_JSONL)
}

fn tensorboard_sink<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    sink(d, DEFAULT_TENSORBOARD)
}
