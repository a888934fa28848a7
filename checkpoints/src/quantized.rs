//! [`QuantizedTensor`]: an FP8-block or FP4-expert weight kept in its stored form (codes plus
//! decoded scales) until [`QuantizedTensor::dequantize`] is called (spec §3.1).

use crate::{e8m0, fp4, fp8};
use std::borrow::Cow;

/// How a quantized weight is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    /// FP8 e4m3, one byte per element, one scale per 128×128 block.
    Fp8Block,
    /// FP4 e2m1, two elements per byte along the input dim, one scale per 32 inputs.
    Fp4Group,
}

impl QuantFormat {
    /// Scale-grid shape for a logical `[rows, cols]` weight.
    pub fn scale_shape(self, rows: usize, cols: usize) -> [usize; 2] {
        match self {
            Self::Fp8Block => fp8::scale_shape(rows, cols),
            Self::Fp4Group => fp4::scale_shape(rows, cols),
        }
    }

    /// Bytes of stored codes for a logical `[rows, cols]` weight.
    pub fn data_len(self, rows: usize, cols: usize) -> usize {
        match self {
            Self::Fp8Block => rows * cols,
            Self::Fp4Group => rows * cols / 2,
        }
    }

    /// Stored shape of the codes (FP4 halves the last dim).
    pub fn stored_shape(self, rows: usize, cols: usize) -> [usize; 2] {
        match self {
            Self::Fp8Block => [rows, cols],
            Self::Fp4Group => [rows, cols / 2],
        }
    }
}

/// A quantized 2-D weight: `data` holds the stored codes (borrowed from the memory map when read),
/// `scales` the per-block multipliers (decoded from E8M0, or F32 in Base checkpoints).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedTensor<'a> {
    /// Logical shape `[out, in]` (unpacked).
    pub shape: [usize; 2],
    /// Storage format.
    pub format: QuantFormat,
    /// Stored codes, row-major (`[out, in]` bytes for FP8, `[out, in/2]` for FP4).
    pub data: Cow<'a, [u8]>,
    /// Scales, row-major over [`QuantFormat::scale_shape`].
    pub scales: Vec<f32>,
}

impl QuantizedTensor<'_> {
    /// The f32 values, row-major `[out, in]`; bit-exact with the reference (products of a code
    /// value and a power of two are exact).
    pub fn dequantize(&self) -> Vec<f32> {
        let [r, c] = self.shape;
        match self.format {
            QuantFormat::Fp8Block => fp8::dequantize(&self.data, &self.scales, r, c),
            QuantFormat::Fp4Group => fp4::dequantize(&self.data, &self.scales, r, c),
        }
    }

    /// Scale-grid shape.
    pub fn scale_shape(&self) -> [usize; 2] {
        self.format.scale_shape(self.shape[0], self.shape[1])
    }

    /// The scales as E8M0 bytes; `None` when one is not a power of two in E8M0 range.
    pub fn scales_e8m0(&self) -> Option<Vec<u8>> {
        self.scales.iter().map(|s| e8m0::encode(*s)).collect()
    }

    /// Detaches from the memory map.
    pub fn into_owned(self) -> QuantizedTensor<'static> {
        QuantizedTensor {
            shape: self.shape,
            format: self.format,
            data: Cow::Owned(self.data.into_owned()),
            scales: self.scales,
        }
    }
}

impl QuantizedTensor<'static> {
    /// Quantizes row-major `values` of shape `[out, in]` with the release's rule (FP4 needs an
    /// even `in`). `Err(index)` names the first non-finite value.
    pub fn quantize(values: &[f32], shape: [usize; 2], format: QuantFormat) -> Result<Self, usize> {
        let [r, c] = shape;
        let (data, exps) = match format {
            QuantFormat::Fp8Block => fp8::quantize(values, r, c)?,
            QuantFormat::Fp4Group => fp4::quantize(values, r, c)?,
        };
        Ok(Self {
            shape,
            format,
            data: Cow::Owned(data),
            scales: exps.into_iter().map(e8m0::pow2).collect(),
        })
    }
}
