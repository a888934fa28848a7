//! `adapters.safetensors` memory-mapped: the merge reads one expert's slice of a stacked adapter
//! at a time, so a V4-Flash adapter set (~20 GB at rank 16 over every expert) is never decoded
//! as a whole.

use super::error::MergeError;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A validated, memory-mapped adapter file (every tensor F32).
#[derive(Debug)]
pub struct AdapterFile {
    path: PathBuf,
    map: Mmap,
    /// name → (shape, byte range in the map), sorted by name.
    tensors: BTreeMap<String, (Vec<usize>, Range<usize>)>,
}

impl AdapterFile {
    /// Maps `path` and checks its header and that every tensor is F32.
    pub fn open(path: &Path) -> Result<Self, MergeError> {
        let bad = |message: String| MergeError::Adapter {
            file: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
        // SAFETY: read-only private map; like every mmap-based loader we assume nobody truncates
        // the file while the merge runs.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| bad(format!("cannot map: {e}")))?;
        let (n, meta) = SafeTensors::read_metadata(&map)
            .map_err(|e| bad(format!("invalid safetensors file: {e}")))?;
        let start = 8 + n;
        let mut tensors = BTreeMap::new();
        for (name, info) in meta.tensors() {
            if info.dtype != Dtype::F32 {
                return Err(bad(format!(
                    "adapter tensor `{name}` is {:?}, expected F32",
                    info.dtype
                )));
            }
            let (a, b) = info.data_offsets;
            tensors.insert(name, (info.shape.clone(), start + a..start + b));
        }
        Ok(Self {
            path: path.to_path_buf(),
            map,
            tensors,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The shape of `name`, if stored.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|(s, _)| s.as_slice())
    }

    /// `len` values of `name` from flat element `start`; the caller has checked the shape, so a
    /// range outside the tensor is an error naming it, not a panic.
    pub fn values(&self, name: &str, start: usize, len: usize) -> Result<Vec<f32>, MergeError> {
        let range = self.tensors.get(name).and_then(|(_, r)| {
            let a = r.start + 4 * start;
            let b = a + 4 * len;
            (b <= r.end).then_some(a..b)
        });
        let bytes = range
            .and_then(|r| self.map.get(r))
            .ok_or_else(|| MergeError::Adapter {
                file: self.path.clone(),
                message: format!("tensor `{name}` has no elements {start}..{}", start + len),
            })?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}
