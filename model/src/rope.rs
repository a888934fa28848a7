//! Rotary position embedding with YaRN (spec §2.4): interleaved pairs `(x[2i], x[2i+1])` of the
//! last `rope_dim` channels are rotated by `pos · f_i`. Window-only layers use plain `rope_theta`;
//! compressed layers use `compress_rope_theta` with the YaRN frequency ramp (no mscale).
//!
//! Frequencies and angles are computed in f32 exactly as the reference does (`fl32(t · f_i)`),
//! because angle rounding at large positions is visible at the parity tolerance.

use crate::broadcast::repeat_to;
use crate::config::ModelConfig;
use crate::util::Memo;
use burn::tensor::{backend::Backend, Tensor};
use std::rc::Rc;

/// Inverse frequencies `f_i`, i < rope_dim/2, for one layer kind.
pub fn inv_freqs(cfg: &ModelConfig, compressed: bool) -> Vec<f32> {
    let dim = cfg.qk_rope_head_dim;
    let base = if compressed {
        cfg.compress_rope_theta
    } else {
        cfg.rope_theta
    };
    let yarn = compressed.then_some(&cfg.rope_scaling);
    yarn_freqs(dim, base, yarn)
}

/// `1 / base^(2i/dim)` in f32, then the YaRN blend when `yarn` is given.
pub fn yarn_freqs(dim: usize, base: f64, yarn: Option<&crate::config::RopeScaling>) -> Vec<f32> {
    let half = dim / 2;
    let mut freqs: Vec<f32> = (0..half)
        .map(|i| {
            let e = (2 * i) as f32 / dim as f32;
            // correctly rounded pow, as glibc's powf behind torch
            1.0f32 / ((base).powf(e as f64) as f32)
        })
        .collect();
    if let Some(y) = yarn {
        let orig = y.original_max_position_embeddings as f64;
        let corr = |rot: f64| {
            dim as f64 * (orig / (rot * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln())
        };
        let low = corr(y.beta_fast).floor().max(0.0);
        let mut high = corr(y.beta_slow).ceil().min(dim as f64 - 1.0);
        if low == high {
            high += 0.001;
        }
        let (low, high) = (low as f32, high as f32);
        let factor = y.factor as f32;
        for (i, f) in freqs.iter_mut().enumerate() {
            let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
            let smooth = 1.0 - ramp;
            *f = *f / factor * (1.0 - smooth) + *f * smooth;
        }
    }
    freqs
}

/// Cos/sin tables `[rows, n_positions, rope_dim/2]` (`rows` is 1 when every row of the batch
/// has the same positions, else the batch size). A forward pass builds each table once
/// ([`crate::SampleLayout::rope_tokens`], [`crate::SampleLayout::rope_entries`]).
#[derive(Debug, Clone)]
pub struct RopeTable<B: Backend> {
    /// `cos(pos · f_i)`.
    pub cos: Tensor<B, 3>,
    /// `sin(pos · f_i)`.
    pub sin: Tensor<B, 3>,
    /// The tables repeated to the rows of [`RopeTable::rotate`]'s 2-D view, per
    /// `(batch, heads, inverse)`: built once per forward pass and shared by every layer (and
    /// by what the layers keep for backward).
    row_tables: Rc<Memo<(usize, usize, bool), RowTables<B>>>,
}

/// `C`, `S` and `P` of [`RopeTable::rotate`].
type RowTables<B> = (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>);

impl<B: Backend> RopeTable<B> {
    /// Tables for `positions`, shared by every row (angles `fl32(pos · f_i)`).
    pub fn new(freqs: &[f32], positions: impl Iterator<Item = usize>, device: &B::Device) -> Self {
        let positions: Vec<usize> = positions.collect();
        let n = positions.len();
        Self::per_row(freqs, &positions, 1, n, device)
    }

    /// Tables for `rows × n` positions (row-major `positions`), one row per batch row.
    pub fn per_row(
        freqs: &[f32],
        positions: &[usize],
        rows: usize,
        n: usize,
        device: &B::Device,
    ) -> Self {
        let half = freqs.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for f in freqs {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Self {
            cos: crate::util::tensor_from(cos, [rows, n, half], device),
            sin: crate::util::tensor_from(sin, [rows, n, half], device),
            row_tables: Rc::default(),
        }
    }

    /// Rotates `x` `[b, s, h, r]` (r = rope dims, s = table rows); `inverse` rotates by `−pos`.
    pub fn rotate(&self, x: Tensor<B, 4>, inverse: bool) -> Tensor<B, 4> {
        let [b, s, h, r] = x.dims();
        let rows = self.cos.dims()[0];
        // On the `[b·s·h, r]` rows: `x ⊙ C + (x·P) ⊙ S`, with `P` the pair swap
        // (`x[2i] ↔ x[2i+1]`), `C = (cos, cos)` and `S = (−sin, sin)` per pair, repeated to the
        // rows once per forward. The same products and sums as the pairwise form
        // (`a·cos − b·sin`, `b·cos + a·sin`), all on contiguous rows ([`crate::broadcast`]).
        let n = b * s * h;
        let (cos, sin, swap) = self.row_tables.get_or((b, h, inverse), || {
            let device = self.cos.device();
            let interleave = |lo: Tensor<B, 3>, hi: Tensor<B, 3>| {
                let t = Tensor::stack::<4>(vec![lo, hi], 3).reshape([rows, s, 1, r]);
                repeat_to(t, [b, s, h, r]).reshape([n, r])
            };
            let sin = if inverse {
                self.sin.clone().neg()
            } else {
                self.sin.clone()
            };
            (
                interleave(self.cos.clone(), self.cos.clone()),
                interleave(sin.clone().neg(), sin),
                crate::util::indicator::<B>(r, |i, j| i == j ^ 1, &device),
            )
        });
        let x = x.reshape([n, r]);
        (x.clone() * cos + x.matmul(swap) * sin).reshape([b, s, h, r])
    }

    /// Rotates the last `rope_dim` channels of `x` `[b, s, h, d]`, leaving the others.
    pub fn rotate_tail(&self, x: Tensor<B, 4>, rope_dim: usize, inverse: bool) -> Tensor<B, 4> {
        let d = x.dims()[3];
        let keep = x.clone().slice_dim(3, 0..d - rope_dim);
        let rot = self.rotate(x.slice_dim(3, d - rope_dim..d), inverse);
        Tensor::cat(vec![keep, rot], 3)
    }

    /// [`rotate_tail`](Self::rotate_tail) for a single head `[b, s, d]`.
    pub fn rotate_tail3(&self, x: Tensor<B, 3>, rope_dim: usize, inverse: bool) -> Tensor<B, 3> {
        let [b, s, d] = x.dims();
        self.rotate_tail(x.reshape([b, s, 1, d]), rope_dim, inverse)
            .reshape([b, s, d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelConfig;

    #[test]
    fn yarn_ramp_bounds_match_the_spec() {
        // Spec §2.4: for base 1.6e5, dim 64, original 65536 the ramp runs from pair 15 to 25.
        let cfg = ModelConfig::v4_flash();
        let plain = yarn_freqs(64, 160000.0, None);
        let yarn = inv_freqs(&cfg, true);
        for i in 0..=15 {
            assert_eq!(yarn[i], plain[i], "pair {i} keeps its frequency");
        }
        for i in 25..32 {
            assert!(
                (yarn[i] - plain[i] / 16.0).abs() <= plain[i] * 1e-6,
                "pair {i} is /16"
            );
        }
        let r20 = (20.0f32 - 15.0) / 10.0;
        let want = plain[20] / 16.0 * r20 + plain[20] * (1.0 - r20);
        assert!((yarn[20] - want).abs() <= want * 1e-6);
        // window layers: plain rope_theta, no YaRN
        assert_eq!(inv_freqs(&cfg, false), yarn_freqs(64, 10000.0, None));
        assert_eq!(plain[0], 1.0);
        assert!((plain[1] - 160000f32.powf(-2.0 / 64.0)).abs() < 1e-7);
    }
}
