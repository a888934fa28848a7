//! FP8 e4m3 and FP4 e2m1 fake quantization as the reference applies it (spec §3.2): per block of
//! the last dimension, a power-of-two scale `2^ceil(log2(amax/qmax))`, clamp to ±qmax, round to
//! nearest even on the format's grid, multiply back. Inference parity needs the exact rounding;
//! training uses a straight-through estimator (forward quantized, gradient identity).
//!
//! Everything is expressed with backend tensor ops (no bit casts) so it runs on every backend.

use burn::tensor::{backend::Backend, Tensor};

/// Largest finite e4m3fn magnitude.
pub const FP8_MAX: f64 = 448.0;
/// Largest e2m1 magnitude.
pub const FP4_MAX: f64 = 6.0;

/// Exact `2^ceil(log2(v))` for positive `v`: a log estimate, `2^k` (exact for integer `k`),
/// then one correction step each way.
pub fn pow2_ceil<B: Backend, const D: usize>(v: Tensor<B, D>) -> Tensor<B, D> {
    let k = v.clone().log().div_scalar(std::f64::consts::LN_2).ceil();
    let p = v.ones_like().mul_scalar(2.0).powf(k);
    let too_small = p.clone().lower(v.clone());
    let p = p.clone().mask_where(too_small, p.mul_scalar(2.0));
    let half = p.clone().mul_scalar(0.5);
    let too_big = half.clone().greater_equal(v);
    p.mask_where(too_big, half)
}

/// Rounds `y` (already within ±448) to the nearest e4m3 value, ties to even.
fn round_e4m3<B: Backend, const D: usize>(y: Tensor<B, D>) -> Tensor<B, D> {
    let a = y.clone().abs();
    // Spacing of the e4m3 grid: 2^-9 below 2^-5 (subnormals and the lowest binade), then
    // 2^(k-3) in the binade [2^k, 2^(k+1)).
    let mut step = a.zeros_like().add_scalar(2f64.powi(-9));
    for k in -5..=8 {
        let ge = a.clone().greater_equal_elem(2f64.powi(k));
        step = step.mask_fill(ge, 2f64.powi(k - 3));
    }
    (y / step.clone()).round() * step
}

/// Rounds `y` (already within ±6) to the nearest e2m1 value {0, .5, 1, 1.5, 2, 3, 4, 6}, ties
/// to even.
fn round_e2m1<B: Backend, const D: usize>(y: Tensor<B, D>) -> Tensor<B, D> {
    let a = y.clone().abs();
    let step = a.zeros_like().add_scalar(0.5);
    let step = step.mask_fill(a.clone().greater_equal_elem(2.0), 1.0);
    let step = step.mask_fill(a.clone().greater_equal_elem(4.0), 2.0);
    let q = (a / step.clone()).round() * step;
    q * y.sign()
}

fn blocked<B: Backend, const D: usize>(x: Tensor<B, D>, block: usize) -> Tensor<B, 2> {
    let dims = x.dims();
    let n: usize = dims.iter().product();
    x.reshape([n / block, block])
}

/// Quantize-dequantize `x` through FP8 e4m3 in blocks of `block` along the last dimension with
/// power-of-two scales (the reference's `act_quant` simulation on KV).
pub fn fp8_qdq<B: Backend, const D: usize>(x: Tensor<B, D>, block: usize) -> Tensor<B, D> {
    let dims = x.dims();
    let xb = blocked(x, block);
    let amax = xb.clone().abs().max_dim(1).clamp_min(1e-4);
    let s = pow2_ceil(amax.mul_scalar(1.0f32 / 448.0));
    let y = (xb / s.clone()).clamp(-FP8_MAX, FP8_MAX);
    (round_e4m3(y) * s).reshape(dims)
}

/// Quantize-dequantize `x` through FP4 e2m1 in blocks of `block` with power-of-two scales.
pub fn fp4_qdq<B: Backend, const D: usize>(x: Tensor<B, D>, block: usize) -> Tensor<B, D> {
    let dims = x.dims();
    let xb = blocked(x, block);
    let amax = xb
        .clone()
        .abs()
        .max_dim(1)
        .clamp_min(FP4_MAX * 2f64.powi(-126));
    let s = pow2_ceil(amax.mul_scalar(1.0f32 / 6.0));
    let y = (xb / s.clone()).clamp(-FP4_MAX, FP4_MAX);
    (round_e2m1(y) * s).reshape(dims)
}

/// Straight-through wrapper: the forward value is `q` exactly on a backend without autodiff
/// (inference); under autodiff it is `x + (q − x)` detached, so gradients pass as identity.
/// (`is_require_grad` would not do: Burn sets it on leaf parameters only, so activations would
/// be cut from the graph.)
pub fn straight_through<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    q: Tensor<B, D>,
) -> Tensor<B, D> {
    if B::ad_enabled(&x.device()) {
        x.clone() + (q - x).detach()
    } else {
        q
    }
}

/// FP8 fake quantization with a straight-through gradient.
pub fn fake_fp8<B: Backend, const D: usize>(x: Tensor<B, D>, block: usize) -> Tensor<B, D> {
    let q = fp8_qdq(x.clone().detach(), block);
    straight_through(x, q)
}

/// FP4 fake quantization with a straight-through gradient.
pub fn fake_fp4<B: Backend, const D: usize>(x: Tensor<B, D>, block: usize) -> Tensor<B, D> {
    let q = fp4_qdq(x.clone().detach(), block);
    straight_through(x, q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn run1(v: Vec<f32>, f: impl Fn(Tensor<Flex, 1>) -> Tensor<Flex, 1>) -> Vec<f32> {
        let n = v.len();
        let t = crate::util::tensor_from::<Flex, 1>(v, [n], &Default::default());
        crate::util::to_vec(f(t))
    }

    #[test]
    fn straight_through_passes_gradients_of_activations() {
        type AD = burn::backend::Autodiff<Flex>;
        let w =
            crate::util::tensor_from::<AD, 1>(vec![0.3, -1.2, 2.5, 0.7], [4], &Default::default())
                .require_grad();
        // `w · 3` is an activation (not a leaf): its STE must still pass the gradient through.
        let y = fake_fp8(w.clone().mul_scalar(3.0), 4) + fake_fp4(w.clone().mul_scalar(3.0), 4);
        let g = w.grad(&y.sum().backward()).expect("gradient reaches w");
        assert_eq!(crate::util::to_vec(g), vec![6.0; 4]);
    }

    #[test]
    fn pow2_ceil_is_exact() {
        let v = vec![1.0, 0.75, 1.0000001, 3.0, 4.0, 1e-30, 5e-7, 448.0 * 1.5];
        let got = run1(v, pow2_ceil);
        assert_eq!(
            got,
            vec![
                1.0,
                1.0,
                2.0,
                4.0,
                4.0,
                2f32.powi(-99),
                2f32.powi(-20),
                1024.0
            ]
        );
    }

    #[test]
    fn fp8_rounding_ties_to_even() {
        // amax 1000 → scale 2^ceil(log2(1000/448)) = 4; scaled values 112, 0.265625 (tie → 0.25),
        // 0.296875 (tie → 0.3125), 68 (tie → 64), 75 (→ 72), −250 (→ −256).
        let mut v = vec![
            448.0,
            1.0 + 1.0 / 16.0,
            1.0 + 3.0 / 16.0,
            272.0,
            300.0,
            -1000.0,
        ];
        v.resize(64, 0.0);
        let got = run1(v, |t| fp8_qdq(t, 64));
        assert_eq!(&got[..6], &[448.0, 1.0, 1.25, 256.0, 288.0, -1024.0]);
        // subnormal spacing 2^-9
        let mut w = vec![448.0, 3.0 * 2f32.powi(-10), 2f32.powi(-11)];
        w.resize(64, 0.0);
        let got = run1(w, |t| fp8_qdq(t, 64));
        assert_eq!(&got[..3], &[448.0, 2.0 * 2f32.powi(-9), 0.0]);
        // all-zero block: amax floored at 1e-4, result zero
        let got = run1(vec![0.0; 64], |t| fp8_qdq(t, 64));
        assert!(got.iter().all(|x| *x == 0.0));
    }

    #[test]
    fn fp8_scale_is_power_of_two_ceiling() {
        // amax 1.0 → s = 2^ceil(log2(1/448)) = 2^-8; 1.0/2^-8 = 256 exactly representable.
        let mut v = vec![1.0, 0.3];
        v.resize(64, 0.0);
        let got = run1(v, |t| fp8_qdq(t, 64));
        // 0.3·256 = 76.8 → step 8 in [64,128) → 80 → 80/256 = 0.3125
        assert_eq!(&got[..2], &[1.0, 0.3125]);
    }

    #[test]
    fn fp4_grid_and_ties() {
        // amax 6 → scale 1.
        let mut v = vec![6.0, 0.25, 0.75, 2.5, 3.5, 5.0, -1.25, 1.74];
        v.resize(32, 0.0);
        let got = run1(v, |t| fp4_qdq(t, 32));
        assert_eq!(&got[..8], &[6.0, 0.0, 1.0, 2.0, 4.0, 4.0, -1.0, 1.5]);
        // amax 1 → scale 2^ceil(log2(1/6)) = 1/4 → grid {0, .125, .25, .375, .5, .75, 1, 1.5}
        let mut w = vec![1.0, 0.3, 0.6];
        w.resize(32, 0.0);
        let got = run1(w, |t| fp4_qdq(t, 32));
        assert_eq!(&got[..3], &[1.0, 0.25, 0.5]);
    }
}
