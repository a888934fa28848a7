//! Training checkpoints: `step-000123/` holds the model in the release layout (f32, so resume is
//! exact), the optimizer state (`optimizer.safetensors`), `trainer_state.json` (step, recipe
//! copy) and, for text / chat data, the data loader's cursor (`data_cursor.json`). Written into a temporary directory and renamed, so a killed save never leaves a
//! directory that looks complete; only the newest `keep_last` are kept.

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use v4_checkpoints::{write_checkpoint, OutputDtype, Values, WriteOptions};
use v4_model::named::{checkpoint_grouped, checkpoint_matrix, checkpoint_vector, NamedParam};
use v4_model::{inventory, V4Model};
use v4_optim::V4Optimizer;

/// `trainer_state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: u64,
    /// The recipe text the run was started with.
    pub recipe: String,
}

const STATE: &str = "trainer_state.json";
const OPTIMIZER: &str = "optimizer.safetensors";
/// The data loader's cursor in a checkpoint (text / chat sources only).
pub const DATA_CURSOR: &str = "data_cursor.json";

/// `dir/step-000123`.
pub fn step_dir(dir: &Path, step: u64) -> PathBuf {
    dir.join(format!("step-{step:06}"))
}

/// The model's parameters as named checkpoint tensors.
pub fn model_tensors<B: AutodiffBackend>(model: &V4Model<B>) -> Vec<(String, Values)> {
    let mut out = Vec::new();
    model.visit_named(&mut |name, p| {
        let v = match p {
            NamedParam::Plain1(t) => Values::F32(checkpoint_vector(t.val().inner()).1),
            NamedParam::Plain2(t) => Values::F32(checkpoint_matrix(t.val().inner(), false).1),
            NamedParam::Transposed(t) => Values::F32(checkpoint_matrix(t.val().inner(), true).1),
            NamedParam::Grouped(t) => Values::F32(checkpoint_grouped(t.val().inner()).1),
            NamedParam::Int2(t) => Values::I64(v4_model::util::to_vec_int(t.val().inner())),
        };
        out.push((name, v));
    });
    out
}

/// Saves a complete checkpoint for `step` (with the data cursor JSON `data_cursor`, when the
/// data has one) and prunes old ones.
pub fn save<B: AutodiffBackend>(
    dir: &Path,
    step: u64,
    model: &V4Model<B>,
    optimizer: &V4Optimizer<B::InnerBackend>,
    recipe: &str,
    data_cursor: Option<&str>,
    keep_last: usize,
) -> Result<PathBuf> {
    let final_dir = step_dir(dir, step);
    let tmp = dir.join(format!(".step-{step:06}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    let cfg = &model.config;
    let opts = WriteOptions {
        dtype: OutputDtype::F32,
        force: true,
        ..WriteOptions::default()
    };
    write_checkpoint(&tmp, cfg, &inventory(cfg), &opts, model_tensors(model))?;
    optimizer.save_state(&tmp.join(OPTIMIZER))?;
    let state = TrainerState {
        step,
        recipe: recipe.to_string(),
    };
    if let Some(cursor) = data_cursor {
        let p = tmp.join(DATA_CURSOR);
        std::fs::write(&p, cursor).with_context(|| format!("writing {}", p.display()))?;
    }
    // The state file marks a complete checkpoint (see `list`), so it is written last.
    std::fs::write(tmp.join(STATE), serde_json::to_vec_pretty(&state)?)
        .with_context(|| format!("writing {}", tmp.join(STATE).display()))?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)?;
    }
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), final_dir.display()))?;
    prune(dir, keep_last)?;
    Ok(final_dir)
}

/// Complete checkpoints in `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(found);
    };
    for e in entries {
        let path = e?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse().ok()) {
            if path.join(STATE).is_file() {
                found.push((step, path));
            }
        }
    }
    found.sort();
    Ok(found)
}

fn prune(dir: &Path, keep_last: usize) -> Result<()> {
    if keep_last == 0 {
        return Ok(());
    }
    let all = list(dir)?;
    for (_, path) in all.iter().take(all.len().saturating_sub(keep_last)) {
        std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// Reads `trainer_state.json` of a checkpoint.
pub fn read_state(ckpt: &Path) -> Result<TrainerState> {
    let p = ckpt.join(STATE);
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

/// The optimizer state file of a checkpoint.
pub fn optimizer_file(ckpt: &Path) -> PathBuf {
    ckpt.join(OPTIMIZER)
}

/// The data cursor file of a checkpoint (present for text / chat data only).
pub fn data_cursor_file(ckpt: &Path) -> PathBuf {
    ckpt.join(DATA_CURSOR)
}
