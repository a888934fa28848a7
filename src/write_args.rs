//! The output side of the commands that write a model directory in the release layout
//! (`v4train export`, `v4train merge`): where, in which dtype, shard size, overwrite — and the
//! tensor-by-tensor progress line they print.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use v4_checkpoints::{parse_size, ExportProgress, OutputDtype, WriteOptions};

/// Where and how a model directory is written.
#[derive(clap::Args, Debug)]
pub struct WriteArgs {
    /// Output directory (created; must be empty unless --force).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Output dtype: `fp8` (release layout: FP8 blocks, FP4 experts), `bf16` or `f32`.
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

impl WriteArgs {
    /// The writer's options (no extra files).
    pub fn options(&self) -> WriteOptions {
        WriteOptions {
            dtype: self.dtype,
            max_shard_size: self.max_shard_size,
            force: self.force,
            extra_files: Vec::new(),
        }
    }
}

/// Prints `[done/total] tensor` on one stderr line, at most every 500 ms and at the end.
pub fn progress_line() -> impl FnMut(ExportProgress<'_>) {
    let mut last = Instant::now();
    move |p: ExportProgress<'_>| {
        if p.done == p.total || last.elapsed() >= Duration::from_millis(500) {
            last = Instant::now();
            eprint!("\r  [{}/{}] {:<60}", p.done, p.total, p.tensor);
            let _ = std::io::stderr().flush();
        }
    }
}
