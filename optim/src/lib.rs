//! Optimizers for DeepSeek-V4 training (spec `v4-training.md` §2).
//!
//! - [`newton_schulz`](mod@newton_schulz): batched Newton–Schulz orthogonalisation, V4's hybrid
//!   schedule (§2.3).
//! - [`muon`]: Muon in its V4 (Algorithm 1), Keller-Jordan (§2.1) and Moonlight (§2.2) forms.
//! - [`adamw`]: AdamW with torch semantics.
//! - [`routing`] / [`plan`](mod@plan): which parameter goes to which optimizer, with per-group
//!   weight decay.
//! - [`optimizer`]: [`V4Optimizer`], state keyed by parameter name; [`state`]: exact save/load.
//! - [`schedule`]: the single LR schedule driving both optimizers; [`clip`]: global norm clipping.
//! - [`config`]: the `[optim]` recipe table (serde, `deny_unknown_fields`).

pub mod adamw;
pub mod clip;
pub mod config;
pub mod error;
pub mod muon;
pub mod newton_schulz;
pub mod optimizer;
pub mod plan;
pub mod routing;
pub mod schedule;
pub mod state;

pub use adamw::{adamw_update, AdamWConfig, AdamWMoments};
pub use clip::{clip_grad_norm, ClipStats, GradNorm};
pub use config::{OptimConfig, OptimSettings};
pub use error::{OptimError, Result};
pub use muon::{muon_update, MomentumKind, MuonConfig, MuonSettings, MuonVariant, UpdateScale};
pub use newton_schulz::{
    newton_schulz, newton_schulz_in, newton_schulz_par, orthogonalize, orthogonalize_in,
    NsSchedule, NsStage,
};
pub use optimizer::{state_dtype, ParamState, V4Optimizer};
pub use plan::{plan, totals, PlanEntry, PlanTotals};
pub use routing::{route, GroupDecay, OptimizerKind, ParamGroup};
pub use schedule::{DecayShape, LrSchedule, ScheduleConfig, ScheduleKind};
