//! The serializable data cursor saved with checkpoints: source positions (the
//! start of each source's current shuffle block and the rows of it already
//! returned), the mixing generator, the packer's buffered tokens, the batch
//! count and the bad-row counts. Restoring it continues with the next unseen
//! sample.
//!
//! Format history: version 1 had no shuffle blocks (rows in file order) and
//! one global packing mode; version 2 adds `seed`, the per-source `block`,
//! `emitted` and `shuffle_block`, and the packer's separate pretrain stream.
//! A version-1 cursor is refused with an error naming its file.

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
    /// `[data] seed` (the shuffled order depends on it).
    pub seed: u64,
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
    pub const VERSION: u32 = 2;

    /// JSON text of the cursor.
    pub fn to_json(&self) -> Result<String, DataError> {
        serde_json::to_string(self).map_err(|e| DataError::Cursor {
            key: "cursor".into(),
            message: e.to_string(),
        })
    }

    /// Parses a cursor; `origin` names where it came from in errors. The
    /// version is checked before the fields, so an old cursor gets a version
    /// error rather than a missing-field one.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, DataError> {
        let err = |e: serde_json::Error| DataError::Cursor {
            key: origin.to_owned(),
            message: e.to_string(),
        };
        let value: serde_json::Value = serde_json::from_str(text).map_err(err)?;
        let version = value.get("version").and_then(serde_json::Value::as_u64);
        Self::version_ok(version, origin)?;
        serde_json::from_value(value).map_err(err)
    }

    /// Errors unless the cursor has this build's format version; `origin`
    /// names it in errors.
    pub fn check_version(&self, origin: &str) -> Result<(), DataError> {
        Self::version_ok(Some(u64::from(self.version)), origin)
    }

    fn version_ok(version: Option<u64>, origin: &str) -> Result<(), DataError> {
        match version {
            Some(v) if v == u64::from(Self::VERSION) => Ok(()),
            Some(v) if v < u64::from(Self::VERSION) => Err(DataError::Cursor {
                key: format!("{origin}.version"),
                message: format!(
                    "version {v} was written by an older v4-data; this build reads version {} \
                     (shuffled sources and per-source modes changed the data order and the \
                     position format), so this data position cannot be restored exactly; finish \
                     that run with the build that wrote it, or start the data from the beginning",
                    Self::VERSION
                ),
            }),
            Some(v) => Err(DataError::Cursor {
                key: format!("{origin}.version"),
                message: format!(
                    "version {v} is newer than this build's {}; update v4-data",
                    Self::VERSION
                ),
            }),
            None => Err(DataError::Cursor {
                key: format!("{origin}.version"),
                message: "missing; not a data cursor".into(),
            }),
        }
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
