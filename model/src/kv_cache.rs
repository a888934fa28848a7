//! The V4 decode cache (spec §2.5 step 3, §2.6 "Decode/incremental", §2.10 decode rule), per
//! layer and per batch row:
//!
//! - the sliding window: a ring of the last `window` KV vectors (slot = position mod window),
//!   already normed, roped and (with fake quant) FP8-rounded, exactly as prefill keys are;
//! - per compressor (the main one of CSA/HCA layers, and the lightning indexer's of CSA
//!   layers): the compressed entries emitted so far, and the state of the block being filled —
//!   its tokens' projected KV and gate scores (`ape` added) — plus, for the overlapping ratio-4
//!   compressor, the previous complete block;
//! - the number of tokens each row has seen (rows may hold prompts of different lengths).
//!
//! A new token costs O(window + compressed entries): nothing of the prefix is recomputed. Entries
//! are stored padded to a capacity that grows geometrically; row `r` holds
//! `len[r] / ratio` valid ones.

use crate::compressor::Compressor;
use burn::tensor::{backend::Backend, IndexingUpdateOp, Int, Tensor};

/// The cache of one compressor.
#[derive(Debug, Clone)]
pub struct CompressorCache<B: Backend> {
    /// Emitted entries `[b, capacity, D]`.
    pub entries: Tensor<B, 3>,
    /// Projected KV of the block being filled `[b, ratio, coff·D]` (slot = position mod ratio).
    pub block_kv: Tensor<B, 3>,
    /// Gate scores (`ape` added) of the block being filled `[b, ratio, coff·D]`.
    pub block_score: Tensor<B, 3>,
    /// The previous complete block's KV and scores (ratio 4 overlap; value 0 / score −inf
    /// before the first block completes).
    pub prev: Option<(Tensor<B, 3>, Tensor<B, 3>)>,
}

/// The cache of one layer.
#[derive(Debug, Clone)]
pub struct LayerCache<B: Backend> {
    /// Ring of the last `window` KV vectors `[b, window, D]`.
    pub window: Tensor<B, 3>,
    /// The main compressor (CSA and HCA layers).
    pub main: Option<CompressorCache<B>>,
    /// The lightning indexer's compressor (CSA layers).
    pub indexer: Option<CompressorCache<B>>,
}

/// The decode cache of a whole model.
#[derive(Debug, Clone)]
pub struct ModelCache<B: Backend> {
    /// One per main layer (the MTP blocks are not run while decoding).
    pub layers: Vec<LayerCache<B>>,
    /// Tokens seen by each row (the position of its next token).
    pub lengths: Vec<usize>,
}

impl<B: Backend> ModelCache<B> {
    /// Rows.
    pub fn rows(&self) -> usize {
        self.lengths.len()
    }

    /// Keeps only the rows `keep` (in that order), e.g. to drop finished sequences.
    pub fn retain(&mut self, keep: &[usize]) {
        let device = match self.layers.first() {
            Some(l) => l.window.device(),
            None => {
                self.lengths = keep.iter().map(|&r| self.lengths[r]).collect();
                return;
            }
        };
        let idx = row_index::<B>(keep, &device);
        let pick = |t: &Tensor<B, 3>| t.clone().select(0, idx.clone());
        for l in &mut self.layers {
            l.window = pick(&l.window);
            for c in [&mut l.main, &mut l.indexer].into_iter().flatten() {
                c.entries = pick(&c.entries);
                c.block_kv = pick(&c.block_kv);
                c.block_score = pick(&c.block_score);
                c.prev = c.prev.as_ref().map(|(k, s)| (pick(k), pick(s)));
            }
        }
        self.lengths = keep.iter().map(|&r| self.lengths[r]).collect();
    }

    /// Bytes held per token of context per layer, for a context of `len` tokens: window ring
    /// and compressed entries (and the compressor blocks), averaged over the layers.
    pub fn bytes_per_token_per_layer(&self) -> f64 {
        let len = self.lengths.iter().copied().max().unwrap_or(0).max(1);
        let rows = self.rows().max(1);
        let mut total = 0usize;
        for l in &self.layers {
            total += l.window.dims().iter().product::<usize>();
            for c in [&l.main, &l.indexer].into_iter().flatten() {
                let [_, _, d] = c.entries.dims();
                // Count the valid entries, not the padded capacity.
                let ratio = c.block_kv.dims()[1];
                total += rows * (len / ratio) * d;
                total += 2 * c.block_kv.dims().iter().product::<usize>();
                if let Some((k, _)) = &c.prev {
                    total += 2 * k.dims().iter().product::<usize>();
                }
            }
        }
        (total * 4) as f64 / (rows * len * self.layers.len().max(1)) as f64
    }
}

/// An int index tensor of row numbers.
pub fn row_index<B: Backend>(rows: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let v: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    crate::util::int_tensor_from(v, [rows.len()], device)
}

/// Overwrites rows `idx` (distinct) of `t` `[n, D]` with `values` `[m, D]`. (Burn 0.21's
/// `select_assign` only adds, and old values may be −inf: the new rows are scattered into zeros
/// and selected by a row mask.)
pub fn assign_rows<B: Backend>(
    t: Tensor<B, 2>,
    idx: Tensor<B, 1, Int>,
    values: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let [n, d] = t.dims();
    let m = values.dims()[0];
    let device = t.device();
    let scattered = Tensor::<B, 2>::zeros([n, d], &device).select_assign(
        0,
        idx.clone(),
        values,
        IndexingUpdateOp::Add,
    );
    let hit = Tensor::<B, 1>::zeros([n], &device)
        .select_assign(0, idx, Tensor::ones([m], &device), IndexingUpdateOp::Add)
        .greater_elem(0.5)
        .reshape([n, 1])
        .expand([n, d]);
    t.mask_where(hit, scattered)
}

/// Writes `values` `[m, D]` into `t` `[b, n, D]` at (row, slot) pairs `at` (one per value row).
pub fn write_slots<B: Backend>(
    t: Tensor<B, 3>,
    at: &[(usize, usize)],
    values: Tensor<B, 2>,
) -> Tensor<B, 3> {
    let [b, n, d] = t.dims();
    let flat: Vec<usize> = at.iter().map(|&(r, j)| r * n + j).collect();
    let idx = row_index::<B>(&flat, &t.device());
    assign_rows(t.reshape([b * n, d]), idx, values).reshape([b, n, d])
}

/// Reads `t` `[b, n, D]` at (row, slot) pairs `at` → `[m, D]`.
pub fn read_slots<B: Backend>(t: &Tensor<B, 3>, at: &[(usize, usize)]) -> Tensor<B, 2> {
    let [b, n, d] = t.dims();
    let flat: Vec<usize> = at.iter().map(|&(r, j)| r * n + j).collect();
    let idx = row_index::<B>(&flat, &t.device());
    t.clone().reshape([b * n, d]).select(0, idx)
}

impl<B: Backend> CompressorCache<B> {
    /// An empty cache for `rows` rows of compressor `c`, with room for `capacity` entries.
    pub fn empty(c: &Compressor<B>, rows: usize, capacity: usize, device: &B::Device) -> Self {
        let (r, cd, d) = (c.ratio, c.wkv.d_out(), c.head_dim);
        let overlap = cd == 2 * d;
        Self {
            entries: Tensor::zeros([rows, capacity.max(1), d], device),
            block_kv: Tensor::zeros([rows, r, cd], device),
            block_score: Tensor::zeros([rows, r, cd], device),
            prev: overlap.then(|| {
                (
                    Tensor::zeros([rows, r, cd], device),
                    Tensor::full([rows, r, cd], f32::NEG_INFINITY, device),
                )
            }),
        }
    }

    /// Makes room for at least `n` entries per row (doubling the capacity).
    pub fn reserve(&mut self, n: usize) {
        let [b, cap, d] = self.entries.dims();
        if n <= cap {
            return;
        }
        let new_cap = n.max(2 * cap);
        let pad = Tensor::zeros([b, new_cap - cap, d], &self.entries.device());
        self.entries = Tensor::cat(vec![self.entries.clone(), pad], 1);
    }
}
