//! `v4train export-adapter`: the adapters of a LoRA training checkpoint as a Hugging Face PEFT
//! adapter directory that `peft.PeftModel.from_pretrained` attaches to transformers'
//! `DeepseekV4ForCausalLM` loaded from the base's release-layout directory.
//!
//! Writes `adapter_model.safetensors` (f32, PEFT key names and layouts), `adapter_config.json`
//! ([`config`]), `README.md` (provenance, what was left out) and `v4train_adapter.json` (the
//! checkpoint's `adapter.json`). Adapters transformers cannot host (MTP blocks) are skipped and
//! listed. Names: [`targets`]; layouts: [`pack`], [`modules`].

pub mod config;
pub mod modules;
pub mod pack;
pub mod readme;
pub mod targets;

use crate::adapter_files::{self, ADAPTERS, ADAPTER_CONFIG};
use crate::tensor_file::write_f32_parts;
use anyhow::{bail, Context, Result};
use modules::{Adapter, PeftModule, Skipped, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The PEFT weights file.
pub const PEFT_WEIGHTS: &str = "adapter_model.safetensors";
/// The PEFT config file.
pub const PEFT_CONFIG: &str = "adapter_config.json";
/// The copy of the checkpoint's `adapter.json`.
pub const PROVENANCE: &str = "v4train_adapter.json";

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Summary {
    /// PEFT modules in `target_modules`.
    pub linear_modules: usize,
    /// PEFT modules in `target_parameters`.
    pub param_modules: usize,
    /// Tensors in `adapter_model.safetensors`.
    pub tensors: usize,
    /// v4train adapters exported.
    pub exported: usize,
    /// Adapters left out: (stem, reason).
    pub skipped: Vec<(String, String)>,
}

/// Pairs the `lora_A` / `lora_B` tensors of `file` by stem; other tensors are skipped.
fn pair(floats: HashMap<String, Tensor>, file: &Path) -> Result<(Vec<Adapter>, Vec<Skipped>)> {
    let (mut halves, mut skipped) = (BTreeMap::new(), Vec::new());
    for (name, t) in floats {
        match name.strip_suffix(".lora_A.weight") {
            Some(stem) => halves.entry(stem.to_string()).or_insert([None, None])[0] = Some(t),
            None => match name.strip_suffix(".lora_B.weight") {
                Some(stem) => halves.entry(stem.to_string()).or_insert([None, None])[1] = Some(t),
                None => skipped.push((
                    name,
                    "not a LoRA tensor (`….lora_A.weight` / `….lora_B.weight`)",
                )),
            },
        }
    }
    let mut out = Vec::with_capacity(halves.len());
    for (stem, [a, b]) in halves {
        match (a, b) {
            (Some(a), Some(b)) => out.push(Adapter { stem, a, b }),
            (a, _) => {
                let (has, lacks) = if a.is_some() {
                    ("lora_A", "lora_B")
                } else {
                    ("lora_B", "lora_A")
                };
                bail!(
                    "{}: {stem}.{has}.weight has no {stem}.{lacks}.weight",
                    file.display()
                );
            }
        }
    }
    Ok((out, skipped))
}

/// Requires `out` absent or empty unless `force`, and creates it.
fn prepare_out(out: &Path, force: bool) -> Result<()> {
    if out.is_file() {
        bail!("--out {}: is a file, expected a directory", out.display());
    }
    if !force {
        if let Ok(mut entries) = std::fs::read_dir(out) {
            if entries.next().is_some() {
                bail!(
                    "--out {} is not empty (--force writes into it)",
                    out.display()
                );
            }
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))
}

/// Writes `modules`' tensors (f32, PyTorch-format metadata) to `path`.
fn write_weights(path: &Path, modules: &[PeftModule]) -> Result<usize> {
    let tensors = modules.iter().flat_map(|m| {
        [("lora_A", &m.a), ("lora_B", &m.b)]
            .map(|(ab, (s, v))| (format!("{}.{ab}.weight", m.key), s.as_slice(), v.as_slice()))
    });
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_f32_parts(path, tensors, Some(meta))?;
    Ok(2 * modules.len())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Exports the adapters of the LoRA checkpoint `checkpoint` into the PEFT directory `out`
/// (absent or empty, unless `force`).
pub fn export(checkpoint: &Path, out: &Path, force: bool) -> Result<Summary> {
    let config = adapter_files::read_config(checkpoint)?;
    let file = checkpoint.join(ADAPTERS);
    let src = adapter_files::read_tensors(checkpoint)?;
    let (adapters, mut skipped) = pair(src.floats, &file)?;
    let plan =
        modules::plan(adapters, &config.lora).with_context(|| format!("{}", file.display()))?;
    skipped.extend(plan.skipped);
    if plan.modules.is_empty() {
        bail!(
            "{}: no adapter has a Hugging Face counterpart, nothing to export",
            file.display()
        );
    }
    prepare_out(out, force)?;
    let tensors = write_weights(&out.join(PEFT_WEIGHTS), &plan.modules)?;
    let peft = config::adapter_config(&config.lora, &config.base.path, &plan.modules);
    write(
        &out.join(PEFT_CONFIG),
        &serde_json::to_string_pretty(&peft)?,
    )?;
    let ckpt = checkpoint.display().to_string();
    write(
        &out.join("README.md"),
        &readme::readme(&ckpt, &config.base.path, &plan.modules, &skipped),
    )?;
    let from = checkpoint.join(ADAPTER_CONFIG);
    std::fs::copy(&from, out.join(PROVENANCE))
        .with_context(|| format!("copying {} into {}", from.display(), out.display()))?;
    let param_modules = plan.modules.iter().filter(|m| m.param).count();
    Ok(Summary {
        linear_modules: plan.modules.len() - param_modules,
        param_modules,
        tensors,
        exported: plan.modules.iter().map(|m| m.sources.len()).sum(),
        skipped: skipped
            .into_iter()
            .map(|(s, w)| (s, w.to_string()))
            .collect(),
    })
}
