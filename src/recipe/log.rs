//! `[log]`: metric logging cadence and sinks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[log]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Log metrics every this many optimizer steps (default 10).
    pub every: u64,
    /// TensorBoard event directory (default: none).
    pub tensorboard: Option<PathBuf>,
    /// JSON-lines metrics file, one object per logged step (default: none).
    pub jsonl: Option<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            every: 10,
            tensorboard: None,
            jsonl: None,
        }
    }
}
