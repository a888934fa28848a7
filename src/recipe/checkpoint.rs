//! `[checkpoint]`: where and how often to save, how many to keep, and how to resume.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a run starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Resume {
    /// Continue from the newest checkpoint in `dir` if there is one, else start fresh.
    #[default]
    Auto,
    /// Always start fresh (existing checkpoints in `dir` are left alone).
    Never,
    /// Continue from this checkpoint.
    Path(PathBuf),
}

impl Serialize for Resume {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Resume::Auto => s.serialize_str("auto"),
            Resume::Never => s.serialize_str("never"),
            Resume::Path(p) => p.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Resume {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match String::deserialize(d)?.as_str() {
            "auto" => Resume::Auto,
            "never" => Resume::Never,
            path => Resume::Path(PathBuf::from(path)),
        })
    }
}

/// `[checkpoint]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Directory of the run's checkpoints (default `runs/default`).
    pub dir: PathBuf,
    /// Save every this many optimizer steps; 0 saves only at the end (default 1000).
    pub every: u64,
    /// Checkpoints kept, oldest deleted first; 0 keeps all (default 3).
    pub keep_last: usize,
    /// `"auto"` (default), `"never"` or the path of a checkpoint to resume from.
    pub resume: Resume,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("runs/default"),
            every: 1000,
            keep_last: 3,
            resume: Resume::Auto,
        }
    }
}
