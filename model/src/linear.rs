//! A bias-free linear projection. The weight is stored `[in, out]` (Burn's convention, so the
//! forward is a plain matmul); checkpoints store `[out, in]` and are transposed on load/export.

use crate::precision;
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
    /// Weight `[in, out]`.
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> Linear<B> {
    /// Builds from checkpoint-orientation values `[out, in]` (row-major).
    pub fn from_checkpoint(values: &[f32], out: usize, inp: usize, device: &B::Device) -> Self {
        let w = Tensor::from_data(
            TensorData::new(transposed(values, out, inp), [inp, out]),
            device,
        );
        Self {
            weight: Param::from_tensor(w),
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
        self.apply(x, precision::matmul)
    }

    /// [`Linear::forward`] always in f32: the projections the reference keeps in f32 (routers,
    /// compressors, mHC mixes, the head).
    pub fn forward_f32<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.apply(x, Tensor::matmul)
    }

    fn apply<const D: usize>(
        &self,
        x: Tensor<B, D>,
        mm: fn(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>,
    ) -> Tensor<B, D> {
        let w = self.weight.val();
        // Flatten leading dims so the matmul is one 2-D GEMM.
        let dims = x.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let y = mm(x.reshape([rows, dims[D - 1]]), w);
        let mut out = dims;
        out[D - 1] = self.d_out();
        y.reshape(out)
    }

    /// The weight in checkpoint orientation `[out, in]`, row-major.
    pub fn to_checkpoint(&self) -> Vec<f32> {
        crate::util::to_vec(self.weight.val().transpose())
    }
}
