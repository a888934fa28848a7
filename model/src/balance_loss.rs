//! The sequence-wise balance loss of V4's MoE layers (training spec §5, DeepSeek-V3 §2.1.2)
//! `α·Σ_i f_i·P_i` (α = 1e-4 in V4, applied by the trainer): per sequence of `T` tokens,
//! `f_i = N_r/(K_r·T)·Σ_t 1[i ∈ topK(t)]` (a constant from the selected ids) and
//! `P_i = (1/T)·Σ_t s'_{i,t}` with `s'` the scores normalised over all experts, averaged over
//! the sequences. With packed samples a "sequence" is a sample (V4), and only the tokens the
//! caller counts (no padding or prompt) enter `T`, `f` and `P`. As in V3 (HF `MoEGate`,
//! Megatron's `seq_aux_loss`) the loss back-propagates through the scores into the gate weight
//! *and* the router input.

use crate::util::{int_tensor_from, tensor_from};
use burn::tensor::{backend::Backend, IndexingUpdateOp, Tensor};

/// `Σ_i f_i·P_i` averaged over the `batch` sequences (without α), shape `[1]`.
///
/// `scores` `[batch·T, E]` are the router scores of the tokens in sequence-major order, `idx`
/// the selected expert ids `[batch·T, top_k]` flattened; `normalise`: divide the scores by their
/// sum over experts (false when they already sum to 1, e.g. softmax scoring).
pub fn sequence_balance_loss<B: Backend>(
    scores: Tensor<B, 2>,
    idx: &[i64],
    batch: usize,
    top_k: usize,
    normalise: bool,
) -> Tensor<B, 1> {
    let [n, e] = scores.dims();
    let t = n / batch.max(1);
    // f_i per sequence: N_r/(K_r·T) · (number of (token, slot) pairs routed to i).
    let mut f = vec![0f32; batch * e];
    let unit = e as f64 / (top_k as f64 * t as f64);
    for (p, id) in idx.iter().enumerate() {
        let seq = p / top_k / t.max(1);
        if let (Some(row), Ok(i)) = (f.get_mut(seq * e..(seq + 1) * e), usize::try_from(*id)) {
            if let Some(v) = row.get_mut(i) {
                *v += unit as f32;
            }
        }
    }
    let f = tensor_from::<B, 3>(f, [batch, 1, e], &scores.device());
    let s = scores.reshape([batch, t, e]);
    let s = if normalise {
        s.clone() / s.sum_dim(2)
    } else {
        s
    };
    let p = s.mean_dim(1); // [batch, 1, E]
    (p * f).sum_dim(2).mean()
}

/// [`sequence_balance_loss`] over arbitrary groups of tokens (packed samples): `groups[t]` is
/// the group of token `t` (`None`: not counted), `n_groups` their number. Groups without a
/// counted token are left out of the mean; with none at all the loss is 0.
pub fn group_balance_loss<B: Backend>(
    scores: Tensor<B, 2>,
    idx: &[i64],
    groups: &[Option<usize>],
    n_groups: usize,
    top_k: usize,
    normalise: bool,
) -> Tensor<B, 1> {
    let [_, e] = scores.dims();
    let device = scores.device();
    let mut tokens = vec![0usize; n_groups];
    for g in groups.iter().flatten() {
        tokens[*g] += 1;
    }
    let mut f = vec![0f32; n_groups * e];
    let (mut kept, mut kept_group, mut weight) = (Vec::new(), Vec::new(), Vec::new());
    for (t, g) in groups.iter().enumerate() {
        let Some(g) = *g else { continue };
        let unit = e as f64 / (top_k as f64 * tokens[g] as f64);
        for id in &idx[t * top_k..(t + 1) * top_k] {
            if let Some(v) = usize::try_from(*id).ok().and_then(|i| f.get_mut(g * e + i)) {
                *v += unit as f32;
            }
        }
        kept.push(t as i64);
        kept_group.push(g as i64);
        weight.push(1.0 / tokens[g] as f32);
    }
    let live = tokens.iter().filter(|&&n| n > 0).count();
    if live == 0 {
        return Tensor::zeros([1], &device);
    }
    let m = kept.len();
    let s = scores.select(0, int_tensor_from::<B, 1>(kept, [m], &device));
    let s = if normalise {
        s.clone() / s.sum_dim(1)
    } else {
        s
    };
    let s = s * tensor_from::<B, 2>(weight, [m, 1], &device);
    let p = Tensor::<B, 2>::zeros([n_groups, e], &device).select_assign(
        0,
        int_tensor_from::<B, 1>(kept_group, [m], &device),
        s,
        IndexingUpdateOp::Add,
    );
    let f = tensor_from::<B, 2>(f, [n_groups, e], &device);
    (p * f).sum().div_scalar(live as f64).reshape([1])
}
