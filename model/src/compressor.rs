//! The KV compressor of CSA/HCA (spec §2.6): gated softmax pooling of `ratio` consecutive tokens
//! (learned positional bias `ape`) into one compressed entry, then RMSNorm and rope at the block
//! start. Ratio 4 overlaps: entry i pools the previous block's tokens through the first half of
//! the channels and its own through the second half (8 candidates per channel). Only complete
//! blocks are emitted. With packed samples, blocks are counted from each sample's first token and
//! the overlap never reaches into the previous sample ([`crate::sample_layout::EntryLayout`]).
//! The main compressor fake-quantizes the non-rope dims to FP8; the indexer's compressor
//! Hadamard-rotates and fake-quantizes to FP4.

use crate::broadcast::{softmax_mid, sum_mid};
use crate::fake_quant::{fake_fp4, fake_fp8};
use crate::hadamard::hadamard_rotate;
use crate::linear::Linear;
use crate::norm::RmsNorm;
use crate::sample_layout::SampleLayout;
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};

/// What happens to compressed entries after norm and rope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressorKind {
    /// Main attention: FP8 on the non-rope dims.
    Main,
    /// Lightning indexer keys: Hadamard rotation and FP4 on all dims.
    Indexer,
}

/// One compressor (`attn.compressor` or `attn.indexer.compressor`).
#[derive(Module, Debug)]
pub struct Compressor<B: Backend> {
    /// `wkv` `[d, coff·D]`.
    pub wkv: Linear<B>,
    /// `wgate` `[d, coff·D]`.
    pub wgate: Linear<B>,
    /// Positional bias `ape` `[ratio, coff·D]`.
    pub ape: Param<Tensor<B, 2>>,
    /// RMSNorm over the entry `[D]`.
    pub norm: RmsNorm<B>,
    /// Tokens per entry.
    pub ratio: usize,
    /// Entry width D.
    pub head_dim: usize,
    /// Rotary dims of the entry.
    pub rope_dim: usize,
}

impl<B: Backend> Compressor<B> {
    /// Compressed entries `[b, s / ratio, D]` of unpacked rows `x` `[b, s, d]`, or `None` when
    /// no block is complete. `freqs` are the layer's rope frequencies.
    pub fn forward(
        &self,
        x: &Tensor<B, 3>,
        freqs: &[f32],
        kind: CompressorKind,
        fake_quant: bool,
    ) -> Option<Tensor<B, 3>> {
        let [b, s, _] = x.dims();
        let layout = SampleLayout::<B>::whole(b, s, &x.device());
        self.forward_entries(x, &layout, freqs, kind, fake_quant)
    }

    /// Compressed entries `[b, n, D]` of `x` `[b, s, d]` laid out by `layout`'s entries of this
    /// ratio (packed samples: blocks counted from each sample's first token, no overlap across
    /// samples), or `None` when no sample holds a complete block.
    pub fn forward_entries(
        &self,
        x: &Tensor<B, 3>,
        layout: &SampleLayout<B>,
        freqs: &[f32],
        kind: CompressorKind,
        fake_quant: bool,
    ) -> Option<Tensor<B, 3>> {
        let entries = layout.entries(self.ratio)?;
        let [b, s, dm] = x.dims();
        let (r, d, n) = (self.ratio, self.head_dim, entries.n);
        let xs = match &entries.gather {
            None => x.clone().slice_dim(1, 0..n * r),
            Some(idx) => x
                .clone()
                .reshape([b * s, dm])
                .select(0, idx.clone())
                .reshape([b, n * r, dm]),
        };
        let cd = self.wkv.d_out();
        let mut kv = self.wkv.forward_f32(xs.clone()).reshape([b, n, r, cd]);
        // The position bias added on `[b·n, r·cd]` rows: one shared row, which CPU backends
        // add row by row ([`crate::broadcast`]).
        let ape = self.ape.val().reshape([1, r * cd]);
        let score = self.wgate.forward_f32(xs).reshape([b * n, r * cd]) + ape;
        let mut score = score.reshape([b, n, r, cd]);
        if cd == 2 * d {
            // Overlap: candidates = previous block through channels [0, D) + own block through
            // [D, 2D); an entry with no previous block in its sample gets value 0, score −inf.
            let device = x.device();
            let shift = |t: Tensor<B, 4>, fill: f32| {
                let pad = Tensor::<B, 4>::full([b, 1, r, d], fill, &device);
                let prev = t.clone().slice_dim(3, 0..d).slice_dim(1, 0..n - 1);
                let mut prev = Tensor::cat(vec![pad, prev], 1);
                if let Some(first) = &entries.first {
                    prev = prev.mask_fill(first.clone().expand([b, n, r, d]), fill);
                }
                Tensor::cat(vec![prev, t.slice_dim(3, d..2 * d)], 2)
            };
            kv = shift(kv, 0.0);
            score = shift(score, f32::NEG_INFINITY);
        }
        let rr = kv.dims()[2];
        let p = softmax_mid(score.reshape([b * n, rr, d]));
        let c = sum_mid(kv.reshape([b * n, rr, d]) * p).reshape([b, n, d]);
        let c = self.norm.forward(c);
        let table = layout.rope_entries(freqs, &entries);
        let c = table.rotate_tail3(c, self.rope_dim, false);
        Some(self.quantize_entries(c, kind, fake_quant, || layout.hadamard(d)))
    }

    /// The kind's treatment of rotated entries `[b, n, D]`: FP8 KV rounding for the main
    /// compressor, Hadamard rotation (`hadamard` gives the matrix) and FP4 rounding for the
    /// indexer's.
    pub(crate) fn quantize_entries(
        &self,
        c: Tensor<B, 3>,
        kind: CompressorKind,
        fake_quant: bool,
        hadamard: impl FnOnce() -> Tensor<B, 2>,
    ) -> Tensor<B, 3> {
        match kind {
            CompressorKind::Main => quantize_kv(c, self.rope_dim, fake_quant),
            CompressorKind::Indexer => {
                let c = hadamard_rotate(c, hadamard());
                if fake_quant {
                    fake_fp4(c, 32)
                } else {
                    c
                }
            }
        }
    }
}

/// FP8 fake quantization of the non-rope dims of KV vectors `[b, n, D]` (blocks of 64).
pub fn quantize_kv<B: Backend>(
    kv: Tensor<B, 3>,
    rope_dim: usize,
    fake_quant: bool,
) -> Tensor<B, 3> {
    if !fake_quant {
        return kv;
    }
    let d = kv.dims()[2];
    let nope = fake_fp8(kv.clone().slice_dim(2, 0..d - rope_dim), 64);
    Tensor::cat(vec![nope, kv.slice_dim(2, d - rope_dim..d)], 2)
}
