//! The `[optim]` recipe table: Muon and AdamW hyper-parameters and per-group weight decay
//! (spec §2.3 settings: both optimizers use wd 0.1 and share one learning-rate schedule).

use serde::{Deserialize, Serialize};

use crate::adamw::AdamWConfig;
use crate::error::{OptimError, Result};
use crate::muon::{MuonConfig, MuonSettings};
use crate::routing::{GroupDecay, OptimizerKind, ParamGroup};

/// Recipe form of the optimizer settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// `[optim.muon]`.
    pub muon: MuonConfig,
    /// `[optim.adamw]`.
    pub adamw: AdamWConfig,
    /// `[optim.weight_decay]`: per-group overrides.
    pub weight_decay: GroupDecay,
    /// Global gradient-norm clipping threshold (unset: no clipping; V4 does not publish one).
    pub max_grad_norm: Option<f64>,
}

/// Validated settings the optimizer runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimSettings {
    /// Resolved Muon settings.
    pub muon: MuonSettings,
    /// AdamW settings.
    pub adamw: AdamWConfig,
    /// Per-group weight-decay overrides.
    pub decay: GroupDecay,
    /// Clipping threshold; 0 disables clipping (see [`crate::ClipStats::new`]).
    pub max_grad_norm: f64,
    /// The optimizer of LoRA adapters: AdamW (default) or Muon (set by the run, `[lora]`).
    pub adapter_optimizer: OptimizerKind,
}

impl OptimConfig {
    /// Resolves presets and validates every value.
    pub fn resolve(&self) -> Result<OptimSettings> {
        self.adamw.validate()?;
        self.weight_decay.validate()?;
        let max_grad_norm = self.max_grad_norm.unwrap_or(0.0);
        if !(max_grad_norm.is_finite() && max_grad_norm >= 0.0) {
            return Err(OptimError::Config(format!(
                "max_grad_norm {max_grad_norm} must be finite and >= 0"
            )));
        }
        Ok(OptimSettings {
            muon: self.muon.resolve()?,
            adamw: self.adamw.clone(),
            decay: self.weight_decay.clone(),
            max_grad_norm,
            adapter_optimizer: OptimizerKind::AdamW,
        })
    }
}

impl OptimSettings {
    /// The optimizer of a group in this run.
    pub fn optimizer_of(&self, group: ParamGroup) -> OptimizerKind {
        match group {
            ParamGroup::Adapter => self.adapter_optimizer,
            g => g.optimizer(),
        }
    }

    /// Weight decay of a group: the override, else its optimizer's default (0 when excluded).
    pub fn weight_decay(&self, group: ParamGroup) -> f64 {
        self.decay
            .get(group)
            .unwrap_or(match self.optimizer_of(group) {
                OptimizerKind::Muon => self.muon.weight_decay,
                OptimizerKind::AdamW => self.adamw.weight_decay,
                OptimizerKind::Excluded => 0.0,
            })
    }
}
