//! Learning-rate schedule (spec §2.3: one schedule drives AdamW and Muon — Muon's γ-scaled update
//! reuses the AdamW LR; V4 warms up linearly for 2000 steps, holds the peak, then cosine-decays to
//! 0.1× near the end). Supports constant, plain cosine and warmup–stable–decay (WSD).

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use crate::error::{OptimError, Result};

/// Shape of the schedule after warmup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Hold the peak forever.
    Constant,
    /// Cosine from the peak (end of warmup) to the floor at `total_steps`.
    Cosine,
    /// Warmup, stable at the peak, then decay to the floor over the last `decay_steps`.
    #[default]
    Wsd,
}

/// Curve of a decay phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecayShape {
    /// Half cosine.
    #[default]
    Cosine,
    /// Straight line.
    Linear,
}

/// `[schedule]` recipe table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Schedule family.
    pub kind: ScheduleKind,
    /// Peak learning rate.
    pub peak_lr: f64,
    /// Linear warmup length; step `s < warmup_steps` gets `peak·(s+1)/warmup_steps`.
    pub warmup_steps: u64,
    /// Training length (cosine, wsd); the floor holds from here on.
    pub total_steps: u64,
    /// Length of the final decay (wsd).
    pub decay_steps: u64,
    /// Decay curve (wsd; cosine is always cosine).
    pub decay_shape: DecayShape,
    /// Floor as a fraction of the peak.
    pub min_lr_ratio: f64,
}

impl Default for ScheduleConfig {
    /// V4-Flash: peak 2.7e-4, 2000 warmup steps, cosine to 0.1× (lengths must be set per run).
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Wsd,
            peak_lr: 2.7e-4,
            warmup_steps: 2000,
            total_steps: 0,
            decay_steps: 0,
            decay_shape: DecayShape::Cosine,
            min_lr_ratio: 0.1,
        }
    }
}

/// A validated schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    cfg: ScheduleConfig,
}

impl LrSchedule {
    /// Validates the config.
    pub fn new(cfg: ScheduleConfig) -> Result<Self> {
        let bad = |msg: String| Err(OptimError::Config(format!("schedule: {msg}")));
        if !(cfg.peak_lr.is_finite() && cfg.peak_lr >= 0.0) {
            return bad(format!("peak_lr {} must be finite and >= 0", cfg.peak_lr));
        }
        if !(0.0..=1.0).contains(&cfg.min_lr_ratio) {
            return bad(format!("min_lr_ratio {} not in [0, 1]", cfg.min_lr_ratio));
        }
        match cfg.kind {
            ScheduleKind::Constant => {}
            ScheduleKind::Cosine if cfg.total_steps <= cfg.warmup_steps => {
                return bad("cosine needs total_steps > warmup_steps".into())
            }
            ScheduleKind::Wsd
                if cfg.decay_steps == 0
                    || cfg
                        .warmup_steps
                        .checked_add(cfg.decay_steps)
                        .is_none_or(|n| n > cfg.total_steps) =>
            {
                return bad("wsd needs 0 < decay_steps <= total_steps - warmup_steps".into())
            }
            _ => {}
        }
        Ok(Self { cfg })
    }

    /// The config.
    pub fn config(&self) -> &ScheduleConfig {
        &self.cfg
    }

    /// First step of the decay phase (`None` for constant): the end of warmup for cosine,
    /// `total_steps − decay_steps` for WSD.
    pub fn decay_start(&self) -> Option<u64> {
        let c = &self.cfg;
        match c.kind {
            ScheduleKind::Constant => None,
            ScheduleKind::Cosine => Some(c.warmup_steps),
            ScheduleKind::Wsd => Some(c.total_steps - c.decay_steps),
        }
    }

    /// First step of the late stage of training, where V4 drops the MTP weight (0.3 → 0.1
    /// "from the start of LR decay"): for WSD the first decay step; for cosine, which decays
    /// from the end of warmup on with no stable phase, the step where the LR has come half-way
    /// down from the peak to the floor (the cosine's midpoint, `warmup + ⌈(total − warmup)/2⌉`);
    /// never for a constant schedule.
    pub fn late_start(&self) -> Option<u64> {
        let c = &self.cfg;
        match c.kind {
            ScheduleKind::Constant => None,
            ScheduleKind::Cosine => {
                Some(c.warmup_steps + (c.total_steps - c.warmup_steps).div_ceil(2))
            }
            ScheduleKind::Wsd => self.decay_start(),
        }
    }

    /// Learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        let c = &self.cfg;
        if step < c.warmup_steps {
            return c.peak_lr * (step + 1) as f64 / c.warmup_steps as f64;
        }
        let floor = c.peak_lr * c.min_lr_ratio;
        let (start, len, shape) = match c.kind {
            ScheduleKind::Constant => return c.peak_lr,
            ScheduleKind::Cosine => (
                c.warmup_steps,
                c.total_steps - c.warmup_steps,
                DecayShape::Cosine,
            ),
            ScheduleKind::Wsd => (c.total_steps - c.decay_steps, c.decay_steps, c.decay_shape),
        };
        if step < start {
            return c.peak_lr;
        }
        let p = ((step - start) as f64 / len as f64).min(1.0);
        let w = match shape {
            DecayShape::Cosine => 0.5 * (1.0 + (PI * p).cos()),
            DecayShape::Linear => 1.0 - p,
        };
        floor + (c.peak_lr - floor) * w
    }
}

#[cfg(test)]
mod decay_start_tests {
    use super::*;

    fn sched(kind: ScheduleKind) -> LrSchedule {
        LrSchedule::new(ScheduleConfig {
            kind,
            peak_lr: 1.0,
            warmup_steps: 10,
            total_steps: 100,
            decay_steps: 20,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn decay_start_is_where_the_lr_leaves_the_peak() {
        assert_eq!(sched(ScheduleKind::Constant).decay_start(), None);
        for kind in [ScheduleKind::Cosine, ScheduleKind::Wsd] {
            let s = sched(kind);
            let d = s.decay_start().unwrap();
            assert_eq!(s.lr(d), 1.0, "{kind:?}");
            assert!(s.lr(d + 1) < 1.0, "{kind:?}");
            assert!((10..d).all(|t| s.lr(t) == 1.0), "{kind:?}");
        }
        assert_eq!(sched(ScheduleKind::Wsd).decay_start(), Some(80));
    }

    #[test]
    fn late_start_is_the_decay_phase_or_the_cosine_midpoint() {
        assert_eq!(sched(ScheduleKind::Constant).late_start(), None);
        assert_eq!(sched(ScheduleKind::Wsd).late_start(), Some(80));
        let c = sched(ScheduleKind::Cosine);
        let late = c.late_start().unwrap();
        assert_eq!(late, 55);
        // peak 1, floor 0.1: the LR is above the midpoint 0.55 before, at or below it from there
        assert!(c.lr(late - 1) > 0.55 && c.lr(late) <= 0.55 + 1e-12);
    }
}
