//! AdamW (spec §2.3: V4 trains embedding, head, RMSNorm gains and mHC static biases/scales with it;
//! β₁ 0.9, β₂ 0.95, ε 1e-20, wd 0.1). Torch semantics: decoupled decay `p ← p(1 − η·wd)`, bias
//! correction on both moments, ε added after the square root of the bias-corrected second moment.

use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{OptimError, Result};

/// AdamW hyper-parameters (`[optim.adamw]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε, added to `√v̂`.
    pub eps: f64,
    /// Default decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-20,
            weight_decay: 0.1,
        }
    }
}

impl AdamWConfig {
    /// Checks the betas lie in `[0, 1)` and ε and the weight decay are finite and non-negative.
    pub fn validate(&self) -> Result<()> {
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(OptimError::Config(format!(
                    "adamw {name} {b} not in [0, 1)"
                )));
            }
        }
        for (name, v) in [("eps", self.eps), ("weight_decay", self.weight_decay)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(OptimError::Config(format!(
                    "`adamw.{name}` = {v} must be finite and >= 0"
                )));
            }
        }
        Ok(())
    }
}

/// AdamW moments of one parameter.
#[derive(Debug, Clone)]
pub struct AdamWMoments<B: Backend, const D: usize> {
    /// First moment `m`.
    pub exp_avg: Tensor<B, D>,
    /// Second moment `v`.
    pub exp_avg_sq: Tensor<B, D>,
}

/// One AdamW step; `step` is the 1-based count including this step. Returns the new parameter.
pub fn adamw_update<B: Backend, const D: usize>(
    cfg: &AdamWConfig,
    param: Tensor<B, D>,
    grad: Tensor<B, D>,
    moments: &mut AdamWMoments<B, D>,
    step: u64,
    lr: f64,
    weight_decay: f64,
) -> Tensor<B, D> {
    let (b1, b2) = (cfg.beta1, cfg.beta2);
    let t = i32::try_from(step).unwrap_or(i32::MAX);
    let bc1 = 1.0 - b1.powi(t);
    let bc2 = 1.0 - b2.powi(t);
    moments.exp_avg = moments.exp_avg.clone().mul_scalar(b1) + grad.clone().mul_scalar(1.0 - b1);
    moments.exp_avg_sq =
        moments.exp_avg_sq.clone().mul_scalar(b2) + grad.square().mul_scalar(1.0 - b2);
    let denom = moments
        .exp_avg_sq
        .clone()
        .sqrt()
        .div_scalar(bc2.sqrt())
        .add_scalar(cfg.eps);
    let update = moments.exp_avg.clone() / denom;
    param.mul_scalar(1.0 - lr * weight_decay) - update.mul_scalar(lr / bc1)
}
