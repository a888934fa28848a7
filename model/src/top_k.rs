//! Top-k of long score rows for the lightning indexer's selection (spec §2.7), pruned by blocks.
//!
//! Burn 0.21's `topk` sorts each whole row, and the indexer's rows are as long as the visible
//! compressed entries (`L/4`): at long context the sort is most of the selection. A row's top-k
//! all lie in the k blocks with the largest maxima (each of the j−1 values above the j-th best
//! is the maximum of at most one block ranked above that value's block), so the rows are cut
//! into blocks, the blocks ranked by their maxima, and only the k best blocks' values sorted:
//! about `m / bs + k · bs` sorted values instead of `m`. Exact: the same set of values as the
//! full sort (equal values may be taken from other positions, as the full sort's own unstable
//! order allows).

use burn::tensor::{backend::Backend, Int, Tensor};

/// Blocks per chosen entry that the pruning aims at: `m / bs ≈ BLOCKS_PER_K · k`.
const BLOCKS_PER_K: usize = 8;

/// Smallest block worth the two passes (smaller: one full sort).
const MIN_BLOCK: usize = 4;

/// The block size for rows of `m` values and `k` kept (a power of two; 1 = no pruning).
pub fn block_size(m: usize, k: usize) -> usize {
    let target = m / (BLOCKS_PER_K * k.max(1));
    if target < MIN_BLOCK {
        1
    } else {
        1 << target.ilog2()
    }
}

/// Indices `[r, k]` of the `k` largest values of each row of `scores` `[r, m]`, best first.
pub fn top_k_rows<B: Backend>(scores: Tensor<B, 2>, k: usize) -> Tensor<B, 2, Int> {
    let [r, m] = scores.dims();
    let bs = block_size(m, k);
    if bs == 1 || m % bs != 0 {
        return scores.topk_with_indices(k, 1).1;
    }
    // Pruning runs only with `bs ≤ m / (BLOCKS_PER_K · k)`: there are at least 8k blocks.
    let nb = m / bs;
    let device = scores.device();
    let best_blocks = scores
        .clone()
        .reshape([r, nb, bs])
        .max_dim(2)
        .reshape([r, nb])
        .topk_with_indices(k, 1)
        .1;
    // Candidate positions `[r, k·bs]`: every position of the chosen blocks, built as 2-D
    // broadcasts (row-wise on a CPU backend).
    let offsets = Tensor::<B, 1, Int>::arange(0..bs as i64, &device).reshape([1, bs]);
    let candidates = best_blocks
        .reshape([r * k, 1])
        .mul_scalar(bs as i64)
        .expand([r * k, bs])
        .add(offsets.expand([r * k, bs]))
        .reshape([r, k * bs]);
    let values = scores.gather(1, candidates.clone());
    let chosen = values.topk_with_indices(k, 1).1;
    candidates.gather(1, chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    type B = Flex;

    #[test]
    fn block_sizes_are_powers_of_two_or_one() {
        assert_eq!(block_size(100, 64), 1);
        assert_eq!(block_size(2048, 64), 4);
        assert_eq!(block_size(4096, 64), 8);
        assert_eq!(block_size(16384, 64), 32);
        assert_eq!(block_size(16384, 512), 4);
    }

    /// Pseudo-random values with many exact repeats and −∞ runs, as masked index scores have.
    fn rows(r: usize, m: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..r * m)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let v = (x >> 40) as f32 / (1u64 << 24) as f32;
                if (i % m) > m - m / 5 - (i / m) * 7 {
                    f32::NEG_INFINITY
                } else if v < 0.2 {
                    0.0
                } else {
                    (v * 64.0).round() / 8.0
                }
            })
            .collect()
    }

    #[test]
    fn pruned_top_k_takes_the_same_values_as_the_full_sort() {
        let dev = Default::default();
        for (r, m, k) in [(5, 4096, 64), (3, 8192, 16), (4, 2048, 64), (2, 1000, 7)] {
            let data = rows(r, m, (m + k) as u64);
            let scores = Tensor::<B, 2>::from_data(TensorData::new(data.clone(), [r, m]), &dev);
            let idx = top_k_rows(scores.clone(), k);
            assert_eq!(idx.dims(), [r, k]);
            let got = scores.clone().gather(1, idx.clone()).into_data();
            let want = scores.topk(k, 1).into_data();
            assert_eq!(got, want, "values, r {r} m {m} k {k}");
            let idx: Vec<i64> = idx.into_data().convert::<i64>().to_vec().unwrap();
            for row in idx.chunks(k) {
                let mut seen = row.to_vec();
                seen.sort_unstable();
                seen.dedup();
                assert_eq!(seen.len(), k, "an entry chosen twice");
            }
        }
    }
}
