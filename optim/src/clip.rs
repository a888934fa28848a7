//! Global gradient-norm clipping (torch `clip_grad_norm_` semantics: scale all gradients by
//! `max_norm / (‖g‖ + 1e-6)` when the global L2 norm exceeds `max_norm`). The V4 report does not
//! give its clipping threshold (spec §7), so it is a recipe option.

use burn::tensor::{backend::Backend, DType, Tensor};

use crate::error::{OptimError, Result};

/// Outcome of one clipping decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipStats {
    /// Global L2 norm before clipping.
    pub norm: f64,
    /// Factor applied to every gradient (1 when not clipped).
    pub scale: f64,
}

impl ClipStats {
    /// Decides the scale for a measured norm (`max_norm <= 0` disables clipping).
    pub fn new(norm: f64, max_norm: f64) -> Self {
        let scale = if max_norm > 0.0 && norm > max_norm {
            max_norm / (norm + 1e-6)
        } else {
            1.0
        };
        Self { norm, scale }
    }

    /// Applies the scale to one gradient.
    pub fn apply<B: Backend, const D: usize>(&self, grad: Tensor<B, D>) -> Tensor<B, D> {
        if self.scale == 1.0 {
            grad
        } else {
            grad.mul_scalar(self.scale)
        }
    }
}

/// Accumulates squared norms of gradients of any rank on the device; one host sync at the end.
#[derive(Debug)]
pub struct GradNorm<B: Backend> {
    parts: Vec<Tensor<B, 1>>,
}

impl<B: Backend> Default for GradNorm<B> {
    fn default() -> Self {
        Self { parts: Vec::new() }
    }
}

impl<B: Backend> GradNorm<B> {
    /// Empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `‖grad‖²` (summed in f32, or f64 for f64 gradients).
    pub fn add<const D: usize>(&mut self, grad: &Tensor<B, D>) {
        let g = match grad.dtype() {
            DType::F64 | DType::F32 => grad.clone(),
            _ => grad.clone().cast(DType::F32),
        };
        self.parts.push(g.square().sum().cast(DType::F32));
    }

    /// Global norm and the clipping scale for `max_norm`.
    pub fn finish(self, max_norm: f64) -> Result<ClipStats> {
        if self.parts.is_empty() {
            return Ok(ClipStats::new(0.0, max_norm));
        }
        let data = Tensor::cat(self.parts, 0).into_data();
        let sq: Vec<f32> = data
            .to_vec()
            .map_err(|e| OptimError::Data(format!("{e:?}")))?;
        let total: f64 = sq.iter().map(|&x| f64::from(x)).sum();
        Ok(ClipStats::new(total.sqrt(), max_norm))
    }
}

/// Clips a list of same-rank gradients by their global norm.
pub fn clip_grad_norm<B: Backend, const D: usize>(
    grads: Vec<Tensor<B, D>>,
    max_norm: f64,
) -> Result<(Vec<Tensor<B, D>>, ClipStats)> {
    let mut acc = GradNorm::<B>::new();
    for g in &grads {
        acc.add(g);
    }
    let stats = acc.finish(max_norm)?;
    Ok((grads.into_iter().map(|g| stats.apply(g)).collect(), stats))
}
