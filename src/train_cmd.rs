//! `v4train RECIPE.toml` / `v4train train RECIPE.toml`: runs a training recipe.

use anyhow::Context;
use std::path::PathBuf;
use v4train::recipe::Recipe;

/// Arguments of a training run.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The recipe (TOML).
    #[arg(value_name = "RECIPE.toml")]
    pub recipe: PathBuf,
    /// Override a recipe key: `section.key=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue from the newest complete checkpoint in `[checkpoint] dir`.
    #[arg(long)]
    pub resume: bool,
}

/// Loads the recipe and trains on backend `B`.
pub fn run<B: burn::tensor::backend::AutodiffBackend>(
    args: &TrainArgs,
    device: &B::Device,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.recipe)
        .with_context(|| format!("reading {}", args.recipe.display()))?;
    let mut sets = args.set.clone();
    if args.resume {
        sets.push("checkpoint.resume=auto".into());
    }
    let recipe = Recipe::load(&args.recipe, &sets)?;
    let summary = v4train::train::run::<B>(&recipe, &text, device)?;
    if let (Some(first), Some(last)) = (summary.losses.first(), summary.losses.last()) {
        eprintln!(
            "done: steps {}..{}, loss {first:.4} → {last:.4}",
            summary.start_step,
            summary.start_step + summary.losses.len() as u64
        );
    }
    Ok(())
}
