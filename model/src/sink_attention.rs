//! The attention kernel of V4 (spec §2.5 step 4): each head's query attends the single shared KV
//! head (keys = values) over its sliding window plus a set of compressed entries, with a learned
//! per-head sink logit that joins the softmax denominator only (a key whose value is zero).
//!
//! The window part is computed in chunks of `window` queries against their `2·window` candidate
//! keys, so cost is O(s · window), not O(s²); with packed samples a `[b, chunks, w, 2w]` mask
//! keeps each query's keys inside its sample ([`crate::window`]). Compressed entries come in two
//! forms: every entry scored and the invisible ones masked ([`CompressedKeys`]: HCA, and CSA in
//! the dense warm-up), or only the entries each query attends gathered per query
//! ([`SelectedKeys`]: sparse CSA, O(s · k) — the indexer's top-k, never an `[s, n]` tensor).

use crate::broadcast::softmax_last;
use crate::precision::MixedMatmul;
use crate::util::gather_entries;
use crate::window::Window;
use burn::tensor::{backend::Backend, Bool, Int, Tensor};

pub use crate::window::WindowKeys;

/// Compressed keys for one layer: entries `[b, n, D]` and which query sees which `[b, s, n]`.
#[derive(Debug, Clone)]
pub struct CompressedKeys<B: Backend> {
    /// Entries (keys = values).
    pub kv: Tensor<B, 3>,
    /// `true` where query t may attend entry j.
    pub visible: Tensor<B, 3, Bool>,
}

/// The compressed entries each query attends, by index (sparse CSA).
#[derive(Debug, Clone)]
pub struct SelectedKeys<B: Backend> {
    /// Entries `[b, n, D]` (keys = values).
    pub kv: Tensor<B, 3>,
    /// `[b, s, k]` entries attended by query t.
    pub index: Tensor<B, 3, Int>,
    /// `[b, s, k]`: the slot holds a visible entry (others are left out of the softmax).
    pub valid: Tensor<B, 3, Bool>,
}

/// The compressed part of one call, in either form.
enum Extra<B: Backend> {
    /// `[b, n, D]` entries and `[b, s, n]` visibility.
    Dense(Tensor<B, 3>, Tensor<B, 3, Bool>),
    /// `[b·s, k, D]` gathered entries and `[b, s, k]` validity.
    Gathered(Tensor<B, 3>, Tensor<B, 3, Bool>),
}

impl<B: Backend> Extra<B> {
    fn width(&self) -> usize {
        match self {
            Extra::Dense(kv, _) => kv.dims()[1],
            Extra::Gathered(kv, _) => kv.dims()[1],
        }
    }

    /// Scores `[b, s, h, m]` of `q` `[b, s, h, D]`, −∞ where not attended.
    fn scores(&self, q: Tensor<B, 4>, scale: f64) -> Tensor<B, 4> {
        let [b, s, h, d] = q.dims();
        let m = self.width();
        let (z, mask) = match self {
            Extra::Dense(kv, vis) => (
                q.reshape([b, s * h, d])
                    .matmul_mixed(kv.clone().swap_dims(1, 2)),
                vis,
            ),
            Extra::Gathered(kv, valid) => (
                q.reshape([b * s, h, d])
                    .matmul_mixed(kv.clone().swap_dims(1, 2)),
                valid,
            ),
        };
        let attended = mask.clone().reshape([b, s, 1, m]).expand([b, s, h, m]);
        z.mul_scalar(scale)
            .reshape([b, s, h, m])
            .mask_fill(attended.bool_not(), f32::NEG_INFINITY)
    }

    /// `Σ_j p_j kv_j` `[b, s, h, D]` for probabilities `p` `[b, s, h, m]`.
    fn values(&self, p: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, s, h, m] = p.dims();
        match self {
            Extra::Dense(kv, _) => {
                let d = kv.dims()[2];
                p.reshape([b, s * h, m])
                    .matmul_mixed(kv.clone())
                    .reshape([b, s, h, d])
            }
            Extra::Gathered(kv, _) => {
                let d = kv.dims()[2];
                p.reshape([b * s, h, m])
                    .matmul_mixed(kv.clone())
                    .reshape([b, s, h, d])
            }
        }
    }
}

/// `o[b,t,h] = Σ_j p_j kv_j` with `p = softmax([scores over window ∪ compressed, sink_h])`
/// restricted to visible keys; `q` `[b, s, H, D]`, `kv` `[b, s, D]`, `sink` `[H]`.
pub fn sink_attention<B: Backend>(
    q: Tensor<B, 4>,
    kv: Tensor<B, 3>,
    compressed: Option<&CompressedKeys<B>>,
    sink: Tensor<B, 1>,
    scale: f64,
    window: impl Into<Window<B>>,
) -> Tensor<B, 4> {
    sink_attention_probs(q, kv, compressed, sink, scale, window, false).0
}

/// [`sink_attention`] that, when `want_probs` and there are compressed keys, also returns the
/// probabilities of the compressed entries `[b, s, H, n]` under the full softmax (window +
/// compressed + sink), detached: the very `p` the output is built from (the indexer's teacher,
/// [`crate::indexer_loss`]). Entries a query does not attend have probability exactly 0.
pub fn sink_attention_probs<B: Backend>(
    q: Tensor<B, 4>,
    kv: Tensor<B, 3>,
    compressed: Option<&CompressedKeys<B>>,
    sink: Tensor<B, 1>,
    scale: f64,
    window: impl Into<Window<B>>,
    want_probs: bool,
) -> (Tensor<B, 4>, Option<Tensor<B, 4>>) {
    let extra = compressed.map(|c| Extra::Dense(c.kv.clone(), c.visible.clone()));
    attend(q, kv, extra, sink, scale, window.into(), want_probs)
}

/// Sparse CSA: [`sink_attention_probs`] over the window plus, per query, only the entries of
/// `selected` (gathered, `[b·s, k, D]`); the probabilities are those of the `k` slots
/// `[b, s, H, k]` (0 for invalid slots).
pub fn sink_attention_selected<B: Backend>(
    q: Tensor<B, 4>,
    kv: Tensor<B, 3>,
    selected: &SelectedKeys<B>,
    sink: Tensor<B, 1>,
    scale: f64,
    window: impl Into<Window<B>>,
    want_probs: bool,
) -> (Tensor<B, 4>, Option<Tensor<B, 4>>) {
    let keys = gather_entries(selected.kv.clone(), selected.index.clone());
    let extra = Some(Extra::Gathered(keys, selected.valid.clone()));
    attend(q, kv, extra, sink, scale, window.into(), want_probs)
}

fn attend<B: Backend>(
    q: Tensor<B, 4>,
    kv: Tensor<B, 3>,
    extra: Option<Extra<B>>,
    sink: Tensor<B, 1>,
    scale: f64,
    window: Window<B>,
    want_probs: bool,
) -> (Tensor<B, 4>, Option<Tensor<B, 4>>) {
    let [b, s, h, d] = q.dims();
    let device = q.device();
    let keys = window.keys_for(s, &device);
    let w = keys.window();
    let nc = s.div_ceil(w);
    let (k, sp) = (2 * w, nc * w);

    // Window scores [b, s, H, 2w].
    let kvc = kv.select(1, keys.rows.clone()).reshape([b, nc, k, d]);
    let qp = if sp > s {
        Tensor::cat(
            vec![q.clone(), Tensor::zeros([b, sp - s, h, d], &device)],
            1,
        )
    } else {
        q.clone()
    };
    let sw = qp
        .reshape([b, nc, w * h, d])
        .matmul_mixed(kvc.clone().swap_dims(2, 3))
        .mul_scalar(scale)
        .reshape([b, nc, w, h, k]);
    let sw = sw
        .mask_fill(keys.excluded(b, h), f32::NEG_INFINITY)
        .reshape([b, sp, h, k])
        .slice_dim(1, 0..s);

    let sink_col = sink.reshape([1, 1, h, 1]).expand([b, s, h, 1]);
    let mut parts = vec![sw];
    let n = extra.as_ref().map_or(0, Extra::width);
    if let Some(e) = &extra {
        parts.push(e.scores(q, scale));
    }
    parts.push(sink_col);
    let p = softmax_last(Tensor::cat(parts, 3));

    let pw = p.clone().slice_dim(3, 0..k);
    let pw = if sp > s {
        Tensor::cat(vec![pw, Tensor::zeros([b, sp - s, h, k], &device)], 1)
    } else {
        pw
    };
    let ow = pw
        .reshape([b, nc, w * h, k])
        .matmul_mixed(kvc)
        .reshape([b, sp, h, d])
        .slice_dim(1, 0..s);
    match extra {
        Some(e) => {
            let pc = p.slice_dim(3, k..k + n);
            let probs = want_probs.then(|| pc.clone().detach());
            (ow + e.values(pc), probs)
        }
        None => (ow, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{bool_tensor_from, tensor_from, to_vec};
    use burn::backend::Flex;

    /// Dense reference: explicit loops over every (t, h) with the spec's visibility rules.
    #[test]
    fn matches_a_dense_loop_reference() {
        matches_dense_reference(4);
    }

    /// A window at least as long as the sequence (up to 2^20 tokens on 11) is causal attention.
    #[test]
    fn long_windows_match_the_dense_reference() {
        for w in [10, 11, 12, 64, 1 << 20] {
            matches_dense_reference(w);
        }
    }

    fn matches_dense_reference(w: usize) {
        let dev = Default::default();
        let (b, s, h, d, n) = (1, 11, 2, 3, 2);
        let val = |i: usize| ((i * 2654435761usize) % 1000) as f32 / 500.0 - 1.0;
        let qv: Vec<f32> = (0..b * s * h * d).map(val).collect();
        let kvv: Vec<f32> = (0..b * s * d).map(|i| val(i + 7777)).collect();
        let cv: Vec<f32> = (0..b * n * d).map(|i| val(i + 333)).collect();
        let vis: Vec<bool> = (0..s * n).map(|i| (i / n + 1) >= 4 * (i % n + 1)).collect();
        let sinkv = vec![0.3f32, -0.7];
        let q = tensor_from::<Flex, 4>(qv.clone(), [b, s, h, d], &dev);
        let kv = tensor_from::<Flex, 3>(kvv.clone(), [b, s, d], &dev);
        let ck = CompressedKeys {
            kv: tensor_from::<Flex, 3>(cv.clone(), [b, n, d], &dev),
            visible: bool_tensor_from::<Flex, 3>(vis.clone(), [b, s, n], &dev),
        };
        let sink = tensor_from::<Flex, 1>(sinkv.clone(), [h], &dev);
        let got = to_vec(sink_attention(q, kv, Some(&ck), sink, 0.5, w));
        for t in 0..s {
            for hh in 0..h {
                let qq = &qv[(t * h + hh) * d..(t * h + hh + 1) * d];
                let mut keys: Vec<&[f32]> = (t.saturating_sub(w - 1)..=t)
                    .map(|u| &kvv[u * d..(u + 1) * d])
                    .collect();
                keys.extend(
                    (0..n)
                        .filter(|j| vis[t * n + j])
                        .map(|j| &cv[j * d..(j + 1) * d]),
                );
                let z: Vec<f32> = keys
                    .iter()
                    .map(|k| 0.5 * k.iter().zip(qq).map(|(a, b)| a * b).sum::<f32>())
                    .collect();
                let m = z.iter().cloned().fold(sinkv[hh], f32::max);
                let den: f32 = z.iter().map(|x| (x - m).exp()).sum::<f32>() + (sinkv[hh] - m).exp();
                for c in 0..d {
                    let want: f32 = z
                        .iter()
                        .zip(&keys)
                        .map(|(x, k)| (x - m).exp() * k[c])
                        .sum::<f32>()
                        / den;
                    let g = got[(t * h + hh) * d + c];
                    assert!(
                        (g - want).abs() < 1e-6,
                        "w {w} t {t} h {hh} c {c}: {g} vs {want}"
                    );
                }
            }
        }
    }
}
