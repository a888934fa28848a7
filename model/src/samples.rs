//! Packed samples (V4 training report §4.2: documents are packed into training sequences and,
//! new in V4, attention is masked per sample): where each sample of each row starts and ends.
//! Built from per-token sample ids (`segment_ids` [B, S], non-decreasing along a row) or from
//! sample lengths; a row without boundaries is one sample. The device-side masks and gathers
//! derived from it are in [`crate::sample_layout`].

use crate::error::ModelError;
use std::ops::Range;

/// The samples of every row of a `[rows, seq]` batch, each a contiguous token range; together
/// they cover the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleBounds {
    seq: usize,
    rows: Vec<Vec<Range<usize>>>,
}

impl SampleBounds {
    /// Every row is one sample.
    pub fn whole(rows: usize, seq: usize) -> Self {
        Self {
            seq,
            rows: vec![vec![0..seq]; rows],
        }
    }

    /// From per-token sample ids `[rows, seq]` (row-major): a new sample starts wherever the id
    /// changes; ids must not decrease along a row.
    pub fn from_ids(ids: &[i64], rows: usize, seq: usize) -> Result<Self, ModelError> {
        if ids.len() != rows * seq {
            return Err(ModelError::Input(format!(
                "segment_ids has {} values; the batch is [{rows}, {seq}]",
                ids.len()
            )));
        }
        let mut out = Vec::with_capacity(rows);
        for (r, row) in ids.chunks(seq.max(1)).enumerate().take(rows) {
            let mut ranges = Vec::new();
            let mut start = 0;
            for t in 1..row.len() {
                if row[t] < row[t - 1] {
                    return Err(ModelError::Input(format!(
                        "segment_ids[{r}, {t}] = {} is smaller than segment_ids[{r}, {}] = {}; \
                         sample ids must not decrease along a row",
                        row[t],
                        t - 1,
                        row[t - 1]
                    )));
                }
                if row[t] != row[t - 1] {
                    ranges.push(start..t);
                    start = t;
                }
            }
            if seq > 0 {
                ranges.push(start..seq);
            }
            out.push(ranges);
        }
        Ok(Self { seq, rows: out })
    }

    /// From the sample lengths of each row; each row's lengths must sum to `seq`.
    pub fn from_lengths(lengths: &[Vec<usize>], seq: usize) -> Result<Self, ModelError> {
        let mut rows = Vec::with_capacity(lengths.len());
        for (r, lens) in lengths.iter().enumerate() {
            let total: usize = lens.iter().sum();
            if total != seq || lens.contains(&0) {
                return Err(ModelError::Input(format!(
                    "row {r}: sample lengths {lens:?} must be positive and sum to {seq}"
                )));
            }
            let mut start = 0;
            rows.push(
                lens.iter()
                    .map(|&l| {
                        start += l;
                        start - l..start
                    })
                    .collect(),
            );
        }
        Ok(Self { seq, rows })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Tokens per row.
    pub fn seq(&self) -> usize {
        self.seq
    }

    /// The samples of row `r`, in order.
    pub fn row(&self, r: usize) -> &[Range<usize>] {
        &self.rows[r]
    }

    /// Whether every row is a single sample (nothing to mask).
    pub fn is_whole(&self) -> bool {
        self.rows.iter().all(|r| r.len() <= 1)
    }

    /// Samples in the batch.
    pub fn count(&self) -> usize {
        self.rows.iter().map(Vec::len).sum()
    }

    /// Per token (row-major), the index of its sample counted over the whole batch.
    pub fn sample_index(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.rows() * self.seq);
        let mut g = 0;
        for row in &self.rows {
            for r in row {
                out.extend(std::iter::repeat_n(g, r.len()));
                g += 1;
            }
        }
        out
    }

    /// Per token (row-major), its position inside its sample.
    pub fn positions(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.rows() * self.seq);
        for row in &self.rows {
            for r in row {
                out.extend(0..r.len());
            }
        }
        out
    }

    /// The first `len` positions of every row (the streams of an MTP block).
    pub fn prefix(&self, len: usize) -> Self {
        let len = len.min(self.seq);
        Self {
            seq: len,
            rows: self
                .rows
                .iter()
                .map(|row| {
                    row.iter()
                        .filter(|r| r.start < len)
                        .map(|r| r.start..r.end.min(len))
                        .collect()
                })
                .collect(),
        }
    }

    /// Whether tokens `t` and `u` of row `r` belong to the same sample.
    pub fn same_sample(&self, r: usize, t: usize, u: usize) -> bool {
        self.rows[r]
            .iter()
            .any(|s| s.contains(&t) && s.contains(&u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_lengths_and_prefixes() {
        let b = SampleBounds::from_ids(&[0, 0, 0, 1, 1, 4, 7, 7, 7, 7], 2, 5).unwrap();
        assert_eq!(b.row(0), &[0..3, 3..5]);
        assert_eq!(b.row(1), &[0..1, 1..5]);
        assert_eq!(b.count(), 4);
        assert_eq!(b.sample_index(), vec![0, 0, 0, 1, 1, 2, 3, 3, 3, 3]);
        assert_eq!(b.positions(), vec![0, 1, 2, 0, 1, 0, 0, 1, 2, 3]);
        assert!(!b.is_whole());
        assert!(b.same_sample(0, 3, 4) && !b.same_sample(0, 2, 3));
        assert_eq!(
            b,
            SampleBounds::from_lengths(&[vec![3, 2], vec![1, 4]], 5).unwrap()
        );
        let p = b.prefix(3);
        assert_eq!(p.row(0).len(), 1);
        assert_eq!(p.row(0)[0], 0..3);
        assert_eq!(p.row(1), &[0..1, 1..3]);
        let e = SampleBounds::from_ids(&[0, 1, 0], 1, 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("segment_ids[0, 2] = 0"), "{e}");
        assert!(SampleBounds::from_lengths(&[vec![2, 2]], 5).is_err());
        assert!(SampleBounds::whole(3, 7).is_whole());
    }
}
