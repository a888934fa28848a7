//! Where the trainer's micro-batches come from. Every `[data]` kind yields a [`MicroBatch`]:
//! input ids and next-token labels (`labels[r][i]` is the token after input `i`, or
//! `[loss] ignore_index` where nothing is trained), both `[rows, seq_len]`, and where each
//! packed sample starts. With `[data] sample_masking` (V4), labels and MTP targets never cross
//! a sample boundary and the model masks attention per sample.
//!
//! - `synthetic` and `tokens` are pure functions of (step, micro-batch): resume needs only the
//!   step;
//! - text / chat sources are read sequentially by `v4-data`; their cursor is saved with each
//!   checkpoint (`data_cursor.json`) and restored on resume, so a resumed run sees exactly the
//!   batches an uninterrupted one would.

use anyhow::{anyhow, bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use std::path::Path;
use v4_model::{ModelConfig, SampleBounds, SampleLayout};

use super::checkpoint;
use super::synthetic::SyntheticTokens;
use super::text_data::{load_tokenizer, read_cursor, TextBatches};
use super::token_file::TokenWindows;
use crate::recipe::{DataSource, Recipe};

/// One micro-batch, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MicroBatch {
    /// Sequences.
    pub rows: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// `[rows, seq_len]` input ids.
    pub input_ids: Vec<i64>,
    /// `[rows, seq_len]` next-token labels, `ignore_index` where not trained.
    pub labels: Vec<i64>,
    /// Per row, the window positions `1..=seq_len` where a new sample (or the padding after
    /// the last one) starts; empty: the row is one sample.
    pub starts: Vec<Vec<usize>>,
    /// Samples in the batch (padding is not a sample).
    pub samples: usize,
    /// Samples are masked from each other (`[data] sample_masking`).
    pub masked: bool,
}

impl MicroBatch {
    /// Splits windows of `seq_len + 1` tokens (row-major) into inputs (first `seq_len`) and
    /// labels (last `seq_len`), all trained.
    pub fn from_windows(rows: usize, seq_len: usize, windows: &[i64]) -> Self {
        let w = seq_len + 1;
        debug_assert_eq!(windows.len(), rows * w);
        let (mut input_ids, mut labels) = (
            Vec::with_capacity(rows * seq_len),
            Vec::with_capacity(rows * seq_len),
        );
        for row in windows.chunks(w) {
            input_ids.extend_from_slice(&row[..seq_len]);
            labels.extend_from_slice(&row[1..]);
        }
        Self {
            rows,
            seq_len,
            input_ids,
            labels,
            starts: vec![Vec::new(); rows],
            samples: rows,
            masked: false,
        }
    }

    /// Sets where samples start in each row's window (`starts[r]`: positions in
    /// `1..=seq_len`, ascending) and how many samples the batch holds. With `masking`, labels
    /// that cross a boundary (input `t` is the last token of its sample) become `ignore_index`.
    pub fn with_samples(
        mut self,
        starts: Vec<Vec<usize>>,
        samples: usize,
        masking: bool,
        ignore_index: i64,
    ) -> Self {
        if masking {
            let s = self.seq_len;
            for (r, row) in starts.iter().enumerate() {
                for &p in row.iter().filter(|&&p| (1..=s).contains(&p)) {
                    self.labels[r * s + p - 1] = ignore_index;
                }
            }
        }
        self.starts = starts;
        self.samples = samples;
        self.masked = masking;
        self
    }

    /// Per input token, the index of its sample in its row (`[rows · seq_len]`), when samples
    /// are masked and some row holds more than one; `None`: every row is one sample.
    pub fn sample_ids(&self) -> Option<Vec<i64>> {
        if !self.masked
            || self
                .starts
                .iter()
                .all(|r| r.iter().all(|&p| p >= self.seq_len))
        {
            return None;
        }
        let mut ids = Vec::with_capacity(self.rows * self.seq_len);
        for row in &self.starts {
            let mut next = row.iter().peekable();
            let mut id = 0;
            for t in 0..self.seq_len {
                while next.next_if(|&&p| p <= t).is_some() {
                    id += 1;
                }
                ids.push(id);
            }
        }
        Some(ids)
    }

    /// Whether inputs `t < u` of row `r` lie in the same sample (always without masking).
    fn same_sample(&self, r: usize, t: usize, u: usize) -> bool {
        !self.masked || !self.starts[r].iter().any(|&p| t < p && p <= u)
    }

    /// Targets of MTP block `k` (`[rows, seq_len − 1 − k]`): position `t` predicts the label of
    /// input `t + 1 + k`, ignored when that crosses a sample boundary.
    pub fn mtp_labels(&self, k: usize, ignore_index: i64) -> Vec<i64> {
        let s = self.seq_len;
        let n = s.saturating_sub(1 + k);
        let mut out = Vec::with_capacity(self.rows * n);
        for r in 0..self.rows {
            for t in 0..n {
                let u = t + 1 + k;
                out.push(if self.same_sample(r, t, u) {
                    self.labels[r * s + u]
                } else {
                    ignore_index
                });
            }
        }
        out
    }

    /// The model's view of the batch: its samples (when masked) and the tokens the side
    /// objectives count (those with a trained label: no padding, no prompt).
    pub fn layout<B: Backend>(
        &self,
        ignore_index: i64,
        device: &B::Device,
    ) -> Result<SampleLayout<B>> {
        let bounds = match self.sample_ids() {
            Some(ids) => SampleBounds::from_ids(&ids, self.rows, self.seq_len)?,
            None => SampleBounds::whole(self.rows, self.seq_len),
        };
        Ok(SampleLayout::new(
            bounds,
            Some(self.counted(ignore_index)),
            device,
        ))
    }

    /// Per input token, whether its label is trained (the tokens the side objectives count).
    pub fn counted(&self, ignore_index: i64) -> Vec<bool> {
        self.labels.iter().map(|&l| l != ignore_index).collect()
    }

    /// `(input_ids, labels)` as `[rows, seq_len]` tensors.
    pub fn tensors<B: Backend>(
        &self,
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let shape = [self.rows, self.seq_len];
        (
            Tensor::from_data(TensorData::new(self.input_ids.clone(), shape), device),
            Tensor::from_data(TensorData::new(self.labels.clone(), shape), device),
        )
    }

    /// Continues the FNV-1a hash `h` over the ids, labels and (masked) sample ids (start from
    /// [`FNV_START`]).
    pub fn fingerprint(&self, mut h: u64) -> u64 {
        let samples = self.sample_ids().unwrap_or_default();
        for x in self.input_ids.iter().chain(&self.labels).chain(&samples) {
            for b in x.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
            }
        }
        h
    }

    /// Label positions that are trained.
    pub fn trained(&self, ignore_index: i64) -> usize {
        self.labels.iter().filter(|&&l| l != ignore_index).count()
    }
}

/// FNV-1a offset basis, the start of [`MicroBatch::fingerprint`].
pub const FNV_START: u64 = 0xCBF2_9CE4_8422_2325;

/// A batch fingerprint as an exactly representable metric value (53 bits).
pub fn fingerprint_metric(h: u64) -> f64 {
    (h & ((1u64 << 53) - 1)) as f64
}

/// Where a [`BatchSource`]'s tokens come from.
enum Tokens {
    /// Seeded bigram chain.
    Synthetic(SyntheticTokens),
    /// Windows of a token file (samples end after `eos`, when given).
    File(TokenWindows, Option<i64>),
    /// Text / chat sources through `v4-data`.
    Text(Box<TextBatches>),
}

/// The recipe's data, ready to serve micro-batches of the recipe's shape.
pub struct BatchSource {
    tokens: Tokens,
    rows: usize,
    seq_len: usize,
    grad_accum: usize,
    masking: bool,
    ignore_index: i64,
}

impl BatchSource {
    /// Opens `recipe.data` for a model with config `cfg`; `resume` is the checkpoint a resumed
    /// run continues from (text sources restore their cursor from it).
    pub fn open(recipe: &Recipe, cfg: &ModelConfig, resume: Option<&Path>) -> Result<Self> {
        let t = &recipe.train;
        let tokens = match &recipe.data.source {
            DataSource::Synthetic(s) => Tokens::Synthetic(SyntheticTokens::new(
                s.seed,
                s.vocab.unwrap_or(cfg.vocab_size),
                s.doc_len,
            )),
            DataSource::Tokens(f) => Tokens::File(
                TokenWindows::open(f, t.seq_len, f.seed.unwrap_or(t.seed), cfg.vocab_size)?,
                f.eos_id,
            ),
            DataSource::Text(d) => Tokens::Text(Box::new(open_text(recipe, d, cfg, resume)?)),
        };
        Ok(Self {
            tokens,
            rows: t.micro_batch,
            seq_len: t.seq_len,
            grad_accum: t.grad_accum,
            masking: recipe.data.sample_masking,
            ignore_index: recipe.loss.ignore_index,
        })
    }

    /// Micro-batch `micro` of optimizer step `step` (0-based).
    pub fn next(&mut self, step: u64, micro: usize) -> Result<MicroBatch> {
        let (rows, seq_len) = (self.rows, self.seq_len);
        let (batch, starts, samples) = match &mut self.tokens {
            Tokens::Synthetic(s) => {
                let b = s.batch(step, micro, rows, seq_len + 1);
                let samples = rows + b.starts.iter().map(Vec::len).sum::<usize>();
                (
                    MicroBatch::from_windows(rows, seq_len, &b.ids),
                    b.starts,
                    samples,
                )
            }
            Tokens::File(w, eos) => {
                let first = (step * self.grad_accum as u64 + micro as u64) * rows as u64;
                let mut windows = Vec::with_capacity(rows * (seq_len + 1));
                for g in first..first + rows as u64 {
                    w.window(g, &mut windows)?;
                }
                let starts: Vec<Vec<usize>> = match eos {
                    None => vec![Vec::new(); rows],
                    Some(e) => windows
                        .chunks(seq_len + 1)
                        .map(|w| (1..=seq_len).filter(|&p| w[p - 1] == *e).collect())
                        .collect(),
                };
                let samples = rows + starts.iter().map(Vec::len).sum::<usize>();
                (
                    MicroBatch::from_windows(rows, seq_len, &windows),
                    starts,
                    samples,
                )
            }
            Tokens::Text(t) => {
                let (b, starts, samples) = t.next(step, micro)?;
                if b.seq_len != seq_len {
                    return Err(anyhow!(
                        "[data]: the loader produced rows of {} tokens, [train] seq_len is {seq_len}",
                        b.seq_len
                    ));
                }
                (b, starts, samples)
            }
        };
        Ok(batch.with_samples(starts, samples, self.masking, self.ignore_index))
    }

    /// What a checkpoint must store to resume the data exactly (`data_cursor.json` text), for
    /// sources whose position is not a function of the step.
    pub fn checkpoint_state(&self) -> Result<Option<String>> {
        match &self.tokens {
            Tokens::Text(t) => {
                Ok(Some(t.cursor().to_json().map_err(|e| {
                    anyhow!("serializing the data cursor: {e}")
                })?))
            }
            _ => Ok(None),
        }
    }

    /// Bad rows skipped so far (text sources), for log lines.
    pub fn bad_rows(&self) -> Option<(u64, String)> {
        match &self.tokens {
            Tokens::Text(t) => t.bad_rows().map(|s| (t.bad_row_count(), s)),
            _ => None,
        }
    }
}

/// The text / chat loader of `d`, continuing from the cursor saved in `resume`.
fn open_text(
    recipe: &Recipe,
    d: &v4_data::DataConfig,
    cfg: &ModelConfig,
    resume: Option<&Path>,
) -> Result<TextBatches> {
    let tokenizer = load_tokenizer(d, &recipe.model, cfg.vocab_size)?;
    let cursor = match resume {
        None => None,
        Some(ckpt) => {
            let p = checkpoint::data_cursor_file(ckpt);
            if !p.is_file() {
                bail!(
                    "resuming from {}: it has no {} (saved by a run without text / chat data?),                      so the data position cannot be restored",
                    ckpt.display(),
                    checkpoint::DATA_CURSOR
                );
            }
            Some(read_cursor(&p)?)
        }
    };
    let text = TextBatches::open(
        d,
        tokenizer,
        cursor.as_ref(),
        cfg.vocab_size,
        recipe.loss.ignore_index,
    );
    match resume {
        Some(ckpt) => text.with_context(|| {
            format!(
                "restoring the data position from {}",
                checkpoint::data_cursor_file(ckpt).display()
            )
        }),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_split_into_inputs_and_shifted_labels() {
        let b = MicroBatch::from_windows(2, 3, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(b.input_ids, vec![1, 2, 3, 5, 6, 7]);
        assert_eq!(b.labels, vec![2, 3, 4, 6, 7, 8]);
        assert_ne!(b.fingerprint(FNV_START), FNV_START);
        assert_eq!(b.trained(-100), 6);
    }

    #[test]
    fn samples_mask_crossing_labels_and_mtp_targets() {
        // window 0..=6; samples start at 3 (a new document) and 6 (padding after it)
        let b = MicroBatch::from_windows(1, 6, &[10, 11, 12, 20, 21, 22, 0]).with_samples(
            vec![vec![3, 6]],
            2,
            true,
            -1,
        );
        assert_eq!(b.labels, vec![11, 12, -1, 21, 22, -1]);
        assert_eq!(b.sample_ids(), Some(vec![0, 0, 0, 1, 1, 1]));
        // MTP t → label of input t + 1, same sample only
        assert_eq!(b.mtp_labels(0, -1), vec![12, -1, -1, 22, -1]);
        assert_eq!(b.counted(-1), vec![true, true, false, true, true, false]);
        let plain = MicroBatch::from_windows(1, 6, &[10, 11, 12, 20, 21, 22, 0]).with_samples(
            vec![vec![3, 6]],
            2,
            false,
            -1,
        );
        assert_eq!(plain.labels, vec![11, 12, 20, 21, 22, 0]);
        assert_eq!(plain.sample_ids(), None);
        assert_eq!(plain.mtp_labels(0, -1), vec![12, 20, 21, 22, 0]);
        assert_ne!(b.fingerprint(FNV_START), plain.fingerprint(FNV_START));
    }
}
