//! `v4train export`: re-writes a V4 model directory in the official Hugging Face layout
//! (spec §4 "Export") that vLLM / SGLang load — FP8 / FP4 like the release, or BF16.

use crate::write_args::{progress_line, WriteArgs};
use anyhow::Context;
use std::path::PathBuf;
use std::time::Instant;
use v4_checkpoints::{export, ModelDir};

/// Arguments of `v4train export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Source model directory (`config.json` + safetensors weights).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Output directory, dtype, shard size, overwrite.
    #[command(flatten)]
    pub write: WriteArgs,
}

/// Runs the export, printing progress to stderr.
pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    let (start, w) = (Instant::now(), &args.write);
    let src =
        ModelDir::open(&args.model).with_context(|| format!("opening {}", args.model.display()))?;
    eprintln!(
        "export: {} ({} shard(s)) -> {} as {:?}",
        args.model.display(),
        src.shard_count(),
        w.out.display(),
        w.dtype
    );
    let summary = export(&src, &w.out, &w.options(), &mut progress_line())
        .with_context(|| format!("exporting to {}", w.out.display()))?;
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
