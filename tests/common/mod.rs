//! Shared helpers of the CLI integration tests: the binary, scratch directories and the tiny
//! recipe's quick arguments.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The tiny recipe every CLI training test starts from.
pub const RECIPE: &str = "recipes/tiny-pretrain.toml";

/// `v4train`, run from the repository root.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_v4train"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// A fresh scratch directory name (removed if it exists; not created).
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("v4train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Tiny-recipe arguments for a quick run of `steps` steps at 48 tokens into run directory
/// `dir` (one warm-up step, checkpoints every 3 steps, all kept; metrics every step).
pub fn args(dir: &Path, steps: u64) -> Vec<String> {
    [
        RECIPE.to_string(),
        format!("--set=train.steps={steps}"),
        "--set=train.seq_len=48".into(),
        "--set=schedule.warmup_steps=1".into(),
        "--set=checkpoint.every=3".into(),
        "--set=checkpoint.keep_last=0".into(),
        "--set=log.every=1".into(),
        format!("--set=checkpoint.dir={}", dir.display()),
    ]
    .to_vec()
}

/// Runs the binary with `args` (plus `extra`).
pub fn run(args: &[String], extra: &[&str]) -> Output {
    bin().args(args).args(extra).output().unwrap()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `(step, loss)` of every line of `dir/metrics.jsonl`.
pub fn losses(dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

/// A spawned child process that is killed when the guard drops, so a failing assertion never
/// leaves a training run behind.
pub struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    /// Guards `child`.
    pub fn new(child: std::process::Child) -> Self {
        Self(Some(child))
    }

    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, std::process::Child::id)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The child, no longer guarded.
    pub fn into_inner(mut self) -> std::process::Child {
        self.0.take().expect("child present")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}
