//! The serializable data cursor saved with checkpoints: source positions, the
//! mixing generator, the packer's buffered tokens, the batch count and the
//! bad-row counts. Restoring it continues with the next unseen sample.

use crate::bad_rows::BadRowStats;
use crate::error::DataError;
use crate::packing::Packer;
use crate::rng::SplitMix64;
use crate::shard::Shard;
use crate::source::SourcePosition;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Resumable state of a data loader, taken between batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataCursor {
    /// Format version.
    pub version: u32,
    /// Per source, where it continues.
    pub sources: Vec<SourcePosition>,
    /// Mixing generator state.
    pub rng: SplitMix64,
    /// Packer state (partially filled window, ready windows).
    pub packer: Packer,
    /// Batches produced so far.
    pub batches: u64,
    /// All data consumed (finite data only).
    pub finished: bool,
    /// Bad rows skipped so far.
    pub bad_rows: BadRowStats,
    /// Rows read from the mixed stream (owned by this shard or not).
    pub rows_read: u64,
    /// The shard this cursor belongs to.
    pub shard: Shard,
}

impl DataCursor {
    /// Current format version.
    pub const VERSION: u32 = 1;

    /// JSON text of the cursor.
    pub fn to_json(&self) -> Result<String, DataError> {
        serde_json::to_string(self).map_err(|e| DataError::Cursor {
            key: "cursor".into(),
            message: e.to_string(),
        })
    }

    /// Parses a cursor; `origin` names where it came from in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, DataError> {
        let cursor: DataCursor = serde_json::from_str(text).map_err(|e| DataError::Cursor {
            key: origin.to_owned(),
            message: e.to_string(),
        })?;
        if cursor.version != Self::VERSION {
            return Err(DataError::Cursor {
                key: format!("{origin}.version"),
                message: format!("unsupported version {}", cursor.version),
            });
        }
        Ok(cursor)
    }

    /// Writes the cursor atomically (temporary file + rename).
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        let io = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.to_json()?).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads a cursor written by [`save`](Self::save).
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, &path.display().to_string())
    }
}
