//! A run directory (`[checkpoint] dir`) owns its outputs: this process holds its lock for the
//! whole run, every run has an id recorded in its checkpoints, a run resumes only from a
//! verified checkpoint, and a run never starts into, prunes, or resumes another run's
//! checkpoints by accident: a fresh run into a directory holding checkpoints is an error that
//! says what is there and the ways out (`--resume`, another directory, `--overwrite`).

use super::checkpoint::{list, remove_partial, verified_state, Found, TrainerState};
use super::run_lock::RunLock;
use crate::recipe::Resume;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// A run directory held by this process.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    _lock: RunLock,
}

/// Where a run starts.
#[derive(Debug, Clone)]
pub struct RunStart {
    /// The run's id: new for a fresh run, the checkpoint's when resuming.
    pub run_id: String,
    /// The verified checkpoint to resume from, with its state.
    pub resume_from: Option<(PathBuf, TrainerState)>,
}

impl RunDir {
    /// Creates (if needed) and checks `dir`: a directory, writable; takes its lock and clears
    /// partial checkpoints that a killed save left behind.
    pub fn open(dir: &Path) -> Result<Self> {
        let shown = dir.display();
        if dir.exists() && !dir.is_dir() {
            bail!("[checkpoint] dir = {shown:?} is a file, not a directory; choose a directory");
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("[checkpoint] dir = {shown:?} cannot be created"))?;
        probe_writable(dir).with_context(|| format!("[checkpoint] dir = {shown:?}"))?;
        let lock = RunLock::acquire(dir)?;
        let removed = remove_partial(dir)?;
        if removed > 0 {
            eprintln!(
                "removed {removed} partial checkpoint(s) left in {shown} by an interrupted save"
            );
        }
        Ok(Self {
            path: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Decides where the run starts under `resume`, verifying the checkpoint it resumes from.
    /// With `overwrite`, checkpoints of other runs (all of them, for a fresh run) are deleted
    /// instead of refused.
    pub fn start(&self, resume: &Resume, overwrite: bool) -> Result<RunStart> {
        let all = list(&self.path)?;
        let resume_from = match resume {
            Resume::Never => None,
            Resume::Auto => self.newest_valid(&all)?,
            Resume::Latest => Some(self.latest(&all)?),
            Resume::Path(p) => Some((
                p.clone(),
                verified_state(p).map_err(|c| {
                    anyhow::anyhow!("[checkpoint] resume = {:?}: {c}", p.display().to_string())
                })?,
            )),
        };
        let run_id = match &resume_from {
            Some((_, s)) if !s.run_id.is_empty() => s.run_id.clone(),
            _ => new_run_id(),
        };
        // Checkpoints of the run being resumed (one without an id, written by an older
        // version, adopts its kind; one whose state is unreadable was reported corrupt above).
        let own = |f: &Found| match (&resume_from, f.run_id()) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some((_, s)), Some(id)) => id == s.run_id,
        };
        let foreign: Vec<&Found> = all.iter().filter(|f| !own(f)).collect();
        if !foreign.is_empty() {
            if !overwrite {
                bail!(self.foreign_message(&foreign, resume_from.is_some()));
            }
            for f in &foreign {
                std::fs::remove_dir_all(&f.path)
                    .with_context(|| format!("--overwrite: removing {}", f.path.display()))?;
            }
            eprintln!(
                "--overwrite: removed {} checkpoint(s) of another run from {}",
                foreign.len(),
                self.path.display()
            );
        }
        Ok(RunStart {
            run_id,
            resume_from,
        })
    }

    /// `resume = "auto"`: the newest checkpoint that verifies, saying which ones were skipped.
    fn newest_valid(&self, all: &[Found]) -> Result<Option<(PathBuf, TrainerState)>> {
        let mut bad = Vec::new();
        for f in all.iter().rev() {
            match verified_state(&f.path) {
                Ok(s) => {
                    if !bad.is_empty() {
                        eprintln!(
                            "falling back to {} (step {}), the newest valid checkpoint",
                            f.path.display(),
                            s.step
                        );
                    }
                    return Ok(Some((f.path.clone(), s)));
                }
                Err(c) => {
                    eprintln!("checkpoint {} is corrupt: {c}", f.path.display());
                    bad.push(c.to_string());
                }
            }
        }
        if !bad.is_empty() {
            bail!(
                "no valid checkpoint to resume from in {} ({}); remove them or pass --overwrite \
                 to start afresh",
                self.path.display(),
                bad.join("; ")
            );
        }
        Ok(None)
    }

    /// `--resume`: the newest checkpoint, which must exist and verify.
    fn latest(&self, all: &[Found]) -> Result<(PathBuf, TrainerState)> {
        let Some(f) = all.last() else {
            bail!(
                "--resume: {} holds no checkpoint to resume from; drop --resume to start a new \
                 run there",
                self.path.display()
            );
        };
        let s = verified_state(&f.path).map_err(|c| {
            anyhow::anyhow!(
                "--resume: the newest checkpoint {} is corrupt: {c}; `--set \
                 checkpoint.resume=auto` falls back to the newest valid checkpoint, `--set \
                 checkpoint.resume=PATH` resumes from the one you name",
                f.path.display()
            )
        })?;
        Ok((f.path.clone(), s))
    }

    fn foreign_message(&self, foreign: &[&Found], resuming: bool) -> String {
        let mut runs: Vec<(String, Vec<u64>)> = Vec::new();
        for f in foreign {
            let id = f.run_id().unwrap_or("unreadable state").to_string();
            let id = if id.is_empty() { "no id".into() } else { id };
            match runs.iter_mut().find(|(r, _)| *r == id) {
                Some((_, steps)) => steps.push(f.step),
                None => runs.push((id, vec![f.step])),
            }
        }
        let what: Vec<String> = runs
            .iter()
            .map(|(id, steps)| {
                let steps: Vec<String> = steps.iter().map(u64::to_string).collect();
                format!("run {id}: steps {}", steps.join(", "))
            })
            .collect();
        let ways = if resuming {
            "train into another [checkpoint] dir, or pass --overwrite to delete them"
        } else {
            "continue that run with --resume, train into another [checkpoint] dir, or pass \
             --overwrite to delete them"
        };
        format!(
            "{} holds checkpoints of {} ({}); {ways}",
            self.path.display(),
            if resuming {
                "another run"
            } else {
                "an earlier run, and this run starts from scratch (resume = \"never\")"
            },
            what.join("; ")
        )
    }
}

/// Creates, syncs and removes a small file in `dir`.
pub fn probe_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".v4train-probe-{}", std::process::id()));
    let written = std::fs::write(&probe, b"probe").and_then(|()| {
        std::fs::File::open(&probe)?.sync_all()?;
        std::fs::remove_file(&probe)
    });
    written.with_context(|| format!("{} is not writable", dir.display()))
}

/// A new run id: start time (seconds, hex) and 32 random bits.
pub fn new_run_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{secs:x}-{:08x}", rand::random::<u32>())
}
