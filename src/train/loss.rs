//! Next-token cross-entropy with an ignore label (mean over the kept positions).

use burn::tensor::activation::log_softmax;
use burn::tensor::{backend::Backend, Int, Tensor};

/// Mean cross-entropy of `logits` `[b, s, V]` against `targets` `[b, s]`, skipping positions whose
/// target equals `ignore_index`. Returns `(loss, kept positions)`.
pub fn cross_entropy<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    ignore_index: i64,
) -> (Tensor<B, 1>, usize) {
    let [b, s, v] = logits.dims();
    let t = targets.reshape([b * s, 1]);
    let keep = t.clone().not_equal_elem(ignore_index);
    let safe = t.mask_fill(keep.clone().bool_not(), 0);
    let picked = log_softmax(logits.reshape([b * s, v]), 1).gather(1, safe);
    let w = keep.float();
    let kept = v4_model::util::to_vec(w.clone().sum())
        .first()
        .map_or(0, |x| x.round() as usize);
    let loss = (picked * w).sum().neg().div_scalar(kept.max(1) as f64);
    (loss, kept)
}
