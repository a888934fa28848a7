//! Packs samples into training windows of `seq_len + 1` tokens (inputs are the
//! first `seq_len`, labels the last `seq_len`). Each sample says how (its
//! source's [`PackMode`], from the global or per-source `mode`):
//! - `pretrain`: samples (each ending in EOS) are concatenated into one stream
//!   and cut into windows that overlap by one token, so no label is skipped;
//!   every label is trained as the sample's mask says (all of a text row,
//!   including the first token of a document predicted from the previous
//!   document's EOS);
//! - `sft_pad`: one sample per window, padded (loss mask 0);
//! - `sft_pack`: consecutive samples share a window while they fit.
//!
//! Samples of both kinds can meet in one run (per-source `mode`): pretrain
//! samples go to their own stream and never share a window with SFT samples;
//! windows are released in the order they fill up, so a batch can hold both.
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

    fn is_consistent(&self, max: usize) -> bool {
        self.tokens.len() == self.loss_mask.len() && self.tokens.len() <= max
    }
}

/// Stateful packer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Packer {
    seq_len: usize,
    pad_id: u32,
    /// Pretrain samples not yet cut into windows (fewer than `seq_len + 1` tokens).
    stream: PackedRow,
    /// The `sft_pack` window being filled.
    open: PackedRow,
    /// Complete windows, oldest first.
    ready: VecDeque<PackedRow>,
}

impl Packer {
    /// A packer for windows of `seq_len + 1` tokens, padding with `pad_id`.
    pub fn new(seq_len: usize, pad_id: u32) -> Self {
        Packer {
            seq_len,
            pad_id,
            stream: PackedRow::default(),
            open: PackedRow::default(),
            ready: VecDeque::new(),
        }
    }

    /// Tokens per window (`seq_len + 1`).
    pub fn window(&self) -> usize {
        self.seq_len + 1
    }

    /// Whether `sample` fits in one window (always true for pretraining).
    pub fn fits(&self, sample: &Sample) -> bool {
        sample.mode == PackMode::Pretrain || sample.ids.len() <= self.window()
    }

    /// Adds a sample (callers reject samples that do not [`fit`](Self::fits)).
    pub fn push(&mut self, sample: &Sample) {
        let window = self.window();
        match sample.mode {
            PackMode::Pretrain => {
                self.stream.append(sample);
                while self.stream.tokens.len() >= window {
                    let row = self.stream.split_front(window, self.seq_len);
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

    /// Pads and releases the partially filled windows at the end of the data
    /// (the SFT window first, then the pretrain stream's tail when it holds a
    /// label, i.e. at least two tokens).
    pub fn finish(&mut self) {
        let window = self.window();
        let open = std::mem::take(&mut self.open);
        if !open.tokens.is_empty() {
            self.ready.push_back(open.padded(window, self.pad_id));
        }
        let stream = std::mem::take(&mut self.stream);
        if stream.tokens.len() >= 2 {
            self.ready.push_back(stream.padded(window, self.pad_id));
        }
    }

    /// Whether buffered windows have window length and matching masks
    /// (guards cursors read from disk).
    pub fn is_consistent(&self) -> bool {
        let window = self.window();
        self.stream.is_consistent(window - 1)
            && self.open.is_consistent(window)
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

    fn sample(ids: &[u32], source: usize, mode: PackMode) -> Sample {
        Sample {
            ids: ids.to_vec(),
            loss_mask: vec![1; ids.len()],
            source,
            domain: None,
            mode,
        }
    }

    #[test]
    fn pretrain_windows_overlap_by_one() {
        let mut p = Packer::new(4, 0);
        let pt = PackMode::Pretrain;
        p.push(&sample(&[1, 2, 3, 9], 0, pt));
        assert!(p.pop().is_none());
        p.push(&sample(&[4, 5, 6, 7, 9], 1, pt));
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
        let mut p = Packer::new(4, 0);
        let pack = PackMode::SftPack;
        p.push(&sample(&[1, 2, 3], 0, pack));
        p.push(&sample(&[4, 5, 6], 0, pack));
        let a = p.pop().unwrap();
        assert_eq!(a.tokens, vec![1, 2, 3, 0, 0]);
        assert_eq!(a.loss_mask, vec![1, 1, 1, 0, 0]);
        p.push(&sample(&[7, 8], 0, pack));
        p.finish();
        let b = p.pop().unwrap();
        assert_eq!(b.tokens, vec![4, 5, 6, 7, 8]);
        assert_eq!(b.segments.len(), 2);
        let mut p = Packer::new(4, 0);
        p.push(&sample(&[1, 2], 0, PackMode::SftPad));
        assert_eq!(p.pop().unwrap().tokens, vec![1, 2, 0, 0, 0]);
        assert!(!p.fits(&sample(&[1; 7], 0, PackMode::SftPad)));
        assert!(p.fits(&sample(&[1; 7], 0, PackMode::Pretrain)));
    }

    #[test]
    fn pretrain_and_sft_samples_never_share_a_window() {
        let mut p = Packer::new(4, 0);
        p.push(&sample(&[1, 2, 9], 0, PackMode::Pretrain));
        p.push(&sample(&[5, 6, 9], 1, PackMode::SftPack));
        p.push(&sample(&[3, 4, 9], 0, PackMode::Pretrain));
        // The stream filled first: [1 2 9 3 4]; the SFT window is still open.
        let a = p.pop().unwrap();
        assert_eq!(a.tokens, vec![1, 2, 9, 3, 4]);
        assert!(a.segments.iter().all(|s| s.source == 0));
        assert!(p.pop().is_none());
        p.finish();
        let b = p.pop().unwrap();
        assert_eq!(b.tokens, vec![5, 6, 9, 0, 0]);
        assert_eq!(b.loss_mask, vec![1, 1, 1, 0, 0]);
        let c = p.pop().unwrap();
        assert_eq!(c.tokens, vec![4, 9, 0, 0, 0]);
        assert_eq!(c.loss_mask, vec![1, 1, 0, 0, 0]);
        assert!(p.pop().is_none());
        assert!(p.is_consistent());
    }
}
