//! `v4train merge`: folds a LoRA checkpoint's adapters into its base model and writes a plain
//! model directory in the release layout (FP8/FP4 like the release, BF16 or F32), with a report
//! of how much of the update each tensor kind kept ([`v4train::merge`]).

use crate::write_args::{progress_line, WriteArgs};
use anyhow::Context;
use std::path::PathBuf;
use std::time::Instant;
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
    /// Output directory, dtype (fp8 re-quantizes after the merge), shard size, overwrite.
    #[command(flatten)]
    pub write: WriteArgs,
    /// Merge even when `adapter.json` records a different base content hash.
    #[arg(long)]
    pub force_base: bool,
}

/// Runs the merge, printing progress and the report to stderr.
pub fn run(args: &MergeArgs) -> anyhow::Result<()> {
    let (start, w) = (Instant::now(), &args.write);
    eprintln!(
        "merge: {} + {} -> {} as {:?}",
        args.model.display(),
        args.adapter.display(),
        w.out.display(),
        w.dtype
    );
    let opts = MergeOptions {
        write: w.options(),
        force_base: args.force_base,
    };
    let report = merge(
        &args.model,
        &args.adapter,
        &w.out,
        &opts,
        &mut progress_line(),
    )
    .with_context(|| format!("merging into {}", w.out.display()))?;
    eprintln!();
    eprint!("{}", report.table());
    eprintln!(
        "merge: {} tensors merged, {} copied in {:.1}s; report in {}",
        report.merged,
        report.copied,
        start.elapsed().as_secs_f64(),
        w.out.join(REPORT_FILE).display()
    );
    Ok(())
}
