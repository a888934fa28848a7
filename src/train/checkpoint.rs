//! Training checkpoints: `step-000123/` holds the model in the release layout (f32, so resume is
//! exact) — for a LoRA run its adapters instead ([`crate::adapter_files`]) — the optimizer state (`optimizer.safetensors`), the data loader's cursor for text /
//! chat data (`data_cursor.json`) and `trainer_state.json`: the step, the run's id, how the run
//! was made ([`Provenance`]) and the SHA-256 of every other file. A checkpoint is written into a
//! temporary directory (removed again if the save fails) and renamed, so a killed or failed save
//! never leaves a directory that looks complete; only the newest `keep_last` of the run's own
//! checkpoints are kept.

use super::checksums::{checksum_dir, verify, Corruption};
use super::provenance::Provenance;
use crate::adapter_files::{self, AdapterConfig};
use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use v4_checkpoints::{write_checkpoint, OutputDtype, Values, WriteOptions};
use v4_model::named::{NamedParam, Value};
use v4_model::{inventory, V4Model};
use v4_optim::V4Optimizer;

/// `trainer_state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: u64,
    /// The run this checkpoint belongs to (empty: written before runs had ids).
    #[serde(default)]
    pub run_id: String,
    /// The recipe the run used, after its `--set` overrides (TOML).
    pub recipe: String,
    /// How the run was made (absent in checkpoints of older versions).
    #[serde(default)]
    pub provenance: Option<Provenance>,
    /// SHA-256 of every other file of the checkpoint, by name (empty in older versions).
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

/// What a run writes into each of its checkpoints besides model, optimizer and data.
#[derive(Debug, Clone)]
pub struct RunIdentity {
    /// The run's id.
    pub run_id: String,
    /// How it was made.
    pub provenance: Provenance,
}

const STATE: &str = "trainer_state.json";
const OPTIMIZER: &str = "optimizer.safetensors";
/// The data loader's cursor in a checkpoint (text / chat sources only).
pub const DATA_CURSOR: &str = "data_cursor.json";
/// Prefix of the temporary directory a checkpoint is written into.
const TMP_PREFIX: &str = ".step-";

/// `dir/step-000123`.
pub fn step_dir(dir: &Path, step: u64) -> PathBuf {
    dir.join(format!("step-{step:06}"))
}

/// The model's parameters as named checkpoint tensors.
pub fn model_tensors<B: AutodiffBackend>(model: &V4Model<B>) -> Vec<(String, Values)> {
    let mut out = Vec::new();
    model.visit_named(&mut |name, p| match p {
        NamedParam::Int2(t) => {
            out.push((
                name,
                Values::I64(v4_model::util::to_vec_int(t.val().inner())),
            ));
        }
        p => out.extend(
            p.release_tensors(&name, &Value)
                .into_iter()
                .map(|(n, _, v)| (n, Values::F32(v))),
        ),
    });
    out
}

/// Saves a complete checkpoint for `step` of run `who` (with the data cursor JSON `data_cursor`,
/// when the data has one) and prunes the run's old ones. A failed save removes what it wrote.
#[allow(clippy::too_many_arguments)]
pub fn save<B: AutodiffBackend>(
    dir: &Path,
    step: u64,
    model: &V4Model<B>,
    adapters: Option<&AdapterConfig>,
    optimizer: &V4Optimizer<B::InnerBackend>,
    who: &RunIdentity,
    data_cursor: Option<&str>,
    keep_last: usize,
) -> Result<PathBuf> {
    let final_dir = step_dir(dir, step);
    let tmp = dir.join(format!("{TMP_PREFIX}{step:06}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    let written = write_into(&tmp, step, model, adapters, optimizer, who, data_cursor);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!(
            "saving checkpoint step {step} into {} (the partial checkpoint was removed)",
            dir.display()
        )));
    }
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)
            .with_context(|| format!("replacing {}", final_dir.display()))?;
    }
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), final_dir.display()))?;
    prune(dir, keep_last, &who.run_id)?;
    Ok(final_dir)
}

fn write_into<B: AutodiffBackend>(
    tmp: &Path,
    step: u64,
    model: &V4Model<B>,
    adapters: Option<&AdapterConfig>,
    optimizer: &V4Optimizer<B::InnerBackend>,
    who: &RunIdentity,
    data_cursor: Option<&str>,
) -> Result<()> {
    let cfg = &model.config;
    match adapters {
        Some(a) => {
            std::fs::create_dir_all(tmp).with_context(|| format!("creating {}", tmp.display()))?;
            adapter_files::save(tmp, model, a)?;
        }
        None => {
            let opts = WriteOptions {
                dtype: OutputDtype::F32,
                force: true,
                ..WriteOptions::default()
            };
            write_checkpoint(tmp, cfg, &inventory(cfg), &opts, model_tensors(model))?;
        }
    }
    let opt_file = tmp.join(OPTIMIZER);
    optimizer
        .save_state(&opt_file)
        .with_context(|| format!("writing {}", opt_file.display()))?;
    if let Some(cursor) = data_cursor {
        let p = tmp.join(DATA_CURSOR);
        std::fs::write(&p, cursor).with_context(|| format!("writing {}", p.display()))?;
    }
    let state = TrainerState {
        step,
        run_id: who.run_id.clone(),
        recipe: who.provenance.effective_recipe.clone(),
        provenance: Some(who.provenance.clone()),
        files: checksum_dir(tmp, STATE)?,
    };
    // The state file marks a complete checkpoint (see `list`), so it is written last.
    let p = tmp.join(STATE);
    std::fs::write(&p, serde_json::to_vec_pretty(&state)?)
        .with_context(|| format!("writing {}", p.display()))
}

/// A checkpoint directory found in a run directory.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its step.
    pub step: u64,
    /// `dir/step-N`.
    pub path: PathBuf,
    /// Its state, or why `trainer_state.json` cannot be read.
    pub state: std::result::Result<TrainerState, String>,
}

impl Found {
    /// The run id, when the state is readable.
    pub fn run_id(&self) -> Option<&str> {
        self.state.as_ref().ok().map(|s| s.run_id.as_str())
    }
}

/// Complete checkpoints in `dir` (those with a `trainer_state.json`), oldest first.
pub fn list(dir: &Path) -> Result<Vec<Found>> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(found);
    };
    for e in entries {
        let path = e
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse().ok()) {
            if path.join(STATE).is_file() {
                let state = read_state(&path).map_err(|e| format!("{e:#}"));
                found.push(Found { step, path, state });
            }
        }
    }
    found.sort_by_key(|f| f.step);
    Ok(found)
}

/// Removes the oldest checkpoints of run `run_id` beyond the newest `keep_last` (0 keeps all).
/// Other runs' checkpoints are never touched.
fn prune(dir: &Path, keep_last: usize, run_id: &str) -> Result<()> {
    if keep_last == 0 {
        return Ok(());
    }
    let mine: Vec<Found> = list(dir)?
        .into_iter()
        .filter(|f| f.run_id() == Some(run_id))
        .collect();
    for f in mine.iter().take(mine.len().saturating_sub(keep_last)) {
        std::fs::remove_dir_all(&f.path)
            .with_context(|| format!("removing {}", f.path.display()))?;
    }
    Ok(())
}

/// Removes partial checkpoints (`.step-N.tmp/`) a killed save left in `dir`; the caller holds
/// the run lock, so nobody is writing them. Returns how many were removed.
pub fn remove_partial(dir: &Path) -> Result<usize> {
    let mut n = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    for e in entries {
        let path = e
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(TMP_PREFIX) && name.ends_with(".tmp") && path.is_dir() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing the partial checkpoint {}", path.display()))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Reads `trainer_state.json` of a checkpoint.
pub fn read_state(ckpt: &Path) -> Result<TrainerState> {
    let p = ckpt.join(STATE);
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

/// Reads a checkpoint's state and checks every file against its recorded SHA-256. A checkpoint
/// of an older version (no checksums) passes with a note on stderr.
pub fn verified_state(ckpt: &Path) -> std::result::Result<TrainerState, Corruption> {
    let state = read_state(ckpt).map_err(|e| Corruption {
        file: ckpt.join(STATE).display().to_string(),
        problem: format!("cannot be read ({e:#})"),
    })?;
    if state.files.is_empty() {
        eprintln!(
            "note: {} has no checksums (written by an older v4train); not verified",
            ckpt.display()
        );
    }
    verify(ckpt, &state.files)?;
    Ok(state)
}

/// The optimizer state file of a checkpoint.
pub fn optimizer_file(ckpt: &Path) -> PathBuf {
    ckpt.join(OPTIMIZER)
}

/// The data cursor file of a checkpoint (present for text / chat data only).
pub fn data_cursor_file(ckpt: &Path) -> PathBuf {
    ckpt.join(DATA_CURSOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(dir: &Path, step: u64, run_id: &str) {
        let p = step_dir(dir, step);
        std::fs::create_dir_all(&p).unwrap();
        let s = TrainerState {
            step,
            run_id: run_id.into(),
            recipe: String::new(),
            provenance: None,
            files: BTreeMap::new(),
        };
        std::fs::write(p.join(STATE), serde_json::to_vec(&s).unwrap()).unwrap();
    }

    #[test]
    fn pruning_keeps_other_runs_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // An older run's higher steps would win a pruning that sorts by step only.
        fake(d, 40, "old");
        fake(d, 60, "old");
        for s in [10, 20, 25] {
            fake(d, s, "new");
        }
        std::fs::create_dir_all(d.join(".step-000030.tmp")).unwrap();
        prune(d, 2, "new").unwrap();
        let left: Vec<(u64, String)> = list(d)
            .unwrap()
            .iter()
            .map(|f| (f.step, f.run_id().unwrap().to_string()))
            .collect();
        let want = [(20, "new"), (25, "new"), (40, "old"), (60, "old")];
        assert_eq!(left, want.map(|(s, r)| (s, r.to_string())));
        assert_eq!(remove_partial(d).unwrap(), 1);
        assert!(!d.join(".step-000030.tmp").exists());
    }
}
