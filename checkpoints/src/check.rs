//! `ModelDir::check_against`: compares a directory with the release inventory (spec §4,
//! `v4_model::inventory`) — every tensor present, nothing unexpected, shapes and dtypes acceptable.

use crate::error::{CheckpointError, Result};
use crate::quantized::QuantFormat;
use crate::reader::{ModelDir, StoredKind};
use std::collections::HashSet;
use v4_model::inventory::is_ignored_alias;
use v4_model::{ReleaseDtype, TensorSpec};

/// Whether a tensor stored as `kind` can stand for an inventory tensor of release dtype `want`.
/// Float storage is accepted for every float tensor (fp32 / bf16 checkpoints, e.g. `tiny_a`);
/// FP8 for FP8 weights and for experts (Base checkpoints); FP4 only for experts.
pub fn acceptable(want: ReleaseDtype, kind: &StoredKind) -> bool {
    use ReleaseDtype as R;
    match (want, kind) {
        (R::I64, StoredKind::Int(_)) => true,
        (R::I64, _) | (_, StoredKind::Int(_)) => false,
        (_, StoredKind::Float(_)) => true,
        (
            R::Fp8Block | R::Fp4Expert,
            StoredKind::Quantized {
                format: QuantFormat::Fp8Block,
                ..
            },
        ) => true,
        (
            R::Fp4Expert,
            StoredKind::Quantized {
                format: QuantFormat::Fp4Group,
                ..
            },
        ) => true,
        _ => false,
    }
}

fn describe(kind: &StoredKind) -> String {
    match kind {
        StoredKind::Float(d) | StoredKind::Int(d) => format!("{d:?}"),
        StoredKind::Quantized { format, .. } => format!("{format:?}"),
    }
}

impl ModelDir {
    /// Checks the directory against `inventory` (usually `v4_model::inventory(self.config())`):
    /// the first missing tensor, unexpected tensor (scale companions and
    /// [`is_ignored_alias`] names excepted), shape mismatch or unacceptable dtype is returned as
    /// one error naming the file and the tensor.
    pub fn check_against(&self, inventory: &[TensorSpec]) -> Result<()> {
        for spec in inventory {
            if !self.contains(&spec.name) {
                return Err(CheckpointError::Tensor {
                    file: self.weights_file().to_path_buf(),
                    tensor: spec.name.clone(),
                    message: "missing (config.json implies it)".into(),
                });
            }
            let l = self.layout(&spec.name)?;
            let err = |message: String| CheckpointError::Tensor {
                file: l.raw.file.to_path_buf(),
                tensor: spec.name.clone(),
                message,
            };
            if !acceptable(spec.dtype, &l.kind) {
                return Err(err(format!(
                    "stored as {}, which is not acceptable for a {:?} tensor",
                    describe(&l.kind),
                    spec.dtype
                )));
            }
            if l.shape != spec.shape {
                return Err(err(format!(
                    "expected shape {:?} (from config.json), found {:?}",
                    spec.shape, l.shape
                )));
            }
        }
        let known: HashSet<&str> = inventory.iter().map(|s| s.name.as_str()).collect();
        for name in self.tensor_names() {
            if !known.contains(name) && !self.is_scale_companion(name) && !is_ignored_alias(name) {
                return Err(CheckpointError::Tensor {
                    file: self.raw(name)?.file.to_path_buf(),
                    tensor: name.to_string(),
                    message: "unexpected tensor (not in the V4 inventory for this config.json)"
                        .into(),
                });
            }
        }
        Ok(())
    }
}
