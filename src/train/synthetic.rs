//! Synthetic pretraining tokens: sequences that follow a seeded random bigram chain
//! (`t_{i+1} = perm[t_i]`, a fixed random permutation of the vocabulary) from a random start.
//! A model can learn the chain, so the loss visibly falls; batches are a pure function of
//! (seed, step, micro-batch), so a resumed run sees exactly the batches an uninterrupted one would.
//! The trainer asks for windows of `seq_len + 1` tokens (inputs and shifted labels). With a
//! document length, a row packs several documents, each restarting the chain at a random token
//! (its first token cannot be predicted from the previous document: what sample masking is for).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// The seeded chain.
#[derive(Debug, Clone)]
pub struct SyntheticTokens {
    perm: Vec<i64>,
    seed: u64,
    doc_len: usize,
}

/// One synthetic micro-batch: ids `[rows, len]` and, per row, where documents after the first
/// start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticBatch {
    /// Token ids, row-major.
    pub ids: Vec<i64>,
    /// Per row, the positions where a new document starts (ascending, ≥ 1).
    pub starts: Vec<Vec<usize>>,
}

impl SyntheticTokens {
    /// A chain over `0..vocab` drawn from `seed`; `doc_len` is the mean document length (0:
    /// one document per row).
    pub fn new(seed: u64, vocab: usize, doc_len: usize) -> Self {
        let mut perm: Vec<i64> = (0..vocab as i64).collect();
        perm.shuffle(&mut StdRng::seed_from_u64(seed));
        Self {
            perm,
            seed,
            doc_len,
        }
    }

    /// Token ids `[rows, len]` (row-major) of micro-batch `micro` of optimizer step `step`
    /// (`len = seq_len + 1` for a training window), with the document starts.
    pub fn batch(&self, step: u64, micro: usize, rows: usize, len: usize) -> SyntheticBatch {
        let mix = self.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (micro as u64) << 48;
        let mut rng = StdRng::seed_from_u64(mix);
        let mut ids = Vec::with_capacity(rows * len);
        let mut starts = Vec::with_capacity(rows);
        for _ in 0..rows {
            let mut row_starts = Vec::new();
            let mut left = self.next_doc(&mut rng);
            let mut t = rng.random_range(0..self.perm.len()) as i64;
            for i in 0..len {
                if left == 0 {
                    row_starts.push(i);
                    left = self.next_doc(&mut rng);
                    t = rng.random_range(0..self.perm.len()) as i64;
                }
                ids.push(t);
                t = self.perm[t as usize];
                left -= 1;
            }
            starts.push(row_starts);
        }
        SyntheticBatch { ids, starts }
    }

    /// Length of the next document (`usize::MAX`: one document per row).
    fn next_doc(&self, rng: &mut StdRng) -> usize {
        match self.doc_len {
            0 => usize::MAX,
            d => rng.random_range((d / 2).max(1)..=d + d / 2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_follow_the_chain_and_are_reproducible() {
        let s = SyntheticTokens::new(3, 50, 0);
        let a = s.batch(7, 1, 2, 10);
        assert_eq!(a, SyntheticTokens::new(3, 50, 0).batch(7, 1, 2, 10));
        assert_ne!(a, s.batch(8, 1, 2, 10));
        assert!(a.starts.iter().all(Vec::is_empty));
        for row in a.ids.chunks(10) {
            for w in row.windows(2) {
                assert_eq!(w[1], s.perm[w[0] as usize]);
            }
        }
        // Documents of 4..=12 tokens: the chain holds inside each, restarts at each start.
        let d = SyntheticTokens::new(3, 50, 8).batch(2, 0, 3, 100);
        for (row, starts) in d.ids.chunks(100).zip(&d.starts) {
            assert!(starts.len() >= 7 && starts.len() <= 25, "{starts:?}");
            let mut bounds = vec![0];
            bounds.extend(starts);
            bounds.push(100);
            for w in bounds.windows(2) {
                assert!(w[1] - w[0] <= 12);
                for t in w[0] + 1..w[1] {
                    assert_eq!(row[t], s.perm[row[t - 1] as usize]);
                }
            }
        }
    }
}
