//! `[checkpoint]`: the run directory (checkpoints, and by default the metrics and TensorBoard
//! events), how often to save, how many to keep, and how to resume.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a run starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Resume {
    /// Continue from the newest valid checkpoint in `dir` if there is one (falling back past a
    /// corrupt newest one), else start fresh.
    #[default]
    Auto,
    /// Continue from the newest checkpoint in `dir`; an error when there is none or it is
    /// corrupt (`--resume`).
    Latest,
    /// Always start fresh; an error when `dir` holds checkpoints (unless `--overwrite`).
    Never,
    /// Continue from this checkpoint.
    Path(PathBuf),
}

impl Serialize for Resume {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Resume::Auto => s.serialize_str("auto"),
            Resume::Latest => s.serialize_str("latest"),
            Resume::Never => s.serialize_str("never"),
            Resume::Path(p) => p.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Resume {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match String::deserialize(d)?.as_str() {
            "auto" => Resume::Auto,
            "latest" => Resume::Latest,
            "never" => Resume::Never,
            "" => {
                return Err(serde::de::Error::custom(
                    "must be \"auto\", \"latest\", \"never\" or a checkpoint path, got \"\"",
                ))
            }
            path => Resume::Path(PathBuf::from(path)),
        })
    }
}

/// `[checkpoint]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// The run directory: checkpoints `step-N/`, the run lock, and (unless `[log]` says
    /// otherwise) `metrics.jsonl` and `tb/` (default `runs/default`).
    pub dir: PathBuf,
    /// Save every this many optimizer steps; 0 saves only at the end (default 1000).
    pub every: u64,
    /// Checkpoints of this run kept, oldest deleted first; 0 keeps all (default 3).
    pub keep_last: usize,
    /// `"auto"` (default), `"latest"`, `"never"` or the path of a checkpoint to resume from.
    pub resume: Resume,
    /// Skip the start-up check that the run directory's disk has room for two checkpoints
    /// (default false).
    pub skip_space_check: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("runs/default"),
            every: 1000,
            keep_last: 3,
            resume: Resume::Auto,
            skip_space_check: false,
        }
    }
}
