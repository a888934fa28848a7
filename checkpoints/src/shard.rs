//! One memory-mapped safetensors file. The header is parsed and validated by the `safetensors`
//! crate (offsets contiguous, inside the file, consistent with dtype × shape, header ≤ 100 MB);
//! tensor bytes are borrowed from the map, never copied here.

use crate::error::{io, CheckpointError, Result};
use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};
use std::fs::File;
use std::path::{Path, PathBuf};

/// A validated, memory-mapped shard.
#[derive(Debug)]
pub struct Shard {
    path: PathBuf,
    map: Mmap,
    data_start: usize,
    meta: Metadata,
}

/// A stored tensor as bytes: dtype, stored shape, and the bytes inside the memory map.
#[derive(Debug, Clone, Copy)]
pub struct RawTensor<'a> {
    /// Stored dtype.
    pub dtype: Dtype,
    /// Stored shape (for FP4, the packed `[out, in/2]`).
    pub shape: &'a [usize],
    /// The tensor's bytes.
    pub data: &'a [u8],
    /// The shard it lives in.
    pub file: &'a Path,
}

impl Shard {
    /// Maps `path` and validates its header.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        let format = |message: String| CheckpointError::Format {
            file: path.to_path_buf(),
            message,
        };
        if len < 8 {
            return Err(format(format!(
                "file is {len} bytes, shorter than the 8-byte header length (truncated?)"
            )));
        }
        // SAFETY: the map is read-only and private to this process. Like every mmap-based loader
        // (safetensors, candle, vLLM) we assume nobody truncates the file while it is open.
        let map = unsafe { Mmap::map(&file) }.map_err(io(path))?;
        let (n, meta) = SafeTensors::read_metadata(&map).map_err(|e| format(describe(&e, &map)))?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            data_start: 8 + n,
            meta,
        })
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of the tensors in the file, in data order.
    pub fn names(&self) -> Vec<String> {
        self.meta.offset_keys()
    }

    /// The stored tensor `name`, if present.
    pub fn raw(&self, name: &str) -> Option<RawTensor<'_>> {
        let info: &TensorInfo = self.meta.info(name)?;
        let (s, e) = info.data_offsets;
        let data = self
            .map
            .get(self.data_start.checked_add(s)?..self.data_start.checked_add(e)?)?;
        Some(RawTensor {
            dtype: info.dtype,
            shape: &info.shape,
            data,
            file: &self.path,
        })
    }

    /// The `__metadata__` map of the header.
    pub fn metadata(&self) -> Option<&std::collections::HashMap<String, String>> {
        self.meta.metadata().as_ref()
    }
}

/// A message for a header error that names the offending tensor (the `safetensors` crate names
/// it only for bad offsets, so the others are located by re-reading the header).
fn describe(e: &safetensors::SafeTensorError, map: &[u8]) -> String {
    use safetensors::SafeTensorError as E;
    let len = map.len();
    match e {
        E::InvalidHeaderLength => format!(
            "the header length field points past the end of the {len}-byte file (truncated or corrupt)"
        ),
        E::HeaderTooLarge => "header length exceeds the 100 MB safetensors limit".into(),
        E::InvalidOffset(t) => {
            format!("tensor `{t}`: data offsets overlap, leave a gap or run backwards")
        }
        E::MetadataIncompleteBuffer => match entries(map).into_iter().max_by_key(|(_, i)| i.data_offsets.1) {
            Some((t, i)) => format!(
                "tensor `{t}`: its data ends at byte {} of the data section, but the {len}-byte file does not end there (truncated or trailing bytes)",
                i.data_offsets.1
            ),
            None => format!("the data section does not match the {len}-byte file"),
        },
        E::TensorInvalidInfo | E::ValidationOverflow | E::MisalignedSlice => {
            let bad = entries(map).into_iter().find(|(_, i)| {
                let bits = crate::dtype::numel(&i.shape).and_then(|n| n.checked_mul(i.dtype.bitsize()));
                bits.is_none_or(|b| b % 8 != 0 || Some(b / 8) != i.data_offsets.1.checked_sub(i.data_offsets.0))
            });
            match bad {
                Some((t, i)) => format!(
                    "tensor `{t}`: byte range {:?} does not hold a {:?} tensor of shape {:?}",
                    i.data_offsets, i.dtype, i.shape
                ),
                None => e.to_string(),
            }
        }
        other => other.to_string(),
    }
}

/// The tensor entries of a header that parses as JSON (empty when it does not).
fn entries(map: &[u8]) -> Vec<(String, TensorInfo)> {
    let Some(n) = map
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .and_then(|b| usize::try_from(u64::from_le_bytes(b)).ok())
    else {
        return Vec::new();
    };
    let Some(header) = n.checked_add(8).and_then(|end| map.get(8..end)) else {
        return Vec::new();
    };
    let Ok(obj) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(header)
    else {
        return Vec::new();
    };
    obj.into_iter()
        .filter(|(k, _)| k != "__metadata__")
        .filter_map(|(k, v)| Some((k, serde_json::from_value::<TensorInfo>(v).ok()?)))
        .collect()
}
