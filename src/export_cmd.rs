//! `v4train export`: re-writes a V4 model directory in the official Hugging Face layout
//! (spec §4 "Export") that vLLM / SGLang load — FP8 / FP4 like the release, or BF16.

use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use v4_checkpoints::{export, parse_size, ModelDir, OutputDtype, WriteOptions};

/// Arguments of `v4train export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Source model directory (`config.json` + safetensors weights).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Output directory (created; must be empty unless --force).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Output dtype: `fp8` (release layout: FP8 blocks, FP4 experts) or `bf16`.
    #[arg(long, default_value = "fp8", value_parser = parse_dtype)]
    pub dtype: OutputDtype,
    /// Largest shard, e.g. `5GB`, `200KB`, `2GiB`.
    #[arg(long, default_value = "5GB", value_parser = parse_size)]
    pub max_shard_size: u64,
    /// Overwrite a non-empty output directory.
    #[arg(long)]
    pub force: bool,
}

fn parse_dtype(s: &str) -> Result<OutputDtype, String> {
    s.parse()
}

/// Runs the export, printing progress to stderr.
pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let src =
        ModelDir::open(&args.model).with_context(|| format!("opening {}", args.model.display()))?;
    eprintln!(
        "export: {} ({} shard(s)) -> {} as {:?}",
        args.model.display(),
        src.shard_count(),
        args.out.display(),
        args.dtype
    );
    let opts = WriteOptions {
        dtype: args.dtype,
        max_shard_size: args.max_shard_size,
        force: args.force,
        extra_files: Vec::new(),
    };
    let mut last = Instant::now();
    let mut progress = |p: v4_checkpoints::ExportProgress<'_>| {
        if p.done == p.total || last.elapsed() >= Duration::from_millis(500) {
            last = Instant::now();
            eprint!("\r  [{}/{}] {:<60}", p.done, p.total, p.tensor);
            let _ = std::io::stderr().flush();
        }
    };
    let summary = export(&src, &args.out, &opts, &mut progress)
        .with_context(|| format!("exporting to {}", args.out.display()))?;
    eprintln!();
    eprintln!(
        "export: wrote {} tensors, {} shard(s), {:.3} GB in {:.1}s",
        summary.tensors,
        summary.shards.len(),
        summary.total_size as f64 / 1e9,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
