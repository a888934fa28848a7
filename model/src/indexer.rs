//! The lightning indexer of CSA layers (spec §2.7): scores every visible compressed block for
//! each query, `I[t,j] = Σ_h w[t,h] · ReLU(qI[t,h] · kI[j])`, and keeps the top-k. Queries come
//! from the attention's shared low-rank latent `qr`; keys from the indexer's own compressor
//! (Hadamard-rotated, FP4). The selection is discrete: it runs on detached inputs. The indexer
//! learns only from its own KL loss against the main attention ([`crate::indexer_loss`]); its
//! inputs stay detached, so that loss never reaches the rest of the model.
//!
//! The score pass is the one part of CSA that is quadratic in the sequence. It runs a chunk of
//! queries at a time against the entries they can see ([`Indexer::select_top_k`]), so the live
//! score tensor is `[b, chunk, heads, n]` at most; each query's row holds exactly the values the
//! unchunked pass gives it (the invisible entries are −∞ either way), so the top-k and its ties
//! do not depend on the chunking. In sparse training the KL needs the scores of the selected
//! entries only ([`Indexer::scores_at`]): linear in the sequence.

use crate::compressor::{Compressor, CompressorKind};
use crate::fake_quant::fake_fp4;
use crate::hadamard::hadamard_rotate;
use crate::linear::Linear;
use crate::precision::MixedMatmul;
use crate::rope::RopeTable;
use crate::sample_layout::{EntryLayout, SampleLayout};
use crate::top_k;
use crate::util::gather_entries;
use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::{backend::Backend, Bool, Int, Tensor};
use std::ops::Range;

/// Bytes the automatic chunk size allows the indexer's live score tensors of one chunk
/// (`[b, chunk, heads, n]` f32, three at once: the dot products, their ReLU, the head-weighted
/// copy).
pub const CHUNK_BUDGET_BYTES: usize = 256 << 20;

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

/// The indexer's side of one forward pass: queries, head weights and keys.
#[derive(Debug, Clone)]
pub struct IndexInputs<B: Backend> {
    /// Queries `qI` `[b, s, heads, D]` (roped, rotated, FP4 when fake-quantized).
    pub q: Tensor<B, 4>,
    /// Head weights `w` `[b, s, heads]`, with the `D^-½ · heads^-½` scale.
    pub w: Tensor<B, 3>,
    /// Keys `kI` `[b, n, D]` (the indexer compressor's entries).
    pub k: Tensor<B, 3>,
}

impl<B: Backend> IndexInputs<B> {
    /// The same values cut from the autodiff graph.
    pub fn detach(&self) -> Self {
        Self {
            q: self.q.clone().detach(),
            w: self.w.clone().detach(),
            k: self.k.clone().detach(),
        }
    }

    /// Scores `[b, rows, cols]` of the queries `rows` against the entries `cols`. Keeps none of
    /// the intermediates, so the ReLU runs in place on the products (no second quadratic
    /// buffer).
    pub fn score_block(&self, rows: Range<usize>, cols: Range<usize>) -> Tensor<B, 3> {
        let (_, w, z) = self.products(rows, cols);
        let [b, c, nh] = w.dims();
        let m = z.dims()[2];
        let relu_z = relu(z).reshape([b * c, nh, m]);
        head_sum(w.reshape([b * c, 1, nh]), relu_z).reshape([b, c, m])
    }

    /// The block's queries `[b, c·H, D]`, head weights `[b, c, H]` and per-head products
    /// `[b, c·H, m]`.
    fn products(
        &self,
        rows: Range<usize>,
        cols: Range<usize>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>) {
        let [b, _, nh, hd] = self.q.dims();
        let c = rows.len();
        let q = self
            .q
            .clone()
            .slice_dim(1, rows.clone())
            .reshape([b, c * nh, hd]);
        let k = self.k.clone().slice_dim(1, cols);
        let z = q.clone().matmul_mixed(k.swap_dims(1, 2));
        (q, self.w.clone().slice_dim(1, rows), z)
    }

    /// [`IndexInputs::score_block`] with the intermediates its gradient needs.
    pub(crate) fn score_parts(&self, rows: Range<usize>, cols: Range<usize>) -> ScoreParts<B> {
        let (b, c, m) = (self.q.dims()[0], rows.len(), cols.len());
        let nh = self.q.dims()[2];
        let (q, w, z) = self.products(rows, cols);
        let relu_z = relu(z.clone()).reshape([b * c, nh, m]);
        let scores = head_sum(w.clone().reshape([b * c, 1, nh]), relu_z.clone()).reshape([b, c, m]);
        ScoreParts {
            q,
            w,
            z,
            relu_z,
            scores,
        }
    }
}

/// One block of the index scores and what went into it.
pub(crate) struct ScoreParts<B: Backend> {
    /// The block's queries `[b, c·H, D]`.
    pub q: Tensor<B, 3>,
    /// The block's head weights `[b, c, H]`.
    pub w: Tensor<B, 3>,
    /// Per-head products `[b, c·H, m]`.
    pub z: Tensor<B, 3>,
    /// Their ReLU `[b·c, H, m]`.
    pub relu_z: Tensor<B, 3>,
    /// Scores `[b, c, m]`.
    pub scores: Tensor<B, 3>,
}

/// `Σ_h w_h · dots_h` per query: weights `[q, 1, H]`, per-head scores `[q, H, m]` → `[q, 1, m]`,
/// as one batched matmul (contiguous; a broadcast multiply and a sum over a middle dimension
/// cost several times more on CPU, and this is the quadratic pass). Always f32.
pub(crate) fn head_sum<B: Backend>(w: Tensor<B, 3>, dots: Tensor<B, 3>) -> Tensor<B, 3> {
    w.matmul(dots)
}

/// The entries each query attends: the indexer's top-k among those it sees.
#[derive(Debug, Clone)]
pub struct Selection<B: Backend> {
    /// `[b, s, k]` entry indices (`0..n`), best first.
    pub index: Tensor<B, 3, Int>,
    /// `[b, s, k]`: the entry is visible (queries that see fewer than k entries fill the rest
    /// with invisible ones).
    pub valid: Tensor<B, 3, Bool>,
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
        let layout = SampleLayout::<B>::whole(b, s, &x.device());
        let inputs = self.inputs(x, qr, table, &layout, freqs, fake_quant)?;
        let n = inputs.k.dims()[1];
        Some(inputs.score_block(0..s, 0..n))
    }

    /// Queries, head weights and keys for the entries of `layout` (the same layout as the main
    /// compressor's: packed samples' own blocks), or `None` when no block is complete.
    pub fn inputs(
        &self,
        x: &Tensor<B, 3>,
        qr: &Tensor<B, 3>,
        table: &RopeTable<B>,
        layout: &SampleLayout<B>,
        freqs: &[f32],
        fake_quant: bool,
    ) -> Option<IndexInputs<B>> {
        let [b, s, _] = x.dims();
        let (nh, hd) = (self.n_heads, self.head_dim);
        let k = self.compressor.forward_entries(
            x,
            layout,
            freqs,
            CompressorKind::Indexer,
            fake_quant,
        )?;
        let q = self.wq_b.forward(qr.clone()).reshape([b, s, nh, hd]);
        let q = hadamard_rotate(
            table.rotate_tail(q, self.rope_dim, false),
            layout.hadamard(hd),
        );
        let q = if fake_quant { fake_fp4(q, 32) } else { q };
        let w = self
            .weights_proj
            .forward(x.clone())
            .mul_scalar((hd as f64).powf(-0.5) * (nh as f64).powf(-0.5));
        Some(IndexInputs { q, w, k })
    }

    /// Queries per chunk of the score pass: `chunk` when set, else as many as keep the chunk's
    /// live scores within [`CHUNK_BUDGET_BYTES`] (at least one, at most `s`).
    pub fn chunk_rows(&self, b: usize, s: usize, n: usize, chunk: usize) -> usize {
        let rows = if chunk > 0 {
            chunk
        } else {
            CHUNK_BUDGET_BYTES / (3 * 4 * b * self.n_heads * n).max(1)
        };
        rows.clamp(1, s.max(1))
    }

    /// Top-k of the scores among the entries each query sees, computed `chunk` queries at a
    /// time ([`Indexer::chunk_rows`]) on `inputs` (detach them first: the choice is discrete).
    pub fn select_top_k(
        &self,
        inputs: &IndexInputs<B>,
        entries: &EntryLayout<B>,
        chunk: usize,
    ) -> Selection<B> {
        let [b, s, _, _] = inputs.q.dims();
        let n = entries.n;
        let k = self.topk.min(n);
        let rows = self.chunk_rows(b, s, n, chunk);
        let (mut index, mut valid) = (Vec::new(), Vec::new());
        for start in (0..s).step_by(rows) {
            let r = start..(start + rows).min(s);
            // Only the entries some query of the chunk sees are scored and sorted (widened to
            // k columns when fewer): the rest could only fill slots left invalid. The width is
            // rounded up to whole blocks of the pruned top-k where the entries allow it
            // ([`top_k::block_size`]).
            let cols = entries.columns(r.clone());
            let width = cols.len().max(k);
            let whole_blocks = width.next_multiple_of(top_k::block_size(width, k));
            let width = if whole_blocks <= n {
                whole_blocks
            } else {
                width
            };
            let first = cols.start.min(n - width);
            let span = first..first + width;
            let scores = inputs.score_block(r.clone(), span.clone());
            let visible = entries.visible_block(r.clone(), span);
            let idx = top_k_indices(scores, visible, k).add_scalar(first as i64);
            valid.push(entries.sees(r, idx.clone()));
            index.push(idx);
        }
        Selection {
            index: Tensor::cat(index, 1),
            valid: Tensor::cat(valid, 1),
        }
    }

    /// Scores `[b, s, k]` of the selected entries only (the sparse KL's student; linear in the
    /// sequence).
    pub fn scores_at(inputs: &IndexInputs<B>, selection: &Selection<B>) -> Tensor<B, 3> {
        let [b, s, nh, hd] = inputs.q.dims();
        let k = selection.index.dims()[2];
        let keys = gather_entries(inputs.k.clone(), selection.index.clone()); // [b·s, k, D]
        let dots = relu(
            inputs
                .q
                .clone()
                .reshape([b * s, nh, hd])
                .matmul_mixed(keys.swap_dims(1, 2)),
        );
        head_sum(inputs.w.clone().reshape([b * s, 1, nh]), dots).reshape([b, s, k])
    }

    /// Top-k selection `[b, s, n]` among the visible blocks (`visible` `[b, s, n]`) as a mask.
    pub fn select(&self, scores: Tensor<B, 3>, visible: Tensor<B, 3, Bool>) -> Tensor<B, 3, Bool> {
        let n = scores.dims()[2];
        let idx = top_k_indices(scores.clone(), visible.clone(), self.topk.min(n));
        let chosen = scores
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

/// Indices `[b, c, k]` of the `k` best scores of each row among its visible entries (rows with
/// fewer fill up with invisible ones).
fn top_k_indices<B: Backend>(
    scores: Tensor<B, 3>,
    visible: Tensor<B, 3, Bool>,
    k: usize,
) -> Tensor<B, 3, Int> {
    let [b, c, m] = scores.dims();
    let masked = scores.mask_fill(visible.bool_not(), f32::NEG_INFINITY);
    top_k::top_k_rows(masked.reshape([b * c, m]), k).reshape([b, c, k])
}
