//! Synthetic pretraining tokens: sequences that follow a seeded random bigram chain
//! (`t_{i+1} = perm[t_i]`, a fixed random permutation of the vocabulary) from a random start.
//! A model can learn the chain, so the loss visibly falls; batches are a pure function of
//! (seed, step, micro-batch), so a resumed run sees exactly the batches an uninterrupted one would.
//! The trainer asks for windows of `seq_len + 1` tokens (inputs and shifted labels).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// The seeded chain.
#[derive(Debug, Clone)]
pub struct SyntheticTokens {
    perm: Vec<i64>,
    seed: u64,
}

impl SyntheticTokens {
    /// A chain over `0..vocab` drawn from `seed`.
    pub fn new(seed: u64, vocab: usize) -> Self {
        let mut perm: Vec<i64> = (0..vocab as i64).collect();
        perm.shuffle(&mut StdRng::seed_from_u64(seed));
        Self { perm, seed }
    }

    /// Token ids `[rows, len]` (row-major) of micro-batch `micro` of optimizer step `step`
    /// (`len = seq_len + 1` for a training window).
    pub fn batch(&self, step: u64, micro: usize, rows: usize, len: usize) -> Vec<i64> {
        let mix = self.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (micro as u64) << 48;
        let mut rng = StdRng::seed_from_u64(mix);
        let mut ids = Vec::with_capacity(rows * len);
        for _ in 0..rows {
            let mut t = rng.random_range(0..self.perm.len()) as i64;
            for _ in 0..len {
                ids.push(t);
                t = self.perm[t as usize];
            }
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_follow_the_chain_and_are_reproducible() {
        let s = SyntheticTokens::new(3, 50);
        let a = s.batch(7, 1, 2, 10);
        assert_eq!(a, SyntheticTokens::new(3, 50).batch(7, 1, 2, 10));
        assert_ne!(a, s.batch(8, 1, 2, 10));
        for row in a.chunks(10) {
            for w in row.windows(2) {
                assert_eq!(w[1], s.perm[w[0] as usize]);
            }
        }
    }
}
