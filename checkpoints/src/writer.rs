//! [`CheckpointWriter`]: writes a model directory in the release layout (spec §4 "Export") that
//! vLLM / SGLang load: `config.json`, `LICENSE`, optional tokenizer files, shards
//! `model-0000i-of-0000N.safetensors` and `model.safetensors.index.json`.
//!
//! The shard layout is planned from the tensor specs up front, so each shard's header is written
//! first and tensors can then arrive in any order, one at a time (memory stays at one tensor).
//! Crash safety: shards are written under temporary names, fsynced and renamed only in
//! [`CheckpointWriter::finish`], and the index is written last — a killed writer leaves a
//! directory that [`crate::ModelDir::open`] rejects as incomplete.

use crate::config_json::release_config;
use crate::dtype::{encode_bf16, encode_f32, encode_i64, numel};
use crate::error::{io, CheckpointError, Result};
use crate::fsutil::{commit, copy_atomic, prepare_dir, sync_dir, tmp_path, write_atomic};
use crate::index::{shard_file_name, ShardIndex, INDEX_FILE};
use crate::license::{LICENSE_ID, MIT_TEXT};
use crate::plan::{entries, split, Encoding, Entry, OutputDtype};
use crate::quantized::QuantizedTensor;
use safetensors::tensor::{Metadata, TensorInfo};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use v4_model::{ModelConfig, TensorSpec};

/// `producer` value in every shard's `__metadata__`.
pub const PRODUCER: &str = concat!("v4train ", env!("CARGO_PKG_VERSION"));

/// Options of a write.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOptions {
    /// Output dtype (release FP8/FP4 layout, BF16 or F32).
    pub dtype: OutputDtype,
    /// Maximum bytes of tensor data per shard (see [`crate::parse_size`]).
    pub max_shard_size: u64,
    /// Overwrite a non-empty output directory.
    pub force: bool,
    /// Files copied verbatim into the output (tokenizer files, `generation_config.json`).
    pub extra_files: Vec<PathBuf>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            dtype: OutputDtype::Fp8,
            max_shard_size: 5_000_000_000,
            force: false,
            extra_files: Vec::new(),
        }
    }
}

/// What a finished write produced.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteSummary {
    /// The shard files, in order.
    pub shards: Vec<PathBuf>,
    /// Bytes of tensor data (the index's `metadata.total_size`).
    pub total_size: u64,
    /// Stored tensors (scales included).
    pub tensors: usize,
}

/// Tensor values handed to [`write_checkpoint`].
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Float values, row-major in checkpoint orientation.
    F32(Vec<f32>),
    /// Integer values (`tid2eid`).
    I64(Vec<i64>),
}

struct Slot {
    spec: TensorSpec,
    enc: Encoding,
    shard: usize,
    /// Absolute file offset of each entry (weight, then scale).
    offsets: Vec<u64>,
    written: bool,
}

struct OutShard {
    path: PathBuf,
    tmp: PathBuf,
    file: File,
}

/// A checkpoint being written; see the module docs.
pub struct CheckpointWriter {
    dir: PathBuf,
    shards: Vec<OutShard>,
    slots: HashMap<String, Slot>,
    weight_map: BTreeMap<String, String>,
    total_size: u64,
    tensors: usize,
}

impl std::fmt::Debug for CheckpointWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointWriter")
            .field("dir", &self.dir)
            .field("shards", &self.shards.len())
            .field("remaining", &self.remaining())
            .finish()
    }
}

impl CheckpointWriter {
    /// Prepares `dir` (refusing a non-empty one unless `opts.force`), writes `config.json`
    /// (from `cfg`, keeping the keys of `source_config` when given), `LICENSE` and the extra
    /// files, and creates the shards (temporary names) for `specs`.
    pub fn create(
        dir: &Path,
        cfg: &ModelConfig,
        source_config: Option<&serde_json::Value>,
        specs: &[TensorSpec],
        opts: &WriteOptions,
    ) -> Result<Self> {
        let usage = |message: String| CheckpointError::Usage {
            dir: dir.to_path_buf(),
            message,
        };
        if specs.is_empty() {
            return Err(usage("no tensors to write".into()));
        }
        let mut groups = Vec::with_capacity(specs.len());
        let mut encodings = HashMap::with_capacity(specs.len());
        for spec in specs {
            let enc = Encoding::of(spec.dtype, opts.dtype);
            if encodings.insert(spec.name.clone(), enc).is_some() {
                return Err(usage(format!("tensor `{}` is listed twice", spec.name)));
            }
            groups.push(
                entries(spec, enc).map_err(|m| usage(format!("tensor `{}`: {m}", spec.name)))?,
            );
        }
        prepare_dir(dir, opts.force)?;
        let config = release_config(source_config, cfg, opts.dtype);
        let text = serde_json::to_string_pretty(&config).map_err(|e| usage(e.to_string()))?;
        write_atomic(&dir.join("config.json"), text.as_bytes())?;
        write_atomic(&dir.join("LICENSE"), MIT_TEXT.as_bytes())?;
        for f in &opts.extra_files {
            let name = f
                .file_name()
                .ok_or_else(|| usage(format!("{} is not a file", f.display())))?;
            copy_atomic(f, &dir.join(name))?;
        }

        let planned = split(groups, opts.max_shard_size);
        let n = planned.len();
        let mut w = Self {
            dir: dir.to_path_buf(),
            shards: Vec::with_capacity(n),
            slots: HashMap::with_capacity(specs.len()),
            weight_map: BTreeMap::new(),
            total_size: 0,
            tensors: 0,
        };
        let mut offsets: HashMap<String, u64> = HashMap::new();
        for (i, shard) in planned.iter().enumerate() {
            let name = shard_file_name(i, n);
            let path = dir.join(&name);
            offsets.extend(w.create_shard(&path, shard)?);
            for e in shard {
                w.weight_map.insert(e.name.clone(), name.clone());
                w.total_size += e.bytes();
                w.tensors += 1;
            }
        }
        for spec in specs {
            let enc = encodings[&spec.name];
            let names = entries(spec, enc).map_err(&usage)?;
            let shard_name = &w.weight_map[&spec.name];
            let shard = w
                .shards
                .iter()
                .position(|s| s.path.ends_with(shard_name))
                .unwrap_or(0);
            w.slots.insert(
                spec.name.clone(),
                Slot {
                    spec: spec.clone(),
                    enc,
                    shard,
                    offsets: names.iter().map(|e| offsets[&e.name]).collect(),
                    written: false,
                },
            );
        }
        Ok(w)
    }

    /// Creates one shard under its temporary name: header, then zero-filled data of the final
    /// size. Returns the absolute data offset of each entry.
    fn create_shard(&mut self, path: &Path, entries: &[Entry]) -> Result<Vec<(String, u64)>> {
        let mut infos = Vec::with_capacity(entries.len());
        let mut start = 0usize;
        for e in entries {
            let end = start + e.bytes() as usize;
            infos.push((
                e.name.clone(),
                TensorInfo {
                    dtype: e.dtype,
                    shape: e.shape.clone(),
                    data_offsets: (start, end),
                },
            ));
            start = end;
        }
        let meta = HashMap::from([
            ("format".to_string(), "pt".to_string()),
            ("license".to_string(), LICENSE_ID.to_string()),
            ("producer".to_string(), PRODUCER.to_string()),
        ]);
        let format = |message: String| CheckpointError::Format {
            file: path.to_path_buf(),
            message,
        };
        let metadata = Metadata::new(Some(meta), infos).map_err(|e| format(e.to_string()))?;
        let mut header = serde_json::to_vec(&metadata).map_err(|e| format(e.to_string()))?;
        header.resize(header.len().div_ceil(8) * 8, b' ');
        let data_start = 8 + header.len() as u64;
        let tmp = tmp_path(path);
        let mut file = File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(&(header.len() as u64).to_le_bytes())
            .and_then(|()| file.write_all(&header))
            .and_then(|()| file.set_len(data_start + start as u64))
            .map_err(io(&tmp))?;
        self.shards.push(OutShard {
            path: path.to_path_buf(),
            tmp,
            file,
        });
        let mut offsets = Vec::with_capacity(entries.len());
        let mut at = data_start;
        for e in entries {
            offsets.push((e.name.clone(), at));
            at += e.bytes();
        }
        Ok(offsets)
    }

    /// Tensors not written yet.
    pub fn remaining(&self) -> usize {
        self.slots.values().filter(|s| !s.written).count()
    }

    /// The specs in the plan, with their output encodings.
    pub fn planned(&self) -> impl Iterator<Item = (&TensorSpec, Encoding)> {
        self.slots.values().map(|s| (&s.spec, s.enc))
    }

    fn slot(&mut self, name: &str, int: bool) -> Result<&mut Slot> {
        let dir = self.dir.clone();
        let usage = |message: String| CheckpointError::Usage {
            dir: dir.clone(),
            message,
        };
        let slot = self
            .slots
            .get_mut(name)
            .ok_or_else(|| usage(format!("tensor `{name}` is not in the writer's inventory")))?;
        if slot.written {
            return Err(usage(format!("tensor `{name}` written twice")));
        }
        if int != (slot.enc == Encoding::I64) {
            let kind = if int { "float" } else { "integer" };
            return Err(usage(format!("tensor `{name}` is a {kind} tensor")));
        }
        Ok(slot)
    }

    /// Writes the f32 values (row-major, checkpoint orientation) of a float tensor, encoding it
    /// as planned (BF16 rounding, or FP8/FP4 quantization with the release's rule).
    pub fn write_f32(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let (enc, shape, shard) = {
            let s = self.slot(name, false)?;
            (s.enc, s.spec.shape.clone(), s.shard)
        };
        let file = self.shards[shard].path.clone();
        let err = |message: String| CheckpointError::Tensor {
            file: file.clone(),
            tensor: name.to_string(),
            message,
        };
        check_len(&shape, values.len()).map_err(&err)?;
        let blobs = match enc {
            Encoding::F32 => vec![encode_f32(values)],
            Encoding::Bf16 => vec![encode_bf16(values)],
            Encoding::I64 => return Err(err("is an integer tensor".into())),
            Encoding::Quantized(format) => {
                let q = QuantizedTensor::quantize(values, [shape[0], shape[1]], format).map_err(
                    |i| {
                        err(format!(
                            "value at flat index {i} is not finite; cannot quantize"
                        ))
                    },
                )?;
                let scales = q
                    .scales_e8m0()
                    .ok_or_else(|| err("a block scale is outside the E8M0 range".into()))?;
                vec![q.data.into_owned(), scales]
            }
        };
        self.put(name, &blobs)
    }

    /// Writes an already-quantized weight: when it is planned in the same format, its codes and
    /// scales are copied as they are (lossless and byte-identical, e.g. exporting a release
    /// checkpoint); otherwise it is dequantized and encoded like [`Self::write_f32`].
    pub fn write_quantized(&mut self, name: &str, q: &QuantizedTensor<'_>) -> Result<()> {
        let (enc, shape, shard) = {
            let s = self.slot(name, false)?;
            (s.enc, s.spec.shape.clone(), s.shard)
        };
        let scales = q.scales_e8m0();
        match (enc, scales) {
            (Encoding::Quantized(f), Some(scales)) if f == q.format && shape == q.shape => {
                if q.data.len() != f.data_len(shape[0], shape[1]) {
                    return Err(CheckpointError::Tensor {
                        file: self.shards[shard].path.clone(),
                        tensor: name.to_string(),
                        message: format!("{} code bytes for shape {shape:?}", q.data.len()),
                    });
                }
                self.put(name, &[q.data.to_vec(), scales])
            }
            _ => self.write_f32(name, &q.dequantize()),
        }
    }

    /// Writes the values of an integer tensor (`tid2eid`, stored I64).
    pub fn write_i64(&mut self, name: &str, values: &[i64]) -> Result<()> {
        let shape = self.slot(name, true)?.spec.shape.clone();
        let shard = self.slots[name].shard;
        check_len(&shape, values.len()).map_err(|message| CheckpointError::Tensor {
            file: self.shards[shard].path.clone(),
            tensor: name.to_string(),
            message,
        })?;
        self.put(name, &[encode_i64(values)])
    }

    fn put(&mut self, name: &str, blobs: &[Vec<u8>]) -> Result<()> {
        let Some(slot) = self.slots.get_mut(name) else {
            return Ok(());
        };
        let shard = &mut self.shards[slot.shard];
        for (blob, off) in blobs.iter().zip(&slot.offsets) {
            shard
                .file
                .seek(SeekFrom::Start(*off))
                .and_then(|_| shard.file.write_all(blob))
                .map_err(io(&shard.tmp))?;
        }
        slot.written = true;
        Ok(())
    }

    /// Fsyncs and renames every shard to its final name (the index is not written yet).
    pub(crate) fn commit_shards(&mut self) -> Result<()> {
        for s in &self.shards {
            commit(&s.tmp, &s.file, &s.path)?;
        }
        sync_dir(&self.dir)
    }

    /// Checks that every tensor was written, commits the shards, then writes the index last.
    pub fn finish(mut self) -> Result<WriteSummary> {
        let mut missing: Vec<&str> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.written)
            .map(|(n, _)| n.as_str())
            .collect();
        if !missing.is_empty() {
            missing.sort_unstable();
            return Err(CheckpointError::Usage {
                dir: self.dir.clone(),
                message: format!(
                    "{} tensor(s) never written (first: `{}`); no index written, the directory stays incomplete",
                    missing.len(),
                    missing[0]
                ),
            });
        }
        self.commit_shards()?;
        let index = ShardIndex {
            metadata: serde_json::Map::from_iter([(
                "total_size".to_string(),
                serde_json::Value::from(self.total_size),
            )]),
            weight_map: std::mem::take(&mut self.weight_map),
        };
        let index_path = self.dir.join(INDEX_FILE);
        let text = serde_json::to_string_pretty(&index).map_err(|e| CheckpointError::Json {
            file: index_path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&index_path, text.as_bytes())?;
        Ok(WriteSummary {
            shards: self.shards.iter().map(|s| s.path.clone()).collect(),
            total_size: self.total_size,
            tensors: self.tensors,
        })
    }
}

fn check_len(shape: &[usize], len: usize) -> std::result::Result<(), String> {
    match numel(shape) {
        Some(n) if n == len => Ok(()),
        _ => Err(format!("{len} values given for shape {shape:?}")),
    }
}

/// Writes a whole checkpoint from a stream of named tensors (e.g. the trainer's parameters):
/// `specs` fixes names, shapes and release dtypes (`v4_model::inventory(cfg)`), `tensors` yields
/// every one of them once, in any order.
pub fn write_checkpoint<I>(
    dir: &Path,
    cfg: &ModelConfig,
    specs: &[TensorSpec],
    opts: &WriteOptions,
    tensors: I,
) -> Result<WriteSummary>
where
    I: IntoIterator<Item = (String, Values)>,
{
    let mut w = CheckpointWriter::create(dir, cfg, None, specs, opts)?;
    for (name, values) in tensors {
        match values {
            Values::F32(v) => w.write_f32(&name, &v)?,
            Values::I64(v) => w.write_i64(&name, &v)?,
        }
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelDir;

    /// A writer killed after committing its shards but before the index: the directory has every
    /// shard under its final name and is still rejected.
    #[test]
    fn killed_between_shards_and_index_is_incomplete() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny_q");
        let src = ModelDir::open(&fixture).unwrap();
        let specs = v4_model::inventory(src.config());
        let dir = std::env::temp_dir().join(format!("v4ckpt-kill-{}", std::process::id()));
        let opts = WriteOptions {
            max_shard_size: 400_000,
            force: true,
            ..WriteOptions::default()
        };
        let mut w = CheckpointWriter::create(&dir, src.config(), None, &specs, &opts).unwrap();
        for s in &specs {
            match src.tensor(&s.name).unwrap() {
                crate::Tensor::Int { values, .. } => w.write_i64(&s.name, &values).unwrap(),
                _ => w
                    .write_f32(&s.name, &src.tensor_f32(&s.name).unwrap().1)
                    .unwrap(),
            }
        }
        w.commit_shards().unwrap();
        assert!(dir.join(shard_file_name(0, w.shards.len())).is_file());
        drop(w);
        let e = ModelDir::open(&dir).unwrap_err().to_string();
        assert!(e.contains("incomplete checkpoint"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
