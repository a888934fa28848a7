//! RMSNorm (spec §2, notation): `w ⊙ x · rsqrt(mean(x²) + eps)` over the last dimension, plus the
//! weightless variant V4 applies to every query head.

use crate::broadcast::mul_rows;
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor, TensorData};

/// Scales `x` by the reciprocal root mean square of its last dimension (no weight).
pub fn rms_normalize<B: Backend, const D: usize>(x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    // As rows of a 2-D view: the mean's backward (a broadcast of its gradient over the row) then
    // runs row by row too ([`crate::broadcast`]).
    let dims = x.dims();
    let d = dims[D - 1];
    let x = x.reshape([dims[..D - 1].iter().product::<usize>(), d]);
    (x.clone() * inv_rms_rows(x, eps)).reshape(dims)
}

/// `rsqrt(mean(x²) + eps)` of each row of `x` `[n, d]`: `[n, 1]`.
pub fn inv_rms_rows<B: Backend>(x: Tensor<B, 2>, eps: f64) -> Tensor<B, 2> {
    x.powi_scalar(2).mean_dim(1).add_scalar(eps).sqrt().recip()
}

/// RMSNorm with a learned per-channel weight.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Per-channel gain `[d]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Epsilon inside the root.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// Builds from the checkpoint's weight values.
    pub fn from_values(values: Vec<f32>, eps: f64, device: &B::Device) -> Self {
        let n = values.len();
        Self {
            weight: Param::from_tensor(Tensor::from_data(TensorData::new(values, [n]), device)),
            eps,
        }
    }

    /// Normalises the last dimension of `x` and applies the gain.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let w = self.weight.val().unsqueeze::<D>();
        mul_rows(rms_normalize(x, self.eps), w)
    }
}
