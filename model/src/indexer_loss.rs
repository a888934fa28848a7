//! The lightning indexer's training loss: a KL divergence that teaches the indexer scores
//! `I[t,j]` (spec §2.7) to predict where the main attention of a CSA layer puts its mass among
//! the compressed entries.
//!
//! For query t with candidate set `C_t` (dense stage: every visible compressed entry; sparse
//! stage: `S_t` = the indexer's top-k ∩ visible, which is what the attention attends):
//!
//! ```text
//! P[t,h,j] = main attention probability of compressed entry j for head h, under the full
//!            softmax over window keys ∪ C_t ∪ sink (detached)
//! p[t,j]   = Σ_h P[t,h,j] / Σ_{j'∈C_t} Σ_h P[t,h,j']          (teacher, j ∈ C_t)
//! log q[t,j] = I[t,j] − log Σ_{j'∈C_t} exp I[t,j']               (student, j ∈ C_t)
//! KL_t     = Σ_{j∈C_t} p[t,j] (log p[t,j] − log q[t,j])          (p = 0 terms are 0)
//! L        = Σ_{b,t: C_t ≠ ∅} KL_t / #{(b,t): C_t ≠ ∅}            (0 when there is none)
//! ```
//!
//! The indexer runs on detached `x` and `qr`, and `p` is detached, so `L` trains the indexer
//! parameters only and the LM loss never reaches them. The trainer applies the loss weight.
//!
//! Where each fact comes from:
//! - **V4** (report §4.2.2; spec v4-training §4.2): the sparse-attention schedule — dense
//!   attention first, then a short stage that warms up the lightning indexer of CSA layers,
//!   then sparse (top-k) training for the rest. V4 does not state the loss itself.
//! - **V3.2 DSA** (arXiv 2512.02556; spec v4-training §4.3): the KL target is the main
//!   attention summed over all heads and L1-normalised; `L = Σ_t KL(p_t ‖ softmax(I_t))`;
//!   stage 1 (dense warm-up) freezes everything but the indexer; in stage 2 (sparse) the
//!   indexer input is detached and the loss is restricted to the selected set `S_t`.
//! - **Megatron-LM's V4 port** (`csa.py`, `ops/attention/dsa/reference.py`; spec
//!   v4-architecture §5): for V4's compressed blocks the teacher is each head's probability of
//!   a compressed entry under the *full* softmax (window + compressed + sink), then summed over
//!   heads and L1-normalised over the compressed entries; the student is a log-softmax over
//!   the causally valid entries (or the top-k in sparse-loss mode, where the teacher is
//!   restricted to the same set); the per-query KL is averaged over queries (`mean_t`).
//! - **Our choices**: queries with no candidate entry (t < ratio − 1) are left out of the mean
//!   (Megatron divides by all rows, counting them as 0), so the value does not depend on how
//!   many early queries a sequence has; the mean is pooled over batch × queries (equal to the
//!   mean of per-sequence means, as every sequence has the same visibility); the teacher is
//!   taken from the attention's own softmax (no recomputation), so it is exactly the
//!   distribution the layer used, fake quantization included; a layer whose sequence has no
//!   complete block returns 0.

use burn::tensor::activation::log_softmax;
use burn::tensor::{backend::Backend, Bool, Tensor};

/// Logit given to non-candidate entries before the student's log-softmax: finite, so a row
/// without candidates stays finite (it is excluded anyway) and `exp` still gives exactly 0.
pub(crate) const EXCLUDED_LOGIT: f32 = -1.0e30;

/// Teacher `[b, s, n]` from the attention's compressed-entry probabilities `P` `[b, s, H, n]`
/// (full softmax, 0 where not attended): summed over heads and L1-normalised over the entries;
/// a row with no mass stays 0. Detached.
pub fn teacher<B: Backend>(probs: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, s, _, n] = probs.dims();
    let mass = probs.detach().sum_dim(2).reshape([b, s, n]);
    let total = mass.clone().sum_dim(2);
    let total = total.clone().mask_fill(total.equal_elem(0.0), 1.0);
    mass / total
}

/// Per-query KL `[b, s]` of the student `softmax(scores)` (restricted to `candidates`) from the
/// teacher `target` (rows sum to 1 over the candidates, or are all 0): terms with `p = 0`
/// contribute exactly 0 and no NaN reaches the gradient. Rows without candidates give 0.
pub fn kl_per_query<B: Backend>(
    target: Tensor<B, 3>,
    scores: Tensor<B, 3>,
    candidates: Tensor<B, 3, Bool>,
) -> Tensor<B, 2> {
    let [b, s, _] = scores.dims();
    let excluded = candidates.bool_not();
    let log_q = log_softmax(scores.mask_fill(excluded.clone(), EXCLUDED_LOGIT), 2);
    let log_p = target.clone().clamp_min(f32::MIN_POSITIVE).log();
    (target * (log_p - log_q))
        .mask_fill(excluded, 0.0)
        .sum_dim(2)
        .reshape([b, s])
}

/// The loss `L` `[1]`: [`kl_per_query`] averaged over every (sequence, query) with at least one
/// candidate entry that `counted` (`[b, s]`, 1 = counted; default all) keeps — padding and
/// prompt tokens of packed samples are left out; 0 when there is none.
pub fn indexer_kl<B: Backend>(
    target: Tensor<B, 3>,
    scores: Tensor<B, 3>,
    candidates: Tensor<B, 3, Bool>,
    counted: Option<Tensor<B, 2>>,
) -> Tensor<B, 1> {
    let [b, s, _] = scores.dims();
    let mut rows = candidates.clone().any_dim(2).reshape([b, s]).float();
    if let Some(c) = counted {
        rows = rows * c;
    }
    let kl = kl_per_query(target, scores, candidates);
    let count = rows.clone().sum().clamp_min(1.0);
    (kl * rows).sum() / count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{bool_tensor_from, tensor_from, to_vec};
    use burn::backend::Flex;

    #[test]
    fn matches_a_hand_computation_and_skips_empty_rows() {
        let dev = Default::default();
        // one sequence, 3 queries, 3 entries; query 0 has no candidate, query 2 only two
        let cand = vec![
            false, false, false, //
            true, true, true, //
            true, false, true,
        ];
        let p = vec![0.0, 0.0, 0.0, 0.2, 0.5, 0.3, 0.25, 0.0, 0.75];
        let sc = vec![9.0, -3.0, 1.0, 0.1, 0.7, -0.4, 2.0, 50.0, -1.0];
        let loss = indexer_kl::<Flex>(
            tensor_from(p.clone(), [1, 3, 3], &dev),
            tensor_from(sc.clone(), [1, 3, 3], &dev),
            bool_tensor_from(cand.clone(), [1, 3, 3], &dev),
            None,
        );
        let mut want = 0.0f64;
        for t in 1..3 {
            let js: Vec<usize> = (0..3).filter(|j| cand[t * 3 + j]).collect();
            let lse = js
                .iter()
                .map(|&j| (sc[t * 3 + j] as f64).exp())
                .sum::<f64>()
                .ln();
            for &j in &js {
                let pj = p[t * 3 + j] as f64;
                want += pj * (pj.ln() - (sc[t * 3 + j] as f64 - lse));
            }
        }
        want /= 2.0;
        let got = to_vec(loss)[0] as f64;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
}
