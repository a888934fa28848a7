//! V4 attention (spec §2.5): low-rank queries with a per-head weightless RMS rescale, one shared
//! KV head (keys = values), sliding window + compressed entries (HCA: all complete blocks;
//! CSA: the indexer's top-k, or all blocks in `dense` mode), learned sink, inverse rope on the
//! output, and the grouped low-rank output projection.

use crate::compressor::{quantize_kv, Compressor, CompressorKind};
use crate::indexer::Indexer;
use crate::linear::Linear;
use crate::masks::compressed_visible;
use crate::norm::{rms_normalize, RmsNorm};
use crate::rope::RopeTable;
use crate::sink_attention::{sink_attention, CompressedKeys};
use crate::util::bool_tensor_from;
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};

/// How CSA layers choose compressed blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionMode {
    /// The reference: the lightning indexer's top-k.
    #[default]
    Sparse,
    /// Every visible compressed block (dense warm-up stage).
    Dense,
}

/// Per-call switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardOptions {
    /// FP8/FP4 fake quantization of KV and indexer paths (on for reference parity).
    pub fake_quant: bool,
    /// CSA block selection.
    pub attention: AttentionMode,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        Self {
            fake_quant: true,
            attention: AttentionMode::Sparse,
        }
    }
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
        let [b, s, _] = x.dims();
        let (h, hd, rd) = (self.n_heads, self.head_dim, self.rope_dim);
        let device = x.device();
        let table = RopeTable::new(&self.freqs, 0..s, &device);

        let qr = self.q_norm.forward(self.wq_a.forward(x.clone()));
        let q = self.wq_b.forward(qr.clone()).reshape([b, s, h, hd]);
        let q = table.rotate_tail(rms_normalize(q, self.eps), rd, false);

        let kv = self.kv_norm.forward(self.wkv.forward(x.clone()));
        let kv = quantize_kv(table.rotate_tail3(kv, rd, false), rd, opts.fake_quant);

        let compressed = self.compressed_keys(&x, &qr, &table, opts);
        let o = sink_attention(
            q,
            kv,
            compressed.as_ref(),
            self.attn_sink.val(),
            (hd as f64).powf(-0.5),
            self.window,
        );
        let o = table.rotate_tail(o, rd, true);
        self.project_out(o)
    }

    fn compressed_keys(
        &self,
        x: &Tensor<B, 3>,
        qr: &Tensor<B, 3>,
        table: &RopeTable<B>,
        opts: ForwardOptions,
    ) -> Option<CompressedKeys<B>> {
        let comp = self.compressor.as_ref()?;
        let kv = comp.forward(x, &self.freqs, CompressorKind::Main, opts.fake_quant)?;
        let [b, s, _] = x.dims();
        let n = kv.dims()[1];
        let visible =
            bool_tensor_from::<B, 3>(compressed_visible(s, n, self.ratio), [1, s, n], &x.device())
                .expand([b, s, n]);
        let visible = match (&self.indexer, opts.attention) {
            (Some(ix), AttentionMode::Sparse) => {
                let scores = ix
                    .scores(
                        &x.clone().detach(),
                        &qr.clone().detach(),
                        table,
                        &self.freqs,
                        opts.fake_quant,
                    )
                    .map(|t| t.detach())?;
                ix.select(scores, visible)
            }
            _ => visible,
        };
        Some(CompressedKeys { kv, visible })
    }

    /// Grouped low-rank output: per group `[H·D/g] → [o_lora]`, then `wo_b`.
    fn project_out(&self, o: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, s, h, hd] = o.dims();
        let [g, gin, r] = self.wo_a.dims();
        debug_assert_eq!(g * gin, h * hd);
        let og = o.reshape([b * s, g, gin]).swap_dims(0, 1); // [g, b·s, gin]
        let u = og.matmul(self.wo_a.val()); // [g, b·s, r]
        let u = u.swap_dims(0, 1).reshape([b, s, g * r]);
        self.wo_b.forward(u)
    }
}
