//! Packs samples into training windows of `seq_len + 1` tokens (inputs are the
//! first `seq_len`, labels the last `seq_len`):
//! - `pretrain`: samples (each ending in EOS) are concatenated and cut into
//!   windows that overlap by one token, so no label is skipped;
//! - `sft_pad`: one sample per window, padded (loss mask 0);
//! - `sft_pack`: consecutive samples share a window while they fit.
//!
//! The packer's buffered tokens are serializable and part of the data cursor.

use crate::sample::Sample;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// How samples become windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PackMode {
    /// Concatenate and cut.
    Pretrain,
    /// One sample per window, padded.
    SftPad,
    /// Whole samples packed greedily, padded.
    SftPack,
}

/// A sample's place in a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// First token of the segment in the window.
    pub start: usize,
    /// Tokens of the segment in the window.
    pub len: usize,
    /// Source index.
    pub source: usize,
    /// Domain tag.
    pub domain: Option<String>,
}

/// One training window of `seq_len + 1` tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedRow {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// 1 = trained token.
    pub loss_mask: Vec<u8>,
    /// Samples in the window, in order (padding is not a segment).
    pub segments: Vec<Segment>,
}

impl PackedRow {
    fn append(&mut self, sample: &Sample) {
        self.segments.push(Segment {
            start: self.tokens.len(),
            len: sample.ids.len(),
            source: sample.source,
            domain: sample.domain.clone(),
        });
        self.tokens.extend_from_slice(&sample.ids);
        self.loss_mask.extend_from_slice(&sample.loss_mask);
    }

    fn padded(mut self, window: usize, pad_id: u32) -> PackedRow {
        self.tokens.resize(window, pad_id);
        self.loss_mask.resize(window, 0);
        self
    }

    /// The first `window` tokens as a row; keeps the rest from token `keep_from`.
    fn split_front(&mut self, window: usize, keep_from: usize) -> PackedRow {
        let head = PackedRow {
            tokens: self.tokens[..window].to_vec(),
            loss_mask: self.loss_mask[..window].to_vec(),
            segments: self
                .segments
                .iter()
                .filter(|s| s.start < window)
                .map(|s| Segment {
                    len: s.len.min(window - s.start),
                    ..s.clone()
                })
                .collect(),
        };
        self.tokens.drain(..keep_from);
        self.loss_mask.drain(..keep_from);
        self.segments = self
            .segments
            .iter()
            .filter(|s| s.start + s.len > keep_from)
            .map(|s| {
                let start = s.start.max(keep_from);
                Segment {
                    start: start - keep_from,
                    len: s.start + s.len - start,
                    ..s.clone()
                }
            })
            .collect();
        head
    }
}

/// Stateful packer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packer {
    mode: PackMode,
    seq_len: usize,
    pad_id: u32,
    open: PackedRow,
    ready: VecDeque<PackedRow>,
}

impl Packer {
    /// A packer for windows of `seq_len + 1` tokens, padding with `pad_id`.
    pub fn new(mode: PackMode, seq_len: usize, pad_id: u32) -> Self {
        Packer {
            mode,
            seq_len,
            pad_id,
            open: PackedRow::default(),
            ready: VecDeque::new(),
        }
    }

    /// Tokens per window (`seq_len + 1`).
    pub fn window(&self) -> usize {
        self.seq_len + 1
    }

    /// The mode.
    pub fn mode(&self) -> PackMode {
        self.mode
    }

    /// Whether `sample` fits in one window (always true for pretraining).
    pub fn fits(&self, sample: &Sample) -> bool {
        self.mode == PackMode::Pretrain || sample.ids.len() <= self.window()
    }

    /// Adds a sample (callers reject samples that do not [`fit`](Self::fits)).
    pub fn push(&mut self, sample: &Sample) {
        let window = self.window();
        match self.mode {
            PackMode::Pretrain => {
                self.open.append(sample);
                while self.open.tokens.len() >= window {
                    let row = self.open.split_front(window, self.seq_len);
                    self.ready.push_back(row);
                }
            }
            PackMode::SftPad => {
                let mut row = PackedRow::default();
                row.append(sample);
                self.ready.push_back(row.padded(window, self.pad_id));
            }
            PackMode::SftPack => {
                if !self.open.tokens.is_empty()
                    && self.open.tokens.len() + sample.ids.len() > window
                {
                    let row = std::mem::take(&mut self.open);
                    self.ready.push_back(row.padded(window, self.pad_id));
                }
                self.open.append(sample);
            }
        }
    }

    /// Pads and releases the partially filled window at the end of the data.
    pub fn finish(&mut self) {
        let min = if self.mode == PackMode::Pretrain {
            2
        } else {
            1
        };
        if self.open.tokens.len() >= min {
            let row = std::mem::take(&mut self.open);
            self.ready.push_back(row.padded(self.window(), self.pad_id));
        }
        self.open = PackedRow::default();
    }

    /// Whether buffered windows have window length and matching masks
    /// (guards cursors read from disk).
    pub fn is_consistent(&self) -> bool {
        let window = self.window();
        self.open.tokens.len() == self.open.loss_mask.len()
            && self
                .ready
                .iter()
                .all(|r| r.tokens.len() == window && r.loss_mask.len() == window)
    }

    /// The next complete window.
    pub fn pop(&mut self) -> Option<PackedRow> {
        self.ready.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ids: &[u32], source: usize) -> Sample {
        Sample {
            ids: ids.to_vec(),
            loss_mask: vec![1; ids.len()],
            source,
            domain: None,
        }
    }

    #[test]
    fn pretrain_windows_overlap_by_one() {
        let mut p = Packer::new(PackMode::Pretrain, 4, 0);
        p.push(&sample(&[1, 2, 3, 9], 0));
        assert!(p.pop().is_none());
        p.push(&sample(&[4, 5, 6, 7, 9], 1));
        let a = p.pop().unwrap();
        assert_eq!(a.tokens, vec![1, 2, 3, 9, 4]);
        assert_eq!(a.segments.len(), 2);
        assert_eq!((a.segments[1].start, a.segments[1].len), (4, 1));
        let b = p.pop().unwrap();
        assert_eq!(b.tokens, vec![4, 5, 6, 7, 9]);
        assert_eq!(
            (b.segments[0].start, b.segments[0].len, b.segments[0].source),
            (0, 5, 1)
        );
        assert!(p.pop().is_none());
    }

    #[test]
    fn sft_pack_and_pad() {
        let mut p = Packer::new(PackMode::SftPack, 4, 0);
        p.push(&sample(&[1, 2, 3], 0));
        p.push(&sample(&[4, 5, 6], 0));
        let a = p.pop().unwrap();
        assert_eq!(a.tokens, vec![1, 2, 3, 0, 0]);
        assert_eq!(a.loss_mask, vec![1, 1, 1, 0, 0]);
        p.push(&sample(&[7, 8], 0));
        p.finish();
        let b = p.pop().unwrap();
        assert_eq!(b.tokens, vec![4, 5, 6, 7, 8]);
        assert_eq!(b.segments.len(), 2);
        let mut p = Packer::new(PackMode::SftPad, 4, 0);
        p.push(&sample(&[1, 2], 0));
        assert_eq!(p.pop().unwrap().tokens, vec![1, 2, 0, 0, 0]);
        assert!(!p.fits(&sample(&[1; 7], 0)));
    }
}
