//! V4 attention (spec §2.5): low-rank queries with a per-head weightless RMS rescale, one shared
//! KV head (keys = values), sliding window + compressed entries (HCA: all complete blocks;
//! CSA: the indexer's top-k, or all blocks in `dense` mode), learned sink, inverse rope on the
//! output, and the grouped low-rank output projection. On request, CSA layers also return the
//! lightning indexer's KL loss against this attention's own probabilities
//! ([`crate::indexer_loss`]).

use crate::compressor::{quantize_kv, Compressor, CompressorKind};
use crate::indexer::Indexer;
use crate::indexer_loss::{indexer_kl, teacher};
use crate::linear::Linear;
use crate::norm::{rms_normalize, RmsNorm};
use crate::options::{AttentionMode, ForwardOptions};
use crate::rope::RopeTable;
use crate::sample_layout::SampleLayout;
use crate::sink_attention::{sink_attention_probs, CompressedKeys, Window};
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};

/// `layers.N.attn`.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `wq_a` `[d, q_lora]`.
    pub wq_a: Linear<B>,
    /// `q_norm`.
    pub q_norm: RmsNorm<B>,
    /// `wq_b` `[q_lora, H·D]`.
    pub wq_b: Linear<B>,
    /// `wkv` `[d, D]`.
    pub wkv: Linear<B>,
    /// `kv_norm`.
    pub kv_norm: RmsNorm<B>,
    /// `wo_a` per group `[g, H·D/g, o_lora]`.
    pub wo_a: Param<Tensor<B, 3>>,
    /// `wo_b` `[g·o_lora, d]`.
    pub wo_b: Linear<B>,
    /// `attn_sink` `[H]`.
    pub attn_sink: Param<Tensor<B, 1>>,
    /// Present for ratio > 0.
    pub compressor: Option<Compressor<B>>,
    /// Present for ratio 4.
    pub indexer: Option<Indexer<B>>,
    /// Query heads.
    pub n_heads: usize,
    /// Head dim D.
    pub head_dim: usize,
    /// Rotary dims.
    pub rope_dim: usize,
    /// Sliding window.
    pub window: usize,
    /// Compression ratio (0, 4, 128).
    pub ratio: usize,
    /// RMS epsilon.
    pub eps: f64,
    /// Rope frequencies of this layer.
    #[module(skip)]
    pub freqs: Vec<f32>,
}

impl<B: Backend> Attention<B> {
    /// `x` `[b, s, d]` (after `attn_norm`) → `[b, s, d]`.
    pub fn forward(&self, x: Tensor<B, 3>, opts: ForwardOptions) -> Tensor<B, 3> {
        self.forward_aux(x, opts).0
    }

    /// [`Attention::forward`] plus the indexer KL loss ([`crate::indexer_loss`]) when
    /// `opts.indexer_loss` is on and the layer has an indexer, for unpacked rows.
    pub fn forward_aux(
        &self,
        x: Tensor<B, 3>,
        opts: ForwardOptions,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 1>>) {
        let [b, s, _] = x.dims();
        let layout = SampleLayout::whole(b, s, &x.device());
        self.forward_samples(x, &layout, opts)
    }

    /// [`Attention::forward_aux`] for the samples of `layout`: each sample attends only to
    /// itself (window, compressed entries, indexer candidates, rope positions), and the KL
    /// counts only the layout's counted queries. The output does not depend on
    /// `opts.indexer_loss`.
    pub fn forward_samples(
        &self,
        x: Tensor<B, 3>,
        layout: &SampleLayout<B>,
        opts: ForwardOptions,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 1>>) {
        let [b, s, _] = x.dims();
        let (h, hd, rd) = (self.n_heads, self.head_dim, self.rope_dim);
        let device = x.device();
        let table = RopeTable::for_tokens(&self.freqs, layout, &device);
        let with_loss = opts.indexer_loss && self.indexer.is_some();

        let qr = self.q_norm.forward(self.wq_a.forward(x.clone()));
        let q = self.wq_b.forward(qr.clone()).reshape([b, s, h, hd]);
        let q = table.rotate_tail(rms_normalize(q, self.eps), rd, false);

        let kv = self.kv_norm.forward(self.wkv.forward(x.clone()));
        let kv = quantize_kv(table.rotate_tail3(kv, rd, false), rd, opts.fake_quant);

        let (compressed, student) = self.compressed_keys(&x, &qr, &table, layout, opts, with_loss);
        let window = Window::for_sequence(self.window, s, layout);
        let (o, probs) = sink_attention_probs(
            q,
            kv,
            compressed.as_ref(),
            self.attn_sink.val(),
            (hd as f64).powf(-0.5),
            window,
            with_loss,
        );
        let loss = with_loss.then(|| match (probs, student, compressed) {
            (Some(p), Some(scores), Some(c)) => {
                let counted = (!layout.all_counted()).then(|| layout.counted_tensor());
                indexer_kl(teacher(p), scores, c.visible, counted)
            }
            _ => Tensor::zeros([1], &device),
        });
        let o = table.rotate_tail(o, rd, true);
        (self.project_out(o), loss)
    }

    /// The compressed keys the attention sees (for CSA in sparse mode: the indexer's top-k of
    /// the visible entries), and, when `with_loss`, the indexer scores `[b, s, n]` that the KL
    /// loss trains (indexer run on detached `x` and `qr`; the selection uses them detached).
    fn compressed_keys(
        &self,
        x: &Tensor<B, 3>,
        qr: &Tensor<B, 3>,
        table: &RopeTable<B>,
        layout: &SampleLayout<B>,
        opts: ForwardOptions,
        with_loss: bool,
    ) -> (Option<CompressedKeys<B>>, Option<Tensor<B, 3>>) {
        let Some(comp) = self.compressor.as_ref() else {
            return (None, None);
        };
        let Some(entries) = layout.entries(self.ratio) else {
            return (None, None);
        };
        let kv = comp.forward_entries(
            x,
            &entries,
            &self.freqs,
            CompressorKind::Main,
            opts.fake_quant,
        );
        let visible = entries.visible.clone();
        let sparse = opts.attention == AttentionMode::Sparse;
        let scores = match &self.indexer {
            Some(ix) if sparse || with_loss => {
                // Without the KL nothing differentiates the scores: a no-grad copy of the
                // indexer records (and keeps) no autodiff graph for them.
                let ix = if with_loss {
                    ix.clone()
                } else {
                    ix.clone().no_grad()
                };
                Some(ix.scores_entries(
                    &x.clone().detach(),
                    &qr.clone().detach(),
                    table,
                    &entries,
                    &self.freqs,
                    opts.fake_quant,
                ))
            }
            _ => None,
        };
        let visible = match (&self.indexer, &scores) {
            (Some(ix), Some(sc)) if sparse => ix.select(sc.clone().detach(), visible),
            (Some(_), None) if sparse => return (None, None),
            _ => visible,
        };
        let student = if with_loss { scores } else { None };
        (Some(CompressedKeys { kv, visible }), student)
    }

    /// Grouped low-rank output: per group `[H·D/g] → [o_lora]`, then `wo_b`.
    pub fn project_out(&self, o: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, s, h, hd] = o.dims();
        let [g, gin, r] = self.wo_a.dims();
        debug_assert_eq!(g * gin, h * hd);
        let og = o.reshape([b * s, g, gin]).swap_dims(0, 1); // [g, b·s, gin]
        let u = og.matmul(self.wo_a.val()); // [g, b·s, r]
        let u = u.swap_dims(0, 1).reshape([b, s, g * r]);
        self.wo_b.forward(u)
    }
}
