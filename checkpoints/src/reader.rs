//! [`ModelDir`]: a V4 checkpoint directory opened for reading (spec §3.1, §4) — `config.json`
//! plus either `model.safetensors` or `model.safetensors.index.json` and its shards, every shard
//! memory-mapped. Tensors are located by name and decoded one at a time, so a 284B checkpoint is
//! never in RAM as a whole.

use crate::dtype::{decode_float, decode_int, is_int, is_plain_float};
use crate::error::{io, CheckpointError, Result};
use crate::index::{is_shard_file_name, ShardIndex, INDEX_FILE, SINGLE_FILE};
use crate::quantized::{QuantFormat, QuantizedTensor};
use crate::shard::{RawTensor, Shard};
use safetensors::Dtype;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use v4_model::{ModelConfig, ModelError};

/// Suffixes of the scale companion of `<base>.weight` (`weight_scale_inv` is the V3/vLLM spelling).
pub const SCALE_SUFFIXES: [&str; 2] = ["scale", "weight_scale_inv"];

/// An opened checkpoint directory.
#[derive(Debug)]
pub struct ModelDir {
    dir: PathBuf,
    config: ModelConfig,
    config_json: serde_json::Value,
    weights_file: PathBuf,
    shards: Vec<Shard>,
    location: BTreeMap<String, usize>,
}

/// A decoded tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Tensor<'a> {
    /// Float values (F32 / BF16 / F16 widened to f32), row-major.
    Float {
        /// Shape.
        shape: Vec<usize>,
        /// Values.
        values: Vec<f32>,
    },
    /// Integer values (I32 / I64 widened to i64).
    Int {
        /// Shape.
        shape: Vec<usize>,
        /// Values.
        values: Vec<i64>,
    },
    /// An FP8 / FP4 weight, still quantized.
    Quantized(QuantizedTensor<'a>),
}

impl Tensor<'_> {
    /// Logical shape (unpacked for FP4).
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Self::Float { shape, .. } | Self::Int { shape, .. } => shape.clone(),
            Self::Quantized(q) => q.shape.to_vec(),
        }
    }
}

/// How a tensor is stored, checked but not decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredKind {
    /// F32 / BF16 / F16.
    Float(Dtype),
    /// I32 / I64.
    Int(Dtype),
    /// FP8 / FP4 codes with a scale companion of the given name and dtype.
    Quantized {
        /// Storage format.
        format: QuantFormat,
        /// Name of the scale tensor.
        scale: String,
        /// Dtype of the scale tensor (F8_E8M0 in the release, F32 in Base checkpoints).
        scale_dtype: Dtype,
    },
}

/// A located, validated tensor: stored form plus logical shape.
#[derive(Debug, Clone)]
pub struct Layout<'a> {
    /// The stored bytes.
    pub raw: RawTensor<'a>,
    /// Storage kind.
    pub kind: StoredKind,
    /// Logical shape (FP4 `[out, in/2]` reads as `[out, in]`).
    pub shape: Vec<usize>,
}

impl ModelDir {
    /// Opens `dir`: parses `config.json` ([`ModelConfig`]), maps every shard and validates the
    /// headers and the index. A directory with shards but no index, or an index naming a missing
    /// shard, is rejected as an incomplete checkpoint.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let cfg_path = dir.join("config.json");
        if !dir.is_dir() {
            return Err(CheckpointError::Io {
                path: dir,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
            });
        }
        if !cfg_path.is_file() {
            return Err(CheckpointError::Incomplete {
                dir,
                message: "no config.json".into(),
            });
        }
        let text = std::fs::read_to_string(&cfg_path).map_err(io(&cfg_path))?;
        let json = |message: String| CheckpointError::Json {
            file: cfg_path.clone(),
            message,
        };
        let config_json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| json(e.to_string()))?;
        // The error names the file once (ours), not twice.
        let config = ModelConfig::from_json_str(&text, "").map_err(|e| match e {
            ModelError::Config { message, .. } => json(format!("invalid config: {message}")),
            ModelError::ConfigFile { message, .. } => json(message),
            other => json(other.to_string()),
        })?;
        let (weights_file, shards, location) = open_weights(&dir)?;
        Ok(Self {
            dir,
            config,
            config_json,
            weights_file,
            shards,
            location,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The raw `config.json` (every key, including those the model ignores).
    pub fn config_json(&self) -> &serde_json::Value {
        &self.config_json
    }

    /// `model.safetensors.index.json`, or `model.safetensors` when unsharded.
    pub fn weights_file(&self) -> &Path {
        &self.weights_file
    }

    /// Number of shard files.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Every stored tensor name (scales included), sorted.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.location.keys().map(String::as_str)
    }

    /// True when `name` is stored.
    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// True when `name` is the scale companion (`.scale` / `.weight_scale_inv`) of a stored
    /// `.weight`.
    pub fn is_scale_companion(&self, name: &str) -> bool {
        SCALE_SUFFIXES.iter().any(|s| {
            name.strip_suffix(s)
                .and_then(|b| b.strip_suffix('.'))
                .is_some_and(|base| self.contains(&format!("{base}.weight")))
        })
    }

    /// The stored bytes of `name`.
    pub fn raw(&self, name: &str) -> Result<RawTensor<'_>> {
        self.location
            .get(name)
            .and_then(|i| self.shards.get(*i))
            .and_then(|s| s.raw(name))
            .ok_or_else(|| CheckpointError::NotFound {
                dir: self.dir.clone(),
                tensor: name.to_string(),
            })
    }

    /// Locates `name` and checks its dtype, and for FP8/FP4 its scale companion, without decoding.
    pub fn layout(&self, name: &str) -> Result<Layout<'_>> {
        let raw = self.raw(name)?;
        let err = |message: String| CheckpointError::Tensor {
            file: raw.file.to_path_buf(),
            tensor: name.to_string(),
            message,
        };
        let kind = match raw.dtype {
            d if is_plain_float(d) => StoredKind::Float(d),
            d if is_int(d) => StoredKind::Int(d),
            Dtype::F8_E4M3 => self.quant_kind(name, &raw, QuantFormat::Fp8Block)?,
            Dtype::I8 | Dtype::U8 => self.quant_kind(name, &raw, QuantFormat::Fp4Group)?,
            Dtype::F8_E8M0 => {
                return Err(err(
                    "is an E8M0 scale tensor; it is applied when its `.weight` is read".into(),
                ))
            }
            d => return Err(err(format!("dtype {d:?} is not used by V4 checkpoints"))),
        };
        let mut shape = raw.shape.to_vec();
        if matches!(
            kind,
            StoredKind::Quantized {
                format: QuantFormat::Fp4Group,
                ..
            }
        ) {
            shape[1] *= 2;
        }
        Ok(Layout { raw, kind, shape })
    }

    fn quant_kind(
        &self,
        name: &str,
        raw: &RawTensor<'_>,
        format: QuantFormat,
    ) -> Result<StoredKind> {
        let err = |file: &Path, tensor: &str, message: String| CheckpointError::Tensor {
            file: file.to_path_buf(),
            tensor: tensor.to_string(),
            message,
        };
        let &[rows, packed] = raw.shape else {
            return Err(err(
                raw.file,
                name,
                format!(
                    "{:?} weights must be 2-D [out, in], found shape {:?}",
                    raw.dtype, raw.shape
                ),
            ));
        };
        let cols = match format {
            QuantFormat::Fp8Block => packed,
            QuantFormat::Fp4Group => packed
                .checked_mul(2)
                .ok_or_else(|| err(raw.file, name, "shape overflows".into()))?,
        };
        let base = name.strip_suffix(".weight").unwrap_or(name);
        let scale = SCALE_SUFFIXES
            .iter()
            .map(|s| format!("{base}.{s}"))
            .find(|s| self.contains(s))
            .ok_or_else(|| {
                err(
                    raw.file,
                    name,
                    format!(
                        "{:?} weight without its scale tensor `{base}.scale`",
                        raw.dtype
                    ),
                )
            })?;
        let sraw = self.raw(&scale)?;
        let want = format.scale_shape(rows, cols);
        if sraw.shape != want {
            return Err(err(
                sraw.file,
                &scale,
                format!(
                "scale of `{name}` (shape [{rows}, {cols}]) must have shape {want:?}, found {:?}",
                sraw.shape
            ),
            ));
        }
        if !(sraw.dtype == Dtype::F8_E8M0 || is_plain_float(sraw.dtype)) {
            return Err(err(
                sraw.file,
                &scale,
                format!("scale dtype must be F8_E8M0 or F32, found {:?}", sraw.dtype),
            ));
        }
        Ok(StoredKind::Quantized {
            format,
            scale,
            scale_dtype: sraw.dtype,
        })
    }

    /// Decodes `name`; FP8/FP4 weights stay quantized (borrowing the memory map).
    pub fn tensor(&self, name: &str) -> Result<Tensor<'_>> {
        let l = self.layout(name)?;
        let internal = || CheckpointError::Tensor {
            file: l.raw.file.to_path_buf(),
            tensor: name.to_string(),
            message: "cannot decode".into(),
        };
        Ok(match &l.kind {
            StoredKind::Float(d) => Tensor::Float {
                values: decode_float(*d, l.raw.data).ok_or_else(internal)?,
                shape: l.shape,
            },
            StoredKind::Int(d) => Tensor::Int {
                values: decode_int(*d, l.raw.data).ok_or_else(internal)?,
                shape: l.shape,
            },
            StoredKind::Quantized { format, scale, .. } => Tensor::Quantized(QuantizedTensor {
                shape: [l.shape[0], l.shape[1]],
                format: *format,
                data: Cow::Borrowed(l.raw.data),
                scales: self.scales(scale)?,
            }),
        })
    }

    /// Decoded scale values of a scale tensor; a NaN (E8M0 0xFF) or non-finite scale is an error.
    fn scales(&self, name: &str) -> Result<Vec<f32>> {
        let raw = self.raw(name)?;
        let values = if raw.dtype == Dtype::F8_E8M0 {
            raw.data
                .iter()
                .map(|b| crate::e8m0::decode(*b).unwrap_or(f32::NAN))
                .collect()
        } else {
            decode_float(raw.dtype, raw.data).unwrap_or_default()
        };
        match values.iter().position(|v| !v.is_finite()) {
            Some(i) => Err(CheckpointError::Tensor {
                file: raw.file.to_path_buf(),
                tensor: name.to_string(),
                message: format!("scale at flat index {i} is NaN or infinite (E8M0 0xFF)"),
            }),
            None => Ok(values),
        }
    }

    /// `name` as f32 (dequantized when stored FP8/FP4) with its logical shape.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        match self.tensor(name)? {
            Tensor::Float { shape, values } => Ok((shape, values)),
            Tensor::Quantized(q) => Ok((q.shape.to_vec(), q.dequantize())),
            Tensor::Int { .. } => Err(self.wrong_kind(name, "an integer tensor, not a float one")),
        }
    }

    /// `name` as i64 (stored I32 or I64) with its shape.
    pub fn tensor_i64(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        match self.tensor(name)? {
            Tensor::Int { shape, values } => Ok((shape, values)),
            _ => Err(self.wrong_kind(name, "a float tensor, not an integer one")),
        }
    }

    fn wrong_kind(&self, name: &str, what: &str) -> CheckpointError {
        CheckpointError::Tensor {
            file: self
                .raw(name)
                .map(|r| r.file.to_path_buf())
                .unwrap_or_default(),
            tensor: name.to_string(),
            message: format!("is {what}"),
        }
    }

    /// Streams the tensors whose name passes `filter` (scale companions are folded into their
    /// weights and never yielded), decoding each only when the iterator reaches it.
    pub fn load_filtered<'s, F>(
        &'s self,
        mut filter: F,
    ) -> impl Iterator<Item = Result<(String, Tensor<'s>)>> + 's
    where
        F: FnMut(&str) -> bool + 's,
    {
        self.tensor_names()
            .filter(move |n| !self.is_scale_companion(n) && filter(n))
            .map(move |n| Ok((n.to_string(), self.tensor(n)?)))
    }
}

/// Opens the weights of `dir`: (index or single file, shards, tensor → shard).
#[allow(clippy::type_complexity)]
fn open_weights(dir: &Path) -> Result<(PathBuf, Vec<Shard>, BTreeMap<String, usize>)> {
    let incomplete = |message: String| CheckpointError::Incomplete {
        dir: dir.to_path_buf(),
        message,
    };
    let index_path = dir.join(INDEX_FILE);
    let single = dir.join(SINGLE_FILE);
    let mut location = BTreeMap::new();
    if index_path.is_file() {
        let index = ShardIndex::read(&index_path)?;
        let files = index.shard_files();
        let mut shards = Vec::with_capacity(files.len());
        for f in &files {
            let p = dir.join(f);
            if !p.is_file() {
                return Err(incomplete(format!(
                    "{INDEX_FILE} names shard `{f}`, which does not exist"
                )));
            }
            shards.push(Shard::open(&p)?);
        }
        for (tensor, file) in &index.weight_map {
            let i = files.binary_search(&file.as_str()).unwrap_or(0);
            let shard = &shards[i];
            if shard.raw(tensor).is_none() {
                return Err(CheckpointError::Tensor {
                    file: shard.path().to_path_buf(),
                    tensor: tensor.clone(),
                    message: format!("listed in {INDEX_FILE} but missing from this shard"),
                });
            }
            location.insert(tensor.clone(), i);
        }
        return Ok((index_path, shards, location));
    }
    if single.is_file() {
        let shard = Shard::open(&single)?;
        location.extend(shard.names().into_iter().map(|n| (n, 0)));
        return Ok((single, vec![shard], location));
    }
    let leftovers: Vec<String> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_shard_file_name(n) || n.ends_with(".tmp"))
        .collect();
    Err(incomplete(if leftovers.is_empty() {
        format!("neither {SINGLE_FILE} nor {INDEX_FILE} is present")
    } else {
        format!(
            "{} shard file(s) (e.g. `{}`) but no {INDEX_FILE}: an interrupted export or copy",
            leftovers.len(),
            leftovers[0]
        )
    }))
}
