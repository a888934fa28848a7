//! Checks before compute: everything a run will write is writable now, not at its first save
//! hours later.

use super::run_dir::probe_writable;
use anyhow::{Context, Result};
use std::path::Path;

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
            anyhow::bail!("{key}: {} is a file, not a directory", dir.display());
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{key}: {} cannot be created", dir.display()))?;
        probe_writable(dir).with_context(|| key.to_string())?;
    }
    Ok(())
}
