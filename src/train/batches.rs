//! Where the trainer's micro-batches come from. Every `[data]` kind yields a [`MicroBatch`]:
//! input ids and next-token labels (`labels[r][i]` is the token after input `i`, or
//! `[loss] ignore_index` where nothing is trained), both `[rows, seq_len]`.
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
use v4_model::ModelConfig;

use super::checkpoint;
use super::synthetic::SyntheticTokens;
use super::text_data::{load_tokenizer, read_cursor, TextBatches};
use super::token_file::TokenWindows;
use crate::recipe::{DataRecipe, Recipe};

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
        }
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

    /// Continues the FNV-1a hash `h` over the ids and labels (start from [`FNV_START`]).
    pub fn fingerprint(&self, mut h: u64) -> u64 {
        for x in self.input_ids.iter().chain(&self.labels) {
            for b in x.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
            }
        }
        h
    }

    /// Label positions that are trained.
    pub fn trained(&self, ignore_index: i64) -> usize {
        self.trained_from(0, ignore_index)
    }

    /// Trained label positions in columns `col..seq_len` of each row (the MTP block at depth 1
    /// predicts labels 1..).
    pub fn trained_from(&self, col: usize, ignore_index: i64) -> usize {
        self.labels
            .chunks(self.seq_len.max(1))
            .flat_map(|row| row.iter().skip(col))
            .filter(|&&l| l != ignore_index)
            .count()
    }
}

/// FNV-1a offset basis, the start of [`MicroBatch::fingerprint`].
pub const FNV_START: u64 = 0xCBF2_9CE4_8422_2325;

/// A batch fingerprint as an exactly representable metric value (53 bits).
pub fn fingerprint_metric(h: u64) -> f64 {
    (h & ((1u64 << 53) - 1)) as f64
}

/// The recipe's data, ready to serve micro-batches.
pub enum BatchSource {
    /// Seeded bigram chain.
    Synthetic(SyntheticTokens),
    /// Windows of a token file.
    Tokens(TokenWindows),
    /// Text / chat sources through `v4-data`.
    Text(Box<TextBatches>),
}

impl BatchSource {
    /// Opens `recipe.data` for a model with config `cfg`; `resume` is the checkpoint a resumed
    /// run continues from (text sources restore their cursor from it).
    pub fn open(recipe: &Recipe, cfg: &ModelConfig, resume: Option<&Path>) -> Result<Self> {
        let t = &recipe.train;
        Ok(match &recipe.data {
            DataRecipe::Synthetic(s) => BatchSource::Synthetic(SyntheticTokens::new(
                s.seed,
                s.vocab.unwrap_or(cfg.vocab_size),
            )),
            DataRecipe::Tokens(f) => BatchSource::Tokens(TokenWindows::open(
                f,
                t.seq_len,
                f.seed.unwrap_or(t.seed),
                cfg.vocab_size,
            )?),
            DataRecipe::Text(d) => {
                let tokenizer = load_tokenizer(d, &recipe.model, cfg.vocab_size)?;
                let cursor = match resume {
                    None => None,
                    Some(ckpt) => {
                        let p = checkpoint::data_cursor_file(ckpt);
                        if !p.is_file() {
                            bail!(
                                "resuming from {}: it has no {} (saved by a run without text / \
                                 chat data?), so the data position cannot be restored",
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
                let text = match resume {
                    Some(ckpt) => text.with_context(|| {
                        format!(
                            "restoring the data position from {}",
                            checkpoint::data_cursor_file(ckpt).display()
                        )
                    })?,
                    None => text?,
                };
                BatchSource::Text(Box::new(text))
            }
        })
    }

    /// Micro-batch `micro` of optimizer step `step` (0-based) with `rows` sequences of `seq_len`
    /// tokens, `grad_accum` micro-batches per step.
    pub fn next(
        &mut self,
        step: u64,
        micro: usize,
        rows: usize,
        seq_len: usize,
        grad_accum: usize,
    ) -> Result<MicroBatch> {
        match self {
            BatchSource::Synthetic(s) => Ok(MicroBatch::from_windows(
                rows,
                seq_len,
                &s.batch(step, micro, rows, seq_len + 1),
            )),
            BatchSource::Tokens(w) => {
                let first = (step * grad_accum as u64 + micro as u64) * rows as u64;
                let mut windows = Vec::with_capacity(rows * (seq_len + 1));
                for g in first..first + rows as u64 {
                    w.window(g, &mut windows)?;
                }
                Ok(MicroBatch::from_windows(rows, seq_len, &windows))
            }
            BatchSource::Text(t) => {
                let b = t.next(step, micro)?;
                if b.seq_len != seq_len {
                    return Err(anyhow!(
                        "[data]: the loader produced rows of {} tokens, [train] seq_len is {seq_len}",
                        b.seq_len
                    ));
                }
                Ok(b)
            }
        }
    }

    /// What a checkpoint must store to resume the data exactly (`data_cursor.json` text), for
    /// sources whose position is not a function of the step.
    pub fn checkpoint_state(&self) -> Result<Option<String>> {
        match self {
            BatchSource::Text(t) => {
                Ok(Some(t.cursor().to_json().map_err(|e| {
                    anyhow!("serializing the data cursor: {e}")
                })?))
            }
            _ => Ok(None),
        }
    }

    /// Bad rows skipped so far (text sources), for log lines.
    pub fn bad_rows(&self) -> Option<(u64, String)> {
        match self {
            BatchSource::Text(t) => t.bad_rows().map(|s| (t.bad_row_count(), s)),
            _ => None,
        }
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
}
