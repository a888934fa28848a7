//! `v4train export-adapter`: a LoRA checkpoint's adapters as a Hugging Face PEFT adapter
//! directory ([`v4train::peft_export`]).

use std::path::PathBuf;

/// Arguments of `v4train export-adapter`.
#[derive(clap::Args, Debug)]
pub struct ExportAdapterArgs {
    /// Checkpoint of a `[finetune] mode = "lora"` run (`adapters.safetensors` + `adapter.json`).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Output directory (created; must be empty unless --force).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Write into a non-empty output directory.
    #[arg(long)]
    pub force: bool,
}

/// Runs the export, printing a summary (and a warning listing the skipped adapters) to stderr.
pub fn run(args: &ExportAdapterArgs) -> anyhow::Result<()> {
    let s = v4train::peft_export::export(&args.checkpoint, &args.out, args.force)?;
    if !s.skipped.is_empty() {
        eprintln!(
            "warning: {} adapter(s) not exported (listed in {}):",
            s.skipped.len(),
            args.out.join("README.md").display()
        );
        for (stem, why) in &s.skipped {
            eprintln!("  {stem}: {why}");
        }
    }
    eprintln!(
        "export-adapter: {} -> {}: {} v4train adapters as {} PEFT modules ({} target_modules, \
         {} target_parameters), {} tensors; {} skipped",
        args.checkpoint.display(),
        args.out.display(),
        s.exported,
        s.linear_modules + s.param_modules,
        s.linear_modules,
        s.param_modules,
        s.tensors,
        s.skipped.len()
    );
    Ok(())
}
