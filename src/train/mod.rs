//! The trainer: the step loop, its loss, the data it reads (synthetic, token files, text / chat
//! through `v4-data`), checkpoints and the name-routed optimizer update.

pub mod batches;
pub mod checkpoint;
pub mod checksums;
pub mod eval;
pub mod grads;
pub mod loss;
pub mod model_setup;
pub mod objectives;
pub mod optimizer_step;
pub mod preflight;
pub mod provenance;
pub mod recompute;
pub mod run_dir;
pub mod run_lock;
pub mod step;
pub mod step_log;
pub mod synthetic;
pub mod text_data;
pub mod token_file;
pub mod trainer;

pub use batches::{BatchSource, MicroBatch};
pub use optimizer_step::apply_optimizer;
pub use trainer::{run, RunOptions, RunSummary};
