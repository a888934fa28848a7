//! A bias-free linear projection. The weight is stored `[in, out]` (Burn's convention, so the
//! forward is a plain matmul); checkpoints store `[out, in]` and are transposed on load/export.
//! A projection may carry a LoRA adapter ([`crate::lora`]), added to its output.

use crate::base_weight::Weight;
use crate::lora::Lora;
use crate::stored_weight::StoredWeight;
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor, TensorData};

/// A checkpoint-orientation `[out, in]` matrix (row-major) as Burn's `[in, out]`.
pub fn transposed(values: &[f32], out: usize, inp: usize) -> Vec<f32> {
    let mut t = vec![0f32; values.len()];
    for o in 0..out {
        for i in 0..inp {
            t[i * out + o] = values[o * inp + i];
        }
    }
    t
}

/// `y = x · W` with `W` of shape `[in, out]`.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// Weight `[in, out]`, or the frozen stored form.
    pub weight: Weight<B>,
    /// LoRA adapter, when this projection is fine-tuned with one.
    pub lora: Option<Lora<B>>,
}

impl<B: Backend> Linear<B> {
    /// Builds from checkpoint-orientation values `[out, in]` (row-major).
    pub fn from_checkpoint(values: &[f32], out: usize, inp: usize, device: &B::Device) -> Self {
        let w = Tensor::from_data(
            TensorData::new(transposed(values, out, inp), [inp, out]),
            device,
        );
        Self::new(Param::from_tensor(w))
    }

    /// A projection with weight `[in, out]` and no adapter.
    pub fn new(weight: Param<Tensor<B, 2>>) -> Self {
        Self {
            weight: Weight::Dense(weight),
            lora: None,
        }
    }

    /// A frozen projection kept in its stored FP8/FP4 form.
    pub fn stored(weight: StoredWeight<B>) -> Self {
        Self {
            weight: Weight::Stored(weight),
            lora: None,
        }
    }

    /// Input width.
    pub fn d_in(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Output width.
    pub fn d_out(&self) -> usize {
        self.weight.dims()[1]
    }

    /// Applies the projection over the last dimension of `x`, at the current compute precision
    /// ([`crate::precision`]).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.apply(x, true)
    }

    /// [`Linear::forward`] always in f32: the projections the reference keeps in f32 (routers,
    /// compressors, mHC mixes, the head).
    pub fn forward_f32<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.apply(x, false)
    }

    /// `eligible`: at the compute precision (else f32).
    fn apply<const D: usize>(&self, x: Tensor<B, D>, eligible: bool) -> Tensor<B, D> {
        // Flatten leading dims so the matmul is one 2-D GEMM.
        let dims = x.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let x = x.reshape([rows, dims[D - 1]]);
        let y = match &self.lora {
            Some(l) => {
                let mm = if eligible {
                    crate::precision::matmul
                } else {
                    Tensor::matmul
                };
                self.weight.product(x.clone(), eligible) + l.delta(x, mm)
            }
            None => self.weight.product(x, eligible),
        };
        let mut out = dims;
        out[D - 1] = self.d_out();
        y.reshape(out)
    }

    /// The weight in checkpoint orientation `[out, in]`, row-major.
    pub fn to_checkpoint(&self) -> Vec<f32> {
        crate::util::to_vec(self.weight.val().transpose())
    }
}
