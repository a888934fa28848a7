//! Mixed-precision compute (training spec: bf16 compute with f32 master weights), in the manner
//! of PyTorch's autocast and of the reference's dtype split: the projections, the attention
//! kernel's q·k and p·v, the experts and the MTP projections multiply in bf16, while the parts
//! the reference keeps in f32 stay there — routers, compressors, mHC mixes, the head, every norm
//! statistic, softmax and the losses. Most products are computed from bf16 operands and returned
//! in f32, so parameters, gradients and the element-wise ops around them stay f32 (the matmuls
//! keep bf16 operands for backward, and a bf16 copy of each weight). The experts' SwiGLU — the
//! widest activations of a MoE layer — stays in bf16 from its projections to the down
//! projection ([`matmul_keep`], [`restore`]), so what it keeps for backward is bf16.
//!
//! The precision is a per-call switch ([`crate::ForwardOptions::precision`]); the module entry
//! points that take options enter it as a scope ([`enter`]) for the current thread, and the
//! matmul sites read it through [`matmul`]. Backward needs no scope: the casts carry their own
//! gradients (bf16 products, cast back to f32 before they reach a parameter).

use burn::tensor::{backend::Backend, DType, Tensor};
use std::cell::Cell;

/// Compute precision of the bf16-eligible matmuls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Everything in f32 (the reference's parity setting).
    #[default]
    F32,
    /// bf16 operands, f32 results (f32 master weights and element-wise math).
    Bf16,
}

thread_local! {
    static CURRENT: Cell<Precision> = const { Cell::new(Precision::F32) };
}

/// Restores the enclosing precision when dropped.
#[derive(Debug)]
#[must_use = "the precision holds only while the guard lives"]
pub struct PrecisionScope {
    previous: Precision,
}

impl Drop for PrecisionScope {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// Makes `p` the precision of this thread's eligible matmuls until the guard drops.
pub fn enter(p: Precision) -> PrecisionScope {
    PrecisionScope {
        previous: CURRENT.with(|c| c.replace(p)),
    }
}

/// The precision in effect on this thread.
pub fn current() -> Precision {
    CURRENT.with(Cell::get)
}

/// `a · b` at the current precision, returned in `a`'s dtype.
pub fn matmul<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    let dtype = a.dtype();
    restore(matmul_keep(a, b), dtype)
}

/// `a · b` at the current precision, left in the compute dtype (bf16 under
/// [`Precision::Bf16`]): the element-wise ops that follow run on, and keep for backward, bf16
/// tensors, until [`restore`] brings the chain back to the caller's dtype (the experts' SwiGLU).
pub fn matmul_keep<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    operand(a).matmul(operand(b))
}

/// `t` in `dtype` (no op when it already is): the end of a [`matmul_keep`] chain.
pub fn restore<B: Backend, const D: usize>(t: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if t.dtype() == dtype {
        t
    } else {
        t.cast(dtype)
    }
}

/// [`matmul`] as a method, for chains: `q.matmul_mixed(k)`.
pub trait MixedMatmul {
    /// `self · rhs` at the current precision.
    fn matmul_mixed(self, rhs: Self) -> Self;
}

impl<B: Backend, const D: usize> MixedMatmul for Tensor<B, D> {
    fn matmul_mixed(self, rhs: Self) -> Self {
        matmul(self, rhs)
    }
}

/// `w` as the current precision's operand: cast once when a weight is reused by several
/// products of one call (the stacked experts' rounds); [`matmul`] then casts nothing more.
pub fn operand<B: Backend, const D: usize>(w: Tensor<B, D>) -> Tensor<B, D> {
    match current() {
        Precision::F32 => w,
        Precision::Bf16 if w.dtype() != DType::BF16 => w.cast(DType::BF16),
        Precision::Bf16 => w,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    type B = Flex;

    #[test]
    fn scopes_nest_and_restore() {
        assert_eq!(current(), Precision::F32);
        {
            let _a = enter(Precision::Bf16);
            assert_eq!(current(), Precision::Bf16);
            {
                let _b = enter(Precision::F32);
                assert_eq!(current(), Precision::F32);
            }
            assert_eq!(current(), Precision::Bf16);
        }
        assert_eq!(current(), Precision::F32);
    }

    #[test]
    fn bf16_products_round_operands_and_return_f32() {
        let dev = Default::default();
        // 1 + 2^-10 is not a bf16 value (8 mantissa bits): it rounds to 1.
        let a =
            Tensor::<B, 2>::from_data(TensorData::new(vec![1.0f32 + 1.0 / 1024.0], [1, 1]), &dev);
        let b = Tensor::<B, 2>::from_data(TensorData::new(vec![3.0f32], [1, 1]), &dev);
        let f32_product = matmul(a.clone(), b.clone()).into_scalar();
        let _g = enter(Precision::Bf16);
        let y = matmul(a, b);
        assert_eq!(y.dtype(), DType::F32);
        assert_eq!(f32_product, 3.0 + 3.0 / 1024.0);
        assert_eq!(y.into_scalar(), 3.0);
    }
}
