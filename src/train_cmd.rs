//! `v4train RECIPE.toml` / `v4train train RECIPE.toml`: runs a training recipe.

use std::path::PathBuf;
use v4train::recipe::Recipe;
use v4train::train::RunOptions;

/// Arguments of a training run.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The recipe (TOML).
    #[arg(value_name = "RECIPE.toml")]
    pub recipe: PathBuf,
    /// Override a recipe key: `section.key=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue from the newest checkpoint in `[checkpoint] dir` (an error when there is none
    /// or it is corrupt; `--set checkpoint.resume=auto` falls back to an older valid one).
    #[arg(long)]
    pub resume: bool,
    /// Delete checkpoints of other runs in `[checkpoint] dir` instead of refusing to start.
    #[arg(long)]
    pub overwrite: bool,
    /// Run every check before compute (run directory, resume, disk, memory, data) and stop
    /// before loading weights.
    #[arg(long)]
    pub dry_run: bool,
}

/// Loads the recipe and trains on backend `B`.
pub fn run<B: burn::tensor::backend::AutodiffBackend>(
    args: &TrainArgs,
    gpu: bool,
    device: &B::Device,
) -> anyhow::Result<()> {
    let mut sets = args.set.clone();
    if args.resume {
        sets.push("checkpoint.resume=latest".into());
    }
    let recipe = Recipe::load(&args.recipe, &sets)?;
    let opts = RunOptions {
        overwrite: args.overwrite,
        dry_run: args.dry_run,
        gpu,
    };
    let summary = v4train::train::run::<B>(&recipe, &opts, device)?;
    if let (Some(first), Some(last)) = (summary.losses.first(), summary.losses.last()) {
        eprintln!(
            "done: run {}, steps {}..{}, loss {first:.4} → {last:.4}",
            summary.run_id,
            summary.start_step,
            summary.start_step + summary.losses.len() as u64
        );
    }
    Ok(())
}
