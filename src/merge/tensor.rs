//! Merging one release matrix: `W' = W + ΔW` in f32 from the dequantized base (never a delta
//! added to FP8/FP4 codes), then `W'` rounded as the output stores it (`Q`), with the sums the
//! report needs: ‖W‖², ‖ΔW‖², ⟨Q(W') − Q(W), ΔW⟩ and ‖Q(W') − W'‖². One parallel pass over
//! bands of 128 rows does it all.

use super::error::MergeError;
use super::rounding::{self, Rounding, BAND_ROWS};
use rayon::prelude::*;
use std::ops::Add;
use v4_checkpoints::{ModelDir, QuantizedTensor, Tensor};

/// Sums over one or more merged matrices.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sums {
    /// ‖W‖².
    pub w2: f64,
    /// ‖ΔW‖².
    pub d2: f64,
    /// ⟨Q(W + ΔW) − Q(W), ΔW⟩: how far the stored weights moved along ΔW.
    pub moved: f64,
    /// ‖Q(W + ΔW) − (W + ΔW)‖².
    pub err2: f64,
}

impl Add for Sums {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            w2: self.w2 + o.w2,
            d2: self.d2 + o.d2,
            moved: self.moved + o.moved,
            err2: self.err2 + o.err2,
        }
    }
}

/// A merged matrix, ready to write.
#[derive(Debug)]
pub struct Merged {
    /// `W + ΔW`, row-major.
    pub values: Vec<f32>,
    /// `Q(W + ΔW)` already quantized, for FP8/FP4 output (written code for code).
    pub quantized: Option<QuantizedTensor<'static>>,
    /// The report's sums (`moved`, `err2` are 0 when `Q` is the identity).
    pub sums: Sums,
}

/// The f32 values of base tensor `name`, and whether `Q(W) = W` (the base is stored in the
/// output's own format: re-quantizing dequantized values gives the same values).
pub fn base_values(
    src: &ModelDir,
    name: &str,
    rounding: Rounding,
) -> Result<(Vec<f32>, bool), MergeError> {
    Ok(match src.tensor(name)? {
        Tensor::Quantized(q) => (
            rounding::dequantize(&q),
            rounding == Rounding::Quantized(q.format),
        ),
        Tensor::Float { values, .. } => (values, rounding == Rounding::None),
        // An integer tensor: the reader's error names the file.
        Tensor::Int { .. } => (src.tensor_f32(name)?.1, false),
    })
}

/// Adds `delta` to the base values `w` (`[rows, cols]`, from [`base_values`]) of release
/// tensor `name` and rounds the result with `rounding`.
pub fn merge_matrix(
    name: &str,
    (mut w, base_is_q): (Vec<f32>, bool),
    delta: &[f32],
    [rows, cols]: [usize; 2],
    rounding: Rounding,
) -> Result<Merged, MergeError> {
    let band = BAND_ROWS * cols.max(1);
    let bands: Vec<Result<(Sums, Option<QuantizedTensor<'static>>), usize>> = w
        .par_chunks_mut(band)
        .zip(delta.par_chunks(band))
        .enumerate()
        .map(|(i, (w, d))| merge_band(w, d, cols, rounding, base_is_q).map_err(|at| i * band + at))
        .collect();
    let (mut sums, mut codes) = (Sums::default(), Vec::new());
    for b in bands {
        let (s, c) = b.map_err(|index| MergeError::NonFinite {
            tensor: name.to_string(),
            index,
        })?;
        sums = sums + s;
        codes.extend(c);
    }
    let quantized = match rounding {
        Rounding::Quantized(f) => Some(rounding::concat(codes, [rows, cols], f)),
        _ => None,
    };
    Ok(Merged {
        values: w,
        quantized,
        sums,
    })
}

/// One band: `w += d` in place, rounded; `Err` gives the band-local index of a non-finite
/// merged value.
fn merge_band(
    w: &mut [f32],
    d: &[f32],
    cols: usize,
    rounding: Rounding,
    base_is_q: bool,
) -> Result<(Sums, Option<QuantizedTensor<'static>>), usize> {
    let qw = match rounding {
        Rounding::None => None,
        _ if base_is_q => None,
        r => Some(r.round(w, cols)?.values),
    };
    let (mut s, mut qw_d) = (Sums::default(), 0f64);
    for (j, (x, dx)) in w.iter_mut().zip(d).enumerate() {
        let (x64, d64) = (f64::from(*x), f64::from(*dx));
        s.w2 += x64 * x64;
        s.d2 += d64 * d64;
        qw_d += qw.as_ref().map_or(x64, |q| f64::from(q[j])) * d64;
        *x += dx;
        if !x.is_finite() {
            return Err(j);
        }
    }
    if rounding == Rounding::None {
        return Ok((s, None));
    }
    let r = rounding.round(w, cols)?;
    let mut qm_d = 0f64;
    for ((q, m), dx) in r.values.iter().zip(w.iter()).zip(d) {
        let (q, m) = (f64::from(*q), f64::from(*m));
        qm_d += q * f64::from(*dx);
        s.err2 += (q - m) * (q - m);
    }
    // Products of f32s are exact in f64; the difference loses ~1e-16 of ⟨W, ΔW⟩.
    s.moved = qm_d - qw_d;
    Ok((s, r.codes))
}
