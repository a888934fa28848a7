//! FP8 e4m3 ("e4m3fn": no infinities, 0x7F/0xFF are NaN, max ±448) and the release's 128×128
//! block quantization (spec §3.1): `W[o,k] = e4m3(w[o,k]) · scale[o/128, k/128]`, edge blocks
//! partial. Hand-written: `half` has no 8-bit floats and the fp8 crates are unmaintained or pull in
//! GPU stacks; the codec is 30 lines and is pinned bit-exactly by the `tiny_q` fixture.

use crate::e8m0;

/// Largest finite e4m3 magnitude.
pub const E4M3_MAX: f32 = 448.0;
/// Side of a square scale block.
pub const BLOCK: usize = 128;
/// `amax` floor of the reference's FP8 quantizer (see [`e8m0::scale_exponent`]).
pub const AMAX_FLOOR: f32 = 1e-4;

/// The value of an e4m3 code (NaN for 0x7F / 0xFF).
pub fn decode(code: u8) -> f32 {
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((code >> 3) & 0x0F);
    let man = f32::from(code & 0x07);
    let mag = match exp {
        15 if code & 0x07 == 7 => f32::NAN,
        0 => man * e8m0::pow2(-9),
        _ => (8.0 + man) * e8m0::pow2(exp - 10),
    };
    sign * mag
}

/// The table of all 256 code values (decode once per tensor).
pub fn table() -> [f32; 256] {
    std::array::from_fn(|i| decode(i as u8))
}

/// The e4m3 code of `x`: saturate to ±448, then round to nearest, ties to even (torch's
/// `x.clamp(-448, 448).to(torch.float8_e4m3fn)`); the sign of zero is kept; NaN → 0x7F.
pub fn encode(x: f32) -> u8 {
    if x.is_nan() {
        return 0x7F;
    }
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    let a = x.abs().min(E4M3_MAX);
    if a < e8m0::pow2(-6) {
        // Subnormal range: multiples of 2^-9 (8·2^-9 = 2^-6 is the smallest normal, code 0x08).
        return sign | (a * e8m0::pow2(9)).round_ties_even() as u8;
    }
    let mut exp = ((a.to_bits() >> 23) as i32) - 127;
    // 8..=16 eighths of 2^exp; scaling by a power of two is exact, so this is one rounding.
    let mut q = (a * e8m0::pow2(3 - exp)).round_ties_even() as u32;
    if q == 16 {
        q = 8;
        exp += 1;
    }
    sign | (((exp + 7) as u8) << 3) | (q - 8) as u8
}

/// Shape `[ceil(rows/128), ceil(cols/128)]` of the scale grid of a `[rows, cols]` weight.
pub fn scale_shape(rows: usize, cols: usize) -> [usize; 2] {
    [rows.div_ceil(BLOCK), cols.div_ceil(BLOCK)]
}

/// Dequantizes row-major e4m3 `codes` of a `[rows, cols]` weight with its block `scales`
/// (row-major, [`scale_shape`]); the caller has checked both lengths.
pub fn dequantize(codes: &[u8], scales: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let lut = table();
    let sc = cols.div_ceil(BLOCK);
    let mut out = Vec::with_capacity(rows * cols);
    for (r, row) in codes.chunks_exact(cols.max(1)).take(rows).enumerate() {
        let srow = &scales[(r / BLOCK) * sc..][..sc];
        out.extend(
            row.iter()
                .enumerate()
                .map(|(c, code)| lut[usize::from(*code)] * srow[c / BLOCK]),
        );
    }
    out
}

/// Quantizes a `[rows, cols]` weight like the release: per 128×128 block,
/// scale = 2^ceil(log2(amax/448)), code = e4m3(w / scale). Returns (codes, scale exponents);
/// `Err(index)` names the first non-finite value.
pub fn quantize(values: &[f32], rows: usize, cols: usize) -> Result<(Vec<u8>, Vec<i32>), usize> {
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(i);
    }
    let [sr, sc] = scale_shape(rows, cols);
    let mut amax = vec![0f32; sr * sc];
    for (r, row) in values.chunks_exact(cols.max(1)).take(rows).enumerate() {
        for (c, v) in row.iter().enumerate() {
            let a = &mut amax[(r / BLOCK) * sc + c / BLOCK];
            *a = a.max(v.abs());
        }
    }
    let exps: Vec<i32> = amax
        .iter()
        .map(|a| e8m0::scale_exponent(*a, E4M3_MAX, AMAX_FLOOR))
        .collect();
    let scales: Vec<f32> = exps.iter().map(|e| e8m0::pow2(*e)).collect();
    let mut codes = Vec::with_capacity(rows * cols);
    for (r, row) in values.chunks_exact(cols.max(1)).take(rows).enumerate() {
        let srow = &scales[(r / BLOCK) * sc..][..sc];
        codes.extend(
            row.iter()
                .enumerate()
                .map(|(c, v)| encode(v / srow[c / BLOCK])),
        );
    }
    Ok((codes, exps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_known_values() {
        // OCP FP8 spec table for E4M3.
        assert_eq!(decode(0x7E), 448.0);
        assert_eq!(decode(0xFE), -448.0);
        assert_eq!(decode(0x01), 2f32.powi(-9));
        assert_eq!(decode(0x08), 2f32.powi(-6));
        assert_eq!(decode(0x38), 1.0);
        assert!(decode(0x7F).is_nan() && decode(0xFF).is_nan());
        assert_eq!(encode(1000.0), 0x7E);
        assert_eq!(encode(-1000.0), 0xFE);
        assert_eq!(encode(-0.0), 0x80);
        // 1.0625 is halfway between 1.0 (0x38) and 1.125 (0x39): ties to even → 0x38.
        assert_eq!(encode(1.0625), 0x38);
        assert_eq!(encode(1.1875), 0x3A);
        // Halfway between 0 and the smallest subnormal rounds to 0.
        assert_eq!(encode(2f32.powi(-10)), 0x00);
    }

    #[test]
    fn every_finite_code_round_trips() {
        for c in 0u8..=255 {
            let v = decode(c);
            if v.is_finite() {
                assert_eq!(encode(v), c, "code {c:#04x}");
            }
        }
    }
}
