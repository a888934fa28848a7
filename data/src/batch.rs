//! A training batch: `rows × seq_len` input ids, next-token labels and the
//! labels' loss mask (row-major), plus each row's segments (source, domain).

use crate::packing::{PackedRow, Segment};

/// One batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// 0-based batch number since the start of training.
    pub index: u64,
    /// Rows in this batch (`batch_size`, fewer only for the last batch of finite data).
    pub rows: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// `[rows, seq_len]` input ids.
    pub input_ids: Vec<u32>,
    /// `[rows, seq_len]` targets: `labels[r][i] = window[r][i + 1]`.
    pub labels: Vec<u32>,
    /// `[rows, seq_len]` 1 where the label is trained.
    pub loss_mask: Vec<u8>,
    /// Per row, the samples it holds (positions in the `seq_len + 1` window).
    pub segments: Vec<Vec<Segment>>,
}

impl Batch {
    /// Builds a batch from windows of `seq_len + 1` tokens.
    pub fn from_rows(index: u64, seq_len: usize, rows: Vec<PackedRow>) -> Batch {
        let n = rows.len();
        let mut batch = Batch {
            index,
            rows: n,
            seq_len,
            input_ids: Vec::with_capacity(n * seq_len),
            labels: Vec::with_capacity(n * seq_len),
            loss_mask: Vec::with_capacity(n * seq_len),
            segments: Vec::with_capacity(n),
        };
        for row in rows {
            batch.input_ids.extend_from_slice(&row.tokens[..seq_len]);
            batch.labels.extend_from_slice(&row.tokens[1..=seq_len]);
            batch
                .loss_mask
                .extend_from_slice(&row.loss_mask[1..=seq_len]);
            batch.segments.push(row.segments);
        }
        batch
    }

    /// Number of trained label positions.
    pub fn trained_tokens(&self) -> usize {
        self.loss_mask.iter().filter(|&&m| m != 0).count()
    }

    /// The loss mask as `f32` (for multiplying per-token losses).
    pub fn loss_mask_f32(&self) -> Vec<f32> {
        self.loss_mask.iter().map(|&m| f32::from(m)).collect()
    }
}
