//! `v4train bench RECIPE.toml`: the throughput of a recipe's training step — tokens/s, model
//! FLOPs per token ([`flops`]), achieved FLOP/s and MFU against the device's peak
//! ([`devices`]), peak memory ([`peak_memory`]) where the time goes ([`phases`]) and the
//! Newton–Schulz time per matrix shape ([`ns_shapes`]).

pub mod devices;
pub mod flops;
pub mod ns_shapes;
pub mod peak_memory;
pub mod phases;
pub mod run;
pub mod step_phases;

pub use flops::flops_per_token;
pub use run::{bench, BenchOptions, BenchReport};
pub use step_phases::Phases;
