//! SplitMix64: a tiny deterministic generator whose whole state is one `u64`,
//! so it serializes into the data cursor; plus the seeded permutations used by
//! shuffling (derived from a tuple of integers, never stored).

use serde::{Deserialize, Serialize};

/// SplitMix64 state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`n > 0`; Lemire's multiply-shift, bias below 2^-40 for
    /// any `n` a block or file list can have).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A generator seeded by hashing `parts` (e.g. seed, source, epoch, block):
    /// different tuples give unrelated streams.
    pub fn derived(parts: &[u64]) -> SplitMix64 {
        let mut h = SplitMix64(0x5EED_D47A_5EED_D47A);
        let mut state = h.next_u64();
        for &p in parts {
            h = SplitMix64(state ^ p);
            state = h.next_u64();
        }
        SplitMix64(state)
    }
}

/// A uniformly random permutation of `0..n` (Fisher–Yates) seeded by `parts`.
pub fn permutation(n: usize, parts: &[u64]) -> Vec<usize> {
    let mut rng = SplitMix64::derived(parts);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, rng.below(i + 1));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_seeded_and_complete() {
        let a = permutation(100, &[1, 2, 3]);
        assert_eq!(a, permutation(100, &[1, 2, 3]));
        assert_ne!(a, permutation(100, &[1, 2, 4]));
        assert_ne!(a, permutation(100, &[2, 1, 3]));
        assert_ne!(a, (0..100).collect::<Vec<_>>());
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(permutation(0, &[1]), Vec::<usize>::new());
        assert_eq!(permutation(1, &[1]), vec![0]);
    }
}
