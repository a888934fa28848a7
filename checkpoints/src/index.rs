//! The Hugging Face shard index `model.safetensors.index.json` (`metadata.total_size`,
//! `weight_map`: tensor name → shard file) and the shard naming scheme
//! `model-00001-of-0000N.safetensors`.

use crate::error::{CheckpointError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// File name of the shard index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// File name of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";

/// Parsed `model.safetensors.index.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardIndex {
    /// `{"total_size": <bytes of tensor data>}` plus whatever else the writer put there.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Tensor name → shard file name (relative to the directory).
    pub weight_map: BTreeMap<String, String>,
}

impl ShardIndex {
    /// Reads and validates an index file: every shard must be a plain file name in the same
    /// directory (no paths).
    pub fn read(path: &Path) -> Result<Self> {
        let json = |message: String| CheckpointError::Json {
            file: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(crate::error::io(path))?;
        let index: ShardIndex = serde_json::from_str(&text)
            .map_err(|e| json(format!("not a safetensors index: {e}")))?;
        if index.weight_map.is_empty() {
            return Err(json("`weight_map` is empty".into()));
        }
        for (tensor, file) in &index.weight_map {
            if !is_plain_file_name(file) {
                return Err(json(format!(
                    "tensor `{tensor}` maps to `{file}`, which is not a file name in this directory"
                )));
            }
        }
        Ok(index)
    }

    /// The distinct shard file names, sorted.
    pub fn shard_files(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.weight_map.values().map(String::as_str).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// `model-{i+1:05}-of-{n:05}.safetensors`.
pub fn shard_file_name(i: usize, n: usize) -> String {
    format!("model-{:05}-of-{:05}.safetensors", i + 1, n)
}

/// True for names produced by [`shard_file_name`].
pub fn is_shard_file_name(name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix("model-")
        .and_then(|r| r.strip_suffix(".safetensors"))
    else {
        return false;
    };
    let mut parts = rest.split("-of-");
    let digits =
        |s: Option<&str>| s.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
}

fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && Path::new(name).file_name().is_some_and(|f| f == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(shard_file_name(0, 3), "model-00001-of-00003.safetensors");
        assert!(is_shard_file_name("model-00001-of-00046.safetensors"));
        assert!(!is_shard_file_name("model.safetensors"));
        assert!(!is_shard_file_name("model-1-of-x.safetensors"));
        assert!(!is_plain_file_name("../x.safetensors"));
        assert!(is_plain_file_name("model-00001-of-00001.safetensors"));
    }
}
