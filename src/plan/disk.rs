//! Disk taken by one training checkpoint `step-NNNNNN/` (`train::checkpoint::save`): the model
//! in the release layout written as F32 (`tid2eid` stays I64) in shards of at most 5 GB, its
//! shard index, `config.json` and `LICENSE`; `optimizer.safetensors` (per trained parameter an
//! i64 step counter and its f32 moments, flattened, plus the shapes as JSON metadata);
//! `trainer_state.json` (with a copy of the recipe) and the data cursor. A LoRA run's checkpoint
//! holds its adapters instead of the model.

use super::params::{gets_gradient, lora_param_bytes, numel, state_factor};
use crate::recipe::{FinetuneMode, Recipe};
use v4_model::{inventory, ModelConfig, ReleaseDtype, TensorSpec};

/// Default `max_shard_size` of `v4_checkpoints::WriteOptions`, which training checkpoints use.
const SHARD_BYTES: u64 = 5_000_000_000;

/// `config.json`, `LICENSE`, `trainer_state.json` (the recipe text, JSON-escaped: recipes are a
/// few KB) and `data_cursor.json`: a generous allowance for the small files.
const SMALL_FILES: u64 = 16 * 1024;

/// The parts of one checkpoint directory, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointSize {
    /// Tensor data of the model shards.
    pub model: u64,
    /// Tensor data of `optimizer.safetensors`.
    pub optimizer: u64,
    /// Safetensors headers, the shard index and the small files.
    pub metadata: u64,
}

impl CheckpointSize {
    /// Bytes on disk.
    pub fn total(&self) -> u64 {
        self.model + self.optimizer + self.metadata
    }
}

/// Decimal digits of `x`.
fn digits(x: u64) -> u64 {
    x.checked_ilog10().map_or(1, |d| d as u64 + 1)
}

/// One safetensors header entry: `"name":{"dtype":"F32","shape":[..],"data_offsets":[a,b]},`.
fn header_entry(name: &str, dtype: &str, shape: &[usize], end: u64) -> u64 {
    let dims: u64 = shape.iter().map(|&d| digits(d as u64) + 1).sum();
    // quotes, colon, braces, keys and punctuation: 44 bytes around the variable parts
    44 + name.len() as u64 + dtype.len() as u64 + dims + 2 * digits(end)
}

/// Bytes of the model tensor data as the checkpoint stores it (F32, or I64 for `tid2eid`).
fn model_entry_bytes(spec: &TensorSpec) -> u64 {
    let width = if spec.dtype == ReleaseDtype::I64 {
        8
    } else {
        4
    };
    numel(spec) * width
}

/// A LoRA checkpoint: `adapters.safetensors` (f32 adapters), `adapter.json` and the adapters'
/// optimizer state (headers bounded generously per adapter tensor).
fn lora_checkpoint_size(cfg: &ModelConfig, recipe: &Recipe) -> CheckpointSize {
    let p = lora_param_bytes(cfg, recipe);
    CheckpointSize {
        model: p.gradients,
        optimizer: p.optimizer + 8 * p.trained_tensors as u64,
        metadata: 512 * p.trained_tensors as u64 + SMALL_FILES,
    }
}

/// Size of the checkpoint directory `train::checkpoint::save` writes for `cfg` under `recipe`.
pub fn checkpoint_size(cfg: &ModelConfig, recipe: &Recipe) -> CheckpointSize {
    if recipe.finetune.mode == FinetuneMode::Lora {
        return lora_checkpoint_size(cfg, recipe);
    }
    let inv = inventory(cfg);
    let mut out = CheckpointSize::default();

    // Model shards: greedy split in inventory order (never splitting a tensor); each shard has
    // an 8-byte length, a JSON header (with format / license / producer metadata) padded to 8.
    let (mut shard_data, mut shard_header, mut shards) = (0u64, 0u64, 0u64);
    let mut headers = 0u64;
    for spec in &inv {
        let bytes = model_entry_bytes(spec);
        if shards == 0 || (shard_data > 0 && shard_data + bytes > SHARD_BYTES) {
            headers += shard_header.div_ceil(8) * 8;
            shards += 1;
            shard_data = 0;
            shard_header = 8 + 100;
        }
        shard_data += bytes;
        out.model += bytes;
        let dtype = if spec.dtype == ReleaseDtype::I64 {
            "I64"
        } else {
            "F32"
        };
        shard_header += header_entry(&spec.name, dtype, &spec.shape, shard_data);
    }
    headers += shard_header.div_ceil(8) * 8;
    // Index: pretty JSON, one `"name": "model-0000i-of-0000n.safetensors",` line per tensor.
    let index: u64 = inv.iter().map(|s| s.name.len() as u64 + 47).sum::<u64>() + 64;

    // optimizer.safetensors: `step/<name>` (i64 [1]) plus one or two f32 moments per trained
    // parameter; the metadata holds every shape as escaped JSON.
    let mut opt_header = 8 + 64;
    let mut end = 0u64;
    for spec in inv.iter().filter(|s| gets_gradient(cfg, recipe, s)) {
        let n = numel(spec);
        let factor = state_factor(spec);
        end += 8;
        opt_header += header_entry(&format!("step/{}", spec.name), "I64", &[1], end);
        let prefixes: &[&str] = if factor == 1 {
            &["momentum/"]
        } else {
            &["exp_avg/", "exp_avg_sq/"]
        };
        for p in prefixes {
            end += 4 * n;
            out.optimizer += 4 * n;
            opt_header += header_entry(&format!("{p}{}", spec.name), "F32", &[n as usize], end);
        }
        out.optimizer += 8;
        let dims: u64 = spec.shape.iter().map(|&d| digits(d as u64) + 1).sum();
        opt_header += spec.name.len() as u64 + 6 + dims; // \"name\":[..],
    }
    out.metadata = headers + index + opt_header.div_ceil(8) * 8 + SMALL_FILES;
    out
}

/// Bytes one training checkpoint directory takes on disk.
pub fn checkpoint_bytes(cfg: &ModelConfig, recipe: &Recipe) -> u64 {
    checkpoint_size(cfg, recipe).total()
}

/// Checkpoint directories a run has on disk at once: the `keep_last` kept ones plus the one
/// being written (it is complete before the oldest is pruned), or every save with
/// `keep_last = 0`; never more than the run saves (every `every` steps and at the end).
pub fn checkpoints_on_disk(recipe: &Recipe) -> u64 {
    let (steps, every) = (recipe.train.steps, recipe.checkpoint.every);
    let saves = match every {
        0 => 1,
        e => steps / e + u64::from(!steps.is_multiple_of(e)),
    };
    match recipe.checkpoint.keep_last as u64 {
        0 => saves,
        k => saves.min(k + 1),
    }
}

/// Disk a run's checkpoints need at their peak: [`checkpoints_on_disk`] ×
/// [`checkpoint_bytes`].
pub fn run_checkpoint_bytes(cfg: &ModelConfig, recipe: &Recipe) -> u64 {
    checkpoints_on_disk(recipe).saturating_mul(checkpoint_bytes(cfg, recipe))
}
