//! Export: re-writes a [`ModelDir`] in the release layout (spec §4 "Export") with
//! [`CheckpointWriter`] — `--dtype fp8` re-quantizes like the release (FP8 128×128 blocks, FP4
//! experts), `bf16` keeps the release's F32 / I64 tensors and writes the rest BF16. A source
//! weight already stored in the target format is copied code for code: re-quantizing dequantized
//! values gives the same values but not always the same bytes — when a block's largest value is
//! exactly qmax/2 · scale (`tiny_q`: 875 of 4700 blocks) the values are representable at both
//! `scale` and `scale/2` and the amax rule picks `scale/2`, while the release (having seen the
//! unrounded weights) picked `scale`. Exactly the
//! inventory of the source `config.json` is written (the MTP `embed`/`head` aliases are dropped,
//! as in the release); tokenizer files and `generation_config.json` are copied when present.

use crate::error::{CheckpointError, Result};
use crate::reader::{ModelDir, Tensor};
use crate::writer::{CheckpointWriter, WriteOptions, WriteSummary};
use std::path::Path;
use v4_model::{inventory, ReleaseDtype};

/// Files copied from the source directory when present.
pub const COPIED_FILES: [&str; 3] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
];

/// One step of an export, for progress display.
#[derive(Debug, Clone, Copy)]
pub struct ExportProgress<'a> {
    /// Tensor just written.
    pub tensor: &'a str,
    /// Tensors done so far (1-based).
    pub done: usize,
    /// Tensors in total.
    pub total: usize,
}

/// Exports `src` to `out`. `progress` is called after each tensor.
pub fn export(
    src: &ModelDir,
    out: &Path,
    opts: &WriteOptions,
    progress: &mut dyn FnMut(ExportProgress<'_>),
) -> Result<WriteSummary> {
    if let (Ok(a), Ok(b)) = (src.dir().canonicalize(), out.canonicalize()) {
        if a == b {
            return Err(CheckpointError::Usage {
                dir: out.to_path_buf(),
                message: "the output directory is the source directory".into(),
            });
        }
    }
    let specs = inventory(src.config());
    src.check_against(&specs)?;
    let mut opts = opts.clone();
    opts.extra_files.extend(
        COPIED_FILES
            .iter()
            .map(|f| src.dir().join(f))
            .filter(|p| p.is_file()),
    );
    let mut w =
        CheckpointWriter::create(out, src.config(), Some(src.config_json()), &specs, &opts)?;
    for (i, spec) in specs.iter().enumerate() {
        if spec.dtype == ReleaseDtype::I64 {
            let (_, v) = src.tensor_i64(&spec.name)?;
            w.write_i64(&spec.name, &v)?;
        } else {
            match src.tensor(&spec.name)? {
                Tensor::Quantized(q) => w.write_quantized(&spec.name, &q)?,
                _ => w.write_f32(&spec.name, &src.tensor_f32(&spec.name)?.1)?,
            }
        }
        progress(ExportProgress {
            tensor: &spec.name,
            done: i + 1,
            total: specs.len(),
        });
    }
    w.finish()
}
