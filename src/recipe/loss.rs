//! `[loss]`: weights of the training objective.

use serde::{Deserialize, Serialize};

/// `[loss]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// Weight of the multi-token-prediction loss added to the main loss (default 0.3).
    pub mtp_weight: f64,
    /// Label id excluded from the loss (padding, masked prompt tokens; default -100).
    pub ignore_index: i64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            mtp_weight: 0.3,
            ignore_index: -100,
        }
    }
}
