//! `optim-plan`: prints which optimizer (spec §2.3: Muon or AdamW) trains every parameter of a V4
//! model, with shape and weight decay, and a per-optimizer summary. The model comes from a preset or
//! a `config.json`, the optimizer settings from a JSON file holding the `[optim]` table — or both
//! from a training recipe (`v4train optim-plan recipe.toml`), and the batched Newton–Schulz
//! calls of a Muon step ([`ns_batches`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use v4_model::{inventory, ModelConfig, TensorSpec};
use v4_optim::{plan, totals, OptimConfig, ParamGroup};
use v4train::plan::ns_batches;

/// Arguments of `optim-plan`.
#[derive(clap::Args, Debug)]
pub struct OptimPlanArgs {
    /// A training recipe: takes the model from `[model]` and the settings from `[optim]`.
    #[arg(value_name = "RECIPE.toml", conflicts_with_all = ["config", "optim"])]
    pub recipe: Option<PathBuf>,
    /// Recipe overrides `section.key=value` (with a recipe).
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "recipe")]
    pub set: Vec<String>,
    /// Model preset (`v4-flash` or `v4-pro`).
    #[arg(long, default_value = "v4-flash", conflicts_with = "config")]
    pub preset: String,
    /// Hugging Face style model `config.json` instead of a preset.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// JSON file with the optimizer settings, i.e. the `[optim]` table
    /// (`{"muon": {...}, "adamw": {...}, "weight_decay": {...}}`); defaults to V4's.
    #[arg(long)]
    pub optim: Option<PathBuf>,
    /// Print only the summary.
    #[arg(long)]
    pub summary_only: bool,
}

fn model_from_args(args: &OptimPlanArgs) -> anyhow::Result<ModelConfig> {
    Ok(match &args.config {
        Some(path) => ModelConfig::from_file(path)?,
        None => ModelConfig::preset(&args.preset)?,
    })
}

fn optim_from_args(args: &OptimPlanArgs) -> anyhow::Result<OptimConfig> {
    Ok(match &args.optim {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => OptimConfig::default(),
    })
}

/// Prints the plan.
pub fn run(args: &OptimPlanArgs) -> anyhow::Result<()> {
    let (model, optim) = match &args.recipe {
        Some(path) => {
            let recipe = v4train::recipe::Recipe::load(path, &args.set)?;
            (recipe.model.resolve()?, recipe.optim)
        }
        None => (model_from_args(args)?, optim_from_args(args)?),
    };
    let settings = optim.resolve()?;
    let specs = inventory(&model);
    let entries = plan(
        &settings,
        specs.iter().map(|s| (s.name.as_str(), s.shape.as_slice())),
    )?;
    if !args.summary_only {
        println!(
            "{:<56} {:<9} {:<10} {:>6} shape",
            "parameter", "optimizer", "group", "wd"
        );
        for e in &entries {
            println!(
                "{:<56} {:<9} {:<10} {:>6} {:?}",
                e.name,
                format!("{:?}", e.optimizer).to_lowercase(),
                e.group.name(),
                e.weight_decay,
                e.shape
            );
        }
    }
    println!("\nsummary:");
    for (opt, t) in totals(&entries) {
        println!(
            "  {opt:<9} {:>7} tensors {:>18} parameters",
            t.tensors, t.params
        );
    }
    let mut groups: BTreeMap<ParamGroup, (usize, u64)> = BTreeMap::new();
    for e in &entries {
        let g = groups.entry(e.group).or_default();
        g.0 += 1;
        g.1 += e.shape.iter().map(|&d| d as u64).product::<u64>();
    }
    for (group, (n, params)) in groups {
        let wd = settings.weight_decay(group);
        println!(
            "    {:<10} {n:>7} tensors {params:>18} parameters  wd {wd}",
            group.name()
        );
    }
    print_batches(&model, &specs);
    println!("  muon settings: {:?}", settings.muon);
    println!("  adamw settings: {:?}", settings.adamw);
    Ok(())
}

/// Prints the Newton–Schulz calls per step, grouped by shape.
fn print_batches(cfg: &ModelConfig, specs: &[TensorSpec]) {
    let batches = ns_batches(cfg, specs);
    let matrices: usize = batches.iter().map(|b| b.count).sum();
    println!(
        "  newton-schulz: {} batched calls over {matrices} matrices per step",
        batches.len()
    );
    let mut shapes: BTreeMap<(usize, usize, usize), (usize, &str)> = BTreeMap::new();
    for b in &batches {
        let s = shapes
            .entry((b.count, b.rows, b.cols))
            .or_insert((0, b.name.as_str()));
        s.0 += 1;
    }
    for ((count, rows, cols), (calls, example)) in shapes.iter().rev() {
        println!("    {calls:>5} × [{count}, {rows}, {cols}]  e.g. {example}");
    }
}
