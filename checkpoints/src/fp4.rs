//! FP4 e2m1 routed-expert weights (spec §3.1): two codes per byte along the input dim (element 2i
//! in the low nibble, 2i+1 in the high nibble), code = sign<<3 | index into
//! {0, 0.5, 1, 1.5, 2, 3, 4, 6}, one scale per 32 inputs: `W[o,k] = e2m1(code[o,k]) · scale[o, k/32]`.
//! Hand-written for the same reason as `fp8.rs`: no maintained crate implements e2m1.

use crate::e8m0;

/// Magnitudes of the eight e2m1 codes.
pub const GRID: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
/// Largest e2m1 magnitude.
pub const E2M1_MAX: f32 = 6.0;
/// Inputs sharing one scale.
pub const GROUP: usize = 32;

/// `amax` floor of the reference's FP4 quantizer, 6·2^−126 (see [`e8m0::scale_exponent`]).
pub fn amax_floor() -> f32 {
    E2M1_MAX * e8m0::pow2(-126)
}

/// The value of a 4-bit code.
pub fn decode(code: u8) -> f32 {
    let mag = GRID[usize::from(code & 7)];
    if code & 8 != 0 {
        -mag
    } else {
        mag
    }
}

/// The code of `x`: saturate to ±6, round to the nearest grid value with ties to the even code
/// (0.25→0, 0.75→1, 1.25→1, 1.75→2, 2.5→2, 3.5→4, 5→4). Values that round to zero get code 0
/// (never 8): the reference writes no negative zeros (`tiny_q` has no nibble 8).
pub fn encode(x: f32) -> u8 {
    let a = x.abs();
    let mag: u8 = if a <= 0.25 {
        0
    } else if a < 0.75 {
        1
    } else if a <= 1.25 {
        2
    } else if a < 1.75 {
        3
    } else if a <= 2.5 {
        4
    } else if a < 3.5 {
        5
    } else if a <= 5.0 {
        6
    } else {
        7
    };
    if mag != 0 && x < 0.0 {
        mag | 8
    } else {
        mag
    }
}

/// Shape `[rows, ceil(cols/32)]` of the scale grid of a `[rows, cols]` weight.
pub fn scale_shape(rows: usize, cols: usize) -> [usize; 2] {
    [rows, cols.div_ceil(GROUP)]
}

/// Dequantizes packed codes (`[rows, cols/2]` bytes) with their scales; `cols` is even and the
/// caller has checked the lengths.
pub fn dequantize(packed: &[u8], scales: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let sc = cols.div_ceil(GROUP);
    let mut out = Vec::with_capacity(rows * cols);
    for (r, row) in packed
        .chunks_exact((cols / 2).max(1))
        .take(rows)
        .enumerate()
    {
        let srow = &scales[r * sc..][..sc];
        for (i, byte) in row.iter().enumerate() {
            let k = 2 * i;
            out.push(decode(byte & 0x0F) * srow[k / GROUP]);
            out.push(decode(byte >> 4) * srow[(k + 1) / GROUP]);
        }
    }
    out
}

/// Quantizes a `[rows, cols]` weight (`cols` even) like the release: per 32 inputs,
/// scale = 2^ceil(log2(amax/6)), code = e2m1(w / scale), packed two per byte. Returns
/// (packed bytes, scale exponents); `Err(index)` names the first non-finite value.
pub fn quantize(values: &[f32], rows: usize, cols: usize) -> Result<(Vec<u8>, Vec<i32>), usize> {
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(i);
    }
    let floor = amax_floor();
    let mut packed = Vec::with_capacity(rows * cols / 2);
    let mut exps = Vec::with_capacity(rows * cols.div_ceil(GROUP));
    for row in values.chunks_exact(cols.max(1)).take(rows) {
        let mut codes = Vec::with_capacity(cols);
        for group in row.chunks(GROUP) {
            let amax = group.iter().fold(0f32, |m, v| m.max(v.abs()));
            let exp = e8m0::scale_exponent(amax, E2M1_MAX, floor);
            let scale = e8m0::pow2(exp);
            exps.push(exp);
            codes.extend(group.iter().map(|v| encode(v / scale)));
        }
        packed.extend(codes.chunks_exact(2).map(|p| p[0] | (p[1] << 4)));
    }
    Ok((packed, exps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec() {
        for c in 0u8..16 {
            let v = decode(c);
            let back = encode(v);
            assert_eq!(back, if c == 8 { 0 } else { c }, "code {c}");
        }
        assert_eq!(encode(100.0), 7);
        assert_eq!(encode(-100.0), 15);
        assert_eq!(encode(-0.1), 0);
        assert_eq!(
            [encode(0.75), encode(1.25), encode(1.75), encode(2.5)],
            [2, 2, 4, 4]
        );
        assert_eq!([encode(3.5), encode(5.0), encode(0.25)], [6, 6, 0]);
    }

    #[test]
    fn packing_order() {
        // Element 0 in the low nibble, element 1 in the high nibble.
        let (p, e) = quantize(&[6.0, -1.0], 1, 2).unwrap();
        assert_eq!(e, vec![0]);
        assert_eq!(p, vec![0x07 | (0x0A << 4)]);
        assert_eq!(dequantize(&p, &[1.0], 1, 2), vec![6.0, -1.0]);
    }
}
