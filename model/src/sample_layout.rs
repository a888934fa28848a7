//! Sample-level attention masking on the device (V4 training report §4.2): everything a forward
//! pass needs so that each packed sample is computed as if it stood alone at the start of a
//! sequence, derived once per batch from its [`SampleBounds`]:
//!
//! - RoPE positions restart at 0 in every sample;
//! - the sliding window sees only keys of the query's own sample (a `[b, chunks, w, 2w]` mask
//!   in the chunked window layout: linear in the length, never `[S, S]`);
//! - the compressors pool blocks counted from each sample's first token, a partial block at a
//!   sample's end is not an entry, and the ratio-4 overlap never reaches into the previous
//!   sample ([`EntryLayout`]);
//! - a query sees only its own sample's complete compressed entries (so the indexer's top-k
//!   chooses among them);
//! - the auxiliary objectives (expert load, balance loss, indexer KL) count only the tokens the
//!   caller marks (pads and prompt tokens excluded), and the balance loss's "sequence" is a
//!   sample.
//!
//! Without packing (every row one sample) the layout takes the unpacked code paths, so the
//! reference parity of the plain forward is untouched.
//!
//! The layout is also the forward pass's store of constants that every layer shares: window
//! layouts, entry layouts, RoPE tables (spec §2.4) and the indexer's Hadamard matrix (§2.7).
//! Each is built lazily, once per forward pass (per window size, compression ratio, frequency
//! set or order), and reused by every layer: no layer redoes host work. Compressed visibility is
//! kept as per-query entry ranges `[lo, hi)`, so no `[s, n]` mask is ever built on the host and
//! sparse layers only ever materialise the rows they need ([`EntryLayout::visible_rows`]).

use crate::hadamard::hadamard_matrix;
use crate::masks::WindowLayout;
use crate::rope::RopeTable;
use crate::samples::SampleBounds;
use crate::util::{bool_tensor_from, int_tensor_from, tensor_from, Memo};
use crate::window::{Window, WindowKeys};
use burn::tensor::{backend::Backend, Bool, Int, Tensor};
use std::ops::Range;
use std::sync::Arc;

/// How one compressor (ratio `r`) sees the batch: which tokens each entry pools, where its rope
/// position is, and which queries see it.
#[derive(Debug, Clone)]
pub struct EntryLayout<B: Backend> {
    /// Tokens per entry.
    pub ratio: usize,
    /// Entries per row, ≥ 1 (packed rows: the most any row has; the others are padded with
    /// entries no query sees).
    pub n: usize,
    /// `[b·n·r]` flat token indices into `[b·s]` that entry slots pool, in order; `None`: the
    /// first `n·r` tokens of every row.
    pub gather: Option<Tensor<B, 1, Int>>,
    /// `[b, n, 1, 1]` entries that have no previous block in their sample (the ratio-4 overlap
    /// pads them); `None`: only entry 0.
    pub first: Option<Tensor<B, 4, Bool>>,
    /// Rope position of each entry's first token inside its sample: `[n]` for all rows, or
    /// `[b·n]` per row when packed.
    pub positions: Vec<usize>,
    /// `[1 or b, s, 1]`: the first entry query t sees (same sample).
    pub lo: Tensor<B, 3, Int>,
    /// `[1 or b, s, 1]`: one past the last entry query t sees (its sample's complete blocks).
    pub hi: Tensor<B, 3, Int>,
    /// Host copy of `[lo, hi)` per query (`[b·s]`, row-major) when rows are packed; `None`:
    /// `[0, (t + 1) / ratio)` for every row.
    spans: Option<Arc<[(u32, u32)]>>,
    rows: usize,
    seq: usize,
}

impl<B: Backend> EntryLayout<B> {
    /// `[b, s, n]`: query t sees entry j (same sample, block complete).
    pub fn visible(&self) -> Tensor<B, 3, Bool> {
        self.visible_rows(0..self.seq)
    }

    /// [`visible`](Self::visible) for the queries `rows` only: `[b, rows.len(), n]`.
    pub fn visible_rows(&self, rows: Range<usize>) -> Tensor<B, 3, Bool> {
        self.visible_block(rows, 0..self.n)
    }

    /// [`visible`](Self::visible) for the queries `rows` and the entries `cols` only:
    /// `[b, rows.len(), cols.len()]`.
    pub fn visible_block(&self, rows: Range<usize>, cols: Range<usize>) -> Tensor<B, 3, Bool> {
        let (b, c, m) = (self.rows, rows.len(), cols.len());
        let idx =
            Tensor::<B, 1, Int>::arange(cols.start as i64..cols.end as i64, &self.lo.device())
                .reshape([1, m]);
        self.sees_2d(rows, idx).reshape([b, c, m])
    }

    /// Whether the queries `rows` see the entries `index` (`[b, rows.len(), k]`, any values).
    pub fn sees(&self, rows: Range<usize>, index: Tensor<B, 3, Int>) -> Tensor<B, 3, Bool> {
        let [b, c, k] = index.dims();
        self.sees_2d(rows, index.reshape([b * c, k]))
            .reshape([b, c, k])
    }

    /// [`EntryLayout::sees`] on `index` `[b·c, k]` or `[1, k]` (the same entries for every
    /// query), as 2-D comparisons: a CPU backend runs those row by row, where a 3-D broadcast
    /// goes element by element through a strided index (this is the indexer's quadratic pass).
    fn sees_2d(&self, rows: Range<usize>, index: Tensor<B, 2, Int>) -> Tensor<B, 2, Bool> {
        let (b, c, k) = (self.rows, rows.len(), index.dims()[1]);
        let bound = |t: &Tensor<B, 3, Int>| {
            t.clone()
                .slice_dim(1, rows.clone())
                .expand([b, c, 1])
                .reshape([b * c, 1])
                .expand([b * c, k])
        };
        let index = index.expand([b * c, k]);
        let lo = index.clone().greater_equal(bound(&self.lo));
        lo.bool_and(index.lower(bound(&self.hi)))
    }

    /// The entries any of the queries `rows` sees (empty when none sees one).
    pub fn columns(&self, rows: Range<usize>) -> Range<usize> {
        if rows.is_empty() {
            return 0..0;
        }
        let Some(spans) = &self.spans else {
            return 0..(rows.end / self.ratio).min(self.n);
        };
        let (mut lo, mut hi) = (u32::MAX, 0);
        for r in 0..self.rows {
            for &(l, h) in &spans[r * self.seq + rows.start..r * self.seq + rows.end] {
                if h > l {
                    lo = lo.min(l);
                    hi = hi.max(h);
                }
            }
        }
        if hi == 0 {
            0..0
        } else {
            lo as usize..hi as usize
        }
    }
}

/// The device-side view of a batch's samples for one forward pass, and the constants every
/// layer of that pass shares.
#[derive(Debug)]
pub struct SampleLayout<B: Backend> {
    bounds: SampleBounds,
    counted: Vec<bool>,
    device: B::Device,
    windows: Memo<usize, WindowKeys<B>>,
    entries: Memo<usize, Option<EntryLayout<B>>>,
    ropes: Memo<(Vec<u32>, usize), RopeTable<B>>,
    hadamard: Memo<usize, Tensor<B, 2>>,
}

impl<B: Backend> SampleLayout<B> {
    /// The layout of `bounds`; `counted` (row-major `[b·s]`, default all) marks the tokens the
    /// auxiliary objectives count.
    pub fn new(bounds: SampleBounds, counted: Option<Vec<bool>>, device: &B::Device) -> Self {
        let n = bounds.rows() * bounds.seq();
        let counted = counted
            .filter(|c| c.len() == n)
            .unwrap_or_else(|| vec![true; n]);
        Self {
            bounds,
            counted,
            device: device.clone(),
            windows: Memo::default(),
            entries: Memo::default(),
            ropes: Memo::default(),
            hadamard: Memo::default(),
        }
    }

    /// Unpacked rows of `seq` tokens, every token counted.
    pub fn whole(rows: usize, seq: usize, device: &B::Device) -> Self {
        Self::new(SampleBounds::whole(rows, seq), None, device)
    }

    /// The samples.
    pub fn bounds(&self) -> &SampleBounds {
        &self.bounds
    }

    /// Whether rows are packed with more than one sample (masking needed).
    pub fn is_packed(&self) -> bool {
        !self.bounds.is_whole()
    }

    /// Tokens counted by the auxiliary objectives, row-major `[b·s]`.
    pub fn counted(&self) -> &[bool] {
        &self.counted
    }

    /// [`counted`](Self::counted) as a `[b, s]` 0/1 float tensor.
    pub fn counted_tensor(&self) -> Tensor<B, 2> {
        let v = self
            .counted
            .iter()
            .map(|&c| f32::from(u8::from(c)))
            .collect();
        tensor_from(v, [self.bounds.rows(), self.bounds.seq()], &self.device)
    }

    /// Whether every token is counted.
    pub fn all_counted(&self) -> bool {
        self.counted.iter().all(|&c| c)
    }

    /// Per token, the group its balance-loss statistics go to (its sample, counted over the
    /// batch; `None` when not counted), and the number of groups.
    pub fn balance_groups(&self) -> (Vec<Option<usize>>, usize) {
        let groups = self
            .bounds
            .sample_index()
            .into_iter()
            .zip(&self.counted)
            .map(|(g, &c)| c.then_some(g))
            .collect();
        (groups, self.bounds.count())
    }

    /// In-sample positions `[b·s]` for rope, or `None` when rows are not packed (0..s).
    pub fn positions(&self) -> Option<Vec<usize>> {
        self.is_packed().then(|| self.bounds.positions())
    }

    /// The layout of MTP block `k`'s streams (positions `0..s−1−k`): a position counts when the
    /// token it predicts (`t + 2 + k`, the label of input `t + 1 + k`) is counted and lies in
    /// the same sample.
    pub fn mtp(&self, k: usize) -> Self {
        let (b, s) = (self.bounds.rows(), self.bounds.seq());
        let len = s.saturating_sub(1 + k);
        let bounds = self.bounds.prefix(len);
        let mut counted = Vec::with_capacity(b * len);
        for r in 0..b {
            for t in 0..len {
                let u = t + 1 + k;
                counted.push(self.counted[r * s + u] && self.bounds.same_sample(r, t, u));
            }
        }
        Self::new(bounds, Some(counted), &self.device)
    }

    /// The sliding window of `size` keys for this batch (clamped to the sequence), with its
    /// chunked key rows and validity (restricted to each query's sample when rows are packed),
    /// built once per window size.
    pub fn window(&self, size: usize) -> Window<B> {
        let s = self.bounds.seq();
        let size = size.clamp(1, s.max(1));
        let keys = self.windows.get_or(size, || {
            if self.is_packed() {
                self.packed_window(size)
            } else {
                WindowKeys::unpacked(s, size, &self.device)
            }
        });
        Window {
            size,
            keys: Some(keys),
        }
    }

    /// `[b, chunks, w, 1, 2w]` window validity in [`WindowLayout`]'s chunked layout, with keys
    /// restricted to the query's sample.
    fn packed_window(&self, window: usize) -> WindowKeys<B> {
        let (b, s) = (self.bounds.rows(), self.bounds.seq());
        let layout = WindowLayout::new(s, window);
        let (nc, k) = (layout.chunks, layout.keys());
        let base = layout.mask();
        let rows = layout.key_rows();
        let sample = self.bounds.sample_index();
        let mut v = Vec::with_capacity(b * base.len());
        for r in 0..b {
            let of = |t: usize| sample[r * s + t.min(s - 1)];
            for c in 0..nc {
                for i in 0..window {
                    let t = c * window + i;
                    for j in 0..k {
                        let ok = base[(c * window + i) * k + j];
                        v.push(ok && of(t) == of(rows[c * k + j] as usize));
                    }
                }
            }
        }
        WindowKeys::new(
            int_tensor_from(rows, [nc * k], &self.device),
            bool_tensor_from::<B, 5>(v, [b, nc, window, 1, k], &self.device),
        )
    }

    /// How a compressor of ratio `ratio` sees the batch; `None` when no sample holds a complete
    /// block.
    pub fn entries(&self, ratio: usize) -> Option<EntryLayout<B>> {
        self.entries.get_or(ratio, || {
            if ratio == 0 {
                None
            } else if self.is_packed() {
                self.packed_entries(ratio)
            } else {
                self.whole_entries(ratio)
            }
        })
    }

    /// The RoPE table of the batch's tokens for frequencies `freqs`: positions `0..s` for
    /// unpacked rows, or each token's position inside its sample.
    pub fn rope_tokens(&self, freqs: &[f32]) -> RopeTable<B> {
        let key = (freqs.iter().map(|f| f.to_bits()).collect(), 0);
        self.ropes.get_or(key, || {
            let (b, s) = (self.bounds.rows(), self.bounds.seq());
            match self.positions() {
                None => RopeTable::new(freqs, 0..s, &self.device),
                Some(p) => RopeTable::per_row(freqs, &p, b, s, &self.device),
            }
        })
    }

    /// The RoPE table of the entries of `entries` (each entry's first-token position in its
    /// sample) for frequencies `freqs`.
    pub fn rope_entries(&self, freqs: &[f32], entries: &EntryLayout<B>) -> RopeTable<B> {
        let key = (freqs.iter().map(|f| f.to_bits()).collect(), entries.ratio);
        self.ropes.get_or(key, || {
            let n = entries.n;
            let rows = if entries.positions.len() == n {
                1
            } else {
                self.bounds.rows()
            };
            RopeTable::per_row(freqs, &entries.positions, rows, n, &self.device)
        })
    }

    /// The Sylvester Hadamard matrix of order `n` on this pass's device.
    pub fn hadamard(&self, n: usize) -> Tensor<B, 2> {
        self.hadamard.get_or(n, || hadamard_matrix(n, &self.device))
    }

    fn whole_entries(&self, ratio: usize) -> Option<EntryLayout<B>> {
        let (b, s) = (self.bounds.rows(), self.bounds.seq());
        let n = s / ratio;
        if n == 0 {
            return None;
        }
        let hi: Vec<i64> = (0..s).map(|t| ((t + 1) / ratio) as i64).collect();
        Some(EntryLayout {
            ratio,
            n,
            gather: None,
            first: None,
            positions: (0..n).map(|i| i * ratio).collect(),
            lo: Tensor::zeros([1, s, 1], &self.device),
            hi: int_tensor_from(hi, [1, s, 1], &self.device),
            spans: None,
            rows: b,
            seq: s,
        })
    }
    fn packed_entries(&self, ratio: usize) -> Option<EntryLayout<B>> {
        let (b, s) = (self.bounds.rows(), self.bounds.seq());
        // Per row: (first token, in-sample position, first-in-sample) of each entry, and per
        // query the range [lo, hi) of entries it sees.
        let mut rows: Vec<Vec<(usize, usize, bool)>> = Vec::with_capacity(b);
        let (mut lo, mut hi) = (vec![0i64; b * s], vec![0i64; b * s]);
        for r in 0..b {
            let mut list = Vec::new();
            for sample in self.bounds.row(r) {
                let first = list.len();
                for j in 0..sample.len() / ratio {
                    list.push((sample.start + j * ratio, j * ratio, j == 0));
                }
                for t in sample.clone() {
                    lo[r * s + t] = first as i64;
                    hi[r * s + t] = (first + (t - sample.start + 1) / ratio) as i64;
                }
            }
            rows.push(list);
        }
        let n = rows.iter().map(Vec::len).max().unwrap_or(0);
        if n == 0 {
            return None;
        }
        let (mut gather, mut first, mut positions) = (
            Vec::with_capacity(b * n * ratio),
            Vec::with_capacity(b * n),
            Vec::with_capacity(b * n),
        );
        for (r, list) in rows.iter().enumerate() {
            for e in 0..n {
                // Padding entries pool the row's first tokens; no query sees them.
                let (start, pos, is_first) = list.get(e).copied().unwrap_or((0, 0, true));
                gather.extend((0..ratio).map(|i| ((r * s + start + i).min(r * s + s - 1)) as i64));
                first.push(is_first);
                positions.push(pos);
            }
        }
        let dev = &self.device;
        let spans = lo
            .iter()
            .zip(&hi)
            .map(|(&l, &h)| (l as u32, h as u32))
            .collect();
        Some(EntryLayout {
            ratio,
            n,
            gather: Some(int_tensor_from(gather, [b * n * ratio], dev)),
            first: Some(bool_tensor_from(first, [b, n, 1, 1], dev)),
            positions,
            lo: int_tensor_from(lo, [b, s, 1], dev),
            hi: int_tensor_from(hi, [b, s, 1], dev),
            spans: Some(spans),
            rows: b,
            seq: s,
        })
    }
}
