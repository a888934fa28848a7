//! The attention kernel of V4 (spec §2.5 step 4): each head's query attends the single shared KV
//! head (keys = values) over its sliding window plus a set of compressed entries, with a learned
//! per-head sink logit that joins the softmax denominator only (a key whose value is zero).
//!
//! The window part is computed in chunks of `window` queries against their `2·window` candidate
//! keys, so cost is O(s · window), not O(s²); with packed samples a `[b, chunks, w, 2w]` mask
//! keeps each query's keys inside its sample. Compressed entries are scored densely and masked
//! (visibility, and the indexer's top-k selection for CSA).

use crate::masks::WindowLayout;
use crate::util::{bool_tensor_from, int_tensor_from};
use burn::tensor::activation::softmax;
use burn::tensor::{backend::Backend, Bool, Tensor};

/// Compressed keys for one layer: entries `[b, n, D]` and which query sees which `[b, s, n]`.
#[derive(Debug, Clone)]
pub struct CompressedKeys<B: Backend> {
    /// Entries (keys = values).
    pub kv: Tensor<B, 3>,
    /// `true` where query t may attend entry j.
    pub visible: Tensor<B, 3, Bool>,
}

/// The sliding window of one attention call: its length and, for packed samples, the
/// `[b, chunks, w, 1, 2w]` validity that keeps keys inside the query's sample
/// ([`crate::sample_layout::SampleLayout::window_mask`]).
#[derive(Debug, Clone)]
pub struct Window<B: Backend> {
    /// Keys per query (`sliding_window`).
    pub size: usize,
    /// Sample-aware validity; `None`: every row unpacked.
    pub mask: Option<Tensor<B, 5, Bool>>,
}

impl<B: Backend> Window<B> {
    /// The window of `size` keys over `s` tokens (clamped to the sequence), with the sample
    /// mask of `layout` when its rows are packed.
    pub fn for_sequence(size: usize, s: usize, layout: &crate::SampleLayout<B>) -> Self {
        let size = size.clamp(1, s.max(1));
        Self {
            size,
            mask: layout.window_mask(size),
        }
    }
}

impl<B: Backend> From<usize> for Window<B> {
    fn from(size: usize) -> Self {
        Self { size, mask: None }
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
    let [b, s, h, d] = q.dims();
    let device = q.device();
    let Window { size, mask } = window.into();
    // A window at least as long as the sequence sees every earlier key; clamping it keeps the
    // chunked layout O(s²) rather than O(window²) (a 2^20-token window on 3 tokens). A sample
    // mask was built for the clamped window ([`Window::for_sequence`]).
    let window = match &mask {
        Some(m) => m.dims()[2],
        None => size.clamp(1, s.max(1)),
    };
    let layout = WindowLayout::new(s, window);
    let (nc, w, k) = (layout.chunks, window, layout.keys());
    let sp = nc * w;

    // Window scores [b, s, H, 2w].
    let rows = int_tensor_from::<B, 1>(layout.key_rows(), [nc * k], &device);
    let kvc = kv.select(1, rows).reshape([b, nc, k, d]);
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
        .matmul(kvc.clone().swap_dims(2, 3))
        .mul_scalar(scale)
        .reshape([b, nc, w, h, k]);
    let valid = mask
        .unwrap_or_else(|| bool_tensor_from::<B, 5>(layout.mask(), [1, nc, w, 1, k], &device))
        .expand([b, nc, w, h, k]);
    let sw = sw
        .mask_fill(valid.bool_not(), f32::NEG_INFINITY)
        .reshape([b, sp, h, k])
        .slice_dim(1, 0..s);

    let sink_col = sink.reshape([1, 1, h, 1]).expand([b, s, h, 1]);
    let mut parts = vec![sw];
    let n = compressed.map(|c| c.kv.dims()[1]).unwrap_or(0);
    if let Some(c) = compressed {
        let sc = q
            .reshape([b, s * h, d])
            .matmul(c.kv.clone().swap_dims(1, 2))
            .mul_scalar(scale)
            .reshape([b, s, h, n]);
        let vis = c.visible.clone().reshape([b, s, 1, n]).expand([b, s, h, n]);
        parts.push(sc.mask_fill(vis.bool_not(), f32::NEG_INFINITY));
    }
    parts.push(sink_col);
    let p = softmax(Tensor::cat(parts, 3), 3);

    let pw = p.clone().slice_dim(3, 0..k);
    let pw = if sp > s {
        Tensor::cat(vec![pw, Tensor::zeros([b, sp - s, h, k], &device)], 1)
    } else {
        pw
    };
    let ow = pw
        .reshape([b, nc, w * h, k])
        .matmul(kvc)
        .reshape([b, sp, h, d])
        .slice_dim(1, 0..s);
    match compressed {
        Some(c) => {
            let pc = p.slice_dim(3, k..k + n);
            let probs = want_probs.then(|| pc.clone().detach());
            let oc = pc.reshape([b, s * h, n]).matmul(c.kv.clone());
            (ow + oc.reshape([b, s, h, d]), probs)
        }
        None => (ow, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{tensor_from, to_vec};
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
