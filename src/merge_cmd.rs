//! `v4train merge`: folds a LoRA checkpoint's adapters into its base model and writes a plain
//! model directory in the release layout (FP8/FP4 like the release, BF16 or F32), with a report
//! of how much of the update each tensor kind kept ([`v4train::merge`]).

use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use v4_checkpoints::{parse_size, ExportProgress, OutputDtype, WriteOptions};
use v4train::merge::{merge, MergeOptions, REPORT_FILE};

/// Arguments of `v4train merge`.
#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    /// Base model directory (`config.json` + safetensors weights, FP8/FP4 or BF16/F32).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// LoRA checkpoint directory (`step-N/` of a LoRA run: `adapters.safetensors`,
    /// `adapter.json`).
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// Output directory (created; must be empty unless --force).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Output dtype: `fp8` (release layout: FP8 blocks, FP4 experts, re-quantized after the
    /// merge), `bf16` or `f32`.
    #[arg(long, default_value = "fp8", value_parser = parse_dtype)]
    pub dtype: OutputDtype,
    /// Largest shard, e.g. `5GB`, `200KB`, `2GiB`.
    #[arg(long, default_value = "5GB", value_parser = parse_size)]
    pub max_shard_size: u64,
    /// Overwrite a non-empty output directory.
    #[arg(long)]
    pub force: bool,
    /// Merge even when `adapter.json` records a different base content hash.
    #[arg(long)]
    pub force_base: bool,
}

fn parse_dtype(s: &str) -> Result<OutputDtype, String> {
    s.parse()
}

/// Runs the merge, printing progress and the report to stderr.
pub fn run(args: &MergeArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    eprintln!(
        "merge: {} + {} -> {} as {:?}",
        args.model.display(),
        args.adapter.display(),
        args.out.display(),
        args.dtype
    );
    let opts = MergeOptions {
        write: WriteOptions {
            dtype: args.dtype,
            max_shard_size: args.max_shard_size,
            force: args.force,
            extra_files: Vec::new(),
        },
        force_base: args.force_base,
    };
    let mut last = Instant::now();
    let mut progress = |p: ExportProgress<'_>| {
        if p.done == p.total || last.elapsed() >= Duration::from_millis(500) {
            last = Instant::now();
            eprint!("\r  [{}/{}] {:<60}", p.done, p.total, p.tensor);
            let _ = std::io::stderr().flush();
        }
    };
    let report = merge(&args.model, &args.adapter, &args.out, &opts, &mut progress)
        .with_context(|| format!("merging into {}", args.out.display()))?;
    eprintln!();
    eprint!("{}", report.table());
    eprintln!(
        "merge: {} tensors merged, {} copied in {:.1}s; report in {}",
        report.merged,
        report.copied,
        start.elapsed().as_secs_f64(),
        args.out.join(REPORT_FILE).display()
    );
    Ok(())
}
