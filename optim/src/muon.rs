//! Muon (spec §2): momentum, Newton–Schulz orthogonalisation, shape-dependent update scale,
//! decoupled weight decay. Three variants share one update rule:
//!
//! - `v4` — DeepSeek-V4 Algorithm 1 (§2.3): `M ← μM + G`, `O′ = HybridNS(μM + G)`,
//!   `O = O′·√max(n,m)·γ` (γ = 0.18), `W ← W(1 − ηλ) − ηO`.
//! - `keller-jordan` — §2.1: EMA buffer `M ← μM + (1−μ)G`, Nesterov blend `(1−μ)G + μM`,
//!   5 quintic steps, scale `max(1, n/m)^½`.
//! - `moonlight` — §2.2: `M ← μM + G`, `U = G + μM`, 5 quintic steps, scale `0.2·√max(n,m)`.
//!
//! A rank-3 parameter `[E, n, m]` is `E` independent matrices (stacked experts).

use burn::tensor::{backend::Backend, DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{OptimError, Result};
use crate::newton_schulz::{orthogonalize_par, NsSchedule, NsStage};

/// Which published Muon recipe supplies the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MuonVariant {
    /// DeepSeek-V4 Algorithm 1 with HybridNewtonSchulz.
    #[default]
    V4,
    /// Keller Jordan's reference Muon.
    KellerJordan,
    /// Moonlight ("Muon is Scalable for LLM Training").
    Moonlight,
}

/// How the momentum buffer accumulates gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MomentumKind {
    /// `M ← μM + G`; Nesterov input `G + μM`.
    Sum,
    /// `M ← μM + (1−μ)G`; Nesterov input `(1−μ)G + μM`.
    Ema,
}

/// How the orthogonalised update is scaled for an `n × m` matrix.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateScale {
    /// `γ·√max(n, m)`: update RMS ≈ γ, so the AdamW learning rate carries over.
    RmsMatched {
        /// Target update RMS (V4: 0.18, Moonlight: 0.2).
        gamma: f64,
    },
    /// `max(1, n/m)^½` (Keller Jordan).
    AspectRatio,
}

impl UpdateScale {
    /// The multiplier for one `n × m` matrix.
    pub fn factor(&self, n: usize, m: usize) -> f64 {
        match *self {
            UpdateScale::RmsMatched { gamma } => gamma * (n.max(m) as f64).sqrt(),
            UpdateScale::AspectRatio => (n as f64 / m as f64).max(1.0).sqrt(),
        }
    }
}

/// Recipe form of the Muon settings (`[optim.muon]`): a variant plus optional overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MuonConfig {
    /// Preset supplying every value not overridden below.
    pub variant: MuonVariant,
    /// Momentum μ.
    pub momentum: Option<f64>,
    /// Nesterov on (orthogonalise `μM + G`) or off (orthogonalise `M`).
    pub nesterov: Option<bool>,
    /// Newton–Schulz coefficient schedule (iteration count = sum of stage steps).
    pub ns_schedule: Option<Vec<NsStage>>,
    /// Newton–Schulz normalisation epsilon.
    pub ns_eps: Option<f64>,
    /// Update RMS γ (variants with an RMS-matched scale only).
    pub gamma: Option<f64>,
    /// Decoupled weight decay λ for Muon parameters.
    pub weight_decay: Option<f64>,
    /// Run Newton–Schulz in bf16 (V4 does on GPU); moments and the update stay f32.
    pub ns_bf16: bool,
}

/// Fully resolved Muon hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct MuonSettings {
    /// Momentum μ.
    pub momentum: f64,
    /// Nesterov on/off.
    pub nesterov: bool,
    /// Buffer accumulation rule.
    pub momentum_kind: MomentumKind,
    /// Newton–Schulz schedule.
    pub schedule: NsSchedule,
    /// Update scale rule.
    pub scale: UpdateScale,
    /// Default decoupled weight decay.
    pub weight_decay: f64,
    /// Newton–Schulz in bf16.
    pub ns_bf16: bool,
    /// Host threads that orthogonalise a stack's matrices in parallel (CPU backends, whose
    /// small kernels run on the calling thread; [`crate::newton_schulz::newton_schulz_par`]). 1: one
    /// batched call, the choice for a GPU. Not a recipe key: the trainer sets it per device.
    pub ns_threads: usize,
}

impl MuonSettings {
    /// The published defaults of a variant.
    pub fn preset(variant: MuonVariant) -> Self {
        let (kind, schedule, scale, wd) = match variant {
            MuonVariant::V4 => (
                MomentumKind::Sum,
                NsSchedule::v4_hybrid(),
                UpdateScale::RmsMatched { gamma: 0.18 },
                0.1,
            ),
            MuonVariant::KellerJordan => (
                MomentumKind::Ema,
                NsSchedule::quintic(5),
                UpdateScale::AspectRatio,
                0.0,
            ),
            MuonVariant::Moonlight => (
                MomentumKind::Sum,
                NsSchedule::quintic(5),
                UpdateScale::RmsMatched { gamma: 0.2 },
                0.1,
            ),
        };
        Self {
            momentum: 0.95,
            nesterov: true,
            momentum_kind: kind,
            schedule,
            scale,
            weight_decay: wd,
            ns_bf16: false,
            ns_threads: 1,
        }
    }
}

impl MuonSettings {
    /// The dtype Newton–Schulz iterates in for an update of dtype `input`: bf16 when
    /// [`MuonSettings::ns_bf16`], else `input`.
    pub fn ns_dtype(&self, input: DType) -> DType {
        if self.ns_bf16 {
            DType::BF16
        } else {
            input
        }
    }
}

/// Most Newton–Schulz iterations a schedule may ask for (V4: 10); more is a typo, not a recipe.
pub const MAX_NS_STEPS: usize = 1000;

impl MuonSettings {
    /// Checks the values a recipe can set: finite and in range, a bounded iteration count.
    fn check(&self) -> Result<()> {
        let bad = |m: String| Err(OptimError::Config(m));
        let gamma = match self.scale {
            UpdateScale::RmsMatched { gamma } => gamma,
            UpdateScale::AspectRatio => 1.0,
        };
        for (key, v) in [
            ("ns_eps", self.schedule.eps),
            ("gamma", gamma),
            ("weight_decay", self.weight_decay),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("`muon.{key}` = {v} must be finite and >= 0"));
            }
        }
        let mut total = 0usize;
        for (i, stage) in self.schedule.stages.iter().enumerate() {
            if let Some(c) = stage.coeffs.iter().find(|c| !c.is_finite()) {
                return bad(format!(
                    "`muon.ns_schedule` stage {i} has a coefficient {c}; coefficients must be finite"
                ));
            }
            total = total.saturating_add(stage.steps);
        }
        if total > MAX_NS_STEPS {
            return bad(format!(
                "`muon.ns_schedule` runs {total} Newton–Schulz steps; at most {MAX_NS_STEPS}"
            ));
        }
        Ok(())
    }
}

impl MuonConfig {
    /// Applies the overrides to the variant's preset and validates the result.
    pub fn resolve(&self) -> Result<MuonSettings> {
        let mut s = MuonSettings::preset(self.variant);
        if let Some(mu) = self.momentum {
            if !(0.0..1.0).contains(&mu) {
                return Err(OptimError::Config(format!(
                    "muon momentum {mu} not in [0, 1)"
                )));
            }
            s.momentum = mu;
        }
        s.nesterov = self.nesterov.unwrap_or(s.nesterov);
        if let Some(stages) = &self.ns_schedule {
            s.schedule.stages = stages.clone();
        }
        s.schedule.eps = self.ns_eps.unwrap_or(s.schedule.eps);
        if let Some(gamma) = self.gamma {
            match &mut s.scale {
                UpdateScale::RmsMatched { gamma: g } => *g = gamma,
                UpdateScale::AspectRatio => {
                    return Err(OptimError::Config(
                        "`gamma` does not apply to the keller-jordan scale".into(),
                    ))
                }
            }
        }
        s.weight_decay = self.weight_decay.unwrap_or(s.weight_decay);
        s.ns_bf16 = self.ns_bf16;
        s.check()?;
        Ok(s)
    }
}

/// One Muon step on a matrix (`D = 2`) or matrix stack (`D = 3`).
///
/// Returns `(new_param, new_momentum)`. All tensors share one float dtype (the state dtype).
pub fn muon_update<B: Backend, const D: usize>(
    s: &MuonSettings,
    param: Tensor<B, D>,
    grad: Tensor<B, D>,
    momentum: Tensor<B, D>,
    lr: f64,
    weight_decay: f64,
) -> Result<(Tensor<B, D>, Tensor<B, D>)> {
    if D != 2 && D != 3 {
        return Err(OptimError::NotAMatrix(D));
    }
    let mu = s.momentum;
    let g_coef = match s.momentum_kind {
        MomentumKind::Sum => 1.0,
        MomentumKind::Ema => 1.0 - mu,
    };
    // A product by 1 (V4's `M ← μM + G`) is skipped: the same values, one pass less each.
    let scaled = |t: Tensor<B, D>, c: f64| if c == 1.0 { t } else { t.mul_scalar(c) };
    let momentum = momentum.mul_scalar(mu) + scaled(grad.clone(), g_coef);
    let u = if s.nesterov {
        scaled(grad, g_coef) + momentum.clone().mul_scalar(mu)
    } else {
        momentum.clone()
    };
    let iter_dtype = s.ns_dtype(u.dtype());
    let o = orthogonalize_par(u, &s.schedule, iter_dtype, s.ns_threads)?;
    let dims = param.dims();
    let factor = s.scale.factor(dims[D - 2], dims[D - 1]);
    let param = param.mul_scalar(1.0 - lr * weight_decay) - o.mul_scalar(lr * factor);
    Ok((param, momentum))
}
