//! The lightning indexer of CSA layers (spec §2.7): scores every visible compressed block for
//! each query, `I[t,j] = Σ_h w[t,h] · ReLU(qI[t,h] · kI[j])`, and keeps the top-k. Queries come
//! from the attention's shared low-rank latent `qr`; keys from the indexer's own compressor
//! (Hadamard-rotated, FP4). The selection is discrete: it runs on detached inputs. The indexer
//! learns only from its own KL loss against the main attention ([`crate::indexer_loss`]); its
//! inputs stay detached, so that loss never reaches the rest of the model.

use crate::compressor::{Compressor, CompressorKind};
use crate::fake_quant::fake_fp4;
use crate::hadamard::hadamard_rotate;
use crate::linear::Linear;
use crate::rope::RopeTable;
use crate::sample_layout::{EntryLayout, SampleLayout};
use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::{backend::Backend, Bool, Tensor};

/// `attn.indexer`.
#[derive(Module, Debug)]
pub struct Indexer<B: Backend> {
    /// `wq_b` `[q_lora, heads·D]`.
    pub wq_b: Linear<B>,
    /// `weights_proj` `[d, heads]`.
    pub weights_proj: Linear<B>,
    /// The indexer's compressor (D = `index_head_dim`).
    pub compressor: Compressor<B>,
    /// Indexer heads.
    pub n_heads: usize,
    /// Indexer head dim.
    pub head_dim: usize,
    /// Rotary dims.
    pub rope_dim: usize,
    /// Blocks kept per query.
    pub topk: usize,
}

impl<B: Backend> Indexer<B> {
    /// Raw index scores `[b, s, n]` (before masking) of unpacked rows, or `None` when no block
    /// is complete.
    pub fn scores(
        &self,
        x: &Tensor<B, 3>,
        qr: &Tensor<B, 3>,
        table: &RopeTable<B>,
        freqs: &[f32],
        fake_quant: bool,
    ) -> Option<Tensor<B, 3>> {
        let [b, s, _] = x.dims();
        let ratio = self.compressor.ratio;
        let entries = SampleLayout::<B>::whole(b, s, &x.device()).entries(ratio)?;
        Some(self.scores_entries(x, qr, table, &entries, freqs, fake_quant))
    }

    /// Raw index scores `[b, s, n]` against the entries laid out by `entries` (the same layout
    /// as the main compressor's: packed samples' own blocks).
    pub fn scores_entries(
        &self,
        x: &Tensor<B, 3>,
        qr: &Tensor<B, 3>,
        table: &RopeTable<B>,
        entries: &EntryLayout<B>,
        freqs: &[f32],
        fake_quant: bool,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let (nh, hd) = (self.n_heads, self.head_dim);
        let k =
            self.compressor
                .forward_entries(x, entries, freqs, CompressorKind::Indexer, fake_quant);
        let n = k.dims()[1];
        let q = self.wq_b.forward(qr.clone()).reshape([b, s, nh, hd]);
        let q = hadamard_rotate(table.rotate_tail(q, self.rope_dim, false));
        let q = if fake_quant { fake_fp4(q, 32) } else { q };
        let w = self
            .weights_proj
            .forward(x.clone())
            .mul_scalar((hd as f64).powf(-0.5) * (nh as f64).powf(-0.5));
        let dots =
            relu(q.reshape([b, s * nh, hd]).matmul(k.swap_dims(1, 2))).reshape([b, s, nh, n]);
        (dots * w.unsqueeze_dim::<4>(3))
            .sum_dim(2)
            .reshape([b, s, n])
    }

    /// Top-k selection `[b, s, n]` among the visible blocks (`visible` `[b, s, n]`).
    pub fn select(&self, scores: Tensor<B, 3>, visible: Tensor<B, 3, Bool>) -> Tensor<B, 3, Bool> {
        let n = scores.dims()[2];
        let k = self.topk.min(n);
        let masked = scores.mask_fill(visible.clone().bool_not(), f32::NEG_INFINITY);
        let (_, idx) = masked.clone().topk_with_indices(k, 2);
        let chosen = masked
            .zeros_like()
            .scatter(
                2,
                idx.clone(),
                idx.ones_like().float(),
                burn::tensor::IndexingUpdateOp::Add,
            )
            .greater_elem(0.5);
        chosen.bool_and(visible)
    }
}
