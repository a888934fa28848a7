//! Prefill visibility rules (spec §2.10), built on the host: the sliding window (keys
//! `t − window < u ≤ t`) in the chunked layout the attention uses, and causal completeness of
//! compressed entries (`(j + 1) · ratio ≤ t + 1`).

/// Chunked window layout: queries in chunks of `window`, each chunk seeing the `2 · window` key
/// positions `[c·w − w, c·w + w)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowLayout {
    /// Sequence length.
    pub seq: usize,
    /// Window length (also the chunk length).
    pub window: usize,
    /// Number of query chunks (`ceil(seq / window)`).
    pub chunks: usize,
}

impl WindowLayout {
    /// Layout for `seq` tokens and a window of `window`.
    pub fn new(seq: usize, window: usize) -> Self {
        Self {
            seq,
            window,
            chunks: seq.div_ceil(window),
        }
    }

    /// Keys per chunk.
    pub fn keys(&self) -> usize {
        2 * self.window
    }

    /// Key position for slot `j` of chunk `c` (may be out of range; then it is masked).
    fn key_pos(&self, c: usize, j: usize) -> isize {
        (c * self.window + j) as isize - self.window as isize
    }

    /// Row indices `[chunks · 2w]` gathering each chunk's keys (out-of-range clamped to 0).
    pub fn key_rows(&self) -> Vec<i64> {
        let mut v = Vec::with_capacity(self.chunks * self.keys());
        for c in 0..self.chunks {
            for j in 0..self.keys() {
                let u = self.key_pos(c, j);
                v.push(if u < 0 || u as usize >= self.seq {
                    0
                } else {
                    u as i64
                });
            }
        }
        v
    }

    /// Validity `[chunks, window, 2w]`: query `t = c·w + i` sees key `u` iff
    /// `0 ≤ u ≤ t < seq` and `t − u < window`.
    pub fn mask(&self) -> Vec<bool> {
        let w = self.window;
        let mut v = Vec::with_capacity(self.chunks * w * self.keys());
        for c in 0..self.chunks {
            for i in 0..w {
                let t = (c * w + i) as isize;
                for j in 0..self.keys() {
                    let u = self.key_pos(c, j);
                    v.push(u >= 0 && u <= t && (t as usize) < self.seq && t - u < w as isize);
                }
            }
        }
        v
    }
}

/// Visibility `[seq, n]` of compressed entries: entry j is visible from query t once complete.
pub fn compressed_visible(seq: usize, n: usize, ratio: usize) -> Vec<bool> {
    let mut v = Vec::with_capacity(seq * n);
    for t in 0..seq {
        for j in 0..n {
            v.push((j + 1) * ratio <= t + 1);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dense reference of the window rule.
    fn dense(seq: usize, w: usize) -> Vec<Vec<bool>> {
        (0..seq)
            .map(|t| (0..seq).map(|u| u <= t && t - u < w).collect())
            .collect()
    }

    #[test]
    fn chunked_window_equals_the_dense_band() {
        for (seq, w) in [(1, 4), (5, 4), (16, 4), (37, 16), (300, 16)] {
            let l = WindowLayout::new(seq, w);
            let rows = l.key_rows();
            let mask = l.mask();
            let want = dense(seq, w);
            let mut seen = vec![vec![false; seq]; seq];
            for c in 0..l.chunks {
                for i in 0..w {
                    let t = c * w + i;
                    for j in 0..l.keys() {
                        if mask[(c * w + i) * l.keys() + j] {
                            let u = rows[c * l.keys() + j] as usize;
                            assert!(!seen[t][u], "key counted twice");
                            seen[t][u] = true;
                        }
                    }
                }
            }
            assert_eq!(seen, want, "seq {seq} window {w}");
        }
        // hand check: query 5 with window 4 sees keys 2..=5
        let l = WindowLayout::new(8, 4);
        let m = l.mask();
        let rows = l.key_rows();
        let vis: Vec<i64> = (0..8)
            .filter(|j| m[(4 + 1) * 8 + j])
            .map(|j| rows[8 + j])
            .collect();
        assert_eq!(vis, vec![2, 3, 4, 5]);
    }

    #[test]
    fn compressed_entries_become_visible_when_complete() {
        let v = compressed_visible(10, 2, 4);
        let first_visible = |j: usize| (0..10).find(|t| v[t * 2 + j]).unwrap();
        assert_eq!(first_visible(0), 3);
        assert_eq!(first_visible(1), 7);
        let h = compressed_visible(300, 2, 128);
        assert!(!h[126 * 2] && h[127 * 2] && !h[254 * 2 + 1] && h[255 * 2 + 1]);
    }
}
