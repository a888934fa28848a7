//! Export planning: the output dtype of every inventory tensor (spec §3.1 release dtypes), the
//! stored entries it becomes (weight plus `.scale` for FP8/FP4), and the split into shards no
//! larger than `--max-shard-size` (greedy, in inventory order; a tensor larger than the limit gets
//! a shard of its own, as in `transformers`).

use crate::quantized::QuantFormat;
use safetensors::Dtype;
use std::str::FromStr;
use v4_model::{ReleaseDtype, TensorSpec};

/// What float tensors are written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OutputDtype {
    /// The release layout: FP8 blocks, FP4 experts, BF16 / F32 / I64 elsewhere.
    #[default]
    Fp8,
    /// BF16 everywhere except the release's F32 tensors and I64 `tid2eid`.
    Bf16,
    /// Lossless F32 for every float tensor (training checkpoints).
    F32,
}

impl FromStr for OutputDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "fp8" => Ok(Self::Fp8),
            "bf16" => Ok(Self::Bf16),
            "f32" | "fp32" => Ok(Self::F32),
            other => Err(format!(
                "unknown dtype `{other}`; expected fp8, bf16 or f32"
            )),
        }
    }
}

/// How one inventory tensor is encoded on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Plain F32.
    F32,
    /// Plain BF16 (round to nearest even).
    Bf16,
    /// I64.
    I64,
    /// Quantized with a scale companion.
    Quantized(QuantFormat),
}

impl Encoding {
    /// The encoding of a tensor of release dtype `release` under `out`.
    pub fn of(release: ReleaseDtype, out: OutputDtype) -> Self {
        use ReleaseDtype as R;
        match (release, out) {
            (R::I64, _) => Self::I64,
            (R::F32, _) | (_, OutputDtype::F32) => Self::F32,
            (R::Fp8Block, OutputDtype::Fp8) => Self::Quantized(QuantFormat::Fp8Block),
            (R::Fp4Expert, OutputDtype::Fp8) => Self::Quantized(QuantFormat::Fp4Group),
            _ => Self::Bf16,
        }
    }
}

/// One safetensors entry to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Stored name.
    pub name: String,
    /// Stored dtype.
    pub dtype: Dtype,
    /// Stored shape.
    pub shape: Vec<usize>,
}

impl Entry {
    /// Bytes of data.
    pub fn bytes(&self) -> u64 {
        let n: u64 = self.shape.iter().map(|d| *d as u64).product();
        n * self.dtype.bitsize() as u64 / 8
    }
}

/// The name of the scale companion of `weight` (`x.weight` → `x.scale`).
pub fn scale_name(weight: &str) -> String {
    format!("{}.scale", weight.strip_suffix(".weight").unwrap_or(weight))
}

/// The entries a spec is written as (weight first, then its scale); `Err` explains why the spec
/// cannot be encoded (quantized tensors must be 2-D, FP4 needs an even input dim).
pub fn entries(spec: &TensorSpec, enc: Encoding) -> Result<Vec<Entry>, String> {
    let entry = |name: String, dtype, shape: Vec<usize>| Entry { name, dtype, shape };
    Ok(match enc {
        Encoding::F32 => vec![entry(spec.name.clone(), Dtype::F32, spec.shape.clone())],
        Encoding::Bf16 => vec![entry(spec.name.clone(), Dtype::BF16, spec.shape.clone())],
        Encoding::I64 => vec![entry(spec.name.clone(), Dtype::I64, spec.shape.clone())],
        Encoding::Quantized(format) => {
            let &[r, c] = spec.shape.as_slice() else {
                return Err(format!(
                    "quantized tensors must be 2-D, shape is {:?}",
                    spec.shape
                ));
            };
            if format == QuantFormat::Fp4Group && c % 2 != 0 {
                return Err(format!(
                    "FP4 packing needs an even input dim, shape is {:?}",
                    spec.shape
                ));
            }
            let (dtype, stored) = match format {
                QuantFormat::Fp8Block => (Dtype::F8_E4M3, format.stored_shape(r, c)),
                QuantFormat::Fp4Group => (Dtype::I8, format.stored_shape(r, c)),
            };
            vec![
                entry(spec.name.clone(), dtype, stored.to_vec()),
                entry(
                    scale_name(&spec.name),
                    Dtype::F8_E8M0,
                    format.scale_shape(r, c).to_vec(),
                ),
            ]
        }
    })
}

/// Splits groups of entries (one group per tensor, never split) into shards of at most
/// `max_bytes` of data each.
pub fn split(groups: Vec<Vec<Entry>>, max_bytes: u64) -> Vec<Vec<Entry>> {
    let mut shards: Vec<Vec<Entry>> = Vec::new();
    let mut size = 0u64;
    for g in groups {
        let b: u64 = g.iter().map(Entry::bytes).sum();
        if shards.is_empty() || (size > 0 && size + b > max_bytes) {
            shards.push(Vec::new());
            size = 0;
        }
        size += b;
        if let Some(last) = shards.last_mut() {
            last.extend(g);
        }
    }
    shards
}

/// Parses a size such as `5GB`, `200KB`, `1.5GiB` or `1000` (bytes). Decimal units (KB, MB, GB,
/// TB) are powers of 1000 as in `transformers`; binary ones (KiB, MiB, GiB, TiB) powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size `{s}`: expected e.g. 5GB, 200KB or 1000"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        u => return Err(format!("invalid size `{s}`: unknown unit `{u}`")),
    };
    let bytes = n * mult as f64;
    if !(bytes.is_finite() && bytes >= 1.0) {
        return Err(format!("invalid size `{s}`: must be at least 1 byte"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("5GB"), Ok(5_000_000_000));
        assert_eq!(parse_size("200KB"), Ok(200_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("5XB").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn encodings_follow_the_release() {
        use ReleaseDtype as R;
        assert_eq!(Encoding::of(R::F32, OutputDtype::Bf16), Encoding::F32);
        assert_eq!(Encoding::of(R::I64, OutputDtype::Fp8), Encoding::I64);
        assert_eq!(Encoding::of(R::Fp8Block, OutputDtype::Bf16), Encoding::Bf16);
        assert_eq!(
            Encoding::of(R::Fp4Expert, OutputDtype::Fp8),
            Encoding::Quantized(QuantFormat::Fp4Group)
        );
    }
}
