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
//! reference parity of the plain forward is untouched. Masks are built lazily per window size
//! and compression ratio and cached for the whole forward pass.

use crate::masks::{compressed_visible, WindowLayout};
use crate::samples::SampleBounds;
use crate::util::{bool_tensor_from, int_tensor_from, tensor_from};
use burn::tensor::{backend::Backend, Bool, Int, Tensor};
use std::cell::RefCell;

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
    /// `[b, s, n]`: query t sees entry j (same sample, block complete).
    pub visible: Tensor<B, 3, Bool>,
}

/// The device-side view of a batch's samples for one forward pass.
#[derive(Debug)]
pub struct SampleLayout<B: Backend> {
    bounds: SampleBounds,
    counted: Vec<bool>,
    device: B::Device,
    windows: RefCell<Vec<(usize, Tensor<B, 5, Bool>)>>,
    entries: RefCell<Vec<(usize, Option<EntryLayout<B>>)>>,
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
            windows: RefCell::new(Vec::new()),
            entries: RefCell::new(Vec::new()),
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

    /// `[b, chunks, w, 1, 2w]` window validity in [`WindowLayout`]'s chunked layout, with keys
    /// restricted to the query's sample; `None` when rows are not packed (the layout's own mask
    /// applies to every row).
    pub fn window_mask(&self, window: usize) -> Option<Tensor<B, 5, Bool>> {
        if !self.is_packed() {
            return None;
        }
        if let Some((_, m)) = self.windows.borrow().iter().find(|(w, _)| *w == window) {
            return Some(m.clone());
        }
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
        let m = bool_tensor_from::<B, 5>(v, [b, nc, window, 1, k], &self.device);
        self.windows.borrow_mut().push((window, m.clone()));
        Some(m)
    }

    /// How a compressor of ratio `ratio` sees the batch; `None` when no sample holds a complete
    /// block.
    pub fn entries(&self, ratio: usize) -> Option<EntryLayout<B>> {
        if let Some((_, e)) = self.entries.borrow().iter().find(|(r, _)| *r == ratio) {
            return e.clone();
        }
        let e = if ratio == 0 {
            None
        } else if self.is_packed() {
            self.packed_entries(ratio)
        } else {
            self.whole_entries(ratio)
        };
        self.entries.borrow_mut().push((ratio, e.clone()));
        e
    }

    fn whole_entries(&self, ratio: usize) -> Option<EntryLayout<B>> {
        let (b, s) = (self.bounds.rows(), self.bounds.seq());
        let n = s / ratio;
        if n == 0 {
            return None;
        }
        let visible =
            bool_tensor_from::<B, 3>(compressed_visible(s, n, ratio), [1, s, n], &self.device)
                .expand([b, s, n]);
        Some(EntryLayout {
            ratio,
            n,
            gather: None,
            first: None,
            positions: (0..n).map(|i| i * ratio).collect(),
            visible,
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
        let idx = Tensor::<B, 1, Int>::arange(0..n as i64, dev)
            .reshape([1, 1, n])
            .expand([b, s, n]);
        let lo = int_tensor_from::<B, 3>(lo, [b, s, 1], dev).expand([b, s, n]);
        let hi = int_tensor_from::<B, 3>(hi, [b, s, 1], dev).expand([b, s, n]);
        let visible = idx.clone().greater_equal(lo).bool_and(idx.lower(hi));
        Some(EntryLayout {
            ratio,
            n,
            gather: Some(int_tensor_from(gather, [b * n * ratio], dev)),
            first: Some(bool_tensor_from(first, [b, n, 1, 1], dev)),
            positions,
            visible,
        })
    }
}
