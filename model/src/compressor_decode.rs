//! The KV compressor while decoding (spec §2.6 "Decode/incremental"): each new token's projected
//! KV and gate score (with `ape` of its place in the block) go into the block being filled; when
//! a row's block completes (`(pos + 1) % ratio == 0`) its entry is pooled exactly as in prefill —
//! per-channel softmax over the block (ratio 4: the previous block's first half of the channels
//! and this block's second half), RMSNorm, rope at the block start, FP8 (main) or Hadamard + FP4
//! (indexer) — and stored at slot `pos / ratio`; the block then becomes the previous one. The
//! prefill seeds the same state from the prompt ([`Compressor::seed_cache`]).

use crate::compressor::{Compressor, CompressorKind};
use crate::hadamard::hadamard_matrix;
use crate::kv_cache::{assign_rows, read_slots, row_index, write_slots, CompressorCache};
use crate::rope::RopeTable;
use crate::sample_layout::SampleLayout;
use burn::tensor::activation::softmax;
use burn::tensor::{backend::Backend, Bool, Tensor};

impl<B: Backend> Compressor<B> {
    /// Norm, rope at `positions` (one per entry row) and the kind's quantization of pooled
    /// entries `[m, D]`.
    fn finish_entries(
        &self,
        c: Tensor<B, 2>,
        positions: &[usize],
        freqs: &[f32],
        kind: CompressorKind,
        fake_quant: bool,
    ) -> Tensor<B, 2> {
        let [m, d] = c.dims();
        let c = self.norm.forward(c).reshape([m, 1, d]);
        let table = RopeTable::per_row(freqs, positions, m, 1, &c.device());
        let c = table.rotate_tail3(c, self.rope_dim, false);
        let device = c.device();
        self.quantize_entries(c, kind, fake_quant, || hadamard_matrix(d, &device))
            .reshape([m, d])
    }

    /// Adds the tokens `x` `[b, 1, d]` at positions `pos` (one per row) to `cache`, emitting the
    /// entries of the blocks they complete.
    pub fn decode_step(
        &self,
        cache: &mut CompressorCache<B>,
        x: &Tensor<B, 3>,
        pos: &[usize],
        freqs: &[f32],
        kind: CompressorKind,
        fake_quant: bool,
    ) {
        let [b, _, dm] = x.dims();
        let (r, d, cd) = (self.ratio, self.head_dim, self.wkv.d_out());
        let device = x.device();
        let xf = x.clone().reshape([b, dm]);
        let slot: Vec<usize> = pos.iter().map(|p| p % r).collect();
        let ape = self.ape.val().select(0, row_index::<B>(&slot, &device));
        let at: Vec<(usize, usize)> = slot.iter().enumerate().map(|(i, &s)| (i, s)).collect();
        cache.block_kv = write_slots(
            cache.block_kv.clone(),
            &at,
            self.wkv.forward_f32(xf.clone()),
        );
        cache.block_score = write_slots(
            cache.block_score.clone(),
            &at,
            self.wgate.forward_f32(xf) + ape,
        );
        let emit: Vec<usize> = (0..b).filter(|&i| (pos[i] + 1).is_multiple_of(r)).collect();
        if emit.is_empty() {
            return;
        }
        let m = emit.len();
        let rows = row_index::<B>(&emit, &device);
        let (bk, bs) = (
            cache.block_kv.clone().select(0, rows.clone()),
            cache.block_score.clone().select(0, rows.clone()),
        );
        let (kv, score) = match &cache.prev {
            Some((pk, ps)) => {
                let half = |prev: &Tensor<B, 3>, own: Tensor<B, 3>| {
                    let p = prev.clone().select(0, rows.clone()).slice_dim(2, 0..d);
                    Tensor::cat(vec![p, own.slice_dim(2, d..2 * d)], 1)
                };
                (half(pk, bk.clone()), half(ps, bs.clone()))
            }
            None => (bk.clone(), bs.clone()),
        };
        let c = (kv * softmax(score, 1)).sum_dim(1).reshape([m, d]);
        let starts: Vec<usize> = emit.iter().map(|&i| pos[i] + 1 - r).collect();
        let c = self.finish_entries(c, &starts, freqs, kind, fake_quant);
        let need = emit.iter().map(|&i| pos[i] / r + 1).max().unwrap_or(0);
        cache.reserve(need);
        let at: Vec<(usize, usize)> = emit.iter().map(|&i| (i, pos[i] / r)).collect();
        cache.entries = write_slots(cache.entries.clone(), &at, c);
        if let Some((pk, ps)) = &mut cache.prev {
            let write = |t: &Tensor<B, 3>, v: Tensor<B, 3>| {
                assign_rows(
                    t.clone().reshape([b, r * cd]),
                    rows.clone(),
                    v.reshape([m, r * cd]),
                )
                .reshape([b, r, cd])
            };
            *pk = write(pk, bk);
            *ps = write(ps, bs);
        }
    }

    /// The cache after a prefill of rows `x` `[b, s, d]` whose first `lengths[r]` tokens are
    /// real (right padding after): the complete blocks' entries, the trailing partial block and,
    /// for ratio 4, the last complete block.
    pub fn seed_cache(
        &self,
        x: &Tensor<B, 3>,
        lengths: &[usize],
        freqs: &[f32],
        kind: CompressorKind,
        fake_quant: bool,
    ) -> CompressorCache<B> {
        let [b, s, _] = x.dims();
        let (r, cd) = (self.ratio, self.wkv.d_out());
        let device = x.device();
        let mut cache = CompressorCache::empty(self, b, s / r, &device);
        let layout = SampleLayout::<B>::whole(b, s, &device);
        if let Some(entries) = self.forward_entries(x, &layout, freqs, kind, fake_quant) {
            cache.entries = entries;
        }
        let kv = self.wkv.forward_f32(x.clone());
        let place: Vec<usize> = (0..s).map(|p| p % r).collect();
        let ape = self
            .ape
            .val()
            .select(0, row_index::<B>(&place, &device))
            .unsqueeze_dim::<3>(0);
        let score = self.wgate.forward_f32(x.clone()) + ape;
        // Block `which(len)` of each row, slot by slot: (tokens, validity).
        let gather = |which: &dyn Fn(usize) -> Option<usize>, t: &Tensor<B, 3>, fill: f32| {
            let mut at = Vec::with_capacity(b * r);
            let mut ok = Vec::with_capacity(b * r);
            for (row, &len) in lengths.iter().enumerate() {
                for i in 0..r {
                    let p = which(len).map(|blk| blk * r + i).filter(|&p| p < len);
                    at.push((row, p.unwrap_or(0)));
                    ok.push(p.is_some());
                }
            }
            let valid =
                crate::util::bool_tensor_from::<B, 3>(ok, [b, r, 1], &device).expand([b, r, cd]);
            let v = read_slots(t, &at).reshape([b, r, cd]);
            v.mask_fill(valid.bool_not(), fill)
        };
        let current = |len: usize| Some(len / r);
        cache.block_kv = gather(&current, &kv, 0.0);
        cache.block_score = gather(&current, &score, 0.0);
        if cache.prev.is_some() {
            let previous = |len: usize| (len / r).checked_sub(1);
            cache.prev = Some((
                gather(&previous, &kv, 0.0),
                gather(&previous, &score, f32::NEG_INFINITY),
            ));
        }
        cache
    }
}

/// `[b, n]`: entry `j` of row `i` exists once its block is complete (`j < (pos_i + 1) / r`).
pub fn complete_entries<B: Backend>(
    pos: &[usize],
    ratio: usize,
    n: usize,
    device: &B::Device,
) -> Tensor<B, 2, Bool> {
    let v: Vec<bool> = pos
        .iter()
        .flat_map(|&p| (0..n).map(move |j| j < (p + 1) / ratio))
        .collect();
    crate::util::bool_tensor_from(v, [pos.len(), n], device)
}
