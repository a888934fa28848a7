//! Plain (unquantized) element codecs of the release's dtypes (spec §3.1): F32 / BF16 / F16 floats
//! and I32 / I64 integers, little-endian as safetensors stores them. `half` does the 16-bit floats;
//! the byte slices come straight from the memory map (no alignment assumed).

use half::{bf16, f16};
use safetensors::Dtype;

/// True for the float dtypes that hold values directly (no scale).
pub fn is_plain_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::BF16 | Dtype::F16)
}

/// True for the integer dtypes accepted for `tid2eid`.
pub fn is_int(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::I32 | Dtype::I64)
}

/// Decodes F32 / BF16 / F16 bytes to f32 (exact: every value widens losslessly); `None` for
/// other dtypes.
pub fn decode_float(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let v = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => return None,
    };
    Some(v)
}

/// Decodes I32 / I64 bytes to i64; `None` for other dtypes.
pub fn decode_int(dtype: Dtype, bytes: &[u8]) -> Option<Vec<i64>> {
    let v = match dtype {
        Dtype::I64 => bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect(),
        Dtype::I32 => bytes
            .chunks_exact(4)
            .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        _ => return None,
    };
    Some(v)
}

/// Little-endian F32 bytes.
pub fn encode_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian BF16 bytes, rounding to nearest even (as torch's `.to(torch.bfloat16)`).
pub fn encode_bf16(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
        .collect()
}

/// Little-endian I64 bytes.
pub fn encode_i64(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Number of elements of `shape`, `None` on overflow.
pub fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d))
}
