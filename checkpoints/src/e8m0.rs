//! The E8M0 scale format and the power-of-two scale rule (spec §3.1, §3.2): an E8M0 byte `e` is
//! the scale 2^(e−127) (no sign, no mantissa, no zero; 0xFF is NaN). Hand-written because no
//! well-kept crate implements the OCP micro-scaling formats (`half` stops at 16-bit floats).

/// `2^exp` as an f32, exact for every exponent an E8M0 byte can hold (−127..=127; 2^−127 is a
/// subnormal f32).
pub fn pow2(exp: i32) -> f32 {
    match exp {
        -126..=127 => f32::from_bits(((exp + 127) as u32) << 23),
        -149..=-127 => f32::from_bits(1u32 << (exp + 149)),
        e if e > 127 => f32::INFINITY,
        _ => 0.0,
    }
}

/// The scale an E8M0 byte stands for; `None` for 0xFF (NaN).
pub fn decode(byte: u8) -> Option<f32> {
    (byte != 0xFF).then(|| pow2(i32::from(byte) - 127))
}

/// The E8M0 byte of the scale `2^exp`; `None` when `exp` is outside −127..=127.
pub fn encode_exp(exp: i32) -> Option<u8> {
    u8::try_from(exp + 127).ok().filter(|b| *b != 0xFF)
}

/// The E8M0 byte of `scale` when it is an exact power of two in range, else `None`.
pub fn encode(scale: f32) -> Option<u8> {
    if !(scale.is_finite() && scale > 0.0) {
        return None;
    }
    let exp = scale.log2().round() as i32;
    (pow2(exp) == scale).then_some(()).and(encode_exp(exp))
}

/// The exponent of the reference's weight/activation scale, `ceil(log2(max(amax, floor) / qmax))`:
/// an f32 division, then the exact power-of-two ceiling the reference kernels take from the
/// bits (`fast_log2_ceil`). A float `log2().ceil()` is not exact: just above 2^k it can round
/// down onto k and give a scale one power of two too small.
///
/// `floor` handles all-zero blocks: the reference's activation kernels floor `amax` (1e-4 for FP8,
/// 6·2^−126 for FP4) and we use the same floors for weights, which gives an all-zero block the
/// scale 2^−22 (FP8) or 2^−126 (FP4) and zero codes. `tiny_q` has no all-zero block, so this
/// choice cannot contradict it; any floor would decode to the same zeros.
pub fn scale_exponent(amax: f32, qmax: f32, floor: f32) -> i32 {
    ceil_log2(amax.max(floor) / qmax)
}

/// `ceil(log2(v))` exactly, for finite `v > 0` (normal or subnormal).
fn ceil_log2(v: f32) -> i32 {
    let bits = v.to_bits();
    let (exp, mant) = ((bits >> 23) & 0xFF, bits & 0x7F_FFFF);
    if exp == 0 {
        // Subnormal: v = mant · 2^−149.
        let floor = 31 - mant.leading_zeros() as i32;
        return floor + i32::from(!mant.is_power_of_two()) - 149;
    }
    exp as i32 - 127 + i32::from(mant != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e8m0_round_trips_every_byte() {
        for b in 0u8..0xFF {
            let s = decode(b).unwrap();
            assert!(s > 0.0);
            assert_eq!(encode(s), Some(b));
        }
        assert_eq!(decode(127), Some(1.0));
        assert_eq!(decode(0), Some(2f32.powi(-127)));
        assert_eq!(decode(0xFF), None);
        assert_eq!(encode(3.0), None);
    }

    #[test]
    fn scale_rule() {
        // amax exactly 448·2^k → scale 2^k; just above → 2^(k+1).
        assert_eq!(scale_exponent(448.0, 448.0, 1e-4), 0);
        assert_eq!(scale_exponent(448.1, 448.0, 1e-4), 1);
        assert_eq!(scale_exponent(0.0, 448.0, 1e-4), -22);
        assert_eq!(scale_exponent(0.0, 6.0, 6.0 * pow2(-126)), -126);
        // A hair above 6·2^10: the float log2 rounds onto 10, the exact ceiling is 11.
        let amax = f32::from_bits((6144.0f32).to_bits() + 1);
        assert_eq!(scale_exponent(amax, 6.0, 0.0), 11);
        for e in -149..=127 {
            let p = pow2(e);
            assert_eq!(ceil_log2(p), e, "2^{e}");
            if e < 127 {
                assert_eq!(ceil_log2(f32::from_bits(p.to_bits() + 1)), e + 1, "2^{e}+");
            }
        }
    }
}
