//! Manifold-constrained hyper-connections (mHC, spec §2.2, training spec §1): the residual
//! stream is `hc` parallel copies; each use-site reads them through dynamic mixes
//! (`hc_pre`: a pre-weighted sum), writes back through `post` weights, and mixes the copies with a
//! doubly-stochastic matrix (Sinkhorn projection). `hc_head` collapses the copies before the head.

use crate::broadcast::softmax_last;
use crate::linear::Linear;
use crate::norm::inv_rms_rows;
use crate::util::indicator;
use burn::module::{Module, Param};
use burn::tensor::activation::sigmoid;
use burn::tensor::{backend::Backend, Tensor};

/// Sinkhorn projection of `[.., hc, hc]` mixes (rows = source stream j, cols = target k):
/// row softmax + eps, column normalisation, then `iters − 1` row/column rounds.
///
/// Each normalisation works on the `[b·s, hc²]` rows: one product with a constant 0/1 matrix
/// takes every row's (or column's) sum and spreads it back over its entries, then one
/// element-wise division. The sums are the same; a sum over the middle dimension would have a
/// backward that broadcasts over it, which CPU backends walk element by element.
pub fn sinkhorn<B: Backend>(logits: Tensor<B, 4>, iters: usize, eps: f64) -> Tensor<B, 4> {
    let dims = logits.dims();
    let hc = dims[3];
    let device = logits.device();
    // Entries k and l (flat indices `j·hc + k'`) that share a row / a column.
    let rows = indicator::<B>(hc * hc, |k, l| k / hc == l / hc, &device);
    let cols = indicator::<B>(hc * hc, |k, l| k % hc == l % hc, &device);
    let normalize =
        |c: Tensor<B, 2>, sums: &Tensor<B, 2>| c.clone() / c.matmul(sums.clone()).add_scalar(eps);
    let flat = softmax_last(logits)
        .add_scalar(eps)
        .reshape([dims[0] * dims[1], hc * hc]);
    let mut c = normalize(flat, &cols);
    for _ in 1..iters {
        c = normalize(c, &rows);
        c = normalize(c, &cols);
    }
    c.reshape(dims)
}

/// The mixing weights of one `hc_pre` call.
#[derive(Debug, Clone)]
pub struct HcMix<B: Backend> {
    /// Write-back weights `[b, s, hc]`.
    pub post: Tensor<B, 3>,
    /// Residual mix `[b, s, hc(j), hc(k)]`, doubly stochastic.
    pub comb: Tensor<B, 4>,
}

/// One mHC use-site (`hc_attn_*` or `hc_ffn_*`).
#[derive(Module, Debug)]
pub struct HyperConnection<B: Backend> {
    /// Dynamic projection `hc_*_fn` (stored `[hc·d, (2+hc)·hc]`).
    pub fn_: Linear<B>,
    /// Static biases `hc_*_base` `[(2+hc)·hc]`.
    pub base: Param<Tensor<B, 1>>,
    /// Gates `hc_*_scale` `[3]` = (α_pre, α_post, α_res).
    pub scale: Param<Tensor<B, 1>>,
    /// Streams.
    pub hc: usize,
    /// Sinkhorn iterations.
    pub iters: usize,
    /// mHC epsilon.
    pub hc_eps: f64,
    /// RMS epsilon of the mix read.
    pub norm_eps: f64,
}

/// RMS-normalised linear read of all streams: `[b, s, hc, d] → [b, s, m]`.
pub fn hc_mixes<B: Backend>(x: &Tensor<B, 4>, f: &Linear<B>, eps: f64) -> Tensor<B, 3> {
    let [b, s, hc, d] = x.dims();
    let xf = x.clone().reshape([b * s, hc * d]);
    let m = f.forward_f32(xf.clone()) * inv_rms_rows(xf, eps);
    m.reshape([b, s, f.d_out()])
}

/// `Σ_j pre_j · x_j`: `[b, s, hc] × [b, s, hc, d] → [b, s, d]`, as one batched `[1, hc] ×
/// [hc, d]` product per token: a product and a sum over the middle (stream) dimension would
/// have a backward that broadcasts over that dimension, which CPU backends walk element by
/// element ([`crate::broadcast`]).
pub fn weighted_sum<B: Backend>(pre: Tensor<B, 3>, x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, s, hc, d] = x.dims();
    pre.reshape([b * s, 1, hc])
        .matmul(x.reshape([b * s, hc, d]))
        .reshape([b, s, d])
}

fn scalar_at<B: Backend>(p: &Param<Tensor<B, 1>>, i: usize) -> Tensor<B, 3> {
    p.val().slice_dim(0, i..i + 1).reshape([1, 1, 1])
}

impl<B: Backend> HyperConnection<B> {
    /// Collapses the streams into the block input and returns it with the mixing weights.
    pub fn pre(&self, x: &Tensor<B, 4>) -> (Tensor<B, 3>, HcMix<B>) {
        let [b, s, hc, _] = x.dims();
        let m = hc_mixes(x, &self.fn_, self.norm_eps);
        let base = self.base.val();
        let part = |lo: usize, hi: usize| {
            (
                m.clone().slice_dim(2, lo..hi),
                base.clone().slice_dim(0, lo..hi).reshape([1, 1, hi - lo]),
            )
        };
        let (mp, bp) = part(0, hc);
        let pre = sigmoid(mp * scalar_at(&self.scale, 0) + bp).add_scalar(self.hc_eps);
        let (mq, bq) = part(hc, 2 * hc);
        let post = sigmoid(mq * scalar_at(&self.scale, 1) + bq).mul_scalar(2.0);
        let (mc, bc) = part(2 * hc, (2 + hc) * hc);
        let logits = (mc * scalar_at(&self.scale, 2) + bc).reshape([b, s, hc, hc]);
        let comb = sinkhorn(logits, self.iters, self.hc_eps);
        (weighted_sum(pre, x.clone()), HcMix { post, comb })
    }

    /// Writes the block output back: `x'_k = post_k · f + Σ_j comb[j,k] · x_j`.
    pub fn post(&self, f: Tensor<B, 3>, residual: Tensor<B, 4>, mix: HcMix<B>) -> Tensor<B, 4> {
        // The outer product post_k · f as a one-term matmul: the same products, row by row.
        let [b, s, hc] = mix.post.dims();
        let d = f.dims()[2];
        let spread = mix
            .post
            .reshape([b * s, hc, 1])
            .matmul(f.reshape([b * s, 1, d]))
            .reshape([b, s, hc, d]);
        spread + mix.comb.swap_dims(2, 3).matmul(residual)
    }
}

/// The final collapse `hc_head` (main model and each MTP block).
#[derive(Module, Debug)]
pub struct HcHead<B: Backend> {
    /// `hc_head_fn` (stored `[hc·d, hc]`).
    pub fn_: Linear<B>,
    /// `hc_head_base` `[hc]`.
    pub base: Param<Tensor<B, 1>>,
    /// `hc_head_scale` `[1]`.
    pub scale: Param<Tensor<B, 1>>,
    /// mHC epsilon.
    pub hc_eps: f64,
    /// RMS epsilon of the mix read.
    pub norm_eps: f64,
}

impl<B: Backend> HcHead<B> {
    /// `[b, s, hc, d] → [b, s, d]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let hc = x.dims()[2];
        let m = hc_mixes(&x, &self.fn_, self.norm_eps);
        let pre =
            sigmoid(m * self.scale.val().reshape([1, 1, 1]) + self.base.val().reshape([1, 1, hc]))
                .add_scalar(self.hc_eps);
        weighted_sum(pre, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn sinkhorn_is_doubly_stochastic() {
        let dev = Default::default();
        let v: Vec<f32> = (0..32)
            .map(|i| ((i * 7919) % 23) as f32 * 0.37 - 4.0)
            .collect();
        let t = crate::util::tensor_from::<Flex, 4>(v, [1, 2, 4, 4], &dev);
        let c = sinkhorn(t, 20, 1e-6);
        // The last Sinkhorn step normalises columns: exact; rows converge (logits span ±4 here).
        let rows = crate::util::to_vec(c.clone().sum_dim(3));
        let cols = crate::util::to_vec(c.clone().sum_dim(2));
        for x in cols {
            assert!((x - 1.0).abs() < 2e-6, "column sum {x}"); // eps = 1e-6 in the divisor
        }
        for x in rows {
            assert!((x - 1.0).abs() < 1e-3, "row sum {x}");
        }
        assert!(crate::util::to_vec(c).iter().all(|x| *x > 0.0));
    }
}
