//! The trainer: the step loop, its loss, synthetic data, checkpoints and the name-routed
//! optimizer update.

pub mod checkpoint;
pub mod loss;
pub mod optimizer_step;
pub mod synthetic;
pub mod trainer;

pub use optimizer_step::apply_optimizer;
pub use trainer::{run, RunSummary};
