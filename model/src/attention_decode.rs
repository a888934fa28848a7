//! V4 attention for one new token per row against the decode cache (spec §2.5, §2.10 decode):
//! the token's query attends the window ring (the last `window` keys, itself included), the
//! compressed entries complete so far (HCA: all of them; CSA: the lightning indexer's top-k
//! among them, or all in dense mode) and the sink — the same keys, scores and selection a
//! full-sequence forward gives that position, at O(window + entries) cost.

use crate::attention::Attention;
use crate::broadcast::softmax_last;
use crate::compressor::{quantize_kv, CompressorKind};
use crate::compressor_decode::complete_entries;
use crate::fake_quant::fake_fp4;
use crate::hadamard::{hadamard_matrix, hadamard_rotate};
use crate::indexer::{head_sum, Indexer};
use crate::kv_cache::{write_slots, CompressorCache, LayerCache};
use crate::norm::rms_normalize;
use crate::options::{AttentionMode, ForwardOptions};
use crate::precision::{self, MixedMatmul};
use crate::rope::RopeTable;
use burn::tensor::activation::relu;
use burn::tensor::{backend::Backend, Bool, Tensor};

impl<B: Backend> Indexer<B> {
    /// Index scores `[b, n]` of the new tokens (latent `qr` `[b, 1, q_lora]`, rope `table`)
    /// against the indexer's cached entries, after adding the tokens `x` to the cache.
    #[allow(clippy::too_many_arguments)]
    fn decode_scores(
        &self,
        cache: &mut CompressorCache<B>,
        x: &Tensor<B, 3>,
        qr: &Tensor<B, 3>,
        table: &RopeTable<B>,
        pos: &[usize],
        freqs: &[f32],
        fake_quant: bool,
    ) -> Tensor<B, 2> {
        let b = x.dims()[0];
        let (nh, hd) = (self.n_heads, self.head_dim);
        self.compressor
            .decode_step(cache, x, pos, freqs, CompressorKind::Indexer, fake_quant);
        let q = self.wq_b.forward(qr.clone()).reshape([b, 1, nh, hd]);
        let h = hadamard_matrix(hd, &x.device());
        let q = hadamard_rotate(table.rotate_tail(q, self.rope_dim, false), h);
        let q = if fake_quant { fake_fp4(q, 32) } else { q };
        let w = self
            .weights_proj
            .forward(x.clone())
            .mul_scalar((hd as f64).powf(-0.5) * (nh as f64).powf(-0.5))
            .reshape([b, 1, nh]);
        let n = cache.entries.dims()[1];
        let dots = relu(
            q.reshape([b, nh, hd])
                .matmul_mixed(cache.entries.clone().swap_dims(1, 2)),
        );
        head_sum(w, dots).reshape([b, n])
    }
}

impl<B: Backend> Attention<B> {
    /// `x` `[b, 1, d]` (after `attn_norm`) of tokens at positions `pos` → `[b, 1, d]`; updates
    /// the layer's cache with them.
    pub fn decode(
        &self,
        x: Tensor<B, 3>,
        cache: &mut LayerCache<B>,
        pos: &[usize],
        opts: ForwardOptions,
    ) -> Tensor<B, 3> {
        let _precision = precision::enter(opts.precision);
        let b = x.dims()[0];
        let (h, hd, rd, w) = (self.n_heads, self.head_dim, self.rope_dim, self.window);
        let device = x.device();
        let table = RopeTable::per_row(&self.freqs, pos, b, 1, &device);

        let qr = self.q_norm.forward(self.wq_a.forward(x.clone()));
        let q = self.wq_b.forward(qr.clone()).reshape([b, 1, h, hd]);
        let q = table.rotate_tail(rms_normalize(q, self.eps), rd, false);
        let kv = self.kv_norm.forward(self.wkv.forward(x.clone()));
        let kv = quantize_kv(table.rotate_tail3(kv, rd, false), rd, opts.fake_quant);
        let at: Vec<(usize, usize)> = pos.iter().enumerate().map(|(i, p)| (i, p % w)).collect();
        cache.window = write_slots(cache.window.clone(), &at, kv.reshape([b, hd]));
        let ring = cache.window.dims()[1];
        let filled: Vec<bool> = pos
            .iter()
            .flat_map(|&p| (0..ring).map(move |j| j <= p))
            .collect();
        let window_ok = crate::util::bool_tensor_from::<B, 2>(filled, [b, ring], &device);

        let entries = self.decode_entries(&x, &qr, &table, cache, pos, opts);
        let scale = (hd as f64).powf(-0.5);
        let qh = q.reshape([b, h, hd]);
        let masked = |keys: &Tensor<B, 3>, ok: Tensor<B, 2, Bool>| {
            let n = keys.dims()[1];
            qh.clone()
                .matmul_mixed(keys.clone().swap_dims(1, 2))
                .mul_scalar(scale)
                .mask_fill(
                    ok.reshape([b, 1, n]).expand([b, h, n]).bool_not(),
                    f32::NEG_INFINITY,
                )
        };
        let mut parts = vec![masked(&cache.window, window_ok)];
        if let Some((keys, ok)) = &entries {
            parts.push(masked(keys, ok.clone()));
        }
        parts.push(self.attn_sink.val().reshape([1, h, 1]).expand([b, h, 1]));
        let p = softmax_last(Tensor::cat(parts, 2));
        let mut o = p
            .clone()
            .slice_dim(2, 0..ring)
            .matmul_mixed(cache.window.clone());
        if let Some((keys, _)) = entries {
            let n = keys.dims()[1];
            o = o + p.slice_dim(2, ring..ring + n).matmul_mixed(keys);
        }
        let o = table.rotate_tail(o.reshape([b, 1, h, hd]), rd, true);
        self.project_out(o)
    }

    /// The compressed entries the new tokens see `[b, n, D]` and which ones `[b, n]` (complete,
    /// and for CSA in sparse mode the indexer's top-k), after adding the tokens to the cache.
    fn decode_entries(
        &self,
        x: &Tensor<B, 3>,
        qr: &Tensor<B, 3>,
        table: &RopeTable<B>,
        cache: &mut LayerCache<B>,
        pos: &[usize],
        opts: ForwardOptions,
    ) -> Option<(Tensor<B, 3>, Tensor<B, 2, Bool>)> {
        let (comp, main) = (self.compressor.as_ref()?, cache.main.as_mut()?);
        comp.decode_step(
            main,
            x,
            pos,
            &self.freqs,
            CompressorKind::Main,
            opts.fake_quant,
        );
        let [b, n, _] = main.entries.dims();
        let complete = complete_entries::<B>(pos, self.ratio, n, &x.device());
        let chosen = match (&self.indexer, cache.indexer.as_mut()) {
            (Some(ix), Some(ic)) if opts.attention == AttentionMode::Sparse => {
                let scores = ix.decode_scores(ic, x, qr, table, pos, &self.freqs, opts.fake_quant);
                // The indexer's cache grows with the main one: same ratio, same positions.
                let scores = scores.slice_dim(1, 0..n).reshape([b, 1, n]);
                ix.select(scores, complete.reshape([b, 1, n]))
                    .reshape([b, n])
            }
            (Some(ix), Some(ic)) => {
                ix.compressor.decode_step(
                    ic,
                    x,
                    pos,
                    &self.freqs,
                    CompressorKind::Indexer,
                    opts.fake_quant,
                );
                complete
            }
            _ => complete,
        };
        Some((main.entries.clone(), chosen))
    }
}
