//! `Q`, the rounding a merged matrix gets on its way to disk: none (F32 output), BF16
//! round-to-nearest-even, or the release's FP8-block / FP4-group quantization — always through
//! the checkpoint crate's own codecs (one definition of each rule). Matrices are processed in
//! bands of whole 128-row blocks, which quantize independently of each other, so bands run in
//! parallel and their codes concatenate to the whole matrix's.

use rayon::prelude::*;
use safetensors::Dtype;
use std::borrow::Cow;
use v4_checkpoints::dtype::{decode_float, encode_bf16};
use v4_checkpoints::plan::Encoding;
use v4_checkpoints::{QuantFormat, QuantizedTensor};

/// Rows per band: the FP8 block height (FP4 groups lie within a row).
pub const BAND_ROWS: usize = v4_checkpoints::fp8::BLOCK;

/// The rounding of an output encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// Written as F32 (or I64): exact.
    None,
    /// BF16, round to nearest even.
    Bf16,
    /// FP8 blocks or FP4 groups with the release's scale rule.
    Quantized(QuantFormat),
}

/// A band after [`Rounding::round`].
#[derive(Debug)]
pub struct Rounded {
    /// `Q(x)`.
    pub values: Vec<f32>,
    /// The stored codes and scales, for quantized formats.
    pub codes: Option<QuantizedTensor<'static>>,
}

impl Rounding {
    /// The rounding the writer applies to a tensor planned as `enc`.
    pub fn of(enc: Encoding) -> Self {
        match enc {
            Encoding::F32 | Encoding::I64 => Self::None,
            Encoding::Bf16 => Self::Bf16,
            Encoding::Quantized(f) => Self::Quantized(f),
        }
    }

    /// Name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Self::None => "f32",
            Self::Bf16 => "bf16",
            Self::Quantized(QuantFormat::Fp8Block) => "fp8-block",
            Self::Quantized(QuantFormat::Fp4Group) => "fp4-group",
        }
    }

    /// `Q(band)` of a band of whole rows `[n, cols]` starting on a band boundary; `Err(index)`
    /// names a non-finite value (quantized formats only).
    pub fn round(self, band: &[f32], cols: usize) -> Result<Rounded, usize> {
        Ok(match self {
            Self::None => Rounded {
                values: band.to_vec(),
                codes: None,
            },
            // The writer's own BF16 codec; decoding its even-length output cannot fail.
            Self::Bf16 => Rounded {
                values: decode_float(Dtype::BF16, &encode_bf16(band)).ok_or(0usize)?,
                codes: None,
            },
            Self::Quantized(f) => {
                let rows = band.len() / cols.max(1);
                let q = QuantizedTensor::quantize(band, [rows, cols], f)?;
                Rounded {
                    values: q.dequantize(),
                    codes: Some(q),
                }
            }
        })
    }
}

/// The bands' codes (in order) as one `[rows, cols]` tensor.
pub fn concat(
    bands: Vec<QuantizedTensor<'static>>,
    shape: [usize; 2],
    format: QuantFormat,
) -> QuantizedTensor<'static> {
    let (mut data, mut scales) = (Vec::new(), Vec::new());
    for b in bands {
        data.extend_from_slice(&b.data);
        scales.extend(b.scales);
    }
    QuantizedTensor {
        shape,
        format,
        data: Cow::Owned(data),
        scales,
    }
}

/// [`QuantizedTensor::dequantize`], band-parallel.
pub fn dequantize(q: &QuantizedTensor<'_>) -> Vec<f32> {
    let [rows, cols] = q.shape;
    let [sr, sc] = q.format.scale_shape(BAND_ROWS, cols);
    let (db, sb) = (q.format.data_len(BAND_ROWS, cols), sr * sc);
    let parts: Vec<Vec<f32>> = (0..rows.div_ceil(BAND_ROWS))
        .into_par_iter()
        .map(|i| {
            let n = BAND_ROWS.min(rows - i * BAND_ROWS);
            let [sr, sc] = q.format.scale_shape(n, cols);
            let band = QuantizedTensor {
                shape: [n, cols],
                format: q.format,
                data: Cow::Borrowed(&q.data[i * db..][..q.format.data_len(n, cols)]),
                scales: q.scales[i * sb..][..sr * sc].to_vec(),
            };
            band.dequantize()
        })
        .collect();
    parts.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_match_the_whole_tensor() {
        let (rows, cols) = (300, 96);
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0)
            .collect();
        for f in [QuantFormat::Fp8Block, QuantFormat::Fp4Group] {
            let whole = QuantizedTensor::quantize(&v, [rows, cols], f).unwrap();
            let bands = v
                .chunks(BAND_ROWS * cols)
                .map(|b| {
                    Rounding::Quantized(f)
                        .round(b, cols)
                        .unwrap()
                        .codes
                        .unwrap()
                })
                .collect();
            let banded = concat(bands, [rows, cols], f);
            assert_eq!(whole, banded);
            assert_eq!(dequantize(&banded), whole.dequantize());
        }
        let r = Rounding::Bf16
            .round(&[1.0, 1.0 + 2f32.powi(-9), 3.0e-3], 3)
            .unwrap();
        assert_eq!(r.values[..2], [1.0, 1.0]);
        assert_eq!(r.values[2], half_bf16(3.0e-3));
    }

    /// bf16 round-to-nearest-even by hand (3e-3 is no tie).
    fn half_bf16(x: f32) -> f32 {
        let b = x.to_bits();
        f32::from_bits((b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF_0000)
    }
}
