//! Named f32 tensors in one safetensors file: forward outputs, LoRA checkpoints' adapters, PEFT
//! exports. Written under a temporary name and renamed, so a reader never sees half a file.

use anyhow::{Context, Result};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::Path;

/// A named tensor: (name, shape, row-major values).
pub type NamedF32 = (String, Vec<usize>, Vec<f32>);

/// Writes `tensors` (F32, little-endian) with the header `metadata` to `path`.
pub fn write_f32(
    path: &Path,
    tensors: &[NamedF32],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let parts = tensors
        .iter()
        .map(|(n, s, v)| (n.clone(), s.as_slice(), v.as_slice()));
    write_f32_parts(path, parts, metadata)
}

/// [`write_f32`] of borrowed (name, shape, values) parts.
pub fn write_f32_parts<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (String, &'a [usize], &'a [f32])>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let tensors: Vec<_> = tensors.into_iter().collect();
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.to_vec(), b)?)))
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("preparing {}", path.display()))?;
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, metadata, &tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}
