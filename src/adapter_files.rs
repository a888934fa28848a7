//! What a LoRA run saves (`[finetune] mode = "lora"`): its adapters, not the base.
//! A checkpoint `step-N/` of such a run holds `adapters.safetensors` (every adapter tensor under
//! `{projection}.lora_A.weight` / `.lora_B.weight`, checkpoint orientation: `A` `[r, in]`, `B`
//! `[out, r]`, stacks `[G, r, in]` / `[G, out, r]`, f32) and `adapter.json` ([`AdapterConfig`]:
//! the [`LoraSpec`] and the identity of the base it was trained on), beside the optimizer state,
//! data cursor and trainer state of every checkpoint.

use crate::tensor_file::write_f32;
use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use v4_model::lora::{is_adapter, LoraSpec};
use v4_model::named::Value;
use v4_model::{MapSource, V4Model};

/// The adapter tensors of a LoRA checkpoint.
pub const ADAPTERS: &str = "adapters.safetensors";
/// The adapter configuration of a LoRA checkpoint.
pub const ADAPTER_CONFIG: &str = "adapter.json";

/// The base model a LoRA run adapts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseIdentity {
    /// The `[model] dir` the run loaded.
    pub path: String,
    /// SHA-256 over the base's `config.json` and weight files ([`base_hash`]).
    pub content_hash: String,
}

/// `adapter.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    /// Which projections carry adapters, ranks, α, scaling.
    pub lora: LoraSpec,
    /// The base the adapters belong to.
    pub base: BaseIdentity,
}

/// Whether `name` is one of a model directory's identifying files: `config.json` and the weights
/// (`model.safetensors` or `model-0000i-of-0000n.safetensors`; other safetensors files — test
/// inputs, adapters — do not make another base).
fn identifies_base(name: &str) -> bool {
    name == "config.json" || (name.starts_with("model") && name.ends_with(".safetensors"))
}

/// The content hash of the model directory `dir`: SHA-256 over the names and SHA-256s of its
/// `config.json` and weight files (hashed in parallel; a V4-Flash base takes minutes).
pub fn base_hash(dir: &Path) -> Result<String> {
    let sums = crate::train::checksums::checksum_dir(dir, "")?;
    let mut h = Sha256::new();
    let mut files = 0;
    for (name, sum) in &sums {
        if identifies_base(name) {
            h.update(name.as_bytes());
            h.update(b"\0");
            h.update(sum.as_bytes());
            h.update(b"\n");
            files += 1;
        }
    }
    if files < 2 {
        bail!(
            "{} holds no config.json and weights to identify the base by",
            dir.display()
        );
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The model's adapter tensors in checkpoint orientation: (name, shape, values).
pub fn adapter_tensors<B: burn::tensor::backend::Backend>(
    model: &V4Model<B>,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    model.visit_named(&mut |name, p| {
        if is_adapter(&name) {
            out.extend(p.release_tensors(&name, &Value));
        }
    });
    out
}

/// Writes `adapters.safetensors` and `adapter.json` of `model` into `dir`.
pub fn save<B: burn::tensor::backend::Backend>(
    dir: &Path,
    model: &V4Model<B>,
    config: &AdapterConfig,
) -> Result<()> {
    let tensors = adapter_tensors(model);
    if tensors.is_empty() {
        bail!("the model carries no LoRA adapter to save");
    }
    write_f32(&dir.join(ADAPTERS), &tensors, None)?;
    let p = dir.join(ADAPTER_CONFIG);
    std::fs::write(&p, serde_json::to_vec_pretty(config)?)
        .with_context(|| format!("writing {}", p.display()))
}

/// Reads `adapter.json` of the checkpoint (or adapter directory) `dir`.
pub fn read_config(dir: &Path) -> Result<AdapterConfig> {
    let p = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "reading {} (is {} a checkpoint of a `[finetune] mode = \"lora\"` run?)",
            p.display(),
            dir.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

/// Reads `adapters.safetensors` of `dir` as a weight source (the loader checks names and
/// shapes against the spec's targets). The file is memory-mapped, so only the f32 values are
/// held (V4-Flash's expert adapters are gigabytes).
pub fn read_tensors(dir: &Path) -> Result<MapSource> {
    let p = dir.join(ADAPTERS);
    let file = std::fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?;
    // SAFETY: the checkpoint is not modified while a run reads it (the run directory is locked,
    // and checkpoints are written under a temporary name and renamed).
    let bytes =
        unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("mapping {}", p.display()))?;
    let st =
        SafeTensors::deserialize(&bytes).with_context(|| format!("parsing {}", p.display()))?;
    let mut src = MapSource::default();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            bail!(
                "{}: tensor {name} is {:?}, expected F32",
                p.display(),
                view.dtype()
            );
        }
        let v = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        src.floats.insert(name, (view.shape().to_vec(), v));
    }
    Ok(src)
}
