//! FP4 quantization-aware training of the routed experts (training spec §5 "FP8 and FP4",
//! architecture spec §3.1): V4's post-training quantises the FP32 master weights of the routed
//! experts (`experts.N.w1/w2/w3`, not the shared expert) to MXFP4 — e2m1 values with a
//! power-of-two (ue8m0) scale per 1×32 block along the input dimension of the release's
//! `[out, in]` layout — and back-propagates straight through to the masters.
//!
//! Our [`Linear`](crate::linear::Linear) stores `[in, out]`, so blocks run along dim 0 (along
//! dim 1 of the routed experts' `[E, in, out]` stacks, each expert quantized on its own). The
//! quantizer is [`fp4_qdq`] (the reference's `2^ceil(log2(amax/6))` scale, amax floored at
//! 6·2^−126, round-to-nearest-even on the e2m1 grid), which is the rule the checkpoint codec
//! uses to write FP4 experts. The release's lossless FP4→FP8 re-scaling before the GEMM changes
//! no value and is not modelled.

use crate::fake_quant::{fp4_qdq, straight_through};
use burn::tensor::{backend::Backend, Tensor};

/// Inputs sharing one FP4 scale.
pub const FP4_BLOCK: usize = 32;

/// FP4 round trip of a weight stored `[in, out]`, blocks of 32 along `in` (no gradient). A
/// ragged last block (in % 32 ≠ 0) is handled by zero padding, which leaves its amax unchanged.
pub fn fp4_weight_qdq<B: Backend>(w: Tensor<B, 2>) -> Tensor<B, 2> {
    let [inp, out] = w.dims();
    let wt = w.transpose(); // [out, in], the release layout
    let padded = inp.div_ceil(FP4_BLOCK) * FP4_BLOCK;
    let wt = if padded != inp {
        let pad = Tensor::zeros([out, padded - inp], &wt.device());
        Tensor::cat(vec![wt, pad], 1)
    } else {
        wt
    };
    let q = fp4_qdq(wt, FP4_BLOCK);
    let q = if padded != inp {
        q.slice_dim(1, 0..inp)
    } else {
        q
    };
    q.transpose()
}

/// FP4 fake quantization of an expert weight `[in, out]`: the forward sees the FP4 round trip,
/// the gradient reaches `w` unchanged (straight-through estimator).
pub fn fake_fp4_weight<B: Backend>(w: Tensor<B, 2>) -> Tensor<B, 2> {
    let q = fp4_weight_qdq(w.clone().detach());
    straight_through(w, q)
}

/// [`fp4_weight_qdq`] of each matrix of a stack `[E, in, out]` (no gradient): the same blocks of
/// 32 inputs per output column and expert, bit for bit.
pub fn fp4_stack_qdq<B: Backend>(w: Tensor<B, 3>) -> Tensor<B, 3> {
    let [e, inp, out] = w.dims();
    // [in, E·out]: every column is one expert's output column, blocked along `in` as before.
    let flat = w.swap_dims(0, 1).reshape([inp, e * out]);
    fp4_weight_qdq(flat).reshape([inp, e, out]).swap_dims(0, 1)
}

/// [`fake_fp4_weight`] of a stack of expert weights `[E, in, out]`.
pub fn fake_fp4_stack<B: Backend>(w: Tensor<B, 3>) -> Tensor<B, 3> {
    let q = fp4_stack_qdq(w.clone().detach());
    straight_through(w, q)
}
