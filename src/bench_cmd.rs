//! `v4train bench RECIPE.toml [--steps N] [--warmup N] [--json] [--peak-tflops X]`: times the
//! recipe's training step and prints tokens/s, model FLOPs per token, achieved FLOP/s, MFU, peak
//! memory and the per-phase split ([`v4train::bench`]).

use std::path::PathBuf;
use v4train::bench::{bench, BenchOptions, BenchReport};
use v4train::recipe::Recipe;

/// Arguments of `v4train bench RECIPE.toml`.
#[derive(clap::Args, Debug)]
pub struct BenchRecipeArgs {
    /// The recipe (TOML).
    #[arg(value_name = "RECIPE.toml")]
    pub recipe: PathBuf,
    /// Override a recipe key: `section.key=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Timed steps (after the warm-up).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub steps: u32,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub warmup: u32,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// The device's peak TFLOP/s for MFU (default: the table of known GPUs; none for CPUs).
    #[arg(long, value_name = "TFLOPS", value_parser = parse_peak)]
    pub peak_tflops: Option<f64>,
}

fn parse_peak(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a positive number of TFLOP/s, got {s:?}")),
    }
}

/// Runs the benchmark on backend `B` (`device_name` for the peak table).
pub fn run<B: burn::tensor::backend::AutodiffBackend>(
    args: &BenchRecipeArgs,
    device_name: String,
    peak_memory: impl Fn() -> Option<(u64, String)>,
    device: &B::Device,
) -> anyhow::Result<()> {
    let recipe = Recipe::load(&args.recipe, &args.set)?;
    let opts = BenchOptions {
        warmup: args.warmup as usize,
        steps: args.steps as usize,
        device_name,
        peak_tflops: args.peak_tflops,
    };
    let name = args.recipe.display().to_string();
    let report = bench::<B>(&recipe, &name, &opts, device, peak_memory)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// `x` with an SI prefix.
fn si(x: f64) -> String {
    let (v, p) = match x.abs() {
        a if a >= 1e15 => (x / 1e15, "P"),
        a if a >= 1e12 => (x / 1e12, "T"),
        a if a >= 1e9 => (x / 1e9, "G"),
        a if a >= 1e6 => (x / 1e6, "M"),
        a if a >= 1e3 => (x / 1e3, "k"),
        _ => (x, ""),
    };
    format!("{v:.3} {p}")
}

fn print_report(r: &BenchReport) {
    println!(
        "v4train bench {} (device {}, dtype {})",
        r.recipe, r.device, r.dtype
    );
    println!(
        "  {} parameters, {} tokens per step, {} warm-up + {} timed steps",
        si(r.parameters as f64),
        r.tokens_per_step,
        r.warmup_steps,
        r.timed_steps
    );
    println!(
        "  step time        {:.4} s (median; {:.4} .. {:.4})",
        r.step_secs, r.step_secs_range.0, r.step_secs_range.1
    );
    println!("  tokens/s         {:.1}", r.tokens_per_sec);
    let f = &r.flops_per_token;
    println!("  model FLOPs/tok  {}FLOP", si(f.total()));
    println!("  achieved         {}FLOP/s", si(r.achieved_flops));
    match (&r.peak_tflops, r.mfu) {
        (Some((p, src)), Some(mfu)) => {
            println!(
                "  MFU              {:.2}% of {p} TFLOP/s ({src})",
                mfu * 100.0
            )
        }
        _ => println!("  MFU              n/a (no known peak for this device; pass --peak-tflops)"),
    }
    match &r.peak_memory {
        Some((b, what)) => println!("  peak memory      {:.1} MB ({what})", *b as f64 / 1e6),
        None => println!("  peak memory      n/a"),
    }
    println!(
        "  weights          {:.1} MB base{}",
        r.base_bytes as f64 / 1e6,
        match r.adapter_bytes {
            0 => String::new(),
            a => format!(" + {:.1} MB LoRA adapters", a as f64 / 1e6),
        }
    );
    if let Some(m) = r.model_memory {
        println!(
            "  model memory     {:.1} MB (resident after loading)",
            m as f64 / 1e6
        );
    }
    let p = &r.phases;
    let step = r.step_secs.max(1e-12);
    let total = f.total().max(1e-300);
    println!("  phase        time/step   share   FLOP share");
    for (name, secs, flops) in [
        ("attention", p.attention, f.attention),
        ("indexer", p.indexer, f.indexer),
        ("moe", p.moe, f.moe),
        ("mhc", p.mhc, f.mhc),
        ("optimizer", p.optimizer, f.optimizer),
        ("other", p.other, f.other),
    ] {
        println!(
            "  {name:<10} {:>9.4} s {:>6.1}% {:>9.1}%",
            secs,
            100.0 * secs / step,
            100.0 * flops / total
        );
    }
    println!("  (phases timed alone, forward + backward; `other` is the rest of the step)");
    if !r.ns_shapes.is_empty() {
        println!("  newton-schulz [E, n, m]   calls  ms/call  ms/step  GFLOP/s  e.g.");
        let mut total = 0.0;
        for n in &r.ns_shapes {
            let per_step = n.secs_per_call * n.calls as f64;
            total += per_step;
            println!(
                "  {:<24} {:>6} {:>8.2} {:>8.1} {:>8.1}  {}",
                format!("{:?}", n.shape),
                n.calls,
                1e3 * n.secs_per_call,
                1e3 * per_step,
                n.flops_per_sec / 1e9,
                n.example
            );
        }
        println!("  ({:.3} s per step when each shape is timed alone)", total);
    }
    println!("  loss {:.4} at the last step", r.loss);
}
