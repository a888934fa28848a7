//! `v4train eval RECIPE.toml`: the next-token loss of a recipe's model (its base or preset, or a
//! checkpoint of its run) on the recipe's data ([`v4train::train::eval`]).

use std::path::PathBuf;
use v4train::recipe::Recipe;
use v4train::train::eval::{evaluate, summary_line, EvalOptions};

/// Arguments of `v4train eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// The recipe (TOML) whose model and data are evaluated.
    #[arg(value_name = "RECIPE.toml")]
    pub recipe: PathBuf,
    /// Override a recipe key: `section.key=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// A checkpoint of the recipe's run (`step-N/`): LoRA adapters on the recipe's base, or full
    /// weights (default: the recipe's base or preset).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: Option<PathBuf>,
    /// Micro-batches to evaluate (default: one pass over the data, at most 64).
    #[arg(long, value_name = "N")]
    pub batches: Option<u64>,
    /// Print the result as a JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Loads the recipe and evaluates on backend `B` (its inner backend runs the model).
pub fn run<B: burn::tensor::backend::AutodiffBackend>(
    args: &EvalArgs,
    device: &B::Device,
) -> anyhow::Result<()> {
    let recipe = Recipe::load(&args.recipe, &args.set)?;
    let opts = EvalOptions {
        checkpoint: args.checkpoint.clone(),
        batches: args.batches,
    };
    let report = evaluate::<B>(&recipe, &opts, device)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", summary_line(&report));
    }
    Ok(())
}
