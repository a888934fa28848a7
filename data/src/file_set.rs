//! Expands a source `path` (a file, a directory, or a glob pattern) into the
//! sorted list of data files it names, and infers each file's format.

use crate::error::DataError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// On-disk format of a data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet.
    Parquet,
}

impl FileFormat {
    /// Format from the file extension (`.jsonl`, `.json`, `.ndjson`, `.parquet`).
    pub fn from_path(path: &Path) -> Option<FileFormat> {
        match path.extension()?.to_str()? {
            "jsonl" | "json" | "ndjson" => Some(FileFormat::Jsonl),
            "parquet" => Some(FileFormat::Parquet),
            _ => None,
        }
    }
}

/// Files named by `pattern` (sorted). `key` names the config entry in errors.
pub fn expand(pattern: &str, key: &str) -> Result<Vec<PathBuf>, DataError> {
    let config_err = |message: String| DataError::Config {
        key: key.to_owned(),
        message,
    };
    let path = Path::new(pattern);
    let mut files: Vec<PathBuf> = if pattern.contains(['*', '?', '[']) {
        let paths =
            glob::glob(pattern).map_err(|e| config_err(format!("bad glob `{pattern}`: {e}")))?;
        let mut out = Vec::new();
        for entry in paths {
            let p = entry.map_err(|e| config_err(e.to_string()))?;
            if p.is_file() {
                out.push(p);
            }
        }
        out
    } else if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries {
            let p = entry
                .map_err(|source| DataError::Io {
                    path: path.to_path_buf(),
                    source,
                })?
                .path();
            if p.is_file() && FileFormat::from_path(&p).is_some() {
                out.push(p);
            }
        }
        out
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        return Err(config_err(format!("`{pattern}` does not exist")));
    };
    files.sort();
    if files.is_empty() {
        return Err(config_err(format!("`{pattern}` matches no data files")));
    }
    Ok(files)
}
