//! `[loss]`: weights of the training objective — next-token CE, MTP (V4: 0.3, then 0.1 from the
//! start of LR decay), the lightning indexer's KL (V3.2 DSA), the sequence-wise balance loss and
//! the auxiliary-loss-free bias rate (V3/V4 load balancing).

use serde::{Deserialize, Serialize};

/// `[loss]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// Weight of the multi-token-prediction loss added to the main loss (default 0.3).
    pub mtp_weight: f64,
    /// MTP weight in the late stage of training (V4: 0.1 from the start of LR decay; default
    /// 0.1): from the first decay step of a WSD schedule, from the midpoint of a cosine one,
    /// never with a constant LR ([`v4_optim::LrSchedule::late_start`]). Set it equal to
    /// `mtp_weight` for a constant weight.
    pub mtp_weight_late: f64,
    /// Label id excluded from the loss (padding, masked prompt tokens; default -100).
    pub ignore_index: i64,
    /// Weight of the lightning indexer's KL loss, summed over CSA layers (default 1.0; 0 turns
    /// it off). It only trains indexer parameters.
    pub indexer_weight: f64,
    /// α of the sequence-wise balance loss α·Σᵢ fᵢ·Pᵢ, summed over score-routed MoE layers
    /// (V4: 1e-4; default 1e-4; 0 turns it off).
    pub balance_alpha: f64,
    /// γ of auxiliary-loss-free balancing: after each optimizer step every score-routed layer's
    /// selection bias moves by γ·sign(mean load − expert load) (V4: 1e-3; default 1e-3; 0
    /// freezes the biases).
    pub balance_bias_rate: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            mtp_weight: 0.3,
            mtp_weight_late: 0.1,
            ignore_index: -100,
            indexer_weight: 1.0,
            balance_alpha: 1e-4,
            balance_bias_rate: 1e-3,
        }
    }
}

impl LossConfig {
    /// Keys that must be finite and ≥ 0, with their values.
    pub(crate) fn non_negative(&self) -> [(&'static str, f64); 5] {
        [
            ("mtp_weight", self.mtp_weight),
            ("mtp_weight_late", self.mtp_weight_late),
            ("indexer_weight", self.indexer_weight),
            ("balance_alpha", self.balance_alpha),
            ("balance_bias_rate", self.balance_bias_rate),
        ]
    }

    /// The MTP weight of optimizer step `step` given the first step of the late stage
    /// ([`v4_optim::LrSchedule::late_start`]).
    pub fn mtp_weight_at(&self, step: u64, late_start: Option<u64>) -> f64 {
        match late_start {
            Some(d) if step >= d => self.mtp_weight_late,
            _ => self.mtp_weight,
        }
    }
}
