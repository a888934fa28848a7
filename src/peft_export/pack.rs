//! PEFT's layouts of v4train's stacked adapters, as pure functions over row-major f32 values:
//! `wo_a`'s per-group adapters become one block-diagonal adapter, the experts' `w1` / `w3`
//! adapters one adapter of the fused `gate_up_proj`, and per-expert factors PEFT's packing of a
//! 3-D parameter's LoRA (`lora_A` `[E·R, in]` expert-major rows, `lora_B` `[out, R·E]` with
//! column `k·E + e`).

/// `G` matrices `[out, r]` (one after another) → block-diagonal `[G·out, G·r]`.
pub fn block_diag(b: &[f32], g: usize, out: usize, r: usize) -> Vec<f32> {
    let mut d = vec![0f32; g * out * g * r];
    for gi in 0..g {
        for o in 0..out {
            let row = (gi * out + o) * g * r + gi * r;
            d[row..row + r].copy_from_slice(&b[(gi * out + o) * r..][..r]);
        }
    }
    d
}

/// Per-expert `B_e` `[E, out, R]` → PEFT's `lora_B` `[out, R·E]`, column `k·E + e`.
pub fn experts_b(b: &[f32], e: usize, out: usize, r: usize) -> Vec<f32> {
    let mut p = vec![0f32; b.len()];
    for ei in 0..e {
        for o in 0..out {
            for k in 0..r {
                p[o * r * e + k * e + ei] = b[(ei * out + o) * r + k];
            }
        }
    }
    p
}

/// One half of the experts' fused gate/up projection: `A` `[E, r, in]`, `B` `[E, I, r]`, and
/// the factor its `B` is scaled by (its scale over the fused adapter's; 1 at equal ranks).
#[derive(Debug, Clone, Copy)]
pub struct Half<'a> {
    /// `A` `[E, r, in]`.
    pub a: &'a [f32],
    /// `B` `[E, I, r]`.
    pub b: &'a [f32],
    /// `r`.
    pub r: usize,
    /// Factor on `B`.
    pub factor: f32,
}

/// The fused gate/up adapter of `e` experts of width `i` over inputs `inp`: per expert
/// `A_e = [A1_e; A3_e]` and `B_e = diag(B1_e, B3_e)` (gate rows first), returned as
/// `A` `[E, R, in]`, `B` `[E, 2I, R]` and `R = r1 + r3`. An absent half has no rows / columns.
pub fn fuse_gate_up(
    gate: Option<Half>,
    up: Option<Half>,
    e: usize,
    i: usize,
    inp: usize,
) -> (Vec<f32>, Vec<f32>, usize) {
    let r1 = gate.map_or(0, |h| h.r);
    let rr = r1 + up.map_or(0, |h| h.r);
    let mut a = vec![0f32; e * rr * inp];
    let mut b = vec![0f32; e * 2 * i * rr];
    for (half, row0, col0) in [(gate, 0, 0), (up, i, r1)] {
        let Some(h) = half else { continue };
        for ei in 0..e {
            for k in 0..h.r {
                let dst = (ei * rr + col0 + k) * inp;
                a[dst..dst + inp].copy_from_slice(&h.a[(ei * h.r + k) * inp..][..inp]);
                for o in 0..i {
                    b[(ei * 2 * i + row0 + o) * rr + col0 + k] =
                        h.b[(ei * i + o) * h.r + k] * h.factor;
                }
            }
        }
    }
    (a, b, rr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_diag_places_groups_on_the_diagonal() {
        // two groups of [1, 2]
        assert_eq!(
            block_diag(&[1., 2., 3., 4.], 2, 1, 2),
            [1., 2., 0., 0., 0., 0., 3., 4.]
        );
    }

    #[test]
    fn experts_b_interleaves_experts_in_columns() {
        // E = 2, out = 1, R = 2: expert 0 [1, 2], expert 1 [3, 4] → cols k·E + e
        assert_eq!(experts_b(&[1., 2., 3., 4.], 2, 1, 2), [1., 3., 2., 4.]);
    }

    #[test]
    fn gate_up_fuses_block_diagonally() {
        // E = 1, I = 1, in = 1, r1 = r3 = 1
        let g = Half {
            a: &[5.],
            b: &[2.],
            r: 1,
            factor: 1.,
        };
        let u = Half {
            a: &[7.],
            b: &[3.],
            r: 1,
            factor: 0.5,
        };
        let (a, b, r) = fuse_gate_up(Some(g), Some(u), 1, 1, 1);
        assert_eq!((a, b, r), (vec![5., 7.], vec![2., 0., 0., 1.5], 2));
        let (a, b, r) = fuse_gate_up(None, Some(u), 1, 1, 1);
        assert_eq!((a, b, r), (vec![7.], vec![0., 1.5], 1));
    }
}
