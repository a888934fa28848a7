//! Newton–Schulz orthogonalisation (spec §2.1 quintic iteration, §2.3 V4 "HybridNewtonSchulz").
//!
//! Maps a matrix `U = A Σ Bᵀ` towards `A Bᵀ` (all singular values → 1) with matmuls only:
//! `X₀ = U/‖U‖_F`, then `X ← aX + b(XXᵀ)X + c(XXᵀ)²X` on the wide orientation (tall matrices are
//! transposed in and back out). V4 runs 8 steps of the Keller-Jordan quintic
//! (3.4445, −4.7750, 2.0315) then 2 steps of (2, −1.5, 0.5), which has 1 as a super-attracting
//! fixed point. A rank-3 input `[E, n, m]` is `E` independent matrices, orthogonalised together with
//! batched matmuls and a Frobenius norm per matrix.

use burn::tensor::{backend::Backend, DType, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{OptimError, Result};

/// Keller Jordan's quintic coefficients (max slope at 0; singular values end in ≈ U(0.5, 1.5)).
pub const QUINTIC: [f64; 3] = [3.4445, -4.7750, 2.0315];
/// V4's stabilising coefficients: p(x) = 2x − 1.5x³ + 0.5x⁵ has p(1) = 1, p'(1) = 0.
pub const STABILIZE: [f64; 3] = [2.0, -1.5, 0.5];
/// Normalisation epsilon `X₀ = U/(‖U‖_F + 1e-7)` (Keller Jordan; the V4 fixture matches it too).
pub const NORM_EPS: f64 = 1e-7;

/// `steps` iterations with the coefficients `(a, b, c)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NsStage {
    /// Number of iterations of this stage.
    pub steps: usize,
    /// `(a, b, c)` in `X ← aX + b(XXᵀ)X + c(XXᵀ)²X`.
    pub coeffs: [f64; 3],
}

/// A full coefficient schedule plus the normalisation epsilon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NsSchedule {
    /// Stages, run in order.
    pub stages: Vec<NsStage>,
    /// `X₀ = U / (‖U‖_F + eps)`.
    pub eps: f64,
}

impl NsSchedule {
    /// DeepSeek-V4 HybridNewtonSchulz: 8 quintic steps, then 2 stabilising steps.
    pub fn v4_hybrid() -> Self {
        Self {
            stages: vec![
                NsStage {
                    steps: 8,
                    coeffs: QUINTIC,
                },
                NsStage {
                    steps: 2,
                    coeffs: STABILIZE,
                },
            ],
            eps: NORM_EPS,
        }
    }

    /// `steps` quintic iterations (Keller Jordan, Moonlight).
    pub fn quintic(steps: usize) -> Self {
        Self {
            stages: vec![NsStage {
                steps,
                coeffs: QUINTIC,
            }],
            eps: NORM_EPS,
        }
    }

    /// Total number of iterations.
    pub fn total_steps(&self) -> usize {
        self.stages.iter().map(|s| s.steps).sum()
    }

    /// Floating-point operations of one orthogonalisation of `batch` matrices of `n × m`
    /// (matmuls only: per iteration `4r²c + 2r³` multiply-adds ×2 with `r = min`, `c = max`).
    pub fn flops(&self, batch: usize, n: usize, m: usize) -> f64 {
        let (r, c) = (n.min(m) as f64, n.max(m) as f64);
        let per_iter = 2.0 * (2.0 * r * r * c + r * r * r);
        batch as f64 * per_iter * self.total_steps() as f64
    }
}

/// Orthogonalises each matrix of a stack `[E, n, m]` in one batched iteration.
pub fn newton_schulz<B: Backend>(u: Tensor<B, 3>, schedule: &NsSchedule) -> Tensor<B, 3> {
    let dtype = u.dtype();
    newton_schulz_in(u, schedule, dtype)
}

/// Like [`newton_schulz`], but iterates in `iter_dtype` (e.g. bf16, as V4 does on GPU): the
/// Frobenius normalisation runs in the input dtype, the result comes back in it.
pub fn newton_schulz_in<B: Backend>(
    u: Tensor<B, 3>,
    schedule: &NsSchedule,
    iter_dtype: DType,
) -> Tensor<B, 3> {
    let [e, n, m] = u.dims();
    let in_dtype = u.dtype();
    // Per-matrix Frobenius norm, taken before any transpose on the `[E, n·m]` rows (one
    // contiguous reduction and one per-row division instead of a walk over a strided view);
    // the floor keeps an all-zero matrix at zero.
    let rows = u.reshape([e, n * m]);
    let norm = (rows.clone() * rows.clone()).sum_dim(1).sqrt();
    let x = (rows / norm.add_scalar(schedule.eps).clamp_min(1e-30)).reshape([e, n, m]);
    // A tall matrix (n > m) iterates on its `m × m` Gram matrix from the right,
    // `X ← aX + X(bA + cA²)` with `A = XᵀX`: the transpose of the wide iteration (the
    // polynomial is symmetric), with no transposed copy in or out.
    let tall = n > m;
    let mut x = x.cast(iter_dtype);
    for stage in &schedule.stages {
        let [a, b, c] = stage.coeffs;
        for _ in 0..stage.steps {
            let gram = if tall {
                x.clone().swap_dims(1, 2).matmul(x.clone())
            } else {
                x.clone().matmul(x.clone().swap_dims(1, 2))
            };
            let poly = gram.clone().mul_scalar(b) + gram.clone().matmul(gram).mul_scalar(c);
            x = if tall {
                x.clone().mul_scalar(a) + x.matmul(poly)
            } else {
                x.clone().mul_scalar(a) + poly.matmul(x)
            };
        }
    }
    x.cast(in_dtype)
}

/// Bytes of one task of [`newton_schulz_par`]: a batch this small stays in a core's cache
/// through all iterations (a long batch streams through it every matmul).
const TASK_BYTES: usize = 64 * 1024;

/// [`newton_schulz_in`] with the stack's matrices split into cache-sized batches that `threads`
/// host threads (the rayon pool) orthogonalise in parallel, for CPU backends, whose small
/// kernels run on the calling thread. Each matrix is computed exactly as in the one batched call (the
/// matrices never mix), so the result is bit-identical; `threads <= 1` is that call (the right
/// choice on a GPU).
pub fn newton_schulz_par<B: Backend>(
    u: Tensor<B, 3>,
    schedule: &NsSchedule,
    iter_dtype: DType,
    threads: usize,
) -> Tensor<B, 3> {
    let [e, n, m] = u.dims();
    if threads <= 1 || e < 2 {
        return newton_schulz_in(u, schedule, iter_dtype);
    }
    let per = (TASK_BYTES / (4 * n * m).max(1)).clamp(1, e.div_ceil(threads));
    let parts: Vec<Tensor<B, 3>> = u
        .split(per, 0)
        .into_par_iter()
        .map(|c| newton_schulz_in(c, schedule, iter_dtype))
        .collect();
    Tensor::cat(parts, 0)
}

/// Orthogonalises a matrix (`D = 2`) or a stack of matrices (`D = 3`).
pub fn orthogonalize<B: Backend, const D: usize>(
    u: Tensor<B, D>,
    schedule: &NsSchedule,
) -> Result<Tensor<B, D>> {
    let dtype = u.dtype();
    orthogonalize_in(u, schedule, dtype)
}

/// [`orthogonalize`] iterating in `iter_dtype`.
pub fn orthogonalize_in<B: Backend, const D: usize>(
    u: Tensor<B, D>,
    schedule: &NsSchedule,
    iter_dtype: DType,
) -> Result<Tensor<B, D>> {
    orthogonalize_par(u, schedule, iter_dtype, 1)
}

/// [`orthogonalize_in`] on `threads` host threads ([`newton_schulz_par`]).
pub fn orthogonalize_par<B: Backend, const D: usize>(
    u: Tensor<B, D>,
    schedule: &NsSchedule,
    iter_dtype: DType,
    threads: usize,
) -> Result<Tensor<B, D>> {
    let dims = u.dims();
    let stacked: Tensor<B, 3> = match D {
        2 => u.reshape([1, dims[0], dims[1]]),
        3 => u.reshape([dims[0], dims[1], dims[2]]),
        _ => return Err(OptimError::NotAMatrix(D)),
    };
    Ok(newton_schulz_par(stacked, schedule, iter_dtype, threads).reshape(dims))
}
