//! Checks before compute: everything a run will write is writable now, not at its first save
//! hours later; the disk holds two checkpoints; the estimated peak memory of a step
//! ([`crate::plan`]) fits the device.

use super::run_dir::probe_writable;
use crate::plan::{self, MemoryEstimate};
use crate::recipe::Recipe;
use anyhow::{bail, Context, Result};
use std::path::Path;
use v4_model::ModelConfig;

/// Creates the metrics file's directory and the TensorBoard directory and probes both.
pub fn outputs_writable(jsonl: Option<&Path>, tensorboard: Option<&Path>) -> Result<()> {
    let jsonl_dir = jsonl.map(|p| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    });
    for (key, dir) in [
        ("[log] jsonl", jsonl_dir),
        ("[log] tensorboard", tensorboard),
    ] {
        let Some(dir) = dir else { continue };
        if dir.exists() && !dir.is_dir() {
            bail!("{key}: {} is a file, not a directory", dir.display());
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{key}: {} cannot be created", dir.display()))?;
        probe_writable(dir).with_context(|| key.to_string())?;
    }
    Ok(())
}

/// Bytes as `1.21 GB` / `512.3 MB`.
fn size(bytes: u64) -> String {
    if bytes >= 1_000_000_000 {
        format!("{:.2} GB", bytes as f64 / 1e9)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

/// The run directory's disk holds at least two checkpoints of this model (the newest is
/// written before the oldest is pruned).
pub fn disk_space(cfg: &ModelConfig, recipe: &Recipe, dir: &Path) -> Result<()> {
    if recipe.checkpoint.skip_space_check {
        return Ok(());
    }
    let one = plan::checkpoint_bytes(cfg, recipe);
    let Some(free) = plan::available_disk(dir) else {
        eprintln!(
            "note: the free space of {} is unknown; not checked",
            dir.display()
        );
        return Ok(());
    };
    if free < one.saturating_mul(2) {
        bail!(
            "[checkpoint] dir = {:?} has {} free, but one checkpoint of this model takes ~{} and \
             a run needs room for at least two (the new one is written before the oldest is \
             pruned; keep_last = {} needs ~{}); free space, choose another directory, or \
             --set checkpoint.skip_space_check=true",
            dir.display().to_string(),
            size(free),
            size(one),
            recipe.checkpoint.keep_last,
            size(plan::run_checkpoint_bytes(cfg, recipe))
        );
    }
    Ok(())
}

/// The estimated peak memory of a training step fits what the device has (RAM on the CPU
/// backend; GPU memory, plus the host side, with `gpu`). Returns the estimate and what was
/// available, for the start-up line.
pub fn memory(
    cfg: &ModelConfig,
    recipe: &Recipe,
    gpu: bool,
) -> Result<(MemoryEstimate, Option<u64>)> {
    let est = plan::estimate_training(cfg, recipe);
    let host = plan::available_host_memory();
    let checks: Vec<(u64, Option<u64>, &str)> = if gpu {
        vec![
            (est.device(), device_memory(), "GPU memory"),
            (est.host_with_cuda(), host, "host memory"),
        ]
    } else {
        vec![(est.total(), host, "memory")]
    };
    let available = checks[0].1;
    if recipe.train.skip_memory_check {
        return Ok((est, available));
    }
    for (need, have, what) in checks {
        let Some(have) = have else { continue };
        if need > have {
            let t = &recipe.train;
            bail!(
                "a training step needs an estimated {} of {what} ({est}) but {} is available; \
                 lower [train] seq_len (= {}) or micro_batch (= {}), raise grad_accum instead, \
                 or --set train.skip_memory_check=true to try anyway",
                size(need),
                size(have),
                t.seq_len,
                t.micro_batch
            );
        }
    }
    Ok((est, available))
}

#[cfg(feature = "cuda")]
fn device_memory() -> Option<u64> {
    plan::available_device_memory()
}

#[cfg(not(feature = "cuda"))]
fn device_memory() -> Option<u64> {
    None
}
