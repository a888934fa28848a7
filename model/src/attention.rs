//! V4 attention (spec §2.5): low-rank queries with a per-head weightless RMS rescale, one shared
//! KV head (keys = values), sliding window + compressed entries (HCA: all complete blocks;
//! CSA: the indexer's top-k, or all blocks in `dense` mode), learned sink, inverse rope on the
//! output, and the grouped low-rank output projection. On request, CSA layers also return the
//! lightning indexer's KL loss against this attention's own probabilities
//! ([`crate::indexer_loss`]).
//!
//! Sparse CSA is sparse in its cost too: the indexer chooses k entries per query in chunks of
//! queries, the kernel gathers those k and attends window + k + sink only
//! ([`crate::sink_attention::sink_attention_selected`]), and the KL compares the attention's
//! probabilities of the k with the indexer's scores of the same k.

use crate::base_weight::{stored_product, StackWeight};
use crate::compressor::{quantize_kv, Compressor, CompressorKind};
use crate::indexer::{IndexInputs, Indexer};
use crate::indexer_loss::{indexer_kl, teacher};
use crate::indexer_loss_dense::dense_indexer_kl;
use crate::linear::Linear;
use crate::lora::LoraStack;
use crate::norm::{rms_normalize, RmsNorm};
use crate::options::{AttentionMode, ForwardOptions};
use crate::precision;
use crate::rope::RopeTable;
use crate::sample_layout::SampleLayout;
use crate::sink_attention::{
    sink_attention_probs, sink_attention_selected, CompressedKeys, SelectedKeys,
};
use crate::stored_weight::View;
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Bool, Tensor};

/// The compressed keys one call attends, and the indexer scores its KL trains (when on).
enum Keys<B: Backend> {
    /// Window-only layer, or no complete block yet.
    None,
    /// Every visible entry (HCA; CSA in dense mode), with the student: the indexer's inputs
    /// and the queries per chunk of its KL ([`dense_indexer_kl`]).
    Dense(CompressedKeys<B>, Option<(IndexInputs<B>, usize)>),
    /// The indexer's top-k per query (sparse CSA), with the student `[b, s, k]`.
    Selected(SelectedKeys<B>, Option<Tensor<B, 3>>),
}

/// The layout's counted queries `[b, s]` (`None`: all of them).
fn counted<B: Backend>(layout: &SampleLayout<B>) -> Option<Tensor<B, 2>> {
    (!layout.all_counted()).then(|| layout.counted_tensor())
}

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
    pub wo_a: StackWeight<B>,
    /// LoRA adapters of `wo_a`, one per group.
    pub wo_a_lora: Option<LoraStack<B>>,
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
        let _precision = precision::enter(opts.precision);
        let [b, s, _] = x.dims();
        let (h, hd, rd) = (self.n_heads, self.head_dim, self.rope_dim);
        let table = layout.rope_tokens(&self.freqs);
        let with_loss = opts.indexer_loss && self.indexer.is_some();

        let qr = self.q_norm.forward(self.wq_a.forward(x.clone()));
        let q = self.wq_b.forward(qr.clone()).reshape([b, s, h, hd]);
        let q = table.rotate_tail(rms_normalize(q, self.eps), rd, false);

        let kv = self.kv_norm.forward(self.wkv.forward(x.clone()));
        let kv = quantize_kv(table.rotate_tail3(kv, rd, false), rd, opts.fake_quant);

        let window = layout.window(self.window);
        let (sink, scale) = (self.attn_sink.val(), (hd as f64).powf(-0.5));
        let (o, loss) = match self.compressed_keys(&x, &qr, &table, layout, opts, with_loss) {
            Keys::None => (
                sink_attention_probs(q, kv, None, sink, scale, window, false).0,
                None,
            ),
            Keys::Dense(keys, student) => {
                let want = student.is_some();
                let (o, p) = sink_attention_probs(q, kv, Some(&keys), sink, scale, window, want);
                let loss = student.zip(p).map(|((inputs, rows), p)| {
                    dense_indexer_kl(&inputs, teacher(p), keys.visible, counted(layout), rows)
                });
                (o, loss)
            }
            Keys::Selected(keys, student) => {
                let want = student.is_some();
                let (o, p) = sink_attention_selected(q, kv, &keys, sink, scale, window, want);
                (o, Self::kl(p, student, keys.valid, layout))
            }
        };
        let loss = with_loss.then(|| loss.unwrap_or_else(|| Tensor::zeros([1], &x.device())));
        let o = table.rotate_tail(o, rd, true);
        (self.project_out(o), loss)
    }

    /// The indexer KL of the attention's compressed-entry probabilities `probs` against the
    /// student scores over `candidates` (same last dimension), counting the layout's counted
    /// queries.
    fn kl(
        probs: Option<Tensor<B, 4>>,
        student: Option<Tensor<B, 3>>,
        candidates: Tensor<B, 3, Bool>,
        layout: &SampleLayout<B>,
    ) -> Option<Tensor<B, 1>> {
        Some(indexer_kl(
            teacher(probs?),
            student?,
            candidates,
            counted(layout),
        ))
    }

    /// The compressed keys the attention sees (for CSA in sparse mode: the indexer's top-k of
    /// the visible entries), and, when `with_loss`, the indexer scores that the KL loss trains
    /// (indexer run on detached `x` and `qr`; the selection uses them detached).
    fn compressed_keys(
        &self,
        x: &Tensor<B, 3>,
        qr: &Tensor<B, 3>,
        table: &RopeTable<B>,
        layout: &SampleLayout<B>,
        opts: ForwardOptions,
        with_loss: bool,
    ) -> Keys<B> {
        let (Some(comp), Some(entries)) = (self.compressor.as_ref(), layout.entries(self.ratio))
        else {
            return Keys::None;
        };
        let main = CompressorKind::Main;
        let Some(kv) = comp.forward_entries(x, layout, &self.freqs, main, opts.fake_quant) else {
            return Keys::None;
        };
        let sparse = opts.attention == AttentionMode::Sparse;
        let dense = |student| {
            Keys::Dense(
                CompressedKeys {
                    kv: kv.clone(),
                    visible: entries.visible(),
                },
                student,
            )
        };
        let Some(ix) = self.indexer.as_ref().filter(|_| sparse || with_loss) else {
            return dense(None);
        };
        // Without the KL nothing differentiates the scores: a no-grad copy of the indexer
        // records (and keeps) no autodiff graph for them.
        let ix = if with_loss {
            ix.clone()
        } else {
            ix.clone().no_grad()
        };
        let (xd, qd) = (x.clone().detach(), qr.clone().detach());
        let Some(inputs) = ix.inputs(&xd, &qd, table, layout, &self.freqs, opts.fake_quant) else {
            return dense(None);
        };
        if !sparse {
            let [b, s, _] = x.dims();
            let rows = ix.chunk_rows(b, s, entries.n, opts.indexer_chunk);
            return dense(Some((inputs, rows)));
        }
        let chosen = ix.select_top_k(&inputs.detach(), &entries, opts.indexer_chunk);
        let student = with_loss.then(|| Indexer::scores_at(&inputs, &chosen));
        let keys = SelectedKeys {
            kv,
            index: chosen.index,
            valid: chosen.valid,
        };
        Keys::Selected(keys, student)
    }

    /// Grouped low-rank output: per group `[H·D/g] → [o_lora]`, then `wo_b`.
    pub fn project_out(&self, o: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, s, h, hd] = o.dims();
        let [g, gin, r] = self.wo_a.dims();
        debug_assert_eq!(g * gin, h * hd);
        let og = o.reshape([b * s, g, gin]).swap_dims(0, 1); // [g, b·s, gin]
        let mut u = match &self.wo_a {
            StackWeight::Dense(p) => precision::matmul(og.clone(), p.val()), // [g, b·s, r]
            StackWeight::Stored(s) => stored_product(og.clone(), s, &View::default(), true),
        };
        if let Some(l) = &self.wo_a_lora {
            u = u + l.delta(og, None);
        }
        let u = u.swap_dims(0, 1).reshape([b, s, g * r]);
        self.wo_b.forward(u)
    }
}
