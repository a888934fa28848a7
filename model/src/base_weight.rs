//! The weight of a projection (or of a stack of them): a parameter, or — for the frozen base of
//! a LoRA run — the release's stored FP8/FP4 form ([`StoredWeight`]), which has no gradient and
//! is dequantized where it is used.

use crate::frozen_matmul::frozen_matmul;
use crate::precision;
use crate::stored_weight::{StoredWeight, View};
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, DType, Tensor};

/// A projection's weight, `[in, out]` when dense.
#[derive(Module, Debug)]
pub enum Weight<B: Backend> {
    /// A parameter `[in, out]`.
    Dense(Param<Tensor<B, 2>>),
    /// Frozen, stored `[out, in]` as in the checkpoint.
    Stored(StoredWeight<B>),
}

/// A stack of weights `[G, in, out]` when dense (routed experts, `wo_a`'s groups).
#[derive(Module, Debug)]
pub enum StackWeight<B: Backend> {
    /// A parameter `[G, in, out]`.
    Dense(Param<Tensor<B, 3>>),
    /// Frozen, stored as in the checkpoint (`wo_a`: one matrix used as its row groups).
    Stored(StoredWeight<B>),
}

impl<B: Backend> Weight<B> {
    /// `[in, out]`.
    pub fn dims(&self) -> [usize; 2] {
        match self {
            Weight::Dense(p) => p.dims(),
            Weight::Stored(s) => [s.cols, s.rows],
        }
    }

    /// The value `[in, out]` (a stored weight dequantized to f32).
    pub fn val(&self) -> Tensor<B, 2> {
        match self {
            Weight::Dense(p) => p.val(),
            Weight::Stored(s) => {
                let [c, r] = self.dims();
                s.dequantize(&View::default(), DType::F32)
                    .reshape([r, c])
                    .transpose()
            }
        }
    }

    /// `x · W` for `x` `[rows, in]`; `eligible`: at the current compute precision (else f32).
    pub fn product(&self, x: Tensor<B, 2>, eligible: bool) -> Tensor<B, 2> {
        match (self, eligible) {
            (Weight::Dense(p), true) => precision::matmul(x, p.val()),
            (Weight::Dense(p), false) => x.matmul(p.val()),
            (Weight::Stored(s), e) => stored_product(x, s, &View::default(), e),
        }
    }
}

impl<B: Backend> StackWeight<B> {
    /// `[G, in, out]`.
    pub fn dims(&self) -> [usize; 3] {
        match self {
            StackWeight::Dense(p) => p.dims(),
            StackWeight::Stored(s) => [s.members * s.groups, s.cols, s.rows / s.groups],
        }
    }

    /// The value `[G, in, out]` (a stored stack dequantized to f32).
    pub fn val(&self) -> Tensor<B, 3> {
        match self {
            StackWeight::Dense(p) => p.val(),
            StackWeight::Stored(s) => s.dequantize(&View::default(), DType::F32).swap_dims(1, 2),
        }
    }
}

/// `x · Wᵀ` of a stored `W` (through `view`), at the current compute precision when `eligible`,
/// returned in `x`'s dtype.
pub fn stored_product<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    s: &StoredWeight<B>,
    view: &View,
    eligible: bool,
) -> Tensor<B, D> {
    if !eligible {
        return frozen_matmul(x, s, view);
    }
    let dtype = x.dtype();
    precision::restore(frozen_matmul(precision::operand(x), s, view), dtype)
}
