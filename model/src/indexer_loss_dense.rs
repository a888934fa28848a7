//! The lightning indexer's KL loss in the dense warm-up stage ([`crate::indexer_loss`]; every
//! visible compressed entry is a candidate), computed a chunk of queries at a time so that the
//! per-head score tensor `[b, chunk, heads, n]` is the largest thing alive, in backward too.
//!
//! Through autodiff, every chunk would keep its `[b, c, heads, n]` ReLU scores until backward —
//! the whole quadratic `[b, s, heads, n]` (at 64K tokens with V4-Flash's 64 heads, hundreds of
//! GB). Instead each chunk's exact gradient with respect to the indexer's queries, head weights
//! and keys is computed in closed form during the forward, and injected through a surrogate
//! `Σ ĝ ⊙ x` whose value is cancelled (`y − detach(y)`, exactly 0) and whose gradient is `ĝ`.
//!
//! With `s[t,j] = Σ_h w[t,h] · relu(z[t,h,j])`, `z[t,h,j] = q[t,h] · k[j]`, and
//! `L = Σ_t ρ_t KL_t` (`ρ_t` = counted / number counted):
//!
//! ```text
//! g[t,j]      = ∂L/∂s[t,j] = ρ_t (P_t · softmax(s_t)_j − p[t,j])  on candidates, else 0
//!               (P_t = Σ_j p[t,j], 1 or 0: a row without teacher mass has no gradient)
//! ∂L/∂w[t,h]  = Σ_j g[t,j] · relu(z[t,h,j])
//! ∂L/∂q[t,h]  = Σ_j g[t,j] · w[t,h] · 1[z[t,h,j] > 0] · k[j]
//! ∂L/∂k[j]    = Σ_{t,h} g[t,j] · w[t,h] · 1[z[t,h,j] > 0] · q[t,h]
//! ```

use crate::indexer::{IndexInputs, ScoreParts};
use crate::indexer_loss::{kl_per_query, EXCLUDED_LOGIT};
use burn::tensor::activation::softmax;
use burn::tensor::{backend::Backend, Bool, Tensor};

/// The gradients of one chunk's queries.
struct ChunkGrads<B: Backend> {
    q: Tensor<B, 4>,
    w: Tensor<B, 3>,
}

/// [`crate::indexer_loss::indexer_kl`] of the student scores of `inputs` against `target`
/// `[b, s, n]` over `candidates` `[b, s, n]`, counting the queries `counted` keeps, computed
/// `rows` queries at a time: the same value and gradients (to rounding), never more than one
/// chunk's per-head scores alive.
pub fn dense_indexer_kl<B: Backend>(
    inputs: &IndexInputs<B>,
    target: Tensor<B, 3>,
    candidates: Tensor<B, 3, Bool>,
    counted: Option<Tensor<B, 2>>,
    rows: usize,
) -> Tensor<B, 1> {
    let [b, s, _, _] = inputs.q.dims();
    let [_, n, hd] = inputs.k.dims();
    let device = inputs.q.device();
    let d = inputs.detach();
    let target = target.detach();
    let mut weight = candidates.clone().any_dim(2).reshape([b, s]).float();
    if let Some(c) = counted {
        weight = weight * c;
    }
    let inv_count = weight.clone().sum().clamp_min(1.0).recip(); // [1]
    let weight = weight * inv_count.clone().reshape([1, 1]);

    let mut value = Tensor::<B, 1>::zeros([1], &device);
    let mut grad_k = Tensor::<B, 3>::zeros([b, n, hd], &device);
    let mut chunks = Vec::new();
    let rows = rows.max(1);
    for start in (0..s).step_by(rows) {
        let r = start..(start + rows).min(s);
        let (v, g, gk) = chunk(
            &d,
            r.clone(),
            target.clone().slice_dim(1, r.clone()),
            candidates.clone().slice_dim(1, r.clone()),
            weight.clone().slice_dim(1, r),
        );
        value = value + v;
        grad_k = grad_k + gk;
        chunks.push(g);
    }
    let (gq, gw): (Vec<_>, Vec<_>) = chunks.into_iter().map(|g| (g.q, g.w)).unzip();
    let surrogate = (inputs.q.clone() * Tensor::cat(gq, 1)).sum()
        + (inputs.w.clone() * Tensor::cat(gw, 1)).sum()
        + (inputs.k.clone() * grad_k).sum();
    value + (surrogate.clone() - surrogate.detach())
}

/// One chunk of queries `r`: its weighted KL sum `[1]`, its query and head-weight gradients,
/// and its contribution to the key gradient `[b, n, D]` (all detached).
fn chunk<B: Backend>(
    d: &IndexInputs<B>,
    r: std::ops::Range<usize>,
    target: Tensor<B, 3>,
    candidates: Tensor<B, 3, Bool>,
    weight: Tensor<B, 2>,
) -> (Tensor<B, 1>, ChunkGrads<B>, Tensor<B, 3>) {
    let [b, _, nh, hd] = d.q.dims();
    let n = d.k.dims()[1];
    let c = r.len();
    let ScoreParts {
        q,
        w,
        z,
        relu_z,
        scores,
    } = d.score_parts(r, 0..n);
    let kl = kl_per_query(target.clone(), scores.clone(), candidates.clone());
    let value = (kl * weight.clone()).sum();

    let excluded = candidates.bool_not();
    let student = softmax(scores.mask_fill(excluded.clone(), EXCLUDED_LOGIT), 2);
    let mass = target.clone().sum_dim(2);
    let g = ((student * mass - target).mask_fill(excluded, 0.0)) * weight.reshape([b, c, 1]);
    let grad_w = relu_z
        .matmul(g.clone().reshape([b * c, n, 1]))
        .reshape([b, c, nh]);
    let m = z
        .greater_elem(0.0)
        .float()
        .reshape([b, c, nh, n])
        .mul(w.reshape([b, c, nh, 1]))
        .mul(g.reshape([b, c, 1, n]))
        .reshape([b, c * nh, n]);
    let grad_q = m.clone().matmul(d.k.clone()).reshape([b, c, nh, hd]);
    let grad_k = m.swap_dims(1, 2).matmul(q);
    (
        value,
        ChunkGrads {
            q: grad_q,
            w: grad_w,
        },
        grad_k,
    )
}
