//! `v4train merge`: folds the LoRA adapters of a checkpoint into its base model and writes a
//! plain model directory in the release layout. Tensor by tensor over the inventory: an adapted
//! matrix is dequantized to f32, gets `s · B @ A` ([`delta`]), and is written in the output
//! dtype — FP8 output re-quantizes with the release rule, never adding to FP8/FP4 codes; every
//! other tensor is copied (quantized ones code for code). Memory stays at a few copies of the
//! largest matrix. The [`MergeReport`] measures the update per tensor kind and how much of it
//! survived the output's rounding.

pub mod adapter_file;
pub mod delta;
pub mod error;
pub mod plan;
pub mod report;
pub mod rounding;
pub mod tensor;

pub use error::{BaseMismatch, MergeError, ShapeMismatch};
pub use report::{KindReport, MergeReport, REPORT_FILE};

use crate::adapter_files::{base_hash, read_config, AdapterConfig, ADAPTERS, ADAPTER_CONFIG};
use adapter_file::AdapterFile;
use report::Tally;
use rounding::Rounding;
use std::path::Path;
use std::time::Instant;
use v4_checkpoints::export::COPIED_FILES;
use v4_checkpoints::plan::Encoding;
use v4_checkpoints::{
    CheckpointWriter, ExportProgress, ModelDir, OutputDtype, Tensor, WriteOptions,
};
use v4_model::{inventory, ReleaseDtype};

/// Options of a merge.
#[derive(Debug, Clone, Default)]
pub struct MergeOptions {
    /// Output dtype, shard size, `force` (tokenizer files are copied from the base).
    pub write: WriteOptions,
    /// Merge even when `adapter.json` records another base (a warning, not an error).
    pub force_base: bool,
}

/// Merges the adapters of the LoRA checkpoint `adapter` into the model `base` and writes the
/// result to `out` (with `merge_report.json`). `progress` is called after each tensor.
pub fn merge(
    base: &Path,
    adapter: &Path,
    out: &Path,
    opts: &MergeOptions,
    progress: &mut dyn FnMut(ExportProgress<'_>),
) -> Result<MergeReport, MergeError> {
    let start = Instant::now();
    refuse_inputs_as_output(out, &[base, adapter])?;
    let src = ModelDir::open(base)?;
    let specs = inventory(src.config());
    src.check_against(&specs)?;
    let config = read_config(adapter)?;
    config.lora.validate().map_err(|m| MergeError::Adapter {
        file: adapter.join(ADAPTER_CONFIG),
        message: format!("[lora]: {m}"),
    })?;
    let file = AdapterFile::open(&adapter.join(ADAPTERS))?;
    let patches = plan::plan(src.config(), &specs, &config.lora, &file)?;

    let actual = check_base(base, adapter, &config, opts.force_base)?;
    let mut wopts = opts.write.clone();
    wopts.extra_files.extend(
        COPIED_FILES
            .iter()
            .map(|f| base.join(f))
            .filter(|p| p.is_file()),
    );
    let mut w =
        CheckpointWriter::create(out, src.config(), Some(src.config_json()), &specs, &wopts)?;
    let (mut tally, mut merged) = (Tally::default(), 0);
    for (i, spec) in specs.iter().enumerate() {
        match (patches.get(&spec.name), spec.shape.as_slice()) {
            (Some(p), &[rows, cols]) => {
                let rounding = Rounding::of(Encoding::of(spec.dtype, wopts.dtype));
                let d = delta::delta(&file, p, rows, cols)?;
                let base_w = tensor::base_values(&src, &spec.name, rounding)?;
                let m = tensor::merge_matrix(&spec.name, base_w, &d, [rows, cols], rounding)?;
                match &m.quantized {
                    Some(q) => w.write_quantized(&spec.name, q)?,
                    None => w.write_f32(&spec.name, &m.values)?,
                }
                tally.add(&spec.name, rounding, m.sums);
                merged += 1;
            }
            _ => copy(&src, &mut w, &spec.name, spec.dtype)?,
        }
        progress(ExportProgress {
            tensor: &spec.name,
            done: i + 1,
            total: specs.len(),
        });
    }
    w.finish()?;
    let report = MergeReport {
        base: base.to_path_buf(),
        adapter: adapter.to_path_buf(),
        out: out.to_path_buf(),
        dtype: dtype_name(wopts.dtype).into(),
        base_hash: actual,
        adapter_base_hash: config.base.content_hash,
        merged,
        copied: specs.len() - merged,
        kinds: tally.kinds(),
        seconds: start.elapsed().as_secs_f64(),
    };
    report.write(out)?;
    Ok(report)
}

/// The base's content hash, checked against the one `adapter.json` records: a mismatch is an
/// error, or a warning with `force`.
fn check_base(
    base: &Path,
    adapter: &Path,
    config: &AdapterConfig,
    force: bool,
) -> Result<String, MergeError> {
    tracing::info!(
        "hashing {} to check it is the adapters' base",
        base.display()
    );
    let actual = base_hash(base)?;
    if actual != config.base.content_hash {
        let e = MergeError::BaseMismatch(Box::new(BaseMismatch {
            adapter: adapter.to_path_buf(),
            recorded_path: config.base.path.clone(),
            recorded: config.base.content_hash.clone(),
            base: base.to_path_buf(),
            actual: actual.clone(),
        }));
        if !force {
            return Err(e);
        }
        tracing::warn!("--force-base: merging anyway: {e}");
    }
    Ok(actual)
}

/// Copies tensor `name` unchanged, as `export` does (quantized ones code for code when the
/// output keeps their format).
fn copy(
    src: &ModelDir,
    w: &mut CheckpointWriter,
    name: &str,
    dtype: ReleaseDtype,
) -> Result<(), MergeError> {
    if dtype == ReleaseDtype::I64 {
        return Ok(w.write_i64(name, &src.tensor_i64(name)?.1)?);
    }
    match src.tensor(name)? {
        Tensor::Quantized(q) => w.write_quantized(name, &q)?,
        _ => w.write_f32(name, &src.tensor_f32(name)?.1)?,
    }
    Ok(())
}

/// Refuses an output directory that is one of the inputs.
fn refuse_inputs_as_output(out: &Path, inputs: &[&Path]) -> Result<(), MergeError> {
    let Ok(o) = out.canonicalize() else {
        return Ok(());
    };
    match inputs
        .iter()
        .find(|i| i.canonicalize().is_ok_and(|i| i == o))
    {
        Some(i) => Err(MergeError::Usage {
            dir: out.to_path_buf(),
            message: format!("the output directory is the input {}", i.display()),
        }),
        None => Ok(()),
    }
}

/// `--dtype` spelling of `d`.
fn dtype_name(d: OutputDtype) -> &'static str {
    match d {
        OutputDtype::Fp8 => "fp8",
        OutputDtype::Bf16 => "bf16",
        OutputDtype::F32 => "f32",
    }
}
